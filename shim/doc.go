// Package shim holds the C source of libdisco.so, the LD_PRELOAD library
// that puts unmodified, dynamically linked programs on Discotech: a name
// under the service domain resolves to the service's magic address, and a
// connect() to a magic address goes to one of the service's backends, read
// from the agent's shared-memory table (see package shmtable and table.h).
//
// Its Go API is Library: the built library, when the binary carries it
// (make build compiles it and builds disco with -tags disco_shim, so that
// disco exec needs nothing else installed). The package's tests build the
// library with the
// Makefile's shim rule (plainly, and with ASan and UBSan), write tables with
// package shmtable, start backends on loopback and run real programs under
// it: curl, python3, C clients from testdata and a Go program built with
// cgo. docs/shim.md tells how the library works and where it stops.
package shim
