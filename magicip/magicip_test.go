package magicip

import (
	"errors"
	"net/netip"
	"testing"
)

func TestStableAndOrderFree(t *testing.T) {
	a, err := Allocate(DefaultRange, []string{"web", "db", "api", "web"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Allocate(DefaultRange, []string{"api", "web", "db"})
	for _, name := range []string{"web", "db", "api"} {
		x, ok := a.Addr(name)
		y, _ := b.Addr(name)
		if !ok || x != y || !DefaultRange.Contains(x) {
			t.Errorf("%s: %v and %v", name, x, y)
		}
		if back, _ := a.Service(x); back != name {
			t.Errorf("Service(%v) = %q, want %q", x, back, name)
		}
	}
	if a.Len() != 3 {
		t.Errorf("Len = %d", a.Len())
	}
	// The same name gets the same address whatever else is there, when
	// nothing collides with it.
	c, _ := Allocate(DefaultRange, []string{"web"})
	if x, _ := a.Addr("web"); x != mustAddr(c, "web") {
		t.Errorf("web moved when other services came")
	}
	// Known value: a change to the hash would move every service of every
	// deployment, so it is pinned.
	for name, want := range map[string]string{"web": "127.77.220.68", "db": "127.77.116.254"} {
		if got := mustAddr(a, name); got != netip.MustParseAddr(want) {
			t.Errorf("%s = %v, want %s", name, got, want)
		}
	}
}

func TestCollisionsSettleTheSameWay(t *testing.T) {
	r := netip.MustParsePrefix("10.0.0.0/29") // 6 addresses
	names := []string{"a", "b", "c", "d", "e", "f"}
	x, err := Allocate(r, names)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, n := range names {
		addr := mustAddr(x, n)
		if seen[addr] || addr == netip.MustParseAddr("10.0.0.0") || addr == netip.MustParseAddr("10.0.0.7") {
			t.Errorf("%s got %v, taken or not usable", n, addr)
		}
		seen[addr] = true
	}
	y, _ := Allocate(r, []string{"f", "e", "d", "c", "b", "a"})
	for _, n := range names {
		if mustAddr(x, n) != mustAddr(y, n) {
			t.Errorf("%s: %v then %v", n, mustAddr(x, n), mustAddr(y, n))
		}
	}
	if _, err := Allocate(r, append(names, "g")); !errors.Is(err, ErrFull) {
		t.Errorf("7 names in 6 addresses: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range []string{"::1/120", "10.0.0.0/31", "10.0.0.0/4"} {
		if err := Validate(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("Validate(%s) accepted it", bad)
		}
	}
	if err := Validate(DefaultRange); err != nil {
		t.Error(err)
	}
}

func mustAddr(a *Allocation, name string) netip.Addr {
	addr, _ := a.Addr(name)
	return addr
}
