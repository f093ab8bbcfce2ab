package balance

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/health"
)

// PollInterval is how often a Poller reads each backend's vitals.
const PollInterval = time.Second

// Poller reads backends' vitals (the contract's GET /metrics JSON) about
// every Interval, each backend on its own schedule with ±10% jitter so
// that a fleet of routers does not poll in step, and reports every
// reading. A slow backend delays only its own next poll.
type Poller struct {
	// Interval between polls of one backend; default PollInterval.
	Interval time.Duration
	// Timeout bounds one poll; default 80% of Interval.
	Timeout time.Duration
	// Check reads one backend's vitals; default health.Vitals{}.Check.
	Check func(ctx context.Context, url string) health.Result
	// Report receives each reading: the vitals, or the reason there are
	// none. It is called from the target's own goroutine, one call at a
	// time per key.
	Report func(key string, v *catalog.Vitals, problem string)

	mu      sync.Mutex
	targets map[string]*pollTarget
	closed  bool
	wg      sync.WaitGroup
}

type pollTarget struct {
	url    string
	cancel context.CancelFunc
}

// Set makes targets (key → vitals URL) the backends polled: new ones start
// within one interval, gone ones stop, and a key whose URL changed starts
// over.
func (p *Poller) Set(targets map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key := range p.targets {
		if _, ok := targets[key]; !ok {
			p.forget(key)
		}
	}
	for key, url := range targets {
		p.watch(key, url)
	}
}

// Watch polls key at url from now on (url "" stops it), starting over if
// it was polled at another URL: Set for one backend.
func (p *Poller) Watch(key, url string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if url == "" {
		p.forget(key)
		return
	}
	p.watch(key, url)
}

// watch starts polling key at url unless it already is. Under p.mu.
func (p *Poller) watch(key, url string) {
	if p.closed {
		return
	}
	if t, ok := p.targets[key]; ok {
		if t.url == url {
			return
		}
		p.forget(key)
	}
	if p.targets == nil {
		p.targets = map[string]*pollTarget{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.targets[key] = &pollTarget{url: url, cancel: cancel}
	p.wg.Go(func() { p.poll(ctx, key, url) })
}

// forget stops polling key. Under p.mu.
func (p *Poller) forget(key string) {
	if t, ok := p.targets[key]; ok {
		t.cancel()
		delete(p.targets, key)
	}
}

// Close stops every poll and waits for them to end.
func (p *Poller) Close() {
	p.mu.Lock()
	p.closed = true
	for _, t := range p.targets {
		t.cancel()
	}
	p.targets = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Poller) poll(ctx context.Context, key, url string) {
	every := p.Interval
	if every <= 0 {
		every = PollInterval
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = every * 8 / 10
	}
	check := p.Check
	if check == nil {
		check = health.Vitals{}.Check
	}
	// The first poll comes at once: a new backend's readiness is news.
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		res := check(cctx, url)
		cancel()
		if ctx.Err() != nil {
			return
		}
		problem := ""
		if res.Vitals == nil {
			problem = res.Output
		}
		p.Report(key, res.Vitals, problem)
		t.Reset(jitter(every))
	}
}

// jitter is d ± 10%, at random.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}
