package figure

import (
	"math"
	"testing"
)

func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Thousands(0), "0"},
		{Thousands(999.6), "1,000"},
		{Thousands(-1234567), "-1,234,567"},
		{Thousands(-0.4), "0"},
		{Thousands(math.NaN()), "-"},
		{Ratio(1), "1.00×"},
		{Ratio(12.4), "12×"},
		{Ratio(0.05), "0.050×"},
		{Ratio(0), "-"},
		{Ratio(math.Inf(1)), "-"},
		{Micros(1234), "1.23µs"},
		{Micros(123456), "123µs"},
		{Micros(-250000), "-250µs"},
		{Micros(2.5e6), "2.50ms"},
		{Micros(3e9), "3.00s"},
		{Micros(math.NaN()), "-"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
