package etcd

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// entry is one key under the prefix, decoded.
type entry struct {
	// service is the key's service; "" when the key names none.
	service string
	// rev is the value's ModRevision: a key left out is logged once for
	// each value it takes.
	rev int64
	// inst is the instance the key holds; nil when the key is left out
	// (err says why) or is a grpc-go tombstone (an Op of Delete).
	inst *catalog.Instance
	err  error
}

// record is a value of Discotech's own layout: the instance fields of a
// catalog.Registration, and a status. Fields other tools add are ignored.
type record struct {
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags"`
	Meta    map[string]string `json:"meta"`
	Weight  *int              `json:"weight"`
	Status  catalog.Status    `json:"status"`
}

// endpoint is a value of grpc-go's layout, as
// go.etcd.io/etcd/client/v3/naming/endpoints writes it (its internal.Update).
type endpoint struct {
	Op       uint8
	Addr     string
	Metadata json.RawMessage
}

// The Op of a grpc-go endpoint: Delete marks the endpoint gone.
const (
	opAdd    = 0
	opDelete = 1
)

// decode decodes the key and value of an instance under prefix (which ends
// in "/"). The layout is told by the value: a JSON object with an "Addr"
// and neither "address" nor "port" is grpc-go's, anything else is ours.
func decode(prefix, key string, value []byte) entry {
	svc, rest, ok := strings.Cut(strings.TrimPrefix(key, prefix), "/")
	if !ok || rest == "" {
		return entry{err: fmt.Errorf("the key is not %s<service>/<id>", prefix)}
	}
	if err := catalog.ValidateName("service", svc); err != nil {
		return entry{err: fmt.Errorf("the key's %w", err)}
	}
	e := entry{service: svc}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(value, &fields); err != nil {
		e.err = fmt.Errorf("the value is not a JSON object: %w", err)
		return e
	}
	hasAddr, ours := false, false
	for k := range fields {
		switch strings.ToLower(k) {
		case "addr":
			hasAddr = true
		case "address", "port":
			ours = true
		}
	}
	if hasAddr && !ours {
		e.inst, e.err = decodeEndpoint(svc, value)
	} else {
		e.inst, e.err = decodeRecord(svc, rest, value)
	}
	return e
}

// decodeRecord decodes a value of our layout; id is the rest of the key.
func decodeRecord(svc, id string, value []byte) (*catalog.Instance, error) {
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return nil, fmt.Errorf("the value is not an instance: %w", err)
	}
	if r.Status != "" && !r.Status.Valid() {
		return nil, fmt.Errorf("status %q is not passing, warning or critical", r.Status)
	}
	in := &catalog.Instance{Service: svc, ID: id, Address: r.Address, Port: r.Port, Tags: r.Tags, Meta: r.Meta, Weight: catalog.DefaultWeight, Status: r.Status}
	if r.Weight != nil {
		in.Weight = *r.Weight
	}
	return normalize(in)
}

// decodeEndpoint decodes a value of grpc-go's layout. The id is made from
// the address, so that the key's last segment may be anything.
func decodeEndpoint(svc string, value []byte) (*catalog.Instance, error) {
	var ep endpoint
	if err := json.Unmarshal(value, &ep); err != nil {
		return nil, fmt.Errorf("the value is not a grpc-go endpoint: %w", err)
	}
	switch ep.Op {
	case opAdd:
	case opDelete:
		return nil, nil
	default:
		return nil, fmt.Errorf("the endpoint's Op is %d, neither 0 (add) nor 1 (delete)", ep.Op)
	}
	host, port, err := net.SplitHostPort(ep.Addr)
	if err != nil {
		return nil, fmt.Errorf("the endpoint's Addr %q is not host:port", ep.Addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("the endpoint's Addr %q has no numeric port", ep.Addr)
	}
	in := &catalog.Instance{Service: svc, ID: idFromAddr(host, port), Address: host, Port: n, Weight: catalog.DefaultWeight}
	in.Meta = endpointMeta(ep.Metadata)
	if in.Meta != nil {
		// Metadata is grpc-go's to shape: when it makes no valid meta,
		// the instance stands without.
		c := *in
		if got, err := normalize(&c); err == nil {
			return got, nil
		}
		in.Meta = nil
	}
	return normalize(in)
}

// endpointMeta takes the string values of a Metadata object; nil when
// there are none.
func endpointMeta(raw json.RawMessage) map[string]string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	var meta map[string]string
	for k, v := range m {
		if s, ok := v.(string); ok {
			if meta == nil {
				meta = map[string]string{}
			}
			meta[k] = s
		}
	}
	return meta
}

// normalize validates in and tidies it for comparison.
func normalize(in *catalog.Instance) (*catalog.Instance, error) {
	if len(in.Tags) == 0 {
		in.Tags = nil
	}
	if len(in.Meta) == 0 {
		in.Meta = nil
	}
	if err := source.Normalize(in); err != nil {
		return nil, fmt.Errorf("the instance is not valid: %w", err)
	}
	return in, nil
}

// idFromAddr makes an instance id (a DNS label, by catalog.Label) from an
// address: 10.0.1.5:8080 → 10-0-1-5-8080, web-1.example.com:443 →
// web-1-example-com-443, and IPv6 addresses written out in full first, so
// that "::" cannot make two addresses one id: [2001:db8::1]:80 →
// 2001-0db8-0000-0000-0000-0000-0000-0001-80.
func idFromAddr(host, port string) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		host = a.WithZone("").StringExpanded()
		if z := a.Zone(); z != "" {
			host += "-" + z
		}
	}
	return catalog.Label(host + "-" + port)
}
