package agent

import (
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discotech/disco/balance"
	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/guard"
)

// vitalsWeights polls the vitals of every backend that serves them (a
// vitals check, or meta metrics_port) and keeps the share of its weight
// they leave it (balance.Vitals): 0 when it says ready:false, less when it
// backs off, fails more, or runs hot. The table's weights follow, so the
// shim stops picking a draining backend within one poll.
type vitalsWeights struct {
	poller *balance.Poller
	kick   chan struct{} // a factor changed: publish again
	polls  *prometheus.CounterVec

	mu    sync.Mutex
	state map[string]*vitalsState // by instance key
}

type vitalsState struct {
	v      balance.Vitals
	factor float64
}

func newVitalsWeights(reg prometheus.Registerer, cfg Config) *vitalsWeights {
	w := &vitalsWeights{kick: make(chan struct{}, 1), state: map[string]*vitalsState{},
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "disco_agent_vitals_polls_total",
			Help: "Readings of backends' vitals, by result (ok, failed).",
		}, []string{"result"})}
	reg.MustRegister(w.polls)
	w.poller = &balance.Poller{Interval: cfg.VitalsInterval, Report: w.report}
	return w
}

// report takes one reading. A failed poll keeps the last factor: a
// backend that stops answering is the failure reports' and the registry's
// to take out.
func (w *vitalsWeights) report(key string, v *catalog.Vitals, _ string) {
	if v == nil {
		w.polls.WithLabelValues("failed").Inc()
		return
	}
	w.polls.WithLabelValues("ok").Inc()
	w.mu.Lock()
	st := w.state[key]
	if st == nil {
		st = &vitalsState{factor: 1}
		w.state[key] = st
	}
	f := st.v.Weight(1, *v)
	changed := f != st.factor
	st.factor = f
	w.mu.Unlock()
	if changed {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// factor is the share of its weight an instance's vitals leave it; 1 for
// one not polled (yet).
func (w *vitalsWeights) factor(key string) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st := w.state[key]; st != nil {
		return st.factor
	}
	return 1
}

// sync polls exactly the backends of t that serve vitals, and forgets the
// others.
func (w *vitalsWeights) sync(t *guard.Table) {
	targets := map[string]string{}
	for _, ins := range t.Services {
		for _, in := range ins {
			if u := in.VitalsURL(); u != "" {
				targets[in.Key()] = u
			}
		}
	}
	w.poller.Set(targets)
	w.mu.Lock()
	for key := range w.state {
		if _, ok := targets[key]; !ok {
			delete(w.state, key)
		}
	}
	w.mu.Unlock()
}

// weights are a service's table weights after the vitals: registered ×
// factor, except in panic (fewer than half left with weight), where the
// registered weights stand (balance.NewPoolWeights).
func (w *vitalsWeights) weights(ins []*catalog.Instance) []float64 {
	reg, vit := make([]float64, len(ins)), make([]float64, len(ins))
	for i, in := range ins {
		reg[i] = float64(in.Weight)
		vit[i] = reg[i] * w.factor(in.Key())
	}
	out, _ := balance.Weights(reg, vit)
	for i := range out {
		out[i] = math.Round(out[i])
		if out[i] == 0 && vit[i] > 0 {
			out[i] = 1 // a sliver of weight still counts
		}
	}
	return out
}
