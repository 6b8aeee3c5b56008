package scheduler

import "github.com/nats-io/nats.go/jetstream"

// WrapKV makes the scheduler use wrap(bucket) as its state bucket, so tests
// can inject faults into real KV operations. Call before Run.
func (s *Scheduler) WrapKV(wrap func(jetstream.KeyValue) jetstream.KeyValue) { s.wrapKV = wrap }
