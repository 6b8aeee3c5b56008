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

// FitPayload is fitPayload.
func FitPayload(st ExperimentStatus, limit int) ExperimentStatus { return fitPayload(st, limit) }
