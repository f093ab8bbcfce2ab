package route

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestTreeAgainstMap applies random inserts and removes to a tree and to
// a map, keeping every version, and checks every version against its map
// copy at the end: no later change may show in an earlier tree.
func TestTreeAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab/c"
	randKey := func() string {
		b := make([]byte, rng.IntN(6))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	type version struct {
		tr tree[int]
		m  map[string]int
	}
	var tr tree[int]
	m := map[string]int{}
	var versions []version
	for i := range 3000 {
		k := randKey()
		if rng.IntN(3) == 0 {
			tr = tr.remove(k)
			delete(m, k)
		} else {
			tr = tr.insert(k, i)
			m[k] = i
		}
		versions = append(versions, version{tr, maps.Clone(m)})
	}
	for vi, v := range versions {
		if v.tr.Len() != len(v.m) {
			t.Fatalf("version %d: Len %d, want %d", vi, v.tr.Len(), len(v.m))
		}
		var keys []string
		v.tr.walk(func(k string, val int) {
			keys = append(keys, k)
			if v.m[k] != val {
				t.Fatalf("version %d: walk gives %q=%d, want %d", vi, k, val, v.m[k])
			}
		})
		if want := slices.Sorted(maps.Keys(v.m)); !slices.Equal(keys, want) {
			t.Fatalf("version %d: walk keys %q, want %q", vi, keys, want)
		}
		for range 20 {
			k := randKey() + randKey()
			got, ok := v.tr.get(k)
			want, wok := v.m[k]
			if ok != wok || got != want {
				t.Fatalf("version %d: get(%q) = %d, %v; want %d, %v", vi, k, got, ok, want, wok)
			}
			got, ok = v.tr.longest(k)
			want, wok, best := 0, false, -1
			for mk, mv := range v.m {
				if strings.HasPrefix(k, mk) && len(mk) > best {
					want, wok, best = mv, true, len(mk)
				}
			}
			if ok != wok || got != want {
				t.Fatalf("version %d: longest(%q) = %d, %v; want %d, %v", vi, k, got, ok, want, wok)
			}
		}
	}
	// Removing everything leaves an empty tree.
	for k := range m {
		tr = tr.remove(k)
	}
	if tr.root != nil || tr.Len() != 0 {
		t.Errorf("emptied tree: root %v, Len %d", tr.root, tr.Len())
	}
}

func TestTreeGetFold(t *testing.T) {
	var tr tree[int]
	tr = tr.insert("example.com", 1).insert("example.org", 2)
	for _, k := range []string{"example.com", "EXAMPLE.com", "Example.COM"} {
		if v, ok := tr.getFold(k); !ok || v != 1 {
			t.Errorf("getFold(%q) = %d, %v", k, v, ok)
		}
	}
	for _, k := range []string{"example.co", "example.comm", "xample.com", ""} {
		if _, ok := tr.getFold(k); ok {
			t.Errorf("getFold(%q) found a value", k)
		}
	}
}
