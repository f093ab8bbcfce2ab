package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/discotech/disco/catalog"
)

// Config configures a Store.
type Config struct {
	// DataDir holds the raft log and stable store (raft.db), the snapshots
	// and the node id. Required.
	DataDir string
	// RaftAddr is the address raft listens on for its peers. Empty means an
	// in-memory transport: a single server that can never have peers (as in
	// disco dev).
	RaftAddr string
	// NodeID names this server in the raft configuration. Empty means the
	// id stored in DataDir, or a new random one saved there.
	NodeID string
	// RaftMultiplier scales raft's timers, as Consul's raft_multiplier does:
	// heartbeat and election timeouts are 200ms × RaftMultiplier. Default 5
	// (1s); 1 suits a single machine and tests.
	RaftMultiplier int
	// ApplyTimeout bounds how long a write waits for raft. Default 10s.
	ApplyTimeout time.Duration
	// ServiceHistory and GlobalHistory size the event history kept for
	// resuming watchers; 0 means DefaultServiceHistory, DefaultGlobalHistory.
	ServiceHistory, GlobalHistory int
	// Logger receives the store's and raft's logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the store's metrics. Nil registers nothing.
	Registerer prometheus.Registerer
}

// Store is the replicated registry: writes go through raft, reads come from
// State.
type Store struct {
	cfg     Config
	log     *slog.Logger
	raft    *raft.Raft
	bolt    *raftboltdb.BoltStore
	trans   raft.Transport
	state   *State
	metrics *metrics

	restored     chan struct{} // closed once the log present at start is applied
	restoreOnce  sync.Once
	restoreIndex uint64

	mu         sync.Mutex
	onLeader   []func(bool)
	leaderDone chan struct{}
	closeOnce  sync.Once
}

// Open opens (or creates) the registry in cfg.DataDir and starts raft. A
// data dir with no raft state is bootstrapped as a one-server cluster.
func Open(cfg Config) (*Store, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("registry: no data dir; set --data-dir")
	}
	if cfg.RaftMultiplier <= 0 {
		cfg.RaftMultiplier = 5
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("registry: create data dir: %w", err)
	}
	nodeID, err := loadNodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "registry"),
		state:      NewState(cfg.ServiceHistory, cfg.GlobalHistory),
		restored:   make(chan struct{}),
		leaderDone: make(chan struct{}),
	}
	s.metrics = newMetrics(cfg.Registerer, s)

	s.bolt, err = raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{
			Timeout: time.Second,
			// The freelist is rebuilt on open instead of rewritten on every
			// commit (Consul's fix for large logs).
			NoFreelistSync: true,
		},
	})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("registry: %s is locked: is another disco server using this data dir?", filepath.Join(cfg.DataDir, "raft.db"))
		}
		return nil, fmt.Errorf("registry: open raft log: %w", err)
	}
	hlog := hclog.FromStandardLogger(slog.NewLogLogger(s.log.With("component", "raft").Handler(), slog.LevelInfo),
		&hclog.LoggerOptions{Name: "raft", Level: hclog.Info})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		s.bolt.Close()
		return nil, fmt.Errorf("registry: open snapshots: %w", err)
	}
	var addr raft.ServerAddress
	if cfg.RaftAddr == "" {
		addr, s.trans = raft.NewInmemTransport("")
	} else {
		t, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, nil, 3, 10*time.Second, hlog)
		if err != nil {
			s.bolt.Close()
			return nil, fmt.Errorf("registry: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		addr, s.trans = t.LocalAddr(), t
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(nodeID)
	rc.Logger = hlog
	m := time.Duration(cfg.RaftMultiplier)
	rc.HeartbeatTimeout = 200 * time.Millisecond * m
	rc.ElectionTimeout = 200 * time.Millisecond * m
	rc.LeaderLeaseTimeout = 100 * time.Millisecond * m
	// Group commit: the leader writes up to this many entries per fsync.
	rc.MaxAppendEntries = 512
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = 16384
	rc.TrailingLogs = 10240
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	logs, err := raft.NewLogCache(1024, s.bolt)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("registry: log cache: %w", err)
	}
	existing, err := raft.HasExistingState(logs, s.bolt, snaps)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("registry: read raft state: %w", err)
	}
	if !existing {
		s.log.Info("bootstrapping a new one-server cluster", "node_id", nodeID, "raft_addr", addr)
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr}}}
		if err := raft.BootstrapCluster(rc, logs, s.bolt, snaps, s.trans, boot); err != nil {
			s.closeStores()
			return nil, fmt.Errorf("registry: bootstrap: %w", err)
		}
	}
	last, err := logs.LastIndex()
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("registry: read last log index: %w", err)
	}
	s.restoreIndex = last
	f := &fsm{state: s.state, onApplied: s.applied}
	s.raft, err = raft.NewRaft(rc, f, logs, s.bolt, snaps, s.trans)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("registry: start raft: %w", err)
	}
	s.applied(s.state.Applied())
	go s.watchLeadership(notify)
	s.log.Info("registry open", "data_dir", cfg.DataDir, "node_id", nodeID, "raft_addr", addr, "last_index", last)
	return s, nil
}

// applied marks the store restored once the log it started with is applied.
func (s *Store) applied(index uint64) {
	if index >= s.restoreIndex {
		s.restoreOnce.Do(func() { close(s.restored) })
	}
}

