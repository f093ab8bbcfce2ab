// Package magicip gives every service a stable "magic" address in a range
// of loopback addresses (127.77.0.0/16 by default): the address the agent's
// DNS and libdisco.so answer for the service's name, and the one its
// connect() interception and fallback proxy recognise.
//
// The address is derived from the service's name alone: FNV-1a of the name,
// reduced to the range. Two names that land on the same address are settled
// the same way everywhere: names are placed in sorted order, and a name whose
// address is taken moves to the next free one (wrapping around). So every
// process and every host with the same set of services agrees, without
// talking; and a service keeps its address while no new name collides ahead
// of it, which with tens of services in 65,534 addresses is nearly always.
package magicip

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
)

// DefaultRange is the contract's magic range: loopback, so the fallback
// proxy can listen on its addresses without privileges.
var DefaultRange = netip.MustParsePrefix("127.77.0.0/16")

// ErrFull is returned when there are more services than addresses.
var ErrFull = errors.New("magicip: more services than addresses in the range")

// Allocation maps service names to their magic addresses and back.
type Allocation struct {
	byName map[string]netip.Addr
	byAddr map[netip.Addr]string
}

// Validate checks that r can hold magic addresses: IPv4, between /8 and /30.
func Validate(r netip.Prefix) error {
	if !r.IsValid() || !r.Addr().Is4() || r.Bits() < 8 || r.Bits() > 30 {
		return fmt.Errorf("magicip: range %s: want an IPv4 prefix between /8 and /30, like %s", r, DefaultRange)
	}
	return nil
}

// Allocate gives each name an address in r. Names may repeat; the result
// does not depend on their order.
func Allocate(r netip.Prefix, names []string) (*Allocation, error) {
	if err := Validate(r); err != nil {
		return nil, err
	}
	r = r.Masked()
	size := uint32(1) << (32 - r.Bits())
	usable := size - 2 // not the network's first and last address
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	if uint32(len(sorted)) > usable {
		return nil, fmt.Errorf("%w: %d services, %d addresses in %s", ErrFull, len(sorted), usable, r)
	}
	base := r.Addr().As4()
	first := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	taken := make(map[uint32]bool, len(sorted))
	a := &Allocation{byName: make(map[string]netip.Addr, len(sorted)), byAddr: make(map[netip.Addr]string, len(sorted))}
	for _, name := range sorted {
		slot := Slot(name, usable)
		for taken[slot] {
			slot = (slot + 1) % usable
		}
		taken[slot] = true
		v := first + 1 + slot
		addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		a.byName[name] = addr
		a.byAddr[addr] = name
	}
	return a, nil
}

// Slot is a name's preferred place among n addresses: FNV-1a (32 bits) of
// the name, modulo n.
func Slot(name string, n uint32) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32() % n
}

// Addr returns the magic address of a service.
func (a *Allocation) Addr(name string) (netip.Addr, bool) {
	addr, ok := a.byName[name]
	return addr, ok
}

// Service returns the service a magic address stands for.
func (a *Allocation) Service(addr netip.Addr) (string, bool) {
	name, ok := a.byAddr[addr.Unmap()]
	return name, ok
}

// Len is the number of services allocated.
func (a *Allocation) Len() int { return len(a.byName) }
