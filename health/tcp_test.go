package health

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/google/go-cmp/cmp"
)

func TestTCP(t *testing.T) {
	// The kernel completes the handshake from the listen backlog, so
	// nothing needs to Accept.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	open := ln.Addr().String()
	closed := closedAddr(t)

	tests := []struct {
		name   string
		target string
		want   catalog.Status
		output []string
	}{
		{"open port", open, catalog.Passing, []string{"TCP connect " + open + ": success"}},
		{"closed port", closed, catalog.Critical, []string{"dial tcp " + closed + ": connect: connection refused"}},
		{"no port", "127.0.0.1", catalog.Critical, []string{"missing port in address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkWithin(t, TCP{}, tt.target, 5*time.Second)
			if diff := cmp.Diff(judged{Status: tt.want}, judge(got)); diff != "" {
				t.Errorf("Check(%s) mismatch (-want +got):\n%s\nOutput: %s", tt.target, diff, got.Output)
			}
			wantOutput(t, got.Output, tt.output...)
		})
	}
}

// TestTCPDeadline checks that a run whose time is up does not dial.
func TestTCPDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	got := TCP{}.Check(ctx, ln.Addr().String())
	if got.Status != catalog.Critical {
		t.Errorf("Status = %s, want critical; Output: %s", got.Status, got.Output)
	}
	wantOutput(t, got.Output, "i/o timeout")
}
