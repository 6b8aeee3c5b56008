package loadgen_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// children is the test binary running one load-generator instance
// (configured by a childSpec) instead of the tests, until it is signalled
// or killed: the crash tests re-execute the test binary this way and kill
// the children with SIGKILL, so nothing of a dead instance survives in the
// test's own process.
var children = testenv.SpecChild[childSpec]{Env: "GF_LOADGEN_TEST_CHILD"}

type childSpec struct {
	NATSURL string         `json:"nats_url"`
	Config  loadgen.Config `json:"config"`
	// ClickHouseDSN, when set, gives the instance a store for the Kafka
	// signals.
	ClickHouseDSN string `json:"clickhouse_dsn,omitempty"`
}

func TestMain(m *testing.M) {
	children.Run(runChild)
	testenv.Main(m)
}

// runChild runs one generator until SIGTERM/SIGINT; it logs JSON to stderr.
func runChild(ctx context.Context, cs childSpec) int {
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	logger, err := zc.Build()
	if err != nil {
		return 2
	}
	b, err := bus.Connect(ctx, cs.NATSURL, "load-generator", logger, nil)
	if err != nil {
		logger.Error("connect", zap.Error(err))
		return 1
	}
	defer b.Close()
	d := loadgen.Deps{Bus: b, Logger: logger, Registry: prometheus.NewRegistry()}
	if cs.ClickHouseDSN != "" {
		st, err := store.Open(ctx, cs.ClickHouseDSN, logger)
		if err != nil {
			logger.Error("open store", zap.Error(err))
			return 1
		}
		defer st.Close()
		d.Store = st
	}
	g, err := loadgen.New(cs.Config, d)
	if err != nil {
		logger.Error("configure", zap.Error(err))
		return 1
	}
	if err := g.Run(ctx); err != nil {
		logger.Error("run", zap.Error(err))
		return 1
	}
	return 0
}

// child is a generator instance running as a child process.
type child struct{ *testenv.ChildProc }

// spawn starts a generator instance as a child process of the test; it is
// killed at cleanup if still running.
func (e *env) spawn(cfg loadgen.Config) *child {
	e.t.Helper()
	return &child{children.Start(e.t, cfg.Instance, childSpec{NATSURL: e.natsURL, Config: cfg, ClickHouseDSN: e.dsn})}
}

// tapped is one record of the input topic and when the tap received it.
type tapped struct {
	key string
	ts  time.Time // the record's timestamp (its scheduled time)
	at  time.Time // when the tap received it, standing for the broker's append time
}

// tap consumes the input topic as it fills, keeping every record with its
// receive time, so per-second deliveries can be read by arrival.
type tap struct {
	mu   sync.Mutex
	recs []tapped
}

func (e *env) tap(topic string) *tap {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond), kgo.FetchMaxBytes(64<<20))
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	tp := &tap{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			tp.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { tp.recs = append(tp.recs, tapped{string(r.Key), r.Timestamp, now}) })
			tp.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return tp
}

func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.recs)
}

func (tp *tap) snapshot() []tapped {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.recs)
}

// perSecond counts the records that arrived in each second from start.
func perSecond(recs []tapped, start time.Time, seconds int) []int {
	out := make([]int, seconds)
	for _, r := range recs {
		if s := int(r.at.Sub(start) / time.Second); r.at.After(start) && s < seconds {
			out[s]++
		}
	}
	return out
}

// firstArrivalAfter is when the first record of one of keys arrived after t.
func firstArrivalAfter(recs []tapped, keys map[string]bool, t time.Time) (time.Time, bool) {
	var first time.Time
	for _, r := range recs {
		if keys[r.key] && r.at.After(t) && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	return first, !first.IsZero()
}

// readLog returns the child's log lines decoded as JSON objects.
func (c *child) readLog(t testing.TB) []map[string]any {
	t.Helper()
	f, err := os.Open(c.Log)
	require.NoError(t, err)
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// longestSilence is the longest time, between from and to, any of keys went
// without a record arriving.
func longestSilence(recs []tapped, keys map[string]bool, from, to time.Time) (time.Duration, string) {
	last := map[string]time.Time{}
	for k := range keys {
		last[k] = from
	}
	var worst time.Duration
	var worstKey string
	sorted := slices.Clone(recs)
	slices.SortStableFunc(sorted, func(a, b tapped) int { return a.at.Compare(b.at) })
	for _, r := range sorted {
		if !keys[r.key] || r.at.After(to) {
			continue
		}
		if g := r.at.Sub(last[r.key]); g > worst {
			worst, worstKey = g, r.key
		}
		last[r.key] = r.at
	}
	return worst, worstKey
}
