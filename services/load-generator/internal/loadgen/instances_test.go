package loadgen_test

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// coverage groups the topic's records by period of the schedule: sensor id
// → records in that period.
type coverage map[int64]map[string]int

func (e *env) coverage(t *testing.T, fin events.LoadFinished, period time.Duration) coverage {
	t.Helper()
	return e.coverageFrom(t, fin, period, math.MinInt64)
}

// coverageFrom is coverage of the records stamped fromMs or later: those of
// an earlier load in the same topic are left out.
func (e *env) coverageFrom(t *testing.T, fin events.LoadFinished, period time.Duration, fromMs int64) coverage {
	t.Helper()
	out := coverage{}
	for _, r := range e.records() {
		_, rec, err := uc3.DecodeConfluentAvro(r.Value)
		require.NoError(t, err)
		require.Equal(t, string(r.Key), rec.Identifier)
		if rec.Timestamp < fromMs {
			continue
		}
		m := (rec.Timestamp - fin.StartMs) / period.Milliseconds()
		if out[m] == nil {
			out[m] = map[string]int{}
		}
		out[m][rec.Identifier]++
	}
	return out
}

func (e *env) waitMembers(t *testing.T, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "members", func() bool {
		kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketMembers)
		if err != nil {
			return false // not created yet
		}
		keys, _ := kv.Keys(context.Background())
		return len(keys) == n
	})
}

// testPlan is what the tests read of a run's plan.
type testPlan struct {
	Epoch  int `json:"epoch"`
	Ranges []struct {
		Instance string `json:"instance"`
		Lo, Hi   int
	} `json:"ranges"`
}

// readPlan reads run's current plan.
func (e *env) readPlan(t *testing.T, run string) testPlan {
	t.Helper()
	kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketRuns)
	require.NoError(t, err)
	ent, err := kv.Get(context.Background(), "plan."+run)
	require.NoError(t, err)
	var p testPlan
	require.NoError(t, json.Unmarshal(ent.Value(), &p))
	return p
}

// plan returns the epoch of run's plan and the sensors each instance owns.
func (e *env) plan(t *testing.T, run string) (epoch int, owners map[string]int) {
	t.Helper()
	p := e.readPlan(t, run)
	owners = map[string]int{}
	for _, r := range p.Ranges {
		owners[r.Instance] += r.Hi - r.Lo
	}
	return p.Epoch, owners
}

// TestInstancesShareAndTakeOver: three instances split the key space with
// no overlap and no gap; when the leader is stopped mid-run, the others take
// its range over within a few seconds; one load.finished sums them all.
func TestInstancesShareAndTakeOver(t *testing.T) {
	e := newEnv(t)
	stopA, _ := e.generator(testConfig("lg-a"), loadgen.Deps{})
	e.generator(testConfig("lg-b"), loadgen.Deps{})
	e.generator(testConfig("lg-c"), loadgen.Deps{})
	e.waitMembers(t, 3)

	const sensors, seconds = 3000, 9
	e.start("multi", events.Workload{Sensors: sensors, RatePerSec: sensors}, seconds*time.Second) // period 1 s
	testenv.Eventually(t, 10*time.Second, "two reports from every instance", func() bool {
		for _, i := range []string{"lg-a", "lg-b", "lg-c"} {
			if len(e.progressOf("multi", i)) < 2 {
				return false
			}
		}
		return true
	})
	_, owners := e.plan(t, "multi")
	require.Equal(t, map[string]int{"lg-a": 1000, "lg-b": 1000, "lg-c": 1000}, owners)

	killedAt := time.Now()
	stopA() // the leader goes away mid-run
	fin := e.waitFinished(t, "multi", 25*time.Second)
	require.False(t, fin.Failed, fin.Reason)
	require.Equal(t, "lg-a,lg-b,lg-c", fin.Instance)

	epoch, owners := e.plan(t, "multi")
	require.Equal(t, 1, epoch)
	require.Equal(t, map[string]int{"lg-b": 1500, "lg-c": 1500}, owners, "lg-a's range split between the others")

	// lg-a stopped cleanly: its last checkpoint covers everything it
	// produced, and the others produced its ranges from there — nothing
	// twice, nothing missing but what the account counts as missed.
	extra, where := completeness(t, e.coverage(t, fin, time.Second), fin, sensors, seconds, nil, 0)
	require.Zero(t, extra, "produced twice in periods %v", where)
	t.Logf("stopped %s after the start", killedAt.Sub(time.UnixMilli(fin.StartMs)).Round(time.Millisecond))
	require.Equal(t, 1, fin.Takeovers)

	require.Equal(t, e.topicTotal(), fin.RecordsSent, "load.finished sums every instance")
	var lastSum int64
	for _, i := range []string{"lg-a", "lg-b", "lg-c"} {
		p := e.progressOf("multi", i)
		require.NotEmpty(t, p, i)
		lastSum += p[len(p)-1].RecordsSent
	}
	require.Equal(t, fin.RecordsSent, lastSum, "the instances' final reports add up")
	time.Sleep(500 * time.Millisecond) // let any duplicate arrive
	require.Equal(t, 1, e.finishedCount("multi"), "exactly one load.finished")
}

// TestCrashedInstanceIsTakenOver: an instance that stops heartbeating
// without leaving (a crash) loses its range once its heartbeat is MemberTTL
// old. It crashed before preparing its share, so the start waits for the
// hand-over and for the heirs to prepare its range: every period is
// complete and nothing is late (a death while producing is
// TestKillProducingInstance).
func TestCrashedInstanceIsTakenOver(t *testing.T) {
	e := newEnv(t)
	_, regA := e.generator(testConfig("lg-a"), loadgen.Deps{})
	_, regB := e.generator(testConfig("lg-b"), loadgen.Deps{})
	e.waitMembers(t, 2)
	kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketMembers)
	require.NoError(t, err)
	_, err = kv.Put(context.Background(), "lg-z", []byte(`{"instance":"lg-z"}`)) // heartbeats once, then never again
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "both instances see lg-z", func() bool {
		return gauge(t, regA, "greenflow_load_generator_members") == 3 && gauge(t, regB, "greenflow_load_generator_members") == 3
	})

	const sensors, seconds = 900, 5
	e.start("crash", events.Workload{Sensors: sensors, RatePerSec: sensors}, seconds*time.Second)
	fin := e.waitFinished(t, "crash", 20*time.Second)
	require.False(t, fin.Failed, fin.Reason)
	require.Contains(t, fin.Reason, "lg-z died without a report")
	require.Equal(t, "lg-a,lg-b,lg-z", fin.Instance)
	require.Equal(t, 1, fin.Takeovers)
	require.Zero(t, fin.RecordsBackfilled, "taken over while the load was being prepared: the heirs prepared it and nothing was late")

	_, owners := e.plan(t, "crash")
	require.Equal(t, map[string]int{"lg-a": 450, "lg-b": 450}, owners)
	extra, where := completeness(t, e.coverage(t, fin, time.Second), fin, sensors, seconds, nil, 0)
	require.Zero(t, extra, "lg-z's range back-filled from the start, nothing twice (periods %v)", where)
	require.Equal(t, e.topicTotal(), fin.RecordsSent)
}

// gauge reads a gauge's value from a registry.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
