package balance

import (
	"hash/fnv"
	"math"
)

// HashKey turns what a request is hashed on (a header, a cookie, a client
// address) into the key of Hash. It is FNV-1a, the same in every process,
// so every router and agent sends a key to the same backend.
func HashKey(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// maglevAbove is the pool size above which Hash uses a Maglev table (one
// lookup per pick) instead of rendezvous hashing (one hash per backend).
const maglevAbove = 64

// maglevSize is the Maglev table's size: a prime well above the pool sizes
// it serves, so that each backend's share is close to its weight's.
const maglevSize = 65537

// Hash is consistent hashing on the key: a key goes to the same backend
// while the pool stays the same, and when a backend leaves only its keys
// move. Rendezvous hashing (weighted) for pools of up to 64 backends;
// Maglev for larger ones.
type Hash struct{}

// Pick implements Policy.
func (Hash) Pick(p *Pool, key uint64) *Backend {
	if p.total <= 0 {
		return nil
	}
	if len(p.backends) <= maglevAbove {
		return rendezvous(p, key)
	}
	p.maglevOnce.Do(func() { t := maglev(p); p.maglev.Store(&t) })
	return p.backends[(*p.maglev.Load())[key%maglevSize]]
}

// rendezvous is weighted rendezvous hashing: the backend with the highest
// -weight / ln(u), u the key's hash with the backend's, uniform in (0, 1).
func rendezvous(p *Pool, key uint64) *Backend {
	var best *Backend
	bestScore := math.Inf(-1)
	for i, b := range p.backends {
		w := p.weights[i]
		if w <= 0 {
			continue
		}
		u := (float64(mix(key^p.ids[i])>>11) + 0.5) / (1 << 53)
		if s := -w / math.Log(u); s > bestScore {
			best, bestScore = b, s
		}
	}
	return best
}

// maglev builds the lookup table of Maglev (Eisenbud et al., NSDI 2016),
// weighted: in each round a backend takes a slot as often as its weight
// relative to the heaviest allows.
func maglev(p *Pool) []int32 {
	n := len(p.backends)
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]float64, n)
	maxW := 0.0
	for i := range p.backends {
		h := p.ids[i]
		offset[i] = mix(h) % maglevSize
		skip[i] = mix(h^0x9e3779b97f4a7c15)%(maglevSize-1) + 1
		maxW = max(maxW, p.weights[i])
	}
	table := make([]int32, maglevSize)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for filled < maglevSize {
		for i := range p.backends {
			if p.weights[i] <= 0 {
				continue
			}
			credit[i] += p.weights[i] / maxW
			for credit[i] >= 1 && filled < maglevSize {
				credit[i]--
				c := (offset[i] + next[i]*skip[i]) % maglevSize
				for table[c] >= 0 {
					next[i]++
					c = (offset[i] + next[i]*skip[i]) % maglevSize
				}
				table[c] = int32(i)
				next[i]++
				filled++
			}
		}
	}
	return table
}

// idHash is a backend's hash: of its id, or its address when it has none.
func idHash(b *Backend) uint64 {
	if b.ID != "" {
		return HashKey(b.ID)
	}
	return HashKey(b.Addr)
}

// mix is splitmix64's finaliser: it spreads a 64-bit value's bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

var _ Policy = Hash{}
