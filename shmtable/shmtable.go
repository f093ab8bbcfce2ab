// Package shmtable writes the shared-memory table that libdisco.so reads in
// every process of a node: each service's name, magic address and eligible
// backends (address, port, weight). The agent writes it; readers map it
// read-only and never block, lock, allocate or make a system call to read
// it. The binary layout is in docs/shmtable.md and in shim/table.h, and a
// test writes a table here and reads it back with the C reader.
//
// Publishing is a double buffer with a sequence lock per slot: the writer
// fills the slot readers are not directed to (its sequence number odd while
// it writes), then points the header at it. A reader picks the active slot,
// reads, and reads again if the slot's sequence number moved meanwhile, so
// it never uses a torn table. When a table outgrows its slots, the writer
// makes a bigger file, renames it over the old one and marks the old one
// superseded, which tells readers to map the new one.
package shmtable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultPath is where the agent writes the table.
const DefaultPath = "/dev/shm/disco.table"

// The layout's constants; docs/shmtable.md and shim/table.h say the same.
const (
	Magic      = "DISCOTBL"
	Version    = 1
	HeaderSize = 4096

	// Header fields' offsets.
	offMagic      = 0
	offVersion    = 8
	offHeaderSize = 12
	offSlotSize   = 16
	offActive     = 24
	offFlags      = 28
	offGeneration = 32
	offWriterPID  = 40

	// FlagSuperseded: a newer file has replaced this one; map it again.
	FlagSuperseded = 1

	// Slot fields' offsets, from the slot's start.
	slotSeq         = 0
	slotGeneration  = 8
	slotNServices   = 16
	slotNBackends   = 20
	slotServicesOff = 24
	slotBackendsOff = 28
	slotByAddrOff   = 32
	slotNByAddr     = 36
	SlotHeaderSize  = 64

	// ServiceSize is a service entry's size: name[64], magic IPv4[4],
	// first backend, backend count, total weight (u32 each), 16 reserved.
	ServiceSize = 96
	// MaxName is the longest service name (a DNS label).
	MaxName = 63
	// BackendSize is a backend entry's size: family u8, 1 reserved, port
	// u16, weight u32, address[16], 8 reserved.
	BackendSize = 32
	// ByAddrSize is an entry of the index by magic address: the address as
	// a big-endian u32 in host order, and the service's index.
	ByAddrSize = 8

	// MinSlotSize is the smallest slot the writer makes.
	MinSlotSize = 1 << 20
)

// Service is one service as the table holds it.
type Service struct {
	Name     string
	Magic    netip.Addr // IPv4
	Backends []Backend
}

// Backend is one eligible backend.
type Backend struct {
	Addr   netip.Addr
	Port   uint16
	Weight uint32
}

// Writer owns a table file.
type Writer struct {
	path     string
	f        *os.File
	mem      []byte
	slotSize int
	gen      uint64
}

// Create makes (or replaces) the table file at path, empty, and maps it.
func Create(path string) (*Writer, error) {
	w := &Writer{path: path}
	if err := w.grow(MinSlotSize); err != nil {
		return nil, err
	}
	return w, nil
}

// Path is the table file's path.
func (w *Writer) Path() string { return w.path }

