// Package app is the reference UC-3 processor's command line, shared by its
// own binary and by "greenflow uc3-processor" (how the local provisioner
// starts it in dev mode).
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // time zones even in images without /usr/share/zoneinfo

	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/internal/processor"
)

const name = "uc3-processor"

// Main runs the processor until SIGINT or SIGTERM.
func Main(args []string) error {
	ctx, stop := service.SignalContext()
	defer stop()
	return Run(ctx, args, os.Stderr)
}

// Run parses args and runs the processor until ctx ends.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := processor.Default()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", strings.Join(cfg.Brokers, ","), "Kafka seed brokers, comma-separated host:port")
	fs.StringVar(&cfg.InputTopic, "input", cfg.InputTopic, "input topic of ActivePowerRecords keyed by sensor id")
	fs.StringVar(&cfg.OutputTopic, "output", cfg.OutputTopic, "output topic for the hour-of-day statistics")
	fs.StringVar(&cfg.Group, "group", cfg.Group, "Kafka consumer group")
	format := fs.String("format", string(cfg.Format), "input value format: avro (Confluent wire format) or json")
	fs.DurationVar(&cfg.EmitInterval, "emit-interval", cfg.EmitInterval, "how often updated aggregates are emitted and offsets committed")
	fs.StringVar(&cfg.TimeZone, "timezone", cfg.TimeZone, "IANA time zone that decides a record's hour of day")
	fs.DurationVar(&cfg.WindowDuration, "window-duration", cfg.WindowDuration, "sliding window size")
	fs.DurationVar(&cfg.WindowAdvance, "window-advance", cfg.WindowAdvance, "sliding window hop")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:0", "listen address for /metrics and /healthz; empty disables")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Brokers = splitList(*brokers)
	cfg.Format = uc3.Format(*format)
	if f, err := uc3.ParseFormat(*format); err == nil {
		cfg.Format = f // else Validate reports it alongside any other problem
	}

	logger, err := service.NewLogger(*logLevel, false)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	reg := service.NewRegistry()
	p, err := processor.New(cfg, logger, reg)
	if err != nil {
		return err
	}
	health := &service.Health{}
	srv := service.NewHTTPServer(*metricsAddr, reg, health, logger)

	var g service.Group
	g.Add("processor", p)
	g.Add("http", srv)
	health.SetReady(true)
	return g.Run(ctx)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
