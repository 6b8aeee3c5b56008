// Package app is the reference UC-3 processor's command line, shared by its
// own binary and by "greenflow uc3-processor" (how the local provisioner
// starts it in dev mode). It starts like every GreenFlow binary
// (pkg/svcmain), as a standalone one: a system under test talks to Kafka
// only, never to NATS or ClickHouse.
package app

import (
	"context"
	"flag"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // time zones even in images without /usr/share/zoneinfo

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/processor"
)

const name = "uc3-processor"

// needs: no NATS, no store; many processors may run on one machine, so the
// metrics port is picked free unless given.
var needs = svcmain.Needs{Standalone: true, MetricsAddr: "127.0.0.1:0"}

// Main runs the processor until SIGINT or SIGTERM.
func Main(args []string) error {
	ctx, stop := service.SignalContext()
	defer stop()
	return Run(ctx, args, os.Stderr)
}

// Run parses args and runs the processor until ctx ends.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	return svcmain.Command(ctx, name, args, stderr, needs, flags)
}

// flags registers the processor's flags over its defaults.
func flags(fs *flag.FlagSet) svcmain.Builder {
	cfg := processor.Default()
	brokers := fs.String("brokers", strings.Join(cfg.Brokers, ","), "Kafka seed brokers, comma-separated host:port")
	fs.StringVar(&cfg.InputTopic, "input", cfg.InputTopic, "input topic of ActivePowerRecords keyed by sensor id")
	fs.StringVar(&cfg.OutputTopic, "output", cfg.OutputTopic, "output topic for the hour-of-day statistics")
	fs.StringVar(&cfg.Group, "group", cfg.Group, "Kafka consumer group")
	format := fs.String("format", string(cfg.Format), "input value format: avro (Confluent wire format) or json")
	fs.DurationVar(&cfg.EmitInterval, "emit-interval", cfg.EmitInterval, "how often updated aggregates are emitted and offsets committed")
	fs.StringVar(&cfg.TimeZone, "timezone", cfg.TimeZone, "IANA time zone that decides a record's hour of day")
	fs.DurationVar(&cfg.WindowDuration, "window-duration", cfg.WindowDuration, "sliding window size")
	fs.DurationVar(&cfg.WindowAdvance, "window-advance", cfg.WindowAdvance, "sliding window hop")
	return func(d svcmain.Deps) (service.Component, error) {
		cfg.Brokers = svcmain.SplitList(*brokers)
		cfg.Format = uc3.Format(*format)
		if f, err := uc3.ParseFormat(*format); err == nil {
			cfg.Format = f // else Validate reports it alongside any other problem
		}
		return processor.New(cfg, processor.Deps{Logger: d.Logger, Registry: d.Registry})
	}
}
