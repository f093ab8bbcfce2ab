package testpeer

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFreePorts(t *testing.T) {
	addr := FreePort(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreePort = %s, not free: %v", addr, err)
	}
	l.Close()
	addr = FreeUDPTCPPort(t)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("FreeUDPTCPPort = %s, not free on UDP: %v", addr, err)
	}
	pc.Close()
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("FreeUDPTCPPort = %s, not free on TCP: %v", addr, err)
	}
	l.Close()
}

func TestProcess(t *testing.T) {
	sh := Need(t, "sh")
	p := Start(t, sh, "-c", "echo ready; exec sleep 60")
	if err := p.WaitReady(5*time.Second, func() bool { return strings.Contains(p.Output(), "ready") }); err != nil {
		t.Fatal(err)
	}
	if !p.Kill9() {
		t.Error("Kill9 of a running process reports it was not running")
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done is open after Kill9")
	}
	if p.Kill9() {
		t.Error("Kill9 of a process gone reports it was running")
	}

	early := Start(t, sh, "-c", "echo bye >&2; exit 3")
	err := early.WaitReady(5*time.Second, func() bool { return false })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "bye") {
		t.Errorf("WaitReady of a process that exits = %v, want an error with its output", err)
	}

	slow := Start(t, sh, "-c", "exec sleep 60")
	if err := slow.WaitReady(50*time.Millisecond, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "not ready after") {
		t.Errorf("WaitReady past its timeout = %v", err)
	}
	if err := slow.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-slow.Done()
}

func TestWaitUntil(t *testing.T) {
	n := 0
	WaitUntil(t, "three looks", time.Second, func() bool { n++; return n == 3 })
}
