package processor_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris without relying on the host's zoneinfo

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/processor"
)

const (
	inputTopic  = "input"
	outputTopic = "output"
	partitions  = 3
	waitFor     = 20 * time.Second
)

func newCluster(tb testing.TB) []string {
	tb.Helper()
	return testenv.Kafka(tb, partitions, inputTopic, outputTopic).ListenAddrs()
}

func newClient(tb testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	tb.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	require.NoError(tb, err)
	tb.Cleanup(cl.Close)
	return cl
}

func testConfig(brokers []string, format uc3.Format) processor.Config {
	cfg := processor.Default()
	cfg.Brokers = brokers
	cfg.Format = format
	cfg.EmitInterval = 50 * time.Millisecond
	cfg.DrainTimeout = 2 * time.Second
	return cfg
}

// running is a processor whose Run is in progress.
type running struct {
	p *processor.Processor
	*testenv.Running
}

func start(tb testing.TB, cfg processor.Config, reg prometheus.Registerer) *running {
	tb.Helper()
	p, err := processor.New(cfg, processor.Deps{Logger: zaptest.NewLogger(tb), Registry: reg})
	require.NoError(tb, err)
	return &running{p: p, Running: testenv.Go(tb, context.Background(), p.Run)}
}

// stop cancels Run and requires that it returns nil promptly.
func (r *running) stop(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, r.Stop(waitFor, "the processor's Run"))
}

type outKey struct {
	id    string
	hour  int
	start int64
}

// outputReader follows the output topic and keeps the latest aggregate per
// (sensor, hour, window).
type outputReader struct {
	cl     *kgo.Client
	latest map[outKey]uc3.HourOfDayStatistics
}

func newOutputReader(tb testing.TB, brokers []string) *outputReader {
	return &outputReader{
		cl:     newClient(tb, brokers, kgo.ConsumeTopics(outputTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())),
		latest: map[outKey]uc3.HourOfDayStatistics{},
	}
}

// waitUntil reads output until cond holds or the deadline passes.
func (o *outputReader) waitUntil(tb testing.TB, what string, cond func(map[outKey]uc3.HourOfDayStatistics) bool) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond(o.latest) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s; have %d aggregates", what, len(o.latest))
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		fetches := o.cl.PollFetches(ctx)
		cancel()
		fetches.EachRecord(func(r *kgo.Record) {
			s, err := uc3.DecodeStatisticsJSON(r.Value)
			require.NoError(tb, err, "output value %s", r.Value)
			require.Equal(tb, s.Identifier, string(r.Key), "output key is the sensor id")
			o.latest[outKey{s.Identifier, s.HourOfDay, s.WindowStartMs}] = s
		})
	}
}

func (o *outputReader) windowsWithCount(id string, hour int, count int64) int {
	n := 0
	for k, s := range o.latest {
		if k.id == id && k.hour == hour && s.Count == count {
			n++
		}
	}
	return n
}

func encode(format uc3.Format, r uc3.ActivePowerRecord) []byte {
	if format == uc3.FormatJSON {
		return uc3.AppendJSON(nil, r)
	}
	return uc3.AppendConfluentAvro(nil, 1, r)
}

func produce(tb testing.TB, cl *kgo.Client, key string, value []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(tb, cl.ProduceSync(ctx, &kgo.Record{Topic: inputTopic, Key: []byte(key), Value: value}).FirstErr())
}

