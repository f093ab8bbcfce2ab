package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discotech/disco/internal/testpeer"
)

// TestMakeDevAsTheREADMESays runs the README's first command, make dev,
// from the repository root, then every command its banner prints under
// "Try", and checks each answer: what a newcomer sees in their first minute.
func TestMakeDevAsTheREADMESays(t *testing.T) {
	testpeer.Need(t, "make")
	testpeer.Need(t, "dig")
	testpeer.Need(t, "curl")
	root, _ := filepath.Abs("..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "\nmake dev ") {
		t.Fatal("the README no longer starts with make dev; update this test")
	}

	var out testpeer.Buffer
	cmd := exec.Command("make", "dev")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Ctrl-C, as the banner says; then no mercy.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("make dev output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(5 * time.Minute) // make builds first
	for !strings.Contains(out.String(), "Ctrl-C stops it.") {
		select {
		case <-exited:
			t.Fatalf("make dev exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make dev printed no banner:\n%s", out.String())
		}
	}

	// What each printed command must answer, by what the command is.
	expect := []struct{ match, want string }{
		{"/v2/", "hello from web-3 (web 2.0.0)"},
		{"curl -s http://127.0.0.1:7780/", "hello from web-"},
		{"+short web.service.disco", "127.0.0.1"},
		{"SRV _web._tcp.service.disco", "web-1.web.instance.disco."},
		{" exec ", "hello from web-"},
		{" instances web", "web-3"},
		{"/v1/services/web", `"id":"web-2"`},
		{"/backends", `"vitals_factor": 1`},
	}
	cmds := tryCommands(out.String())
	if len(cmds) < len(expect) {
		t.Fatalf("the banner printed %d commands to try, want at least %d:\n%s", len(cmds), len(expect), out.String())
	}
	for _, c := range cmds {
		want := ""
		for _, e := range expect {
			if strings.Contains(c, e.match) {
				want = e.want
				break
			}
		}
		if want == "" {
			t.Errorf("no expectation for the printed command %q; add one", c)
			continue
		}
		var got string
		testpeer.WaitUntil(t, "`"+c+"` to answer "+want, patience, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sh := exec.CommandContext(ctx, "sh", "-c", c)
			sh.Dir = root
			b, _ := sh.CombinedOutput()
			got = string(b)
			return strings.Contains(got, want)
		})
		first, _, _ := strings.Cut(strings.TrimSpace(got), "\n")
		t.Logf("%s → %s", c, first)
	}
}

// tryCommands are the commands the banner prints under "Try", without
// their comments.
func tryCommands(banner string) []string {
	var cmds []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(banner))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Try, in another terminal:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			return cmds
		case in:
			c, _, _ := strings.Cut(line, " # ")
			cmds = append(cmds, strings.TrimSpace(c))
		}
	}
	return cmds
}
