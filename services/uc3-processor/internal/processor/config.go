package processor

import (
	"errors"
	"fmt"
	"github.com/greenflow/greenflow/pkg/kafkasasl"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/aggregate"
)

// Config configures a Processor. Field names in errors are the YAML keys.
type Config struct {
	// Brokers are the Kafka seed brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// InputTopic carries ActivePowerRecords keyed by sensor id.
	InputTopic string `yaml:"input_topic" flag:"input" help:"input topic of ActivePowerRecords keyed by sensor id"`
	// OutputTopic receives HourOfDayStatistics keyed by sensor id.
	OutputTopic string `yaml:"output_topic" flag:"output" help:"output topic for the hour-of-day statistics"`
	// Group is the consumer group; instances sharing it split the input
	// partitions.
	Group string `yaml:"group" flag:"group" help:"Kafka consumer group"`
	// Format is the encoding of the input values.
	Format uc3.Format `yaml:"format"`
	// EmitInterval is how often, in processing time, updated aggregates are
	// produced and offsets committed. Theodolite's Kafka Streams commits
	// every 5 s and Flink emits every 15 s; GreenFlow uses 1 s.
	EmitInterval time.Duration `yaml:"emit_interval" flag:"emit-interval" help:"how often updated aggregates are emitted and offsets committed"`
	// TimeZone decides the hour of day of a record (IANA name).
	TimeZone string `yaml:"time_zone" flag:"timezone" help:"IANA time zone that decides a record's hour of day"`
	// WindowDuration and WindowAdvance shape the sliding event-time windows.
	WindowDuration time.Duration `yaml:"window_duration" flag:"window-duration" help:"sliding window size"`
	WindowAdvance  time.Duration `yaml:"window_advance" flag:"window-advance" help:"sliding window hop"`
	// DrainTimeout bounds the work after Run's context ends (the last emit
	// and commit, leaving the group) and an emit before partitions are
	// handed over.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// KafkaSASL is its Kafka credentials file (--kafka-sasl-file).
	KafkaSASL kafkasasl.Flag `yaml:"kafka_sasl"`
}

// Default returns Theodolite's UC-3 settings with GreenFlow's 1 s emit
// interval and a local broker.
func Default() Config {
	return Config{
		Brokers:        []string{"127.0.0.1:9092"},
		InputTopic:     "input",
		OutputTopic:    "output",
		Group:          "uc3-processor",
		Format:         uc3.FormatAvro,
		EmitInterval:   time.Second,
		TimeZone:       "Europe/Paris",
		WindowDuration: aggregate.DefaultDuration,
		WindowAdvance:  aggregate.DefaultAdvance,
		DrainTimeout:   5 * time.Second,
	}
}

// FieldError is one problem with one Config field.
type FieldError struct {
	Field string
	Err   error
}

// Error implements error.
func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *FieldError) Unwrap() error { return e.Err }

// Validate reports every problem at once, each as a *FieldError.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "must list at least one broker")
	}
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			bad(fmt.Sprintf("brokers[%d]", i), "must not be empty")
		}
	}
	if c.InputTopic == "" {
		bad("input_topic", "must be set")
	}
	if c.OutputTopic == "" {
		bad("output_topic", "must be set")
	}
	if c.InputTopic != "" && c.InputTopic == c.OutputTopic {
		bad("output_topic", "must differ from input_topic %q", c.InputTopic)
	}
	if c.Group == "" {
		bad("group", "must be set")
	}
	if c.Format != uc3.FormatAvro && c.Format != uc3.FormatJSON {
		bad("format", "%q is not %q or %q", c.Format, uc3.FormatAvro, uc3.FormatJSON)
	}
	if c.EmitInterval <= 0 {
		bad("emit_interval", "%v is not positive", c.EmitInterval)
	}
	if c.DrainTimeout <= 0 {
		bad("drain_timeout", "%v is not positive", c.DrainTimeout)
	}
	if c.TimeZone == "" {
		bad("time_zone", "must be set")
	} else if _, err := time.LoadLocation(c.TimeZone); err != nil {
		bad("time_zone", "load %q: %w", c.TimeZone, err)
	}
	durationErr, advanceErr := aggregate.ValidateWindows(c.WindowDuration, c.WindowAdvance)
	if durationErr != nil {
		errs = append(errs, &FieldError{Field: "window_duration", Err: durationErr})
	}
	if advanceErr != nil {
		errs = append(errs, &FieldError{Field: "window_advance", Err: advanceErr})
	}
	return errors.Join(errs...)
}
