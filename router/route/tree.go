package route

import "strings"

// tree is an immutable radix tree from strings to V. Insert and remove
// return a new tree that shares every node off the changed path with the
// old one, so a change costs the depth of the tree, not its size, and
// readers of the old tree are never disturbed.
type tree[V any] struct {
	root *node[V] // nil when empty; its edge is always ""
	n    int
}

// node is one node of a tree. Nodes are never modified once a tree
// holding them has been returned.
type node[V any] struct {
	edge  string // the key bytes between the parent and this node
	val   V
	set   bool   // val is a value (not an inner node's zero)
	first string // first byte of each child's edge, ascending
	kids  []*node[V]
}

// Len is the number of keys in t.
func (t tree[V]) Len() int { return t.n }

// get returns the value for key.
func (t tree[V]) get(key string) (V, bool) {
	n := t.root
	for n != nil {
		if key == "" {
			return n.val, n.set
		}
		i := strings.IndexByte(n.first, key[0])
		if i < 0 {
			break
		}
		n = n.kids[i]
		if !strings.HasPrefix(key, n.edge) {
			break
		}
		key = key[len(n.edge):]
	}
	var zero V
	return zero, false
}

// getFold is get for a key that may have upper-case ASCII letters where
// the tree's keys are lower case: host names, matched without allocating
// a lower-cased copy.
func (t tree[V]) getFold(key string) (V, bool) {
	n := t.root
	for n != nil {
		if key == "" {
			return n.val, n.set
		}
		i := strings.IndexByte(n.first, lower(key[0]))
		if i < 0 {
			break
		}
		n = n.kids[i]
		if !hasPrefixFold(key, n.edge) {
			break
		}
		key = key[len(n.edge):]
	}
	var zero V
	return zero, false
}

// longest returns the value of the longest key that is a prefix of s.
func (t tree[V]) longest(s string) (V, bool) {
	var best V
	found := false
	n := t.root
	for n != nil {
		if n.set {
			best, found = n.val, true
		}
		if s == "" {
			break
		}
		i := strings.IndexByte(n.first, s[0])
		if i < 0 {
			break
		}
		n = n.kids[i]
		if !strings.HasPrefix(s, n.edge) {
			break
		}
		s = s[len(n.edge):]
	}
	return best, found
}

// insert returns t with key set to v.
func (t tree[V]) insert(key string, v V) tree[V] {
	root := t.root
	if root == nil {
		root = &node[V]{}
	}
	root, added := root.insert(key, v)
	t.root = root
	if added {
		t.n++
	}
	return t
}

// remove returns t without key.
func (t tree[V]) remove(key string) tree[V] {
	if t.root == nil {
		return t
	}
	root, found := t.root.remove(key)
	if !found {
		return t
	}
	t.n--
	if root != nil && !root.set && len(root.kids) == 0 {
		root = nil
	}
	t.root = root
	return t
}

// walk calls fn for every key and value in key order.
func (t tree[V]) walk(fn func(key string, v V)) {
	if t.root != nil {
		t.root.walk(make([]byte, 0, 64), fn)
	}
}

func (n *node[V]) walk(prefix []byte, fn func(string, V)) {
	prefix = append(prefix, n.edge...)
	if n.set {
		fn(string(prefix), n.val)
	}
	for _, k := range n.kids {
		k.walk(prefix, fn)
	}
}

// clone returns a copy of n whose kids slice it may change.
func (n *node[V]) clone() *node[V] {
	c := *n
	c.kids = append([]*node[V](nil), n.kids...)
	return &c
}

// insert returns a copy of n with key (the part below n) set to v, and
// whether key is new.
func (n *node[V]) insert(key string, v V) (*node[V], bool) {
	if key == "" {
		c := *n
		c.val, c.set = v, true
		return &c, !n.set
	}
	i := strings.IndexByte(n.first, key[0])
	if i < 0 {
		return n.withKid(&node[V]{edge: key, val: v, set: true}), true
	}
	c := n.clone()
	k := n.kids[i]
	common := commonPrefix(key, k.edge)
	if common == len(k.edge) {
		nk, added := k.insert(key[common:], v)
		c.kids[i] = nk
		return c, added
	}
	// key leaves k's edge part way: split the edge at a new inner node.
	low := *k
	low.edge = k.edge[common:]
	mid := &node[V]{edge: k.edge[:common], first: low.edge[:1], kids: []*node[V]{&low}}
	if common == len(key) {
		mid.val, mid.set = v, true
	} else {
		mid = mid.withKid(&node[V]{edge: key[common:], val: v, set: true})
	}
	c.kids[i] = mid
	return c, true
}

// withKid returns a copy of n with the child k added in order.
func (n *node[V]) withKid(k *node[V]) *node[V] {
	b := k.edge[0]
	i := 0
	for i < len(n.first) && n.first[i] < b {
		i++
	}
	c := *n
	c.first = n.first[:i] + string([]byte{b}) + n.first[i:]
	c.kids = make([]*node[V], 0, len(n.kids)+1)
	c.kids = append(append(append(c.kids, n.kids[:i]...), k), n.kids[i:]...)
	return &c
}

// remove returns a copy of n without key (the part below n), nil if
// nothing is left of n, and whether key was there.
func (n *node[V]) remove(key string) (*node[V], bool) {
	if key == "" {
		if !n.set {
			return n, false
		}
		c := *n
		var zero V
		c.val, c.set = zero, false
		return c.compact(), true
	}
	i := strings.IndexByte(n.first, key[0])
	if i < 0 {
		return n, false
	}
	k := n.kids[i]
	if !strings.HasPrefix(key, k.edge) {
		return n, false
	}
	nk, found := k.remove(key[len(k.edge):])
	if !found {
		return n, false
	}
	c := n.clone()
	if nk == nil {
		c.first = n.first[:i] + n.first[i+1:]
		c.kids = append(c.kids[:i], c.kids[i+1:]...)
	} else {
		c.kids[i] = nk
	}
	return c.compact(), true
}

// compact returns n's replacement once it may have lost its value or a
// child: nothing if it has neither, its only child with a longer edge if
// it has no value. The root (the only node with an empty edge) stays.
func (n node[V]) compact() *node[V] {
	switch {
	case n.set || len(n.kids) > 1 || n.edge == "":
		return &n
	case len(n.kids) == 0:
		return nil
	}
	k := *n.kids[0]
	k.edge = n.edge + k.edge
	return &k
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// lower is ASCII lower case.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasPrefixFold reports whether s begins with the lower-case prefix,
// ignoring ASCII case in s.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if lower(s[i]) != prefix[i] {
			return false
		}
	}
	return true
}
