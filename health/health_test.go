package health

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLookupBuiltins(t *testing.T) {
	for _, name := range []string{"http", "tcp", "vitals"} {
		if _, ok := Lookup(name); !ok {
			t.Errorf("Lookup(%q) found nothing", name)
		}
	}
	if c, ok := Lookup("smtp"); ok || c != nil {
		t.Errorf(`Lookup("smtp") = %v, %v; want nil, false`, c, ok)
	}
}

type nopChecker struct{}

func (nopChecker) Check(context.Context, string) Result { return Result{} }

func TestRegisterPanics(t *testing.T) {
	tests := []struct {
		name    string
		checker Checker
		want    string
	}{
		{"http", nopChecker{}, `health: Register called twice for check type "http"`},
		{"", nopChecker{}, "health: Register called with an empty check type name"},
		{"test-nil", nil, `health: Register of check type "test-nil" called with a nil Checker`},
	}
	for _, tt := range tests {
		func() {
			defer func() {
				if got := recover(); got != tt.want {
					t.Errorf("Register(%q, %v) panicked with %v, want %q", tt.name, tt.checker, got, tt.want)
				}
			}()
			Register(tt.name, tt.checker)
		}()
	}
	if _, ok := Lookup("test-nil"); ok {
		t.Error("a nil Checker was registered")
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", MaxOutput) // 2 bytes a rune
	got := clip("x" + long)
	if len(got) > MaxOutput || len(got) < MaxOutput-1 || !utf8.ValidString(got) {
		t.Errorf("clip cut to %d bytes, valid UTF-8 %v; want %d or %d valid bytes", len(got), utf8.ValidString(got), MaxOutput-1, MaxOutput)
	}
	if got := clip("short"); got != "short" {
		t.Errorf("clip(short) = %q", got)
	}
}
