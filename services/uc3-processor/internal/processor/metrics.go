package processor

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	consumed     prometheus.Counter
	emitted      prometheus.Counter
	late         prometheus.Counter
	invalid      prometheus.Counter
	decodeErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "greenflow", Subsystem: "uc3_processor", Name: name, Help: help,
		})
	}
	m := &metrics{
		consumed:     counter("records_consumed_total", "Input records consumed, whether or not they decoded."),
		emitted:      counter("records_emitted_total", "Aggregates produced to the output topic and acknowledged."),
		late:         counter("late_records_total", "Records dropped because all their windows had closed (no grace)."),
		invalid:      counter("invalid_records_total", "Records dropped for a timestamp outside the windowable range (e.g. negative)."),
		decodeErrors: counter("decode_errors_total", "Input records skipped because their value did not decode."),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.consumed, m.emitted, m.late, m.invalid, m.decodeErrors} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register uc3 processor metrics: %w", err)
	}
	return m, nil
}
