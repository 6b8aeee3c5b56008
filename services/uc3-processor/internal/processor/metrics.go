package processor

import (
	"github.com/greenflow/greenflow/pkg/service"
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
	if err := service.Register(reg, "uc3 processor", m.consumed, m.emitted, m.late, m.invalid, m.decodeErrors); err != nil {
		return nil, err
	}
	return m, nil
}