func TestProcessorAggregatesRecords(t *testing.T) {
	for _, format := range []uc3.Format{uc3.FormatAvro, uc3.FormatJSON} {
		t.Run(string(format), func(t *testing.T) {
			brokers := newCluster(t)
			producer := newClient(t, brokers)

			// 10:00Z on 3 June 2024 is 12:00 in Paris (CEST).
			base := time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC).UnixMilli()
			const sensors, perSensor = 4, 5
			want := map[string][]float64{}
			for i := range sensors {
				id := "s_" + strconv.Itoa(i)
				for j := range perSensor {
					v := float64(10 + i*j)
					want[id] = append(want[id], v)
					produce(t, producer, id, encode(format, uc3.ActivePowerRecord{Identifier: id, Timestamp: base + int64(j)*1000 + int64(i), ValueInW: v}))
				}
			}
			// An hour later in Paris: a different key.
			produce(t, producer, "s_0", encode(format, uc3.ActivePowerRecord{Identifier: "s_0", Timestamp: base + 3_600_000, ValueInW: 99}))
			// Skipped without blocking what follows: garbage, a late record
			// (its windows closed 24 h before stream time), a negative time.
			produce(t, producer, "s_1", []byte("\x07garbage"))
			produce(t, producer, "s_1", encode(format, uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: base - 31*24*3_600_000, ValueInW: 1}))
			produce(t, producer, "s_2", encode(format, uc3.ActivePowerRecord{Identifier: "s_2", Timestamp: -5, ValueInW: 1}))
			// A record after all of them shows they did not block.
			produce(t, producer, "s_9", encode(format, uc3.ActivePowerRecord{Identifier: "s_9", Timestamp: base, ValueInW: 7}))
			const total = sensors*perSensor + 5

			reg := prometheus.NewRegistry()
			cfg := testConfig(brokers, format)
			r := start(t, cfg, reg)

			out := newOutputReader(t, brokers)
			out.waitUntil(t, "complete aggregates", func(map[outKey]uc3.HourOfDayStatistics) bool {
				for i := range sensors {
					if out.windowsWithCount("s_"+strconv.Itoa(i), 12, perSensor) != 30 {
						return false
					}
				}
				return out.windowsWithCount("s_0", 13, 1) == 30 && out.windowsWithCount("s_9", 12, 1) == 30
			})

			for id, vals := range want {
				var sum float64
				for _, v := range vals {
					sum += v
				}
				mean := sum / float64(len(vals))
				var ss float64
				for _, v := range vals {
					ss += (v - mean) * (v - mean)
				}
				for k, s := range out.latest {
					if k.id != id || k.hour != 12 {
						continue
					}
					require.Equal(t, int64(perSensor), s.Count, "%s", id)
					require.InDelta(t, mean, s.Mean, 1e-9, "%s mean", id)
					require.InDelta(t, ss/float64(len(vals)), s.PopulationVariance, 1e-9, "%s variance", id)
					require.Equal(t, vals[0], s.Min, "%s min", id)
					require.Equal(t, vals[len(vals)-1], s.Max, "%s max", id)
					require.Equal(t, 30*24*3_600_000, int(s.WindowEndMs-s.WindowStartMs))
					require.Zero(t, s.WindowStartMs%(24*3_600_000), "windows are aligned to the epoch")
					require.True(t, s.WindowStartMs <= base && base < s.WindowEndMs)
				}
			}
			s9 := out.latest[outKey{"s_9", 12, base - base%(24*3_600_000)}]
			require.Equal(t, uc3.HourOfDayStatistics{
				Identifier: "s_9", HourOfDay: 12, WindowStartMs: base - base%(24*3_600_000), WindowEndMs: base - base%(24*3_600_000) + 30*24*3_600_000,
				Count: 1, Mean: 7, PopulationVariance: 0, Min: 7, Max: 7,
			}, s9)

			require.Eventually(t, func() bool { return r.p.Stats().Consumed == total }, waitFor, 10*time.Millisecond)
			r.stop(t)

			st := r.p.Stats()
			require.Equal(t, processor.Stats{Consumed: total, Emitted: st.Emitted, Late: 1, Invalid: 1, DecodeErrors: 1}, st)
			require.GreaterOrEqual(t, st.Emitted, uint64(len(out.latest)))
			require.Equal(t, float64(total), testenv.CounterValue(t, reg, "greenflow_uc3_processor_records_consumed_total", nil))
			require.Equal(t, float64(st.Emitted), testenv.CounterValue(t, reg, "greenflow_uc3_processor_records_emitted_total", nil))
			require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_uc3_processor_late_records_total", nil))
			require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_uc3_processor_invalid_records_total", nil))
			require.Equal(t, 1.0, testenv.CounterValue(t, reg, "greenflow_uc3_processor_decode_errors_total", nil))

			// Every consumed offset is committed.
			adm := kadm.NewClient(newClient(t, brokers))
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			ends, err := adm.ListEndOffsets(ctx, inputTopic)
			require.NoError(t, err)
			committed, err := adm.FetchOffsets(ctx, cfg.Group)
			require.NoError(t, err)
			ends.Each(func(o kadm.ListedOffset) {
				c, ok := committed.Lookup(inputTopic, o.Partition)
				if o.Offset == 0 {
					return
				}
				require.True(t, ok, "partition %d has a commit", o.Partition)
				require.Equal(t, o.Offset, c.At, "partition %d", o.Partition)
			})
		})
	}
}

// TestProcessorResumesFromCommittedOffsets checks that a restarted member
// does not re-read what its predecessor committed.
func TestProcessorResumesFromCommittedOffsets(t *testing.T) {
	brokers := newCluster(t)
	producer := newClient(t, brokers)
	base := time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC).UnixMilli()
	for i := range 6 {
		id := fmt.Sprintf("s_%d", i)
		produce(t, producer, id, encode(uc3.FormatAvro, uc3.ActivePowerRecord{Identifier: id, Timestamp: base, ValueInW: 10}))
	}
	cfg := testConfig(brokers, uc3.FormatAvro)
	out := newOutputReader(t, brokers)

	first := start(t, cfg, nil)
	out.waitUntil(t, "first run's output", func(map[outKey]uc3.HourOfDayStatistics) bool {
		return out.windowsWithCount("s_5", 12, 1) == 30
	})
	require.Eventually(t, func() bool { return first.p.Stats().Consumed == 6 }, waitFor, 10*time.Millisecond)
	first.stop(t)

	produce(t, producer, "s_7", encode(uc3.FormatAvro, uc3.ActivePowerRecord{Identifier: "s_7", Timestamp: base + 1, ValueInW: 3}))
	second := start(t, cfg, nil)
	out.waitUntil(t, "second run's output", func(map[outKey]uc3.HourOfDayStatistics) bool {
		return out.windowsWithCount("s_7", 12, 1) == 30
	})
	require.Equal(t, uint64(1), second.p.Stats().Consumed, "only the new record is read")
	second.stop(t)
}

