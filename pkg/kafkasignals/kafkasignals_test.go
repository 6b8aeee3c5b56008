package kafkasignals_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/kafkasignals"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// cluster starts kfake with the run's topics and returns an admin client and
// a producer, closed at cleanup.
func cluster(t testing.TB) (*kfake.Cluster, *kadm.Client, *kgo.Client) {
	t.Helper()
	c := testenv.Kafka(t, 4, "input-r1", "output-r1")
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return c, kadm.NewClient(cl), cl
}

func produce(t testing.TB, cl *kgo.Client, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Key: []byte{byte(i)}, Value: []byte("v")}
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())
}

func byName(pts []store.RunMetric) map[string]store.RunMetric {
	out := map[string]store.RunMetric{}
	for _, p := range pts {
		out[p.Name] = p
	}
	return out
}

func TestSample(t *testing.T) {
	ctx := context.Background()
	_, adm, cl := cluster(t)
	produce(t, cl, "input-r1", 100)
	produce(t, cl, "output-r1", 7)
	target := kafkasignals.Target{ExperimentID: "e1", RunID: "r1", InputTopic: "input-r1", OutputTopic: "output-r1", Group: "uc3-r1"}
	s := kafkasignals.NewSampler(adm, nil, testenv.Logger(t), func() time.Time { return time.UnixMilli(1234) })

	// No group yet: everything in the input is lag.
	pts, err := s.Sample(ctx, target)
	require.NoError(t, err)
	got := byName(pts)
	require.Len(t, got, 3)
	require.Equal(t, 100.0, got[kafkasignals.MetricInputHighWatermark].Value)
	require.Equal(t, `{"topic":"input-r1"}`, got[kafkasignals.MetricInputHighWatermark].Labels)
	require.Equal(t, 7.0, got[kafkasignals.MetricOutputHighWatermark].Value)
	require.Equal(t, 100.0, got[kafkasignals.MetricConsumerLag].Value)
	require.Equal(t, `{"group":"uc3-r1","topic":"input-r1"}`, got[kafkasignals.MetricConsumerLag].Labels)
	require.Equal(t, int64(1234), got[kafkasignals.MetricConsumerLag].TsMs)
	require.Equal(t, "r1", got[kafkasignals.MetricConsumerLag].RunID)

	// The group commits part of each partition: lag is the rest.
	ends, err := adm.ListEndOffsets(ctx, "input-r1")
	require.NoError(t, err)
	var offs kadm.Offsets
	var committed int64
	ends.Each(func(o kadm.ListedOffset) {
		at := o.Offset / 2
		committed += at
		offs.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: at, LeaderEpoch: -1})
	})
	_, err = adm.CommitOffsets(ctx, "uc3-r1", offs)
	require.NoError(t, err)
	pts, err = s.Sample(ctx, target)
	require.NoError(t, err)
	require.Equal(t, float64(100-committed), byName(pts)[kafkasignals.MetricConsumerLag].Value)
}

func TestSampleMissingTopics(t *testing.T) {
	_, adm, _ := cluster(t)
	s := kafkasignals.NewSampler(adm, nil, testenv.Logger(t), nil)
	tests := []struct {
		name   string
		target kafkasignals.Target
		want   []string
	}{
		{"output not created yet", kafkasignals.Target{RunID: "r1", InputTopic: "input-r1", OutputTopic: "nope", Group: "g"},
			[]string{kafkasignals.MetricInputHighWatermark, kafkasignals.MetricConsumerLag}},
		{"no input", kafkasignals.Target{RunID: "r1", InputTopic: "nope", OutputTopic: "output-r1", Group: "g"},
			[]string{kafkasignals.MetricOutputHighWatermark}},
		{"no group", kafkasignals.Target{RunID: "r1", InputTopic: "input-r1"}, []string{kafkasignals.MetricInputHighWatermark}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pts, err := s.Sample(context.Background(), tt.target)
			require.NoError(t, err)
			var names []string
			for _, p := range pts {
				names = append(names, p.Name)
			}
			require.ElementsMatch(t, tt.want, names)
		})
	}
}

// TestRunWritesClickHouse samples into a real ClickHouse while records
// arrive, and checks the stored series ends at the final counts.
func TestRunWritesClickHouse(t *testing.T) {
	st := testenv.Store(t)
	_, adm, cl := cluster(t)
	target := kafkasignals.Target{ExperimentID: "e1", RunID: "r1", InputTopic: "input-r1", OutputTopic: "output-r1", Group: "uc3-r1"}
	s := kafkasignals.NewSampler(adm, st, testenv.Logger(t), nil)
	sampler := testenv.Go(t, t.Context(), func(ctx context.Context) error { s.Run(ctx, target, 50*time.Millisecond, nil); return nil })
	produce(t, cl, "input-r1", 30)
	count := func(name string) (n uint64, last float64) {
		rows, err := st.Conn().Query(context.Background(),
			`SELECT count(), argMax(value, ts_ms) FROM run_metrics WHERE experiment_id = 'e1' AND run_id = 'r1' AND name = ?`, name)
		require.NoError(t, err)
		defer rows.Close()
		require.True(t, rows.Next())
		require.NoError(t, rows.Scan(&n, &last))
		return n, last
	}
	testenv.Eventually(t, 10*time.Second, "samples after the records", func() bool {
		_, last := count(kafkasignals.MetricInputHighWatermark)
		return last == 30
	})
	produce(t, cl, "input-r1", 12)
	require.NoError(t, sampler.Stop(10*time.Second, "the sampler")) // the final sample is taken after the context ends
	n, last := count(kafkasignals.MetricInputHighWatermark)
	require.GreaterOrEqual(t, n, uint64(2))
	require.Equal(t, 42.0, last)
	_, lag := count(kafkasignals.MetricConsumerLag)
	require.Equal(t, 42.0, lag)
	_, out := count(kafkasignals.MetricOutputHighWatermark)
	require.Equal(t, 0.0, out)
}

// TestHighWatermark: the sum over partitions of what the topic holds; a
// topic the cluster does not have is told apart.
func TestHighWatermark(t *testing.T) {
	ctx := context.Background()
	_, adm, cl := cluster(t)
	n, err := kafkasignals.HighWatermark(ctx, adm, "input-r1")
	require.NoError(t, err)
	require.Zero(t, n)
	produce(t, cl, "input-r1", 123)
	n, err = kafkasignals.HighWatermark(ctx, adm, "input-r1")
	require.NoError(t, err)
	require.Equal(t, int64(123), n)
	target := kafkasignals.Target{ExperimentID: "e1", RunID: "r1", InputTopic: "input-r1"}
	pts, err := kafkasignals.NewSampler(adm, nil, testenv.Logger(t), func() time.Time { return time.UnixMilli(5) }).Sample(ctx, target)
	require.NoError(t, err)
	require.Equal(t, pts[0], kafkasignals.InputPoint(target, 5, n), "a reading taken elsewhere joins the sampler's series")
	_, err = kafkasignals.HighWatermark(ctx, adm, "input-nope")
	require.ErrorIs(t, err, kafkasignals.ErrUnknownTopic)
	require.ErrorContains(t, err, "list end offsets of input-nope")
}
