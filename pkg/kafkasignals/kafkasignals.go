// Package kafkasignals samples the Kafka signals a run's analysis needs — the
// high-water marks of the run's input and output topics and the consumer-group
// lag of the system under test — and writes them as run metrics, so
// throughput can be read from the topics rather than from the generator and
// Theodolite's lag-trend SLO can be evaluated. It also names the load
// generators' per-second delivery series and checks a window's rate against
// them (loadtruth.go), for the generators that write them and the analyzer
// that reads them.
//
// A Sampler is safe for concurrent use; it owns nothing it is given.
package kafkasignals

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/store"
)

// Run metric names.
const (
	// MetricInputHighWatermark is the sum over partitions of the input
	// topic's high-water mark (records ever appended).
	MetricInputHighWatermark = "kafka_input_high_watermark"
	// MetricOutputHighWatermark is the same for the output topic.
	MetricOutputHighWatermark = "kafka_output_high_watermark"
	// MetricConsumerLag is the group's lag on the input topic, summed over
	// partitions. A partition without a committed offset lags by everything
	// from its log start, so lag is meaningful before the group exists.
	MetricConsumerLag = "kafka_consumer_lag"
)

// Target names what to sample for one run.
type Target struct {
	ExperimentID string
	RunID        string
	InputTopic   string
	OutputTopic  string // optional
	Group        string // optional: no lag without it
}

// Sink stores run metrics; *store.Store implements it.
type Sink interface {
	InsertRunMetrics(ctx context.Context, points []store.RunMetric) error
}

var _ Sink = (*store.Store)(nil)

// Sampler reads the signals through a Kafka admin client.
type Sampler struct {
	adm    *kadm.Client
	sink   Sink
	logger *zap.Logger
	now    func() time.Time
}

// NewSampler builds a sampler; no I/O. now may be nil (time.Now).
func NewSampler(adm *kadm.Client, sink Sink, logger *zap.Logger, now func() time.Time) *Sampler {
	if now == nil {
		now = time.Now
	}
	return &Sampler{adm: adm, sink: sink, logger: logger.With(zap.String("component", "kafka-signals")), now: now}
}

// Sample reads the signals once and returns them as run metric points, all
// stamped with the same time. A topic that does not exist yet is left out.
func (s *Sampler) Sample(ctx context.Context, t Target) ([]store.RunMetric, error) {
	ts := s.now().UnixMilli()
	topics := []string{t.InputTopic}
	if t.OutputTopic != "" {
		topics = append(topics, t.OutputTopic)
	}
	ends, err := s.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %v: %w", topics, err)
	}
	point := func(name string, labels map[string]string, v int64) store.RunMetric {
		l, _ := json.Marshal(labels) // map[string]string always marshals; keys come out sorted
		return store.RunMetric{ExperimentID: t.ExperimentID, RunID: t.RunID, TsMs: ts, Name: name, Labels: string(l), Value: float64(v)}
	}
	var out []store.RunMetric
	inputEnds, inputOK := sumOffsets(ends, t.InputTopic)
	if inputOK {
		out = append(out, point(MetricInputHighWatermark, map[string]string{"topic": t.InputTopic}, sumOf(inputEnds)))
	}
	if t.OutputTopic != "" {
		if e, ok := sumOffsets(ends, t.OutputTopic); ok {
			out = append(out, point(MetricOutputHighWatermark, map[string]string{"topic": t.OutputTopic}, sumOf(e)))
		}
	}
	if t.Group == "" || !inputOK {
		return out, nil
	}
	lag, err := s.lag(ctx, t, inputEnds)
	if err != nil {
		return out, err
	}
	return append(out, point(MetricConsumerLag, map[string]string{"group": t.Group, "topic": t.InputTopic}, lag)), nil
}

