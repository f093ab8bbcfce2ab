package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/internal/testpeer"
)

// TestDNSWithRealClients asks disco server's DNS with dig and kdig, over
// UDP and TCP, and with Go's resolver, after registering through the API.
func TestDNSWithRealClients(t *testing.T) {
	dig, kdig := testpeer.Need(t, "dig"), testpeer.Need(t, "kdig")
	httpAddr, dnsAddr := testpeer.FreePort(t), testpeer.FreeUDPTCPPort(t)
	startServer(t, t.TempDir(), httpAddr, testpeer.FreePort(t), "--dns", dnsAddr, "--dns-domain", "disco,consul")
	c, err := client.New(httpAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	register := func(service, id, addr string, port int, tags ...string) {
		t.Helper()
		if _, err := c.Register(ctx, service, id, catalog.Registration{Address: addr, Port: port, Tags: tags}); err != nil {
			t.Fatal(err)
		}
	}
	register("web", "w1", "10.0.1.5", 8080, "v1")
	register("web", "w2", "10.0.1.6", 8080, "v1")
	register("web", "w3", "10.0.1.7", 8081, "v2")
	for i := range 1000 {
		register("big", fmt.Sprintf("b%04d", i), fmt.Sprintf("10.9.%d.%d", i/250, i%250+1), 9000)
	}
	host, port, _ := net.SplitHostPort(dnsAddr)
	digAt := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(dig, append([]string{"@" + host, "-p", port, "+time=5", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	kdigAt := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(kdig, append([]string{"@" + host, "-p", port, "+time=5", "+retry=0"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	lines := func(s string) []string {
		var out []string
		for l := range strings.Lines(s) {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
				out = append(out, l)
			}
		}
		slices.Sort(out)
		return out
	}
	expect := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", what, got, want)
		}
	}

	expect("dig A", lines(digAt("+short", "web.service.disco")), "10.0.1.5", "10.0.1.6", "10.0.1.7")
	expect("dig A over TCP", lines(digAt("+short", "+tcp", "web.service.disco")), "10.0.1.5", "10.0.1.6", "10.0.1.7")
	expect("dig tag", lines(digAt("+short", "v1.web.service.disco")), "10.0.1.5", "10.0.1.6")
	expect("dig SRV", lines(digAt("+short", "SRV", "_web._tcp.service.disco")),
		"1 100 8080 w1.web.instance.disco.", "1 100 8080 w2.web.instance.disco.", "1 100 8081 w3.web.instance.disco.")
	expect("dig SRV by tag, consul domain", lines(digAt("+short", "SRV", "_web._v2.service.consul")), "1 100 8081 w3.web.instance.consul.")
	expect("dig instance", lines(digAt("+short", "w2.web.instance.disco")), "10.0.1.6")
	expect("kdig A", lines(kdigAt("+short", "web.service.disco", "A")), "10.0.1.5", "10.0.1.6", "10.0.1.7")
	expect("kdig SRV over TCP", lines(kdigAt("+short", "+tcp", "_web._tcp.service.disco", "SRV")),
		"1 100 8080 w1.web.instance.disco.", "1 100 8080 w2.web.instance.disco.", "1 100 8081 w3.web.instance.disco.")

	// The SRV answer carries the targets' addresses.
	if out := digAt("SRV", "_web._tcp.service.disco"); !strings.Contains(out, "w1.web.instance.disco.\t5\tIN\tA\t10.0.1.5") {
		t.Errorf("dig SRV: no target address in the additional section:\n%s", out)
	}
	// Negative answers: status and the SOA with the negative TTL.
	for name, status := range map[string]string{"nosuch.service.disco": "NXDOMAIN", "v9.web.service.disco": "NXDOMAIN", "service.disco": "NOERROR", "example.com": "REFUSED"} {
		out := digAt(name)
		if !strings.Contains(out, "status: "+status) {
			t.Errorf("dig %s: want status %s:\n%s", name, status, out)
		}
		if status != "REFUSED" && !strings.Contains(out, "disco.\t\t\t5\tIN\tSOA\tns.disco. hostmaster.disco. 1 3600 600 86400 5") {
			t.Errorf("dig %s: want the SOA in the authority section:\n%s", name, out)
		}
	}

	// 1,000 instances. Over UDP without EDNS: truncated, TC set, as many
	// whole records as fit in 512 bytes.
	out := digAt("+ignore", "+noedns", "big.service.disco")
	if !strings.Contains(out, "flags: qr aa tc rd") || strings.Count(out, "\tIN\tA\t") < 25 {
		t.Errorf("dig +ignore +noedns big: want TC and at least 25 records:\n%s", out)
	}
	// With a 4096-byte EDNS buffer: more records, still TC.
	out = digAt("+ignore", "+bufsize=4096", "big.service.disco")
	if n := strings.Count(out, "\tIN\tA\t"); !strings.Contains(out, " tc ") || n < 200 || !strings.Contains(out, "MSG SIZE  rcvd: 4") {
		t.Errorf("dig +bufsize=4096 big: want TC and 200+ records in about 4 KB, got %d:\n%s", n, head(out))
	}
	// dig retries a truncated answer over TCP by itself and gets all 1,000.
	if got := lines(digAt("+short", "big.service.disco")); len(got) != 1000 {
		t.Errorf("dig big (TC, retried over TCP): %d addresses, want 1000", len(got))
	}
	if got := lines(kdigAt("+short", "+tcp", "big.service.disco", "A")); len(got) != 1000 {
		t.Errorf("kdig +tcp big: %d addresses, want 1000", len(got))
	}
	if got := lines(kdigAt("+short", "+tcp", "_big._tcp.service.disco", "SRV")); len(got) != 1000 {
		t.Errorf("kdig +tcp SRV big: %d records, want 1000", len(got))
	}

	// Go's resolver, as a Go program pointed at this server would ask.
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	_, srvs, err := r.LookupSRV(ctx, "web", "tcp", "service.disco")
	if err != nil || len(srvs) != 3 {
		t.Errorf("LookupSRV = %v, %v; want 3 records", srvs, err)
	}
	if addrs, err := r.LookupHost(ctx, "big.service.disco"); err != nil || len(addrs) != 1000 {
		t.Errorf("LookupHost(big) = %d addresses, %v; want 1000", len(addrs), err)
	}

	// A change is answered at once: deregistering w3 takes it out.
	if err := c.Deregister(ctx, "web", "w3"); err != nil {
		t.Fatal(err)
	}
	expect("dig A after deregistering w3", lines(digAt("+short", "web.service.disco")), "10.0.1.5", "10.0.1.6")
}

func head(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "\n..."
	}
	return s
}
