package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/discotech/disco/bench/internal/cli"
	"github.com/discotech/disco/bench/internal/peer"
	"github.com/discotech/disco/bench/internal/sysstat"
)

// ---- disco: the registry, changed through its HTTP API.

type discoSys struct {
	p    *peer.Process
	base string // http://127.0.0.1:port
	hc   *http.Client
}

func startDisco(bin string) func(ctx context.Context, tmp string) (system, error) {
	return func(ctx context.Context, tmp string) (system, error) {
		dir, err := os.MkdirTemp(tmp, "disco-")
		if err != nil {
			return nil, err
		}
		p, base, err := peer.StartDiscoServer(ctx, "disco", dir, bin, "--dns", "")
		if err != nil {
			return nil, err
		}
		d := &discoSys{p: p, base: base, hc: &http.Client{Timeout: 10 * time.Second}}
		cli.Progress("disco: server pid %d on %s", p.Pid(), d.base)
		return d, nil
	}
}

func (d *discoSys) spec() string { return "disco+" + d.base }

// apply registers (or re-registers) the instance: passing at once, since
// it has neither a TTL nor a check.
func (d *discoSys) apply(ctx context.Context, c change) error {
	body := fmt.Sprintf(`{"address":%q,"port":%d}`, c.addr, c.port)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, d.base+"/v1/services/"+service+"/instances/"+c.id, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT %s: %s: %s", req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

func (d *discoSys) peerCPU() float64 { return d.p.CPUSeconds() }

func (d *discoSys) close() {
	d.hc.CloseIdleConnections()
	d.p.Stop()
}

// ---- file: a YAML file, replaced whole (temporary file, then rename).

type fileSys struct {
	path string
	ids  []string          // in the order they were added
	ins  map[string]change // id → latest
}

func startFile(ctx context.Context, tmp string) (system, error) {
	dir, err := os.MkdirTemp(tmp, "file-")
	if err != nil {
		return nil, err
	}
	return &fileSys{path: filepath.Join(dir, "services.yaml"), ins: map[string]change{}}, nil
}

func (f *fileSys) spec() string { return "file://" + f.path }

func (f *fileSys) apply(ctx context.Context, c change) error {
	if _, ok := f.ins[c.id]; !ok {
		f.ids = append(f.ids, c.id)
	}
	f.ins[c.id] = c
	var b strings.Builder
	b.WriteString("services:\n  " + service + ":\n")
	for _, id := range f.ids {
		in := f.ins[id]
		fmt.Fprintf(&b, "    - {id: %s, address: %s, port: %d}\n", in.id, in.addr, in.port)
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, f.path)
}

func (f *fileSys) close() {}

// ---- etcd: keys <prefix>/bench/<id> in Discotech's own layout.

type etcdSys struct {
	p   *peer.Process
	url string
	cli *clientv3.Client
}

const etcdPrefix = "/services"

func startEtcd(bin string) func(ctx context.Context, tmp string) (system, error) {
	return func(ctx context.Context, tmp string) (system, error) {
		dir, err := os.MkdirTemp(tmp, "etcd-")
		if err != nil {
			return nil, err
		}
		clientAddr, err := sysstat.FreeAddr()
		if err != nil {
			return nil, err
		}
		peerAddr, err := sysstat.FreeAddr()
		if err != nil {
			return nil, err
		}
		clientURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
		p, err := peer.Start("etcd", dir, bin,
			"--name", "default",
			"--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "default="+peerURL,
			"--logger", "zap", "--log-level", "warn")
		if err != nil {
			return nil, err
		}
		if err := p.WaitReady(ctx, "healthy", peer.HTTPReady(clientURL+"/health", `"health":"true"`)); err != nil {
			p.Stop()
			return nil, err
		}
		etcdCli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			p.Stop()
			return nil, err
		}
		cli.Progress("etcd: server pid %d on %s", p.Pid(), clientURL)
		return &etcdSys{p: p, url: clientURL, cli: etcdCli}, nil
	}
}

func (e *etcdSys) spec() string {
	return "etcd://" + strings.TrimPrefix(e.url, "http://") + etcdPrefix
}

func (e *etcdSys) apply(ctx context.Context, c change) error {
	b, err := json.Marshal(map[string]any{"address": c.addr, "port": c.port})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = e.cli.Put(ctx, etcdPrefix+"/"+service+"/"+c.id, string(b))
	return err
}

func (e *etcdSys) peerCPU() float64 { return e.p.CPUSeconds() }

func (e *etcdSys) close() {
	e.cli.Close()
	e.p.Stop()
}

// ---- zookeeper: znodes <base>/bench/<id> holding Curator's
// ServiceInstance JSON, ephemeral as Curator makes a DYNAMIC instance.

type zkSys struct {
	p    *peer.Process
	addr string
	conn *zk.Conn
}

