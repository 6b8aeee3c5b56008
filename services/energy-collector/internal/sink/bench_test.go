package sink_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/sink"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// BenchmarkWriterToClickHouse measures the rows per second writers push
// through to the real ClickHouse: one collector instance, and three
// writing at once into the same table (each with its own connection).
func BenchmarkWriterToClickHouse(b *testing.B) {
	for _, instances := range []int{1, 3} {
		b.Run(fmt.Sprintf("instances=%d", instances), func(b *testing.B) {
			dsn := testenv.ClickHouseDSN(b)
			ctx := context.Background()
			const perInstance = 300_000
			var writers []*sink.Writer
			var stores []*store.Store
			for range instances {
				st, err := store.Open(ctx, dsn, testenv.Logger(b))
				require.NoError(b, err)
				b.Cleanup(func() { _ = st.Close() })
				w, err := sink.NewWriter(sink.Config{BatchSize: 50_000, FlushInterval: 50 * time.Millisecond, WriteTimeout: time.Minute,
					MaxPending: 2 * perInstance}, sink.Deps{Store: st, Queue: sink.NewMemory(2 * perInstance), Logger: testenv.Logger(b)})
				require.NoError(b, err)
				writers, stores = append(writers, w), append(stores, st)
			}
			// Every row is a distinct sample (the table collapses rows with
			// equal keys): each instance writes its own node, each chunk
			// later timestamps.
			const chunkRows = 10_000
			var total, round uint64
			b.ResetTimer()
			for range b.N {
				start := total
				var wg sync.WaitGroup
				errs := make([]error, len(writers)) // required on the benchmark's goroutine
				for i, w := range writers {
					rctx, cancel := context.WithCancel(ctx)
					done := make(chan error, 1)
					go func() { done <- w.Run(rctx) }()
					wg.Add(1)
					go func() {
						defer wg.Done()
						node := fmt.Sprintf("node-%02d", i)
						chunk := make([]store.Sample, chunkRows)
						for c := range perInstance / chunkRows {
							base := 1_760_000_000_000 + int64(round)*perInstance + int64(c)*chunkRows
							for j := range chunk {
								chunk[j] = store.Sample{TsMs: base + int64(j), Node: node, Scope: "pod", TargetID: "pod/" + node + "/sut",
									Source: "kepler", PowerW: 12.5, EnergyJ: float64(j), DeltaJ: 3.1, IntervalMs: 1000, Collector: "bench"}
							}
							w.AddSamples(chunk) // copies the rows
						}
						cancel() // drains: returns once everything is written
						errs[i] = <-done
					}()
				}
				wg.Wait()
				for _, err := range errs {
					require.NoError(b, err)
				}
				total = start + uint64(instances*perInstance)
				round++
			}
			b.StopTimer()
			var n uint64
			require.NoError(b, stores[0].Conn().QueryRow(ctx, "SELECT count() FROM samples").Scan(&n))
			require.Equal(b, total, n, "every row written once")
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
