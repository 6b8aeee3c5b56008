package sink_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
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

// BenchmarkIngestAgainstRawClickHouse writes the same rows through the
// collector's writer and through plain clickhouse-go — PrepareBatch, Append
// row by row, Send, in batches of the writer's size on one connection, the
// way the driver's documentation inserts — each into a database of its
// own, alternating which goes first. Both rates are rows ClickHouse
// acknowledged (an insert returns once the server has written its block)
// over the wall time until the last was; the rows are then counted in
// ClickHouse, which must hold every one. The ratio is writer/raw (goal: at
// least 0.9); ratio_min and ratio_max are the spread of the pairs'.
func BenchmarkIngestAgainstRawClickHouse(b *testing.B) {
	ctx := context.Background()
	const rows, batchRows = 300_000, 50_000
	ourDSN, rawDSN := testenv.ClickHouseDSN(b), testenv.ClickHouseDSN(b)
	ours, err := store.Open(ctx, ourDSN, testenv.Logger(b))
	require.NoError(b, err)
	b.Cleanup(func() { _ = ours.Close() })
	rawStore, err := store.Open(ctx, rawDSN, testenv.Logger(b)) // creates the database and its tables
	require.NoError(b, err)
	b.Cleanup(func() { _ = rawStore.Close() })
	opts, err := clickhouse.ParseDSN(rawDSN)
	require.NoError(b, err)
	raw, err := clickhouse.Open(opts)
	require.NoError(b, err)
	b.Cleanup(func() { _ = raw.Close() })

	samples := func(round int) []store.Sample {
		out := make([]store.Sample, rows)
		for j := range out {
			out[j] = store.Sample{TsMs: 1_760_000_000_000 + int64(round)*rows + int64(j), Node: "node-00", Scope: "pod", TargetID: "pod/node-00/sut",
				Source: "kepler", PowerW: 12.5, EnergyJ: float64(j), DeltaJ: 3.1, IntervalMs: 1000, Collector: "bench"}
		}
		return out
	}
	viaWriter := func(data []store.Sample) error {
		w, err := sink.NewWriter(sink.Config{BatchSize: batchRows, FlushInterval: 50 * time.Millisecond, WriteTimeout: time.Minute, MaxPending: 2 * rows},
			sink.Deps{Store: ours, Queue: sink.NewMemory(2 * rows), Logger: testenv.Logger(b)})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(rctx) }()
		for c := 0; c < rows; c += 10_000 {
			w.AddSamples(data[c : c+10_000])
		}
		cancel() // drains: returns once everything is written
		return <-done
	}
	viaRaw := func(data []store.Sample) error {
		for c := 0; c < rows; c += batchRows {
			batch, err := raw.PrepareBatch(ctx, "INSERT INTO samples (ts_ms, ts, node, scope, target_id, zone, source, power_w, energy_j, delta_j, interval_ms, estimated, collector)")
			if err != nil {
				return err
			}
			for _, x := range data[c : c+batchRows] {
				if err := batch.Append(x.TsMs, time.UnixMilli(x.TsMs).UTC(), x.Node, x.Scope, x.TargetID, x.Zone, x.Source, x.PowerW, x.EnergyJ,
					x.DeltaJ, x.IntervalMs, uint8(0), x.Collector); err != nil {
					return err
				}
			}
			if err := batch.Send(); err != nil {
				return err
			}
		}
		return nil
	}
	count := func(st *store.Store) uint64 {
		var n uint64
		require.NoError(b, st.Conn().QueryRow(ctx, "SELECT count() FROM samples").Scan(&n))
		return n
	}
	var ourTime, rawTime time.Duration
	lo, hi := math.Inf(1), math.Inf(-1)
	b.ResetTimer()
	for i := range b.N {
		data := samples(i)
		var ours, raws time.Duration
		paths := []struct {
			run func([]store.Sample) error
			t   *time.Duration
		}{{viaWriter, &ours}, {viaRaw, &raws}}
		if i%2 == 1 {
			paths[0], paths[1] = paths[1], paths[0]
		}
		for _, p := range paths {
			began := time.Now()
			require.NoError(b, p.run(data))
			*p.t = time.Since(began)
		}
		ourTime, rawTime = ourTime+ours, rawTime+raws
		lo, hi = min(lo, raws.Seconds()/ours.Seconds()), max(hi, raws.Seconds()/ours.Seconds())
	}
	b.StopTimer()
	total := uint64(b.N) * rows
	require.Equal(b, total, count(ours), "every row reached ClickHouse through the writer")
	require.Equal(b, total, count(rawStore), "every row reached ClickHouse through the driver")
	ourRate, rawRate := float64(total)/ourTime.Seconds(), float64(total)/rawTime.Seconds()
	b.ReportMetric(ourRate, "writer_rows/s")
	b.ReportMetric(rawRate, "raw_rows/s")
	b.ReportMetric(ourRate/rawRate, "writer/raw")
	b.ReportMetric(lo, "ratio_min")
	b.ReportMetric(hi, "ratio_max")
}
