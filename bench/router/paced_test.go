package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseResponse(t *testing.T) {
	// Whole: the size is the input's, every byte of it the response.
	type got struct {
		Status     int
		Whole, Err bool
	}
	const head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
	for _, c := range []struct {
		name, in string
		want     got
	}{
		{"whole, Content-Length", head + "Content-Length: 3\r\n\r\nok\n", got{200, true, false}},
		{"body not in yet", head + "Content-Length: 3\r\n\r\nok", got{200, false, false}},
		{"headers not in yet", head + "Content-Len", got{0, false, false}},
		{"no body", "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", got{204, true, false}},
		{"502", "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n", got{502, true, false}},
		{"chunked, whole", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n\r\n", got{200, true, false}},
		{"chunked, trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nok\n\r\n0\r\nT: 1\r\n\r\n", got{200, true, false}},
		{"chunked, last chunk not in yet", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n", got{200, false, false}},
		{"chunked, bad size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", got{200, false, true}},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", got{0, false, true}},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", got{0, false, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, size, err := parseResponse([]byte(c.in))
			if size != 0 && size != len(c.in) {
				t.Fatalf("parseResponse(%q): size %d of %d bytes", c.in, size, len(c.in))
			}
			if diff := cmp.Diff(c.want, got{status, size != 0, err != nil}); diff != "" {
				t.Errorf("parseResponse(%q) (-want +got):\n%s", c.in, diff)
			}
		})
	}
}

// TestMedianIsTheMiddleRun: the median of the rounds is the middle run,
// the upper middle of an even count.
func TestMedianIsTheMiddleRun(t *testing.T) {
	for _, tc := range []struct {
		runs []int
		want int
	}{{[]int{5}, 5}, {[]int{9, 1, 5}, 5}, {[]int{4, 1, 3, 2}, 3}} {
		if got := median(tc.runs, func(a, b int) int { return a - b }); got != tc.want {
			t.Errorf("median of %v: %d, want %d", tc.runs, got, tc.want)
		}
	}
}

// TestRoundRatiosPairTheRounds: each round's ratio is of that round's
// runs, and there is none unless both paths ran every round.
func TestRoundRatiosPairTheRounds(t *testing.T) {
	a := &leg{peaks: []float64{60, 50, 40}}
	b := &leg{peaks: []float64{50, 50, 80}}
	if diff := cmp.Diff([]float64{1.2, 1, 0.5}, roundRatios(a, b)); diff != "" {
		t.Errorf("roundRatios (-want +got):\n%s", diff)
	}
	if got := roundRatios(a, &leg{peaks: []float64{50, 50}}); got != nil {
		t.Errorf("roundRatios with a round missing: %v, want nil", got)
	}
}
