package grpcdisco_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/client"
	"github.com/discotech/disco/client/grpcdisco"
	"github.com/discotech/disco/server"
)

// TestCallsSpreadAndFollowRemoval runs three real gRPC servers registered
// as web, calls them through disco:///web, and checks that calls reach all
// three and stop reaching one once it is deregistered.
func TestCallsSpreadAndFollowRemoval(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.Raft, cfg.RaftMultiplier = t.TempDir(), "", 1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.HTTP, cfg.DNS.Addr = "127.0.0.1:0", ""
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, l)
	<-srv.Store().Restored()
	c, _ := client.New(l.Addr().String(), nil)

	var addrs []string
	for i := range 3 {
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		healthpb.RegisterHealthServer(gs, health.NewServer())
		go gs.Serve(gl)
		defer gs.Stop()
		host, port, _ := net.SplitHostPort(gl.Addr().String())
		p, _ := strconv.Atoi(port)
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.Register(ctx, "web", "g"+strconv.Itoa(i), catalog.Registration{Address: host, Port: p})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		addrs = append(addrs, gl.Addr().String())
	}

	r := client.NewResolver(c)
	defer r.Close()
	conn, err := grpc.NewClient("disco:///web", grpc.WithResolvers(grpcdisco.NewBuilder(r)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	call := func() string {
		t.Helper()
		var p peer.Peer
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true)); err != nil {
			t.Fatalf("Check: %v", err)
		}
		return p.Addr.String()
	}
	seen := map[string]int{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		for range 30 {
			seen[call()]++
		}
	}
	if len(seen) != 3 {
		t.Fatalf("calls reached %v, want all of %v", seen, addrs)
	}
	if err := c.Deregister(ctx, "web", "g0"); err != nil {
		t.Fatal(err)
	}
	// Once the change has reached the client, g0 gets no more calls.
	deadline = time.Now().Add(10 * time.Second)
	for {
		hits := 0
		for range 30 {
			if call() == addrs[0] {
				hits++
			}
		}
		if hits == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deregistered backend still gets calls")
		}
	}
}

func TestBadTarget(t *testing.T) {
	c, _ := client.New("127.0.0.1:1", nil)
	r := client.NewResolver(c)
	defer r.Close()
	conn, err := grpc.NewClient("disco:///Not_A_Service", grpc.WithResolvers(grpcdisco.NewBuilder(r)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		// The error comes at the first use.
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	}
	if err == nil {
		t.Fatal("a target that is not a service name was accepted")
	}
}
