// Package loadtest holds load tests of GreenFlow itself. They bind only to
// 127.0.0.1 and stop by themselves. Run: make loadtest.
package loadtest

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/load-generator/app"
)

// harness is one load-generator service (built like the binary builds it)
// on an embedded NATS, producing into an in-process Kafka.
type harness struct {
	kafka    *kfake.Cluster
	bus      *bus.Bus
	finished chan events.LoadFinished
}

func newHarness(tb testing.TB, partitions int32) *harness {
	tb.Helper()
	natsURL := testenv.NATS(tb)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "input"))
	require.NoError(tb, err)
	tb.Cleanup(cluster.Close)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	gb, err := bus.Connect(ctx, natsURL, "load-generator", zap.NewNop(), nil)
	require.NoError(tb, err)
	tb.Cleanup(gb.Close)
	cfg := app.Default()
	cfg.Instance = "bench"
	comp, err := app.New(cfg, svcmain.Deps{Bus: gb, Logger: zap.NewNop(), Registry: prometheus.NewRegistry()})
	require.NoError(tb, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = comp.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
	cb, err := bus.Connect(ctx, natsURL, "bench", zap.NewNop(), nil)
	require.NoError(tb, err)
	tb.Cleanup(cb.Close)
	h := &harness{kafka: cluster, bus: cb, finished: make(chan events.LoadFinished, 16)}
	go func() {
		_ = cb.Watch(ctx, time.Now().Add(-time.Second), []events.Type{events.TypeLoadFinished}, func(d bus.Delivery) {
			h.finished <- *d.Msg.(*events.LoadFinished)
		})
	}()
	return h
}

// load runs one load to its end.
func (h *harness) load(tb testing.TB, run string, w events.Workload, d time.Duration) events.LoadFinished {
	tb.Helper()
	if w.Format == "" {
		w.Format = "avro"
	}
	require.NoError(tb, h.bus.Publish(context.Background(), events.LoadStart{ExperimentID: "bench", RunID: run, DurationMs: d.Milliseconds(),
		Kafka:    events.Kafka{Brokers: h.kafka.ListenAddrs(), InputTopic: "input", OutputTopic: "output"},
		Workload: w}, ""))
	select {
	case f := <-h.finished:
		require.Equal(tb, run, f.RunID)
		return f
	case <-time.After(d + time.Minute):
		tb.Fatalf("no load.finished for %s", run)
		return events.LoadFinished{}
	}
}

func (h *harness) topicTotal(tb testing.TB) int64 {
	tb.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.ListenAddrs()...))
	require.NoError(tb, err)
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), "input")
	require.NoError(tb, err)
	var total int64
	offs.Each(func(o kadm.ListedOffset) { total += o.Offset })
	return total
}

// usage is the process's CPU time and allocation count.
type usage struct {
	cpu     time.Duration
	mallocs uint64
}

func now(tb testing.TB) usage {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), mallocs: ms.Mallocs}
}

// BenchmarkLoadGenerator drives the load-generator service through its bus
// command against in-process Kafka (Avro, 8 partitions, 150,000 sensors as
// Theodolite sizes one instance). One iteration is one 3-second load. It
// reports the achieved rate and its share of the target, the process's CPU
// seconds per 100,000 msg/s delivered and allocations per record — both for
// the whole process, so they include the in-process Kafka broker (the
// generator's own hot path is BenchmarkProduceRecord in
// services/load-generator/internal/loadgen: 0 allocs/record). target=max asks
// for 5,000,000 msg/s: what comes out is the maximum sustained rate.
func BenchmarkLoadGenerator(b *testing.B) {
	for _, tc := range []struct {
		name string
		rate float64
	}{{"10000", 10_000}, {"100000", 100_000}, {"max", 5_000_000}} {
		b.Run("target="+tc.name, func(b *testing.B) {
			h := newHarness(b, 8)
			const d = 3 * time.Second
			var achieved, cpuPerSec, allocs float64
			var sent int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				before := now(b)
				f := h.load(b, fmt.Sprintf("bench-%s-r%04d", tc.name, i), events.Workload{Sensors: 150_000, RatePerSec: tc.rate, ValueW: 10, SchemaID: 1}, d)
				after := now(b)
				require.False(b, f.Failed, f.Reason)
				achieved += f.AchievedRate
				sent += f.RecordsSent
				cpuPerSec += (after.cpu - before.cpu).Seconds() / (time.Duration(f.EndMs-f.StartMs) * time.Millisecond).Seconds()
				allocs += float64(after.mallocs-before.mallocs) / float64(f.RecordsSent)
			}
			b.StopTimer()
			n := float64(b.N)
			achieved, cpuPerSec, allocs = achieved/n, cpuPerSec/n, allocs/n
			b.ReportMetric(achieved, "msg/s")
			if tc.name != "max" {
				b.ReportMetric(100*achieved/tc.rate, "%target")
			}
			b.ReportMetric(cpuPerSec*100_000/achieved, "cpu-s/100k-msg")
			b.ReportMetric(allocs, "allocs/record")
			require.Equal(b, sent, h.topicTotal(b), "records in the topic = records the generator reported")
		})
	}
}
