package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// liveRun is the "run" event as a browser reads it.
type liveRun struct {
	RunID       string             `json:"run_id"`
	State       string             `json:"state"`
	RecordsSent int64              `json:"records_sent"`
	Offered     *float64           `json:"offered_per_sec"`
	Delivered   *float64           `json:"delivered_per_sec"`
	Lag         *float64           `json:"lag"`
	Power       map[string]float64 `json:"power_w"`
	Estimated   []string           `json:"estimated"`
	Flags       []string           `json:"flags"`
}

// stream is one browser's live stream: the latest "run" event it got.
type stream struct {
	mu     sync.Mutex
	last   liveRun
	events int
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *stream) latest() (liveRun, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.events
}

// open starts reading the experiment's live stream as b.
func (b *browser) open(id string) *stream {
	b.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/experiments/"+id+"/live", nil)
	hc := *b.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	require.NoError(b.tb, err)
	require.Equal(b.tb, http.StatusOK, resp.StatusCode)
	require.Equal(b.tb, "text/event-stream", resp.Header.Get("Content-Type"))
	s := &stream{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && event == "run":
				var r liveRun
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &r) == nil {
					s.mu.Lock()
					s.last, s.events = r, s.events+1
					s.mu.Unlock()
				}
			}
		}
	}()
	b.tb.Cleanup(func() { cancel(); <-s.done })
	return s
}

func (s *stream) close() { s.cancel(); <-s.done }

