package loadgen_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/load-generator/internal/loadgen"
)

// keysOf returns the sensor keys instance owns in run's current plan.
func (e *env) keysOf(t *testing.T, run, instance string) map[string]bool {
	t.Helper()
	kv, err := e.bus.JetStream().KeyValue(context.Background(), loadgen.BucketRuns)
	require.NoError(t, err)
	ent, err := kv.Get(context.Background(), "plan."+run)
	require.NoError(t, err)
	var p struct {
		Ranges []struct {
			Instance string `json:"instance"`
			Lo, Hi   int
		} `json:"ranges"`
	}
	require.NoError(t, json.Unmarshal(ent.Value(), &p))
	keys := map[string]bool{}
	for _, r := range p.Ranges {
		if r.Instance == instance {
			for s := r.Lo; s < r.Hi; s++ {
				keys[fmt.Sprintf("s_%d", s)] = true
			}
		}
	}
	return keys
}

// completeness checks the topic against the schedule (period 1 s): every
// sensor in every period at least once. It returns the records beyond one
// per sensor and period (produced twice) and the periods they are in.
func completeness(t *testing.T, cov coverage, sensors int, periods int64) (extra int, where []int64) {
	t.Helper()
	require.Len(t, cov, int(periods), "no records outside the schedule")
	for m := range periods {
		require.Len(t, cov[m], sensors, "period %d: every sensor", m)
		n := 0
		for _, c := range cov[m] {
			n += c - 1
		}
		if n > 0 {
			extra += n
			where = append(where, m)
		}
	}
	return extra, where
}

// TestRestartResumesFromCheckpoint: the only instance is killed (SIGKILL)
// mid-load and started again under the same name. It resumes from its
// checkpoint: its count continues (the progress series never drops back),
// what was due while it was down is back-filled from its acked watermark, so
// the topic holds every record of the schedule; what it produces twice is
// bounded by the checkpoint interval.
func TestRestartResumesFromCheckpoint(t *testing.T) {
	e := newEnv(t)
	cfg := childConfig("lg-a")
	a := e.spawn(cfg)
	e.waitMembers(t, 1)
	const sensors, seconds = 5000, 10
	e.start("restart", events.Workload{Sensors: sensors, RatePerSec: sensors}, seconds*time.Second) // period 1 s
	testenv.Eventually(t, 20*time.Second, "three seconds of load", func() bool { return len(e.progressOf("restart", "lg-a")) >= 4 })
	killedAt := time.Now()
	a.kill()
	beforeRestart := e.topicTotal()
	e.spawn(cfg)
	fin := e.waitFinished(t, "restart", 60*time.Second)
	require.False(t, fin.Failed, fin.Reason)
	start := time.UnixMilli(fin.StartMs)
	t.Logf("killed %s after the start with %d records in the topic; %+v", killedAt.Sub(start).Round(time.Millisecond), beforeRestart, fin)

	require.Equal(t, 1, fin.Restarts)
	require.Zero(t, fin.Takeovers)
	require.Zero(t, fin.RecordsMissed)
	require.Positive(t, fin.RecordsBackfilled, "what was due while it was down was back-filled")
	total := e.topicTotal()
	extra, where := completeness(t, e.coverage(t, fin, time.Second), sensors, seconds)
	require.Equal(t, int64(sensors*seconds+extra), total)
	// Produced twice: at most what was acknowledged after the last
	// checkpoint — CheckpointInterval plus the acknowledgement delay; a
	// generous bound of half a second of the rate.
	require.LessOrEqual(t, extra, sensors/2, "produced twice, in periods %v", where)
	t.Logf("produced twice after the restart: %d records (in periods %v)", extra, where)

	var last int64 = -1
	for _, p := range e.progressOf("restart", "lg-a") {
		require.GreaterOrEqual(t, p.RecordsSent, last, "the progress series never drops back")
		last = p.RecordsSent
	}
	require.Equal(t, fin.RecordsSent, last)
	require.GreaterOrEqual(t, fin.RecordsSent, beforeRestart-int64(sensors/2), "the count before the crash is kept")
}

// childConfig is the configuration the crash tests' instances run with:
// the defaults, as a user runs them.
func childConfig(name string) loadgen.Config {
	c := loadgen.Default()
	c.Instance = name
	return c
}
