package shmtable

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/discotech/disco/internal/golden"
)

// reader builds testdata/reader.c, the C side, with the sanitizers on.
func reader(t *testing.T, defines ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatal("gcc is not installed: run .ci/deps")
	}
	bin := filepath.Join(t.TempDir(), "reader")
	args := append([]string{"-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE",
		"-fsanitize=address,undefined", "-fno-sanitize-recover=all"}, defines...)
	out, err := exec.Command(gcc, append(args, "-o", bin, "testdata/reader.c")...).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("reader %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sample() []Service {
	return []Service{
		{Name: "web", Magic: netip.MustParseAddr("127.77.220.68"), Backends: []Backend{
			{Addr: netip.MustParseAddr("10.0.1.5"), Port: 8080, Weight: 100},
			{Addr: netip.MustParseAddr("10.0.1.6"), Port: 8081, Weight: 50},
			{Addr: netip.MustParseAddr("2001:db8::7"), Port: 9090, Weight: 1},
			{Addr: netip.MustParseAddr("::ffff:10.0.1.8"), Port: 8080, Weight: 10000},
		}},
		{Name: "db", Magic: netip.MustParseAddr("127.77.116.254"), Backends: []Backend{{Addr: netip.MustParseAddr("10.0.2.1"), Port: 5432, Weight: 100}}},
		{Name: "empty", Magic: netip.MustParseAddr("127.77.0.9")},
		{Name: "a-service-name-of-exactly-sixty-three-characters-xxxxxxxxxxxxxx", Magic: netip.MustParseAddr("127.77.0.10"),
			Backends: []Backend{{Addr: netip.MustParseAddr("10.0.3.1"), Port: 1, Weight: 0}}},
	}
}

// TestGoWritesCReads writes a table from Go and reads it back with the C
// reader of shim/table.h: a dump of everything, and lookups by name and by
// magic address.
func TestGoWritesCReads(t *testing.T) {
	bin := reader(t)
	path := filepath.Join(t.TempDir(), "disco.table")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(sample()); err != nil {
		t.Fatal(err)
	}
	got := run(t, bin, "dump", path) + run(t, bin, "lookup", path, "web", "db", "nosuch", "we", "webx", "@127.77.220.68", "@127.77.0.9", "@127.77.0.1", "@10.0.1.5")
	golden.Check(t, "dump.golden", []byte(got))

	// The Go reader agrees.
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := sample()
	slices.SortFunc(want, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	for i := range want {
		for j := range want[i].Backends {
			want[i].Backends[j].Addr = want[i].Backends[j].Addr.Unmap()
		}
	}
	if diff := cmp.Diff(want, back, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}

	// A second publish replaces the first whole.
	if err := w.Publish([]Service{{Name: "web", Magic: netip.MustParseAddr("127.77.220.68"), Backends: []Backend{{Addr: netip.MustParseAddr("10.9.9.9"), Port: 1, Weight: 1}}}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("services 1\nweb 127.77.220.68 1 10.9.9.9:1/1\n", run(t, bin, "dump", path)); diff != "" {
		t.Errorf("after the second publish (-want +got):\n%s", diff)
	}
}

// TestGrowthSupersedesTheOldFile: a table too big for its slots goes to a
// new, bigger file under the same name, and the old one says so.
func TestGrowthSupersedesTheOldFile(t *testing.T) {
	bin := reader(t)
	path := filepath.Join(t.TempDir(), "disco.table")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Publish(sample())
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	big := Service{Name: "big", Magic: netip.MustParseAddr("127.77.1.1")}
	for i := range 40000 { // 40,000 × 32 bytes: past the 1 MiB slot
		big.Backends = append(big.Backends, Backend{Addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 80, Weight: 1})
	}
	if err := w.Publish(append(sample(), big)); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 64)
	old.ReadAt(hdr, 0)
	if binary.LittleEndian.Uint32(hdr[offFlags:])&FlagSuperseded == 0 {
		t.Errorf("the old file is not marked superseded")
	}
	if got := run(t, bin, "lookup", path, "big", "web"); got != "big -> 127.77.1.1 40000\nweb -> 127.77.220.68 4\n" {
		t.Errorf("after growing: %s", got)
	}
}

// TestReadersNeverSeeATornTable publishes continuously while the C reader
// reads in a loop: every table the writer publishes has all of svc's
// backends on one port, so a read that mixed two tables would show. The
// same reader built without its sequence-lock check shows that it would.
func TestReadersNeverSeeATornTable(t *testing.T) {
	if _, torn := hammer(t, reader(t)); torn != 0 {
		t.Errorf("%d torn reads", torn)
	}
	if reads, torn := hammer(t, reader(t, "-DDISCO_TABLE_TEST_NO_SEQLOCK")); torn == 0 {
		t.Errorf("without the sequence lock, %d reads and none torn: the test cannot tell", reads)
	}
}

// hammer runs the reader's hammer mode for a second against a writer
// publishing as fast as it can, and returns its reads and torn reads.
func hammer(t *testing.T, bin string) (reads, torn int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disco.table")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	publish := func(gen int) {
		s := Service{Name: "svc", Magic: netip.MustParseAddr("127.77.0.5")}
		for i := range 50 + gen%200 {
			s.Backends = append(s.Backends, Backend{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: uint16(gen), Weight: 1})
		}
		if err := w.Publish([]Service{s}); err != nil {
			t.Error(err)
		}
	}
	publish(1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for gen := 2; ctx.Err() == nil; gen++ {
			publish(gen)
		}
	}()
	out, _ := exec.Command(bin, "hammer", path, "1").CombinedOutput()
	cancel()
	<-done
	var gens int
	if _, err := fmt.Sscanf(string(out), "reads %d generations %d torn %d", &reads, &gens, &torn); err != nil || reads == 0 || gens < 2 {
		t.Fatalf("hammer: %s", out)
	}
	t.Logf("%s: %s", filepath.Base(bin), strings.TrimSpace(string(out)))
	return reads, torn
}

func TestPublishRejects(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "disco.table"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, bad := range [][]Service{
		{{Name: ""}},
		{{Name: strings.Repeat("x", 64)}},
		{{Name: "a"}, {Name: "a"}},
		{{Name: "a", Magic: netip.MustParseAddr("::1")}},
	} {
		if err := w.Publish(bad); err == nil {
			t.Errorf("Publish(%v) accepted it", bad)
		}
	}
}