// InputPoint is the run metric point of t's input high-water mark for a
// reading taken elsewhere (e.g. when a load is accepted), labelled exactly
// as Sample labels its own, so it joins the same series.
func InputPoint(t Target, tsMs, hwm int64) store.RunMetric {
	l, _ := json.Marshal(map[string]string{"topic": t.InputTopic})
	return store.RunMetric{ExperimentID: t.ExperimentID, RunID: t.RunID, TsMs: tsMs, Name: MetricInputHighWatermark, Labels: string(l), Value: float64(hwm)}
}

// lag is Σ over the input's partitions of end − committed (or end − log
// start without a commit).
func (s *Sampler) lag(ctx context.Context, t Target, ends map[int32]int64) (int64, error) {
	commits, err := s.adm.FetchOffsets(ctx, t.Group)
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		return 0, fmt.Errorf("fetch committed offsets of group %s: %w", t.Group, err)
	}
	starts, err := s.adm.ListStartOffsets(ctx, t.InputTopic)
	if err != nil {
		return 0, fmt.Errorf("list start offsets of %s: %w", t.InputTopic, err)
	}
	startOf, _ := sumOffsets(starts, t.InputTopic)
	var total int64
	for p, end := range ends {
		from := startOf[p]
		if c, ok := commits.Lookup(t.InputTopic, p); ok && c.Err == nil && c.At >= 0 {
			from = c.At
		}
		if end > from {
			total += end - from
		}
	}
	return total, nil
}

// ErrUnknownTopic is returned by HighWatermark for a topic the cluster does
// not have (yet).
var ErrUnknownTopic = errors.New("unknown topic")

// HighWatermark is topic's high-water marks summed over its partitions: the
// records ever appended to it. It is what a load delivered, read from the
// broker rather than from the producers' acknowledgements. A topic the
// cluster does not know gives ErrUnknownTopic; a partition that cannot be
// listed gives an error naming it.
func HighWatermark(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	l, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	ps, ok := l[topic]
	if !ok || len(ps) == 0 {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, ErrUnknownTopic)
	}
	var total int64
	for p, o := range ps {
		switch {
		case errors.Is(o.Err, kerr.UnknownTopicOrPartition) && p < 0:
			return 0, fmt.Errorf("list end offsets of %s: %w", topic, ErrUnknownTopic)
		case o.Err != nil:
			return 0, fmt.Errorf("list end offset of %s partition %d: %w", topic, p, o.Err)
		}
		total += o.Offset
	}
	return total, nil
}

// sumOffsets returns the offsets of topic's partitions; false when the topic
// is unknown or any partition could not be listed.
func sumOffsets(l kadm.ListedOffsets, topic string) (map[int32]int64, bool) {
	ps, ok := l[topic]
	if !ok || len(ps) == 0 {
		return nil, false
	}
	out := make(map[int32]int64, len(ps))
	for p, o := range ps {
		if o.Err != nil || p < 0 {
			return nil, false
		}
		out[p] = o.Offset
	}
	return out, true
}

func sumOf(m map[int32]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Run samples t at once, then every interval and whenever now fires (nil:
// never; e.g. the moment a load's last record is acknowledged, so the
// series holds the topic's final count at the load's end, not only a later
// one that interpolation would smear over the time the load had stopped)
// until ctx ends, then once more (bounded by 5 s) so the series covers the
// end of the load, writing each sample to the sink. Failed samples and
// writes are logged and skipped: a missing point must not stop the run. It
// returns when ctx ends.
func (s *Sampler) Run(ctx context.Context, t Target, interval time.Duration, now <-chan struct{}) {
	logger := s.logger.With(zap.String("run_id", t.RunID))
	once := func(ctx context.Context) {
		pts, err := s.Sample(ctx, t)
		if err != nil {
			logger.Warn("kafka signal sample failed", zap.Error(err))
		}
		if len(pts) == 0 {
			return
		}
		if err := s.sink.InsertRunMetrics(ctx, pts); err != nil {
			logger.Warn("store kafka signals failed", zap.Int("points", len(pts)), zap.Error(err))
		}
	}
	once(ctx)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			once(fctx)
			cancel()
			return
		case <-tick.C:
			once(ctx)
		case <-now:
			once(ctx)
		}
	}
}