// grow replaces the file with a fresh one of slots of at least size bytes.
func (w *Writer) grow(size int) error {
	slot := MinSlotSize
	for slot < size {
		slot *= 2
	}
	dir := filepath.Dir(w.path)
	f, err := os.CreateTemp(dir, filepath.Base(w.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("shmtable: %w", err)
	}
	total := HeaderSize + 2*slot
	if err := f.Truncate(int64(total)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("shmtable: %w", err)
	}
	// Readable by every process of the node: the table holds nothing a
	// process could not learn from the agent's DNS.
	f.Chmod(0o644)
	mem, err := unix.Mmap(int(f.Fd()), 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("shmtable: mmap: %w", err)
	}
	copy(mem[offMagic:], Magic)
	binary.LittleEndian.PutUint32(mem[offVersion:], Version)
	binary.LittleEndian.PutUint32(mem[offHeaderSize:], HeaderSize)
	binary.LittleEndian.PutUint64(mem[offSlotSize:], uint64(slot))
	binary.LittleEndian.PutUint32(mem[offWriterPID:], uint32(os.Getpid()))
	old, oldMem := w.f, w.mem
	w.f, w.mem, w.slotSize = f, mem, slot
	if old != nil {
		// Carry the current table over before the new file takes the name.
		w.copyActive(oldMem)
	}
	if err := os.Rename(f.Name(), w.path); err != nil {
		return fmt.Errorf("shmtable: %w", err)
	}
	if old != nil {
		atomic.OrUint32(u32(oldMem, offFlags), FlagSuperseded)
		unix.Munmap(oldMem)
		old.Close()
	}
	return nil
}

// copyActive copies the active slot of old into this file's slot 0 and
// makes it active.
func (w *Writer) copyActive(old []byte) {
	oldSlot := int(binary.LittleEndian.Uint64(old[offSlotSize:]))
	a := int(atomic.LoadUint32(u32(old, offActive)))
	src := old[HeaderSize+a*oldSlot : HeaderSize+(a+1)*oldSlot]
	copy(w.mem[HeaderSize:], src)
	atomic.StoreUint64(u64(w.mem, offGeneration), atomic.LoadUint64(u64(old, offGeneration)))
}

// Publish writes services as the new table. Services are sorted by name;
// backends keep their order.
func (w *Writer) Publish(services []Service) error {
	services = slices.Clone(services)
	slices.SortFunc(services, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	nb := 0
	for i, s := range services {
		if len(s.Name) == 0 || len(s.Name) > MaxName || strings.IndexByte(s.Name, 0) >= 0 {
			return fmt.Errorf("shmtable: service name %q: want 1-%d bytes", s.Name, MaxName)
		}
		if i > 0 && services[i-1].Name == s.Name {
			return fmt.Errorf("shmtable: service %q given twice", s.Name)
		}
		if s.Magic.IsValid() && !s.Magic.Is4() {
			return fmt.Errorf("shmtable: service %q: magic address %v is not IPv4", s.Name, s.Magic)
		}
		nb += len(s.Backends)
	}
	servicesOff := SlotHeaderSize
	backendsOff := servicesOff + len(services)*ServiceSize
	byAddrOff := backendsOff + nb*BackendSize
	need := byAddrOff + len(services)*ByAddrSize
	if need > w.slotSize {
		if err := w.grow(2 * need); err != nil {
			return err
		}
	}
	active := atomic.LoadUint32(u32(w.mem, offActive))
	next := 1 - active
	slot := w.mem[HeaderSize+int(next)*w.slotSize : HeaderSize+int(next+1)*w.slotSize]

	atomic.AddUint64(u64(slot, slotSeq), 1) // odd: being written
	w.gen = atomic.LoadUint64(u64(w.mem, offGeneration)) + 1
	binary.LittleEndian.PutUint64(slot[slotGeneration:], w.gen)
	binary.LittleEndian.PutUint32(slot[slotNServices:], uint32(len(services)))
	binary.LittleEndian.PutUint32(slot[slotNBackends:], uint32(nb))
	binary.LittleEndian.PutUint32(slot[slotServicesOff:], uint32(servicesOff))
	binary.LittleEndian.PutUint32(slot[slotBackendsOff:], uint32(backendsOff))
	binary.LittleEndian.PutUint32(slot[slotByAddrOff:], uint32(byAddrOff))
	type byAddr struct{ addr, idx uint32 }
	var index []byAddr
	b := 0
	for i, s := range services {
		e := slot[servicesOff+i*ServiceSize : servicesOff+(i+1)*ServiceSize]
		clear(e)
		copy(e[0:64], s.Name)
		var total uint32
		for _, be := range s.Backends {
			total += be.Weight
		}
		if s.Magic.IsValid() {
			m := s.Magic.As4()
			copy(e[64:68], m[:])
			index = append(index, byAddr{binary.BigEndian.Uint32(m[:]), uint32(i)})
		}
		binary.LittleEndian.PutUint32(e[68:], uint32(b))
		binary.LittleEndian.PutUint32(e[72:], uint32(len(s.Backends)))
		binary.LittleEndian.PutUint32(e[76:], total)
		for _, be := range s.Backends {
			x := slot[backendsOff+b*BackendSize : backendsOff+(b+1)*BackendSize]
			clear(x)
			addr := be.Addr.Unmap()
			if addr.Is4() {
				x[0] = 4
				a4 := addr.As4()
				copy(x[8:], a4[:])
			} else {
				x[0] = 6
				a16 := addr.As16()
				copy(x[8:], a16[:])
			}
			binary.LittleEndian.PutUint16(x[2:], be.Port)
			binary.LittleEndian.PutUint32(x[4:], be.Weight)
			b++
		}
	}
	slices.SortFunc(index, func(a, b byAddr) int { return int(int64(a.addr) - int64(b.addr)) })
	for i, e := range index {
		x := slot[byAddrOff+i*ByAddrSize:]
		binary.LittleEndian.PutUint32(x[0:], e.addr)
		binary.LittleEndian.PutUint32(x[4:], e.idx)
	}
	// The index holds only services with a magic address.
	binary.LittleEndian.PutUint32(slot[slotNByAddr:], uint32(len(index)))
	atomic.AddUint64(u64(slot, slotSeq), 1) // even: complete
	atomic.StoreUint64(u64(w.mem, offGeneration), w.gen)
	atomic.StoreUint32(u32(w.mem, offActive), next)
	return nil
}

// Close unmaps the table and removes the file: with no agent, programs pass
// through unchanged.
func (w *Writer) Close() error {
	if w.mem == nil {
		return nil
	}
	atomic.OrUint32(u32(w.mem, offFlags), FlagSuperseded)
	err := errors.Join(unix.Munmap(w.mem), w.f.Close(), os.Remove(w.path))
	w.mem = nil
	return err
}

// u32 and u64 point at an aligned field of the mapped memory for atomic
// access; readers in other processes use the same fields with C11 atomics.
func u32(mem []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
func u64(mem []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&mem[off])) }

// Read returns the services of the table at path, read the way the C
// reader does (the active slot under its sequence lock). It is for tests
// and diagnosis; libdisco.so reads with shim/table.h.
func Read(path string) ([]Service, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shmtable: %w", err)
	}
	for range 64 {
		services, seq, err := decode(b)
		if err != nil {
			return nil, err
		}
		// A file read is a copy: if the writer was in the slot, read again.
		if seq&1 == 0 {
			return services, nil
		}
		if b, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("shmtable: %w", err)
		}
	}
	return nil, errors.New("shmtable: the table kept changing while being read")
}

