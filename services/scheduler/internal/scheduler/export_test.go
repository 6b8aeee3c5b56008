package scheduler

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WrapKV makes the scheduler use wrap(bucket) as its state bucket, so tests
// can inject faults into real KV operations. Call before Run.
func (s *Scheduler) WrapKV(wrap func(jetstream.KeyValue) jetstream.KeyValue) { s.wrapKV = wrap }

// RetryDelay is how long attempt n of a run waits under cfg.
func RetryDelay(cfg Config, n int) time.Duration { return cfg.retryDelay(n) }

// JudgeRun is judgeRun.
func JudgeRun(r RunRecord, metrics map[string]float64, minRatio float64) (Outcome, string) {
	return judgeRun(r, metrics, minRatio)
}

// DecideProbe is decideProbe.
func DecideProbe(outcomes []Outcome, reasons []string, repeat bool) (Outcome, string) {
	return decideProbe(outcomes, reasons, repeat)
}

// PlanSearch is planSearch: the search after the last probe and the next
// probe's runs.
func PlanSearch(e ExperimentRecord, run func(id string) (RunRecord, bool), metrics map[string]map[string]float64,
	nowMs int64) (SearchState, []RunRecord, error) {
	p, err := planSearch(e, run, metrics, nowMs)
	return p.search, p.runs, err
}
