// Package loadtest holds load tests of GreenFlow itself. They bind only to
// 127.0.0.1 and stop by themselves. Run: make loadtest.
package loadtest

import (
	"context"
	"fmt"
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

// BenchmarkLoadGenerator drives the load-generator service through its bus
// command against in-process Kafka and reports the achieved rate and how
// close it came to the target. One iteration is one 3-second load.
func BenchmarkLoadGenerator(b *testing.B) {
	for _, rate := range []float64{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("target=%.0f", rate), func(b *testing.B) {
			natsURL := testenv.NATS(b)
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "input"))
			require.NoError(b, err)
			defer cluster.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gb, err := bus.Connect(ctx, natsURL, "load-generator", zap.NewNop(), nil)
			require.NoError(b, err)
			defer gb.Close()
			comp, err := app.New(app.Default(), svcmain.Deps{Bus: gb, Logger: zap.NewNop(), Registry: prometheus.NewRegistry()})
			require.NoError(b, err)
			go func() { _ = comp.Run(ctx) }()
			cb, err := bus.Connect(ctx, natsURL, "bench", zap.NewNop(), nil)
			require.NoError(b, err)
			defer cb.Close()
			fin := make(chan events.LoadFinished, 1)
			go func() {
				_ = cb.Watch(ctx, time.Now().Add(-time.Second), []events.Type{events.TypeLoadFinished}, func(d bus.Delivery) {
					fin <- *d.Msg.(*events.LoadFinished)
				})
			}()
			b.ResetTimer()
			var achieved float64
			var sent int64
			for i := 0; i < b.N; i++ {
				run := fmt.Sprintf("bench-r%04d", i)
				require.NoError(b, cb.Publish(ctx, events.LoadStart{ExperimentID: "bench", RunID: run, DurationMs: 3000,
					Kafka:    events.Kafka{Brokers: cluster.ListenAddrs(), InputTopic: "input", OutputTopic: "output", Partitions: 8},
					Workload: events.Workload{Sensors: 10_000, PeriodMs: 1000, RatePerSec: rate, ValueW: 10, Format: "avro", SchemaID: 1}}, ""))
				f := <-fin
				require.False(b, f.Failed, f.Reason)
				achieved += f.AchievedRate
				sent += f.RecordsSent
			}
			b.StopTimer()
			achieved /= float64(b.N)
			b.ReportMetric(achieved, "msg/s")
			b.ReportMetric(100*achieved/rate, "%target")
			// The topic holds what was acknowledged.
			adm := kadm.NewClient(mustClient(b, cluster))
			defer adm.Close()
			offs, err := adm.ListEndOffsets(ctx, "input")
			require.NoError(b, err)
			var total int64
			offs.Each(func(o kadm.ListedOffset) { total += o.Offset })
			require.Equal(b, sent, total, "records in the topic = records the generator reported")
		})
	}
}

func mustClient(b *testing.B, c *kfake.Cluster) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(b, err)
	return cl
}
