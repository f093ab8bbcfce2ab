package source

// LogOnce remembers the problem last logged about each item a source leaves
// out (an etcd key, a ZooKeeper znode), so that the source logs a problem
// once rather than at every listing, and again only when the problem
// changes or after the item was forgotten (gone, or good again). The zero
// value is ready to use. It is not safe for concurrent use.
type LogOnce struct {
	last map[string]string // item → the problem last noted
}

// Note notes problem as the one about item, and reports whether it is news
// (not the problem noted last): whether the source is to log it.
func (l *LogOnce) Note(item, problem string) bool {
	if p, ok := l.last[item]; ok && p == problem {
		return false
	}
	if l.last == nil {
		l.last = map[string]string{}
	}
	l.last[item] = problem
	return true
}

// Forget forgets the problem noted about item.
func (l *LogOnce) Forget(item string) { delete(l.last, item) }

// ForgetFunc forgets the problems noted about every item for which forget
// returns true.
func (l *LogOnce) ForgetFunc(forget func(item string) bool) {
	for item := range l.last {
		if forget(item) {
			delete(l.last, item)
		}
	}
}