func TestNewDoesNoIOAndRegistersMetrics(t *testing.T) {
	cfg := processor.Default()
	cfg.Brokers = []string{"192.0.2.1:9092"} // TEST-NET-1: never answers
	reg := prometheus.NewRegistry()
	p, err := processor.New(cfg, processor.Deps{Registry: reg})
	require.NoError(t, err)
	require.Equal(t, processor.Stats{}, p.Stats())

	families, err := reg.Gather()
	require.NoError(t, err)
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	require.ElementsMatch(t, []string{
		"greenflow_uc3_processor_records_consumed_total",
		"greenflow_uc3_processor_records_emitted_total",
		"greenflow_uc3_processor_late_records_total",
		"greenflow_uc3_processor_invalid_records_total",
		"greenflow_uc3_processor_decode_errors_total",
	}, names)

	_, err = processor.New(cfg, processor.Deps{Registry: reg})
	require.ErrorContains(t, err, "register uc3 processor metrics")
}

// TestRunStopsPromptlyWithoutBroker checks that a processor that never
// reached its broker still stops within its drain timeout.
func TestRunStopsPromptlyWithoutBroker(t *testing.T) {
	cfg := testConfig([]string{"127.0.0.1:1"}, uc3.FormatAvro)
	cfg.DrainTimeout = time.Second
	r := start(t, cfg, nil)
	began := time.Now()
	r.stop(t)
	require.Less(t, time.Since(began), 3*time.Second)

	err := r.p.Run(context.Background())
	require.ErrorContains(t, err, "already started")
}

// TestProcessorHandsOverPartitionsWithoutLossOrDuplicates runs a second
// member next to the first: the revoking member emits and commits before
// handing partitions over, so together they read every record exactly once.
func TestProcessorHandsOverPartitionsWithoutLossOrDuplicates(t *testing.T) {
	brokers := newCluster(t)
	producer := newClient(t, brokers)
	base := time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC).UnixMilli()
	produced := uint64(0)
	produceRound := func() {
		for i := range 12 {
			id := fmt.Sprintf("s_%d", i)
			produce(t, producer, id, encode(uc3.FormatAvro, uc3.ActivePowerRecord{Identifier: id, Timestamp: base + int64(produced), ValueInW: 10}))
			produced++
		}
	}
	cfg := testConfig(brokers, uc3.FormatAvro)

	produceRound()
	a := start(t, cfg, nil)
	require.Eventually(t, func() bool { return a.p.Stats().Consumed == produced }, waitFor, 10*time.Millisecond)

	b := start(t, cfg, nil)
	consumed := func() uint64 { return a.p.Stats().Consumed + b.p.Stats().Consumed }
	deadline := time.Now().Add(waitFor)
	for b.p.Stats().Consumed == 0 {
		require.True(t, time.Now().Before(deadline), "second member never received partitions")
		produceRound()
		require.Eventually(t, func() bool { return consumed() >= produced }, waitFor, 10*time.Millisecond)
	}
	require.Eventually(t, func() bool { return consumed() == produced }, waitFor, 10*time.Millisecond)
	a.stop(t)
	b.stop(t)
	require.Equal(t, produced, consumed(), "each record read by exactly one member, once")
}

// TestRunFailsWhenOutputCannotBeProduced checks that Run gives up with an
// error, rather than committing input whose aggregates were lost.
func TestRunFailsWhenOutputCannotBeProduced(t *testing.T) {
	brokers := newCluster(t)
	producer := newClient(t, brokers)
	base := time.Date(2024, 6, 3, 10, 0, 0, 0, time.UTC).UnixMilli()
	produce(t, producer, "s_0", encode(uc3.FormatAvro, uc3.ActivePowerRecord{Identifier: "s_0", Timestamp: base, ValueInW: 10}))

	cfg := testConfig(brokers, uc3.FormatAvro)
	cfg.OutputTopic = "no-such-topic"
	r := start(t, cfg, nil)
	require.ErrorContains(t, r.Wait(waitFor, "the processor's Run (expected to fail)"), "produce 30 aggregates to no-such-topic")

	adm := kadm.NewClient(newClient(t, brokers))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	committed, err := adm.FetchOffsets(ctx, cfg.Group)
	require.NoError(t, err)
	for p := range int32(partitions) {
		c, has := committed.Lookup(inputTopic, p)
		require.False(t, has && c.At > 0, "partition %d committed to %d", p, c.At)
	}
}
