// Package cli is what the end-to-end benchmarks' commands do alike: run
// until done or interrupted, report an error and exit with the status that
// tells a usage error from a failed run, and print progress to stderr
// while the results go to stdout.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/discotech/disco/bench/internal/sysstat"
)

// Main runs run with a context that ends at Ctrl-C or SIGTERM, so that the
// benchmark stops its peers itself, and exits 1 with run's error prefixed
// with name ("bench/router") if it fails.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Usage exits 2 with err prefixed with name: the command line is wrong.
func Usage(name string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(2)
}

// Progress prints a line about what is happening to stderr, with the time
// of day, since a run takes minutes.
func Progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// List splits a comma-separated flag value (-only) into its names, trimmed
// and in lower case.
func List(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Env describes a run for its report: the command as it could be typed
// again, when, and on what.
type Env struct {
	Command string // "go run ./bench/router -duration 2s"
	Date    string // UTC, to the minute
	Go      string // the benchmark's Go version
	CPU     string // the CPU's model name
	Cores   int
	Kernel  string // "Linux 6.1.0-18-amd64"
}

// Round is s for round number round of interleaved rounds: starting one
// element further along each round (wrapping around), so that no path of a
// benchmark always runs first, or always right after the same one.
func Round[T any](s []T, round int) []T {
	if len(s) == 0 {
		return nil
	}
	i := round % len(s)
	return append(slices.Clone(s[i:]), s[:i]...)
}

// NewEnv describes this run of the benchmark name ("router").
func NewEnv(name string) Env {
	return Env{
		Command: strings.TrimSpace("go run ./bench/" + name + " " + strings.Join(os.Args[1:], " ")),
		Date:    time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Go:      runtime.Version(),
		CPU:     sysstat.CPUModel(),
		Cores:   runtime.NumCPU(),
		Kernel:  sysstat.Kernel(),
	}
}

// Machine is the date, Go, the CPU and the kernel, comma-separated.
func (e Env) Machine() string {
	return fmt.Sprintf("%s, %s, %s, %d cores, %s", e.Date, e.Go, e.CPU, e.Cores, e.Kernel)
}

// PrintBusy says how long the measuring took and how much CPU other
// processes used meanwhile (other, in seconds), with a warning when that
// passed 5% of what the machine had: then the figures are disturbed.
func (e Env) PrintBusy(w io.Writer, wall time.Duration, other float64) {
	have := wall.Seconds() * float64(e.Cores)
	fmt.Fprintf(w, "measuring took %s; other processes used %.1f CPU seconds of the %.0f the machine had\n", wall.Round(time.Second), other, have)
	if other > 0.05*have {
		fmt.Fprintln(w, "WARNING: other processes were busy during the run; the figures are disturbed: re-run on a quiet machine")
	}
}
