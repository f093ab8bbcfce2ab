package server

import (
	"bufio"
	"os"
	"sort"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/discotech/disco/internal/golden"
)

// TestMetricsGolden lists every disco_ metric the server exports, with its
// type and help, and checks that docs/metrics.md documents each one.
func TestMetricsGolden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := start(t)
		// Touch every labelled family once so that it is exported.
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1", `{"address":"10.0.0.1","port":80,"ttl":"10s"}`)
		mustCall(t, s, 200, "PUT", "/v1/services/web/instances/w1/heartbeat", "")
		call(s, "PUT", "/v1/services/web/instances/nope", "{")
		rec := mustCall(t, s, 200, "GET", "/metrics", "")

		types := map[string]string{}
		help := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
		for sc.Scan() {
			f := strings.SplitN(sc.Text(), " ", 4)
			if len(f) == 4 && f[0] == "#" && strings.HasPrefix(f[2], "disco_") {
				switch f[1] {
				case "TYPE":
					types[f[2]] = f[3]
				case "HELP":
					help[f[2]] = f[3]
				}
			}
		}
		var names []string
		for n := range types {
			names = append(names, n)
		}
		sort.Strings(names)
		var out strings.Builder
		for _, n := range names {
			out.WriteString(n + " " + types[n] + ": " + help[n] + "\n")
		}
		golden.Check(t, "metrics.golden", []byte(out.String()))

		doc, err := os.ReadFile("../docs/metrics.md")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if !strings.Contains(string(doc), "`"+n+"`") {
				t.Errorf("docs/metrics.md does not document %s", n)
			}
		}
	})
}
