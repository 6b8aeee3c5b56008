package console_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// cpuTime is this process's user and system CPU time so far (getrusage).
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLiveViewers: the CPU 100 browsers watching a running
// experiment live cost beyond the same run unwatched. A run in its
// measurement, with four load generators reporting progress ten times a
// second in all and its samples in ClickHouse, first with no viewer, then
// with 100 SSE streams open; each window's process CPU (getrusage: the
// console, embedded NATS, the event publisher and — an upper bound — the
// 100 clients reading their streams, all in this process) is compared.
// Reported: cpu-%-of-a-core beyond the unwatched run. Target < 5 %.
//
//	go test -run '^$' -bench BenchmarkLiveViewers -benchtime 5x ./services/console/internal/console/
func BenchmarkLiveViewers(b *testing.B) {
	const viewers, window = 100, 3 * time.Second
	e := newEnv(b, nil) // the default poll interval: 2 s
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	id := submit(b, e, e.token("bench-op", auth.Operator))
	run, node := id+"-r7", testenv.UniqueName("bench-node")
	require.NoError(b, e.bus.Publish(ctx, events.RunProvisioned{ExperimentID: id, RunID: run, Backend: "local",
		Targets: []events.Target{{ID: node, Kind: "node", Node: node}, {ID: "sut-1", Kind: "process", Node: node, Role: "sut", PID: 10}}}, ""))
	require.NoError(b, e.bus.Publish(ctx, events.RunState{ExperimentID: id, RunID: run, State: events.RunStateMeasuring, TsMs: time.Now().UnixMilli()}, ""))
	now := time.Now().UnixMilli()
	var samples []store.Sample
	for ts := now - 2000; ts < now+10*60_000; ts += 500 {
		samples = append(samples,
			store.Sample{TsMs: ts, Node: node, Scope: "node", TargetID: node, Source: "model", PowerW: 20, IntervalMs: 500, Estimated: true},
			store.Sample{TsMs: ts, Node: node, Scope: "process", TargetID: "sut-1", Source: "model", PowerW: 4, IntervalMs: 500, Estimated: true})
	}
	require.NoError(b, e.store.InsertSamples(ctx, samples))
	// The run's load generators: four, each reporting 2.5 times a second.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		var n int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n++
				_ = e.bus.Publish(ctx, events.LoadProgress{ExperimentID: id, RunID: run, Instance: []string{"a", "b", "c", "d"}[n%4],
					RecordsSent: n * 50, RatePerSec: 500, TsMs: time.Now().UnixMilli()}, "")
			}
		}
	}()
	defer wg.Wait()
	defer stop()

	measure := func() time.Duration {
		c0, t0 := cpuTime(b), time.Now()
		<-time.After(window) // a measurement window, not a wait for something
		return time.Duration(float64(cpuTime(b)-c0) * float64(window) / float64(time.Since(t0)))
	}
	// Unwatched: no hub at all; the run's events flow all the same.
	unwatched := measure()

	br := e.signedIn("bench-viewer", auth.Viewer)
	var got atomic.Int64
	for range viewers {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, br.base+"/experiments/"+id+"/live", nil)
		hc := *br.hc
		hc.Timeout = 0
		resp, err := hc.Do(req)
		require.NoError(b, err)
		require.Equal(b, http.StatusOK, resp.StatusCode)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "event: run") {
					got.Add(1)
				}
			}
		}()
	}
	testenv.Eventually(b, 30*time.Second, "every viewer joined and the run is streaming", func() bool {
		return gauge(b, e, "greenflow_console_live_viewers") == viewers && got.Load() >= viewers
	})
	require.Equal(b, 1.0, gauge(b, e, "greenflow_console_live_experiments"))

	b.ResetTimer()
	var extra time.Duration
	before := got.Load()
	for range b.N {
		extra += measure() - unwatched
	}
	b.StopTimer()
	pct := 100 * extra.Seconds() / (window.Seconds() * float64(b.N))
	b.ReportMetric(pct, "cpu-%-of-a-core-beyond-unwatched")
	b.ReportMetric(float64(got.Load()-before)/(window.Seconds()*float64(b.N)), "run-events-delivered/s")
	b.Logf("unwatched: %.2f%% of a core; %d viewers: %.2f%% more (%d events delivered)", 100*unwatched.Seconds()/window.Seconds(), viewers, pct,
		got.Load()-before)
}
