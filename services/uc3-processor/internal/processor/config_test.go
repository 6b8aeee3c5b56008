package processor_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/processor"
)

func TestDefaultIsValid(t *testing.T) {
	cfg := processor.Default()
	require.NoError(t, cfg.Validate())
	require.Equal(t, "input", cfg.InputTopic)
	require.Equal(t, "output", cfg.OutputTopic)
	require.Equal(t, "uc3-processor", cfg.Group)
	require.Equal(t, uc3.FormatAvro, cfg.Format)
	require.Equal(t, time.Second, cfg.EmitInterval)
	require.Equal(t, "Europe/Paris", cfg.TimeZone)
	require.Equal(t, 30*24*time.Hour, cfg.WindowDuration)
	require.Equal(t, 24*time.Hour, cfg.WindowAdvance)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*processor.Config)
		wantErr []string
	}{
		{"json format", func(c *processor.Config) { c.Format = uc3.FormatJSON }, nil},
		{"tumbling hourly windows", func(c *processor.Config) { c.WindowDuration, c.WindowAdvance = time.Hour, time.Hour }, nil},
		{"everything missing", func(c *processor.Config) { *c = processor.Config{} }, []string{
			"brokers: must list at least one broker",
			"input_topic: must be set",
			"output_topic: must be set",
			"group: must be set",
			`format: "" is not "avro" or "json"`,
			"emit_interval: 0s is not positive",
			"drain_timeout: 0s is not positive",
			"time_zone: must be set",
			"window_duration: 0s is not a positive whole number of milliseconds",
			"window_advance: 0s is not a positive whole number of milliseconds",
		}},
		{"empty broker", func(c *processor.Config) { c.Brokers = []string{"k:9092", " "} }, []string{"brokers[1]: must not be empty"}},
		{"same topics", func(c *processor.Config) { c.OutputTopic = c.InputTopic }, []string{`output_topic: must differ from input_topic "input"`}},
		{"unknown time zone", func(c *processor.Config) { c.TimeZone = "Mars/Olympus_Mons" }, []string{`time_zone: load "Mars/Olympus_Mons"`}},
		{"advance beyond duration", func(c *processor.Config) { c.WindowAdvance = 31 * 24 * time.Hour },
			[]string{"window_advance: 744h0m0s is longer than the window duration 720h0m0s"}},
		{"sub-millisecond window", func(c *processor.Config) { c.WindowDuration = time.Hour + time.Microsecond },
			[]string{"window_duration: 1h0m0.000001s is not a positive whole number of milliseconds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := processor.Default()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			var fe *processor.FieldError
			require.True(t, errors.As(err, &fe), "problems are *FieldError")
			require.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), len(tt.wantErr), "one error per problem: %v", err)

			_, newErr := processor.New(cfg, processor.Deps{})
			require.EqualError(t, newErr, err.Error(), "New refuses the config with the same problems")
		})
	}
}