func decode(b []byte) ([]Service, uint64, error) {
	if len(b) < HeaderSize || string(b[:8]) != Magic || binary.LittleEndian.Uint32(b[offVersion:]) != Version {
		return nil, 0, errors.New("shmtable: not a table of this version")
	}
	slotSize := int(binary.LittleEndian.Uint64(b[offSlotSize:]))
	active := int(binary.LittleEndian.Uint32(b[offActive:]) & 1)
	if slotSize < SlotHeaderSize || HeaderSize+2*slotSize > len(b) {
		return nil, 0, errors.New("shmtable: slot size does not fit the file")
	}
	slot := b[HeaderSize+active*slotSize : HeaderSize+(active+1)*slotSize]
	seq := binary.LittleEndian.Uint64(slot[slotSeq:])
	ns := int(binary.LittleEndian.Uint32(slot[slotNServices:]))
	nb := int(binary.LittleEndian.Uint32(slot[slotNBackends:]))
	so := int(binary.LittleEndian.Uint32(slot[slotServicesOff:]))
	bo := int(binary.LittleEndian.Uint32(slot[slotBackendsOff:]))
	if so+ns*ServiceSize > slotSize || bo+nb*BackendSize > slotSize {
		return nil, seq | 1, nil
	}
	out := make([]Service, 0, ns)
	for i := range ns {
		e := slot[so+i*ServiceSize : so+(i+1)*ServiceSize]
		name := string(e[:64])
		if j := strings.IndexByte(name, 0); j >= 0 {
			name = name[:j]
		}
		s := Service{Name: name}
		if m := [4]byte(e[64:68]); m != [4]byte{} {
			s.Magic = netip.AddrFrom4(m)
		}
		first := int(binary.LittleEndian.Uint32(e[68:]))
		count := int(binary.LittleEndian.Uint32(e[72:]))
		if first+count > nb {
			return nil, seq | 1, nil
		}
		for k := first; k < first+count; k++ {
			x := slot[bo+k*BackendSize : bo+(k+1)*BackendSize]
			be := Backend{Port: binary.LittleEndian.Uint16(x[2:]), Weight: binary.LittleEndian.Uint32(x[4:])}
			if x[0] == 4 {
				be.Addr = netip.AddrFrom4([4]byte(x[8:12]))
			} else {
				be.Addr = netip.AddrFrom16([16]byte(x[8:24]))
			}
			s.Backends = append(s.Backends, be)
		}
		out = append(out, s)
	}
	return out, seq, nil
}
