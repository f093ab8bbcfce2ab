//go:build disco_shim

package shim

import _ "embed"

// The library make build compiled: see the Makefile's shim rule.
//
//go:embed libdisco.so
var embedded []byte

func init() { library = embedded }
