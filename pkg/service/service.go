// Package service is the runtime every GreenFlow process and component
// shares: the one lifecycle (Component: New without I/O, Run blocks until
// its context ends; Initializer for work before a component can serve;
// Checker for whether it can work right now), the Group that runs
// components together — a binary's top level and the goroutines inside a
// component alike —, /healthz (Health) and /metrics (HTTPServer) on an
// injected Prometheus registry, the zap logger and signal handling.
//
// service and svcmain are two packages, on purpose. service depends on
// nothing of GreenFlow's, so every component can use its Group and
// Checker, and `greenflow dev` — every service in one process on embedded
// NATS, in-process Kafka and one ClickHouse — shares it with the
// standalone binaries. svcmain is only a standalone binary's start-up:
// flags, connecting to NATS and ClickHouse (pkg/bus, pkg/store), and
// running the service's component with service's pieces. Merged, every
// component using a Group would depend on that start-up, and the dev stack
// on flag parsing it does not use.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds a production zap logger (JSON) or a console one.
func NewLogger(level string, console bool) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: expected debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	if console {
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	return cfg.Build()
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// SignalContext returns a context cancelled on SIGINT, SIGTERM or SIGHUP:
// a closed terminal stops a command as Ctrl-C does — `greenflow testbed up`
// releases its job, `greenflow dev` stops its stack — instead of killing
// it where it stands (SIGHUP's default), which left a testbed job reserved
// until its walltime.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
}

// Exit prints err and exits non-zero; it is for main functions only.
func Exit(name string, err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}

// Register registers a component's metrics on reg — each of them, every
// failure (a name taken twice) reported at once, naming whose metrics they
// are — and nothing when reg is nil (a component built without metrics).
func Register(reg prometheus.Registerer, whose string, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register %s metrics: %w", whose, err)
	}
	return nil
}
