// Package grpcdisco is the gRPC resolver for Discotech: with it registered,
// grpc-go clients dial "disco:///web" and reach the passing instances of
// web, following the registry's changes as they happen (one shared watch
// stream, see client.Resolver). It is the only package of Discotech that
// imports grpc.
//
//	r := client.NewResolver(c)
//	conn, err := grpc.NewClient("disco:///web",
//		grpc.WithResolvers(grpcdisco.NewBuilder(r)),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// "disco:///v2.web" reaches only web's instances tagged v2. Unless the
// client says otherwise, calls are spread round robin over the backends.
package grpcdisco

import (
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
)

// Scheme is the target scheme: disco:///SERVICE.
const Scheme = "disco"

// defaultConfig spreads calls over every backend; gRPC's own default,
// pick_first, would send them all to one.
const defaultConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Builder builds resolvers for disco:/// targets from one client.Resolver.
type Builder struct {
	r *client.Resolver
}

// NewBuilder returns a builder resolving with r; pass it to grpc.NewClient
// with grpc.WithResolvers, or register it with resolver.Register.
func NewBuilder(r *client.Resolver) *Builder { return &Builder{r: r} }

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return Scheme }

// Build implements resolver.Builder.
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	name := strings.TrimPrefix(target.Endpoint(), "/")
	service, tag := name, ""
	if t, s, ok := strings.Cut(name, "."); ok {
		tag, service = t, s
	}
	if err := catalog.ValidateName("service", service); err != nil {
		return nil, err
	}
	sc := cc.ParseServiceConfig(defaultConfig)
	res := &discoResolver{}
	res.stop = b.r.Watch(service, tag, func(ins []*catalog.Instance) {
		state := resolver.State{Addresses: make([]resolver.Address, 0, len(ins))}
		if sc != nil && sc.Err == nil {
			state.ServiceConfig = sc
		}
		for _, in := range ins {
			state.Addresses = append(state.Addresses, resolver.Address{Addr: net.JoinHostPort(in.Address, strconv.Itoa(in.Port))})
		}
		if len(ins) == 0 {
			cc.ReportError(errNoBackend{service})
			return
		}
		cc.UpdateState(state)
	})
	return res, nil
}

type discoResolver struct{ stop func() }

// ResolveNow implements resolver.Resolver: the watch keeps the state
// current, so there is nothing to do.
func (*discoResolver) ResolveNow(resolver.ResolveNowOptions) {}

// Close implements resolver.Resolver.
func (d *discoResolver) Close() { d.stop() }

type errNoBackend struct{ service string }

func (e errNoBackend) Error() string { return "grpcdisco: no passing backend of " + e.service }

var _ resolver.Builder = (*Builder)(nil)
