package sysstat

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestPinConfinesEveryThread: a process pinned to CPU 0 has every thread
// confined to it, and so has its child.
func TestPinConfinesEveryThread(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to confine to")
	}
	cmd := exec.Command("sh", "-c", "sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); len(tree(cmd.Process.Pid)) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("sh did not start its child")
		}
	}
	if err := Pin(cmd.Process.Pid, []int{0}); err != nil {
		t.Fatal(err)
	}
	for _, pid := range tree(cmd.Process.Pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\nCpus_allowed_list:\t0\n") {
			t.Errorf("process %d may run on more than CPU 0:\n%s", pid, b)
		}
	}
}