func loadNodeID(dir, given string) (string, error) {
	path := filepath.Join(dir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		stored := strings.TrimSpace(string(b))
		if given != "" && given != stored {
			return "", fmt.Errorf("registry: data dir %s belongs to node %q, not %q", dir, stored, given)
		}
		return stored, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("registry: read node id: %w", err)
	}
	id := given
	if id == "" {
		b := make([]byte, 8)
		rand.Read(b)
		id = hex.EncodeToString(b)
	}
	if err := writeFileSync(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("registry: save node id: %w", err)
	}
	return id, nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (s *Store) watchLeadership(notify <-chan bool) {
	for {
		select {
		case isLeader := <-notify:
			s.metrics.leader.Set(b2f(isLeader))
			s.log.Info("leadership changed", "leader", isLeader)
			s.mu.Lock()
			fns := append([]func(bool){}, s.onLeader...)
			s.mu.Unlock()
			for _, fn := range fns {
				fn(isLeader)
			}
		case <-s.leaderDone:
			return
		}
	}
}

// OnLeadership registers fn to be called, from one goroutine and in order,
// each time this server gains (true) or loses (false) leadership.
func (s *Store) OnLeadership(fn func(isLeader bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onLeader = append(s.onLeader, fn)
}

// State is the catalog every read is served from.
func (s *Store) State() *State { return s.state }

// IsLeader reports whether this server is the raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the raft address of the current leader, "" when none is
// known.
func (s *Store) Leader() string {
	addr, _ := s.raft.LeaderWithID()
	return string(addr)
}

// Ready reports whether the store can serve: raft knows a leader and the
// log present at start has been applied to the state.
func (s *Store) Ready() bool {
	select {
	case <-s.restored:
	default:
		return false
	}
	return s.Leader() != ""
}

// Restored is closed once the log present at start has been applied.
func (s *Store) Restored() <-chan struct{} { return s.restored }

// Register stores in (validated, with defaults applied) as a new registration
// or as the replacement of the instance with the same service and id, and
// returns the index of the change. Re-registering exactly what is stored
// changes nothing and returns the instance's current index.
func (s *Store) Register(ctx context.Context, in *catalog.Instance) (uint64, error) {
	// The leader's state holds every committed write, so an identical
	// registration (an SDK re-registering after a restart) needs no log entry.
	if old, ok := s.state.Instance(in.Service, in.ID); ok && sameRegistration(old, in) && s.IsLeader() {
		return old.ModifyIndex, nil
	}
	return s.apply(ctx, &command{Op: opRegister, Instance: in})
}

// Deregister removes the instance id of service.
func (s *Store) Deregister(ctx context.Context, service, id string) (uint64, error) {
	return s.apply(ctx, &command{Op: opDeregister, Remove: []Removal{{Service: service, ID: id}}})
}

// Reap removes instances in one write, each only if it is still critical
// since the time its Removal gives: the reaper's guard against removing an
// instance that recovered after the decision was made. It returns the index
// if anything was removed; instances that changed are skipped.
func (s *Store) Reap(ctx context.Context, removals []Removal) (uint64, error) {
	idx, err := s.apply(ctx, &command{Op: opDeregister, Remove: removals})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		err = nil
	}
	return idx, err
}

// SetStatus changes the status of instances. Changes to an instance already
// in that status are skipped; unknown instances are skipped with ErrNotFound.
func (s *Store) SetStatus(ctx context.Context, changes ...StatusChange) (uint64, error) {
	return s.apply(ctx, &command{Op: opStatus, Status: changes})
}

func (s *Store) apply(ctx context.Context, c *command) (uint64, error) {
	c.Time = time.Now().UTC()
	data, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("registry: encode %s: %w", c.Op, err)
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	start := time.Now()
	f := s.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		s.metrics.writes.WithLabelValues(string(c.Op), "error").Inc()
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return 0, fmt.Errorf("%w (leader: %q): %v", ErrNotLeader, s.Leader(), err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return 0, ErrClosed
		}
		return 0, fmt.Errorf("registry: apply %s: %w", c.Op, err)
	}
	s.metrics.apply.Observe(time.Since(start).Seconds())
	r := f.Response().(result)
	outcome := "ok"
	if r.Err != nil {
		outcome = "rejected"
	}
	s.metrics.writes.WithLabelValues(string(c.Op), outcome).Inc()
	return r.Index, r.Err
}

// Snapshot asks raft to take a snapshot now and compact the log.
func (s *Store) Snapshot() error {
	return s.raft.Snapshot().Error()
}

// LastIndex is raft's last log index: with Applied, it tells how many entries
// a write produced (the benchmark shows heartbeats add none).
func (s *Store) LastIndex() uint64 { return s.raft.LastIndex() }

// Close stops raft and closes the log. It is safe to call more than once.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.leaderDone)
		if e := s.raft.Shutdown().Error(); e != nil {
			err = fmt.Errorf("registry: raft shutdown: %w", e)
		}
		if e := s.closeStores(); e != nil && err == nil {
			err = e
		}
	})
	return err
}

func (s *Store) closeStores() error {
	if c, ok := s.trans.(interface{ Close() error }); ok {
		c.Close()
	}
	if s.bolt != nil {
		return s.bolt.Close()
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
