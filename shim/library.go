package shim

// library is set by embedded.go when the binary is built with -tags
// disco_shim (as make build does); otherwise it stays nil.
var library []byte

// Library returns libdisco.so as the binary carries it, or nil when it was
// built without it (then disco exec looks for the file beside the binary,
// or where DISCO_SHIM says).
func Library() []byte { return library }
