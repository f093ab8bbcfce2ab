// Package figure formats the numbers the end-to-end benchmarks print, the
// same way in every benchmark's tables and markdown summaries.
package figure

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Thousands formats v rounded, with thousands separators: 12,345; "-" for
// NaN and infinities.
func Thousands(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	s := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	var b strings.Builder
	if v < 0 && math.Round(v) != 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Ratio formats r as "1.23×", with more digits below 0.1 and none from 10;
// "-" when r is not a positive number.
func Ratio(r float64) string {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0) || r <= 0:
		return "-"
	case r >= 10:
		return fmt.Sprintf("%.0f×", r)
	case r >= 0.1:
		return fmt.Sprintf("%.2f×", r)
	}
	return fmt.Sprintf("%.3f×", r)
}

// Micros formats a duration given in ns: microseconds with two decimals
// under 10 µs, none under 1 ms, then milliseconds and seconds; "-" for NaN.
func Micros(ns float64) string {
	switch {
	case math.IsNaN(ns):
		return "-"
	case math.Abs(ns) >= 1e9:
		return fmt.Sprintf("%.2fs", ns/1e9)
	case math.Abs(ns) >= 1e6:
		return fmt.Sprintf("%.2fms", ns/1e6)
	case math.Abs(ns) >= 1e4:
		return fmt.Sprintf("%.0fµs", ns/1e3)
	}
	return fmt.Sprintf("%.2fµs", ns/1e3)
}