func TestLiveViewersShareOneHubAndSeeValuesChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ctx := context.Background()
	op := e.token("live-op", auth.Operator)
	id := submit(t, e, op)
	node := testenv.UniqueName("live-node")
	run := id + "-r9"

	// The run as the other services announce it: provisioned with a SUT
	// process and a broker on node, measuring, its load progressing.
	require.NoError(t, e.bus.Publish(ctx, events.RunProvisioned{ExperimentID: id, RunID: run, Backend: "local",
		Targets: []events.Target{{ID: node, Kind: "node", Node: node}, {ID: "sut-1", Kind: "process", Node: node, Role: "sut", PID: 10},
			{ID: "kafka-1", Kind: "process", Node: node, Role: "broker", PID: 11}}}, ""))
	require.NoError(t, e.bus.Publish(ctx, events.RunState{ExperimentID: id, RunID: run, Index: 9, State: events.RunStateMeasuring,
		TsMs: time.Now().UnixMilli()}, ""))
	require.NoError(t, e.bus.Publish(ctx, events.LoadStart{ExperimentID: id, RunID: run, Workload: events.Workload{Sensors: 250, PeriodMs: 500},
		DurationMs: 60_000}, ""))
	require.NoError(t, e.bus.Publish(ctx, events.LoadProgress{ExperimentID: id, RunID: run, Instance: "lg-0", RecordsSent: 100,
		TsMs: time.Now().UnixMilli()}, ""))
	// What the collectors and load generators store meanwhile: a minute
	// of samples from now (the node's model-estimated, the processes'
	// too), the offered and delivered rates and the consumer lag.
	now := time.Now().UnixMilli()
	var samples []store.Sample
	for ts := now - 2000; ts < now+60_000; ts += 200 {
		samples = append(samples,
			store.Sample{TsMs: ts, Node: node, Scope: "node", TargetID: node, Source: "model", PowerW: 20, IntervalMs: 200, Estimated: true},
			store.Sample{TsMs: ts, Node: node, Scope: "process", TargetID: "sut-1", Source: "model", PowerW: 4, IntervalMs: 200, Estimated: true},
			store.Sample{TsMs: ts, Node: node, Scope: "process", TargetID: "kafka-1", Source: "model", PowerW: 3, IntervalMs: 200, Estimated: true},
			store.Sample{TsMs: ts, Node: node, Scope: "unattributed", TargetID: node, Source: "model", PowerW: 13, IntervalMs: 200, Estimated: true})
	}
	require.NoError(t, e.store.InsertSamples(ctx, samples))
	var pts []store.RunMetric
	for ts := now - 2000; ts < now+60_000; ts += 1000 {
		pts = append(pts, store.RunMetric{ExperimentID: id, RunID: run, TsMs: ts, Name: kafkasignals.MetricLoadOffered, Value: 500},
			store.RunMetric{ExperimentID: id, RunID: run, TsMs: ts - 1000, Name: kafkasignals.MetricLoadAcked, Labels: `{"instance":"lg-0"}`, Value: 498},
			store.RunMetric{ExperimentID: id, RunID: run, TsMs: ts - 1000, Name: kafkasignals.MetricConsumerLag, Labels: `{"partition":"0"}`, Value: 7},
			store.RunMetric{ExperimentID: id, RunID: run, TsMs: ts - 1000, Name: kafkasignals.MetricConsumerLag, Labels: `{"partition":"1"}`, Value: 5})
	}
	require.NoError(t, e.store.InsertRunMetrics(ctx, pts))

	// Two viewers, one viewer-role, one operator.
	v1, v2 := e.browser(), e.browser()
	v1.signIn(e.token("live-viewer", auth.Viewer))
	v2.signIn(op)
	s1, s2 := v1.open(id), v2.open(id)
	for _, s := range []*stream{s1, s2} {
		testenv.Eventually(t, 30*time.Second, "a viewer sees the run's live figures", func() bool {
			r, _ := s.latest()
			return r.RunID == run && r.State == events.RunStateMeasuring && r.RecordsSent == 100 && r.Power["sut"] == 4 &&
				r.Offered != nil && *r.Offered == 500 && r.Lag != nil && *r.Lag == 12
		})
		r, _ := s.latest()
		require.Equal(t, 3.0, r.Power["broker"])
		require.Equal(t, 13.0, r.Power["unattributed"])
		require.Equal(t, 20.0, r.Power["node "+node])
		require.Contains(t, r.Estimated, "sut", "model-sourced power is labelled estimated")
		require.Contains(t, r.Estimated, "node "+node)
	}
	require.Equal(t, 1.0, gauge(t, e, "greenflow_console_live_experiments"), "one hub for both viewers")
	require.Equal(t, 2.0, gauge(t, e, "greenflow_console_live_viewers"))

	// The load progresses and a flag appears: both see it without reloading.
	require.NoError(t, e.bus.Publish(ctx, events.LoadProgress{ExperimentID: id, RunID: run, Instance: "lg-0", RecordsSent: 250,
		TsMs: time.Now().UnixMilli()}, ""))
	require.NoError(t, e.bus.Publish(ctx, events.RunAnalyzed{ExperimentID: id, RunID: run, MicroJPerEvent: 12.5, Estimated: true,
		Flags: []string{"energy_gap_bridged"}, TsMs: time.Now().UnixMilli()}, ""))
	for _, s := range []*stream{s1, s2} {
		testenv.Eventually(t, 30*time.Second, "a viewer sees the new progress and the flag", func() bool {
			r, _ := s.latest()
			return r.RecordsSent == 250 && len(r.Flags) == 1 && r.Flags[0] == "energy_gap_bridged"
		})
	}
	// A third viewer joining later gets the current state at once.
	s3 := e.browser()
	s3.signIn(op)
	late := s3.open(id)
	testenv.Eventually(t, 10*time.Second, "a late viewer gets the current figures", func() bool {
		r, _ := late.latest()
		return r.RecordsSent == 250
	})

	// Every viewer gone: the hub stops (its watch and its poll).
	s1.close()
	s2.close()
	late.close()
	testenv.Eventually(t, 10*time.Second, "the hub stops with its last viewer", func() bool {
		return gauge(t, e, "greenflow_console_live_experiments") == 0 &&
			gauge(t, e, "greenflow_console_live_viewers") == 0
	})
}

func TestLiveStreamNeedsASession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	resp, err := http.Get(e.url + "/experiments/whatever/live")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// gauge is a gauge's value on the console's registry.
func gauge(t testing.TB, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
