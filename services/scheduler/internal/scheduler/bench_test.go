package scheduler_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// BenchmarkQueue1000RunSweep: from publishing a 1,000-run sweep to the
// scheduler reporting it queued — validated, expanded, every run in KV and
// in ClickHouse. Target < 1 s.
func BenchmarkQueue1000RunSweep(b *testing.B) {
	h := newBenchHarness(b)
	sweep := strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, "range: {from: 1, to: 1000, step: 1}", 1)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("sweep-%d", i)
		queued := h.waitFor(func(d bus.Delivery) bool {
			m, ok := d.Msg.(*events.ExperimentState)
			return ok && m.ExperimentID == id && m.RunsTotal == 1000
		})
		// Cancel at once so runs do not execute during the benchmark.
		require.NoError(b, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: sweep}, ""))
		<-queued
		b.StopTimer()
		cancelled := h.waitFor(func(d bus.Delivery) bool {
			m, ok := d.Msg.(*events.ExperimentState)
			return ok && m.ExperimentID == id && m.State == events.ExperimentStateCancelled
		})
		require.NoError(b, h.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: id}, ""))
		<-cancelled
		b.StartTimer()
	}
}

// BenchmarkTransitionRoundTrip: a provisioner answers run.provision; the
// time from its run.provisioned to the scheduler's run.state "baseline"
// event is one transition round trip. Reports the p50 and p99. Target p99 <
// 10 ms.
func BenchmarkTransitionRoundTrip(b *testing.B) {
	h := newBenchHarness(b)
	ctx := context.Background()
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	got := make(chan struct{}, 1024)
	go func() {
		_ = h.bus.Watch(ctx, time.Now(), []events.Type{events.TypeRunState}, func(d bus.Delivery) {
			m := d.Msg.(*events.RunState)
			if m.State != events.RunStateBaseline {
				return
			}
			mu.Lock()
			if t0, ok := sent[m.RunID]; ok {
				lat = append(lat, time.Since(t0))
			}
			mu.Unlock()
			got <- struct{}{}
		})
	}()
	go func() {
		_ = h.bus.Consume(ctx, bus.ConsumerSpec{Durable: "bench-provisioner", Types: []events.Type{events.TypeRunProvision}},
			func(ctx context.Context, d bus.Delivery) error {
				m := d.Msg.(*events.RunProvision)
				mu.Lock()
				sent[m.RunID] = time.Now()
				mu.Unlock()
				return h.bus.Publish(ctx, events.RunProvisioned{ExperimentID: m.ExperimentID, RunID: m.RunID, Backend: "local",
					Targets: []events.Target{{ID: "p", Kind: "process", Node: "n", PID: 1}}}, "")
			})
	}()
	spec := strings.Replace(fmt.Sprintf(specTmpl, 1), "baseline: 50ms", "baseline: 1h", 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("rt-%d", i)
		require.NoError(b, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: spec}, ""))
		<-got
		b.StopTimer()
		require.NoError(b, h.bus.Publish(ctx, events.ExperimentCancel{ExperimentID: id}, ""))
		b.StartTimer()
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
	}
}

// benchHarness is the test harness without responders.
type benchHarness struct {
	*harness
}

func newBenchHarness(b *testing.B) *benchHarness {
	h, _ := newHarness(b, nil, func(h *harness) { h.passive = true })
	return &benchHarness{harness: h}
}

// waitFor returns a channel closed when an event satisfying match arrives.
func (h *benchHarness) waitFor(match func(bus.Delivery) bool) <-chan struct{} {
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	go func() {
		close(ready)
		var once sync.Once
		_ = h.bus.Watch(ctx, time.Now().Add(-time.Second), []events.Type{events.TypeExperimentState}, func(d bus.Delivery) {
			if match(d) {
				once.Do(func() { close(done); cancel() })
			}
		})
	}()
	<-ready
	return done
}