const zkBase = "/services"

// zkJar is where Debian's libzookeeper-java puts the server; its manifest
// names every jar it needs, so it is the whole class path.
const zkJar = "/usr/share/java/zookeeper.jar"

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func startZooKeeper(java, jar string) func(ctx context.Context, tmp string) (system, error) {
	return func(ctx context.Context, tmp string) (system, error) {
		dir, err := os.MkdirTemp(tmp, "zookeeper-")
		if err != nil {
			return nil, err
		}
		addr, err := sysstat.FreeAddr()
		if err != nil {
			return nil, err
		}
		port := portOf(addr)
		// Loopback only, no admin server (it would take port 8080 on every
		// interface), and the four-letter word srvr.
		cfg := fmt.Sprintf("tickTime=200\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n",
			filepath.Join(dir, "data"), port)
		cfgPath := filepath.Join(dir, "zoo.cfg")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		p, err := peer.Start("zookeeper", dir, java,
			"-Xmx256m", "-XX:+UseSerialGC", "-Dzookeeper.log.dir="+dir,
			"-cp", jar, "org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath)
		if err != nil {
			return nil, err
		}
		z := &zkSys{p: p, addr: addr}
		// ruok answers imok before the server takes sessions; srvr tells
		// when it serves requests.
		err = p.WaitReady(ctx, "serving requests", func(ctx context.Context) error {
			r, err := fourLetter(ctx, z.addr, "srvr")
			if err == nil && !strings.HasPrefix(r, "Zookeeper version: ") {
				err = fmt.Errorf("srvr: %q", r)
			}
			return err
		})
		if err != nil {
			p.Stop()
			return nil, err
		}
		conn, _, err := zk.Connect([]string{z.addr}, 10*time.Second, zk.WithLogger(nopLogger{}))
		if err != nil {
			p.Stop()
			return nil, err
		}
		z.conn = conn
		for _, path := range []string{zkBase, zkBase + "/" + service} {
			if _, err := conn.Create(path, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && err != zk.ErrNodeExists {
				z.close()
				return nil, fmt.Errorf("zookeeper: create %s: %w", path, err)
			}
		}
		if _, ok := versions.Load("zookeeper"); !ok {
			versions.Store("zookeeper", zkVersion(z.addr))
		}
		cli.Progress("zookeeper: server pid %d on %s", p.Pid(), z.addr)
		return z, nil
	}
}

// fourLetter sends a ZooKeeper four-letter word and returns the answer.
func fourLetter(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// zkVersion asks the server its version (srvr's first line).
func zkVersion(addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := fourLetter(ctx, addr, "srvr")
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(out, "\n")
	if v, ok := strings.CutPrefix(first, "Zookeeper version: "); ok {
		v, _, _ = strings.Cut(v, ",")
		v, _, _ = strings.Cut(v, "-")
		return "ZooKeeper " + v
	}
	return ""
}

func (z *zkSys) spec() string { return "zookeeper://" + z.addr + zkBase }

func (z *zkSys) apply(ctx context.Context, c change) error {
	data := fmt.Sprintf(`{"name":%q,"id":%q,"address":%q,"port":%d,"sslPort":null,"payload":null,"registrationTimeUTC":%d,"serviceType":"DYNAMIC","uriSpec":null}`,
		service, c.id, c.addr, c.port, time.Now().UnixMilli())
	path := zkBase + "/" + service + "/" + c.id
	if c.update {
		_, err := z.conn.Set(path, []byte(data), -1)
		return err
	}
	_, err := z.conn.Create(path, []byte(data), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	return err
}

func (z *zkSys) peerCPU() float64 { return z.p.CPUSeconds() }

func (z *zkSys) close() {
	if z.conn != nil {
		z.conn.Close()
	}
	z.p.Stop()
}

// ---- dns-srv: dnsmasq serving _bench._tcp.example.com SRV records with
// targets t0..t9.example.com, whose addresses come from a hosts directory
// it watches with inotify: one file per target, replaced whole (written
// aside, then renamed in), which dnsmasq reads again at once. dnsmasq reads
// srv-host lines only at start (not on SIGHUP), so a new SRV record would
// need a restart, during which the source's query would be refused; a new
// address for a target needs only the target's file.
//
// A change adds an address to one target (round robin), and once the
// target has dnsWindow addresses retires its oldest, as a rolling
// replacement does: the answer stays under 1232 bytes (the UDP size the
// source advertises), and a look never removes more than a few of the 40
// backends. (An answer that does not fit loses additional records: see the
// README.)

// dnsPort is the port of every SRV record.
const dnsPort = 8080

// dnsTargets is how many SRV targets the records name, and dnsWindow how
// many addresses each has at most.
const dnsTargets, dnsWindow = 10, 4

type dnsSys struct {
	p     *peer.Process
	addr  string
	dir   string // where files are written before they are renamed into hosts
	hosts string // dnsmasq's hostsdir
	res   *net.Resolver
	addrs [dnsTargets][]string // each target's addresses, oldest first
}

func startDNS(bin string, ttl time.Duration) func(ctx context.Context, tmp string) (system, error) {
	return func(ctx context.Context, tmp string) (system, error) {
		dir, err := os.MkdirTemp(tmp, "dnsmasq-")
		if err != nil {
			return nil, err
		}
		hosts := filepath.Join(dir, "hosts")
		if err := os.Mkdir(hosts, 0o755); err != nil {
			return nil, err
		}
		addr, err := sysstat.FreeAddr()
		if err != nil {
			return nil, err
		}
		port := portOf(addr)
		conf := []string{
			"keep-in-foreground",
			"log-facility=-",
			"pid-file=",
			"port=" + strconv.Itoa(port),
			"listen-address=127.0.0.1",
			"bind-interfaces",
			"no-resolv",
			"no-hosts",
			"local=/example.com/",
			"local-ttl=" + strconv.Itoa(int(ttl/time.Second)),
			"hostsdir=" + hosts,
		}
		// As the benchmark's own user: dnsmasq started as root otherwise
		// becomes nobody (who could not read the temporary directory), and
		// a change of user clears the parent-death signal that kills it if
		// the benchmark is killed.
		if u, err := user.Current(); err == nil {
			conf = append(conf, "user="+u.Username)
			if g, err := user.LookupGroupId(u.Gid); err == nil {
				conf = append(conf, "group="+g.Name)
			}
		}
		for t := range dnsTargets {
			conf = append(conf, fmt.Sprintf("srv-host=_%s._tcp.example.com,t%d.example.com,%d,0,100", service, t, dnsPort))
		}
		confPath := filepath.Join(dir, "dnsmasq.conf")
		if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
		p, err := peer.Start("dnsmasq", dir, bin, "-C", confPath)
		if err != nil {
			return nil, err
		}
		d := &dnsSys{p: p, addr: addr, dir: dir, hosts: hosts}
		d.res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, d.addr)
		}}
		err = p.WaitReady(ctx, "answering", func(ctx context.Context) error {
			_, srvs, err := d.res.LookupSRV(ctx, service, "tcp", "example.com.")
			if err == nil && len(srvs) != dnsTargets {
				err = fmt.Errorf("%d SRV records, want %d", len(srvs), dnsTargets)
			}
			return err
		})
		if err != nil {
			p.Stop()
			return nil, err
		}
		cli.Progress("dnsmasq: pid %d on %s, TTL %s", p.Pid(), d.addr, ttl)
		return d, nil
	}
}

func (d *dnsSys) spec() string {
	return fmt.Sprintf("dns-srv://%s/_%s._tcp.example.com", d.addr, service)
}

func target(c change) int { return c.seq % dnsTargets }

// apply gives the change's target the change's address too, retiring its
// oldest beyond dnsWindow, and renames the target's new file into the
// directory dnsmasq watches.
func (d *dnsSys) apply(ctx context.Context, c change) error {
	if c.update {
		return fmt.Errorf("dns-srv: no in-place changes")
	}
	t := target(c)
	d.addrs[t] = append(d.addrs[t], c.addr)
	if n := len(d.addrs[t]); n > dnsWindow {
		d.addrs[t] = d.addrs[t][n-dnsWindow:]
	}
	var b strings.Builder
	for _, a := range d.addrs[t] {
		fmt.Fprintf(&b, "%s t%d.example.com\n", a, t)
	}
	name := fmt.Sprintf("t%d", t)
	tmp := filepath.Join(d.dir, name)
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d.hosts, name))
}

// served asks dnsmasq for the target's addresses every millisecond until
// the change's address is among them, for up to 2s.
func (d *dnsSys) served(ctx context.Context, c change) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	name := fmt.Sprintf("t%d.example.com.", target(c))
	for ctx.Err() == nil {
		addrs, err := d.res.LookupHost(ctx, name)
		if err == nil && slices.Contains(addrs, c.addr) {
			return time.Now(), true
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, false
}

func (d *dnsSys) peerCPU() float64 { return d.p.CPUSeconds() }

func (d *dnsSys) close() { d.p.Stop() }

// zkPackageVersion reads the zookeeper package's version from dpkg, when
// the server could not be asked.
func zkPackageVersion() string {
	f, err := os.Open("/var/lib/dpkg/status")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	in := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "Package: zookeeper":
			in = true
		case line == "":
			in = false
		case in && strings.HasPrefix(line, "Version: "):
			return "ZooKeeper " + strings.TrimPrefix(line, "Version: ") + " (Debian)"
		}
	}
	return ""
}

// portOf is the port of a host:port address.
func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
