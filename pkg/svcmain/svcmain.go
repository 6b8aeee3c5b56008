// Package svcmain is the start-up every standalone GreenFlow service binary
// shares: common flags (NATS, ClickHouse, Kafka, metrics address, logging),
// connecting to the infrastructure, serving /metrics and /healthz, and running
// the service's component until SIGINT/SIGTERM, with a bounded drain.
// /healthz is ready only once the component has started (service.Initializer)
// and while its service.Checker and the bus's Check pass; otherwise it
// answers 503 with every reason.
package svcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
)

// Common holds the flags every service takes.
type Common struct {
	NATSURL       string
	ClickHouseDSN string
	KafkaBrokers  string
	MetricsAddr   string
	LogLevel      string
	LogConsole    bool
}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	fs.StringVar(&c.ClickHouseDSN, "clickhouse-dsn", "clickhouse://127.0.0.1:9000/greenflow", "ClickHouse native-protocol DSN")
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9464", "address serving /metrics and /healthz (empty disables)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.LogConsole, "log-console", false, "human-readable logs instead of JSON")
}

// Brokers splits the broker list.
func (c *Common) Brokers() []string {
	var out []string
	for _, b := range strings.Split(c.KafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Deps are what a service component is built from.
type Deps struct {
	Name     string
	Bus      *bus.Bus
	Store    *store.Store // nil unless Needs.Store
	Brokers  []string
	Logger   *zap.Logger
	Registry prometheus.Registerer
	// Mux is the service's HTTP server (beside /metrics and /healthz) where
	// it may register API handlers; nil when HTTP is disabled.
	Mux *http.ServeMux
}

// Needs says which infrastructure a service uses. StoreWhen, when set,
// decides Store after the flags are parsed (a flag may turn storage off).
type Needs struct {
	Store     bool
	StoreWhen func() bool
}

// Builder constructs the component from its dependencies.
type Builder func(d Deps) (service.Component, error)

// Run connects, builds and runs one service until ctx ends.
func Run(ctx context.Context, name string, c Common, needs Needs, build Builder) error {
	logger, err := service.NewLogger(c.LogLevel, c.LogConsole)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	logger = logger.With(zap.String("service", name))
	reg := service.NewRegistry()
	health := &service.Health{}
	b, err := bus.Connect(ctx, c.NATSURL, name, logger, reg)
	if err != nil {
		return err
	}
	defer b.Close()
	b.Expect(bus.ExpectedConsumers(name)...)
	health.Add("nats", b)
	srv := service.NewHTTPServer(c.MetricsAddr, reg, health, logger)
	d := Deps{Name: name, Bus: b, Brokers: c.Brokers(), Logger: logger, Registry: reg, Mux: srv.Mux}
	if needs.Store {
		st, err := store.Open(ctx, c.ClickHouseDSN, logger)
		if err != nil {
			return err
		}
		defer st.Close()
		d.Store = st
	}
	comp, err := build(d)
	if err != nil {
		return fmt.Errorf("configure %s: %w", name, err)
	}
	var g service.Group
	g.Add("http", srv)
	g.Add(name, comp)
	// /healthz: 503 with the reasons until every component has started
	// (after its Init, when it has one) and while any Check fails — the
	// component's own, or the bus's (connection, consumers, streams).
	health.Add("", &g)
	health.SetReady(true)
	logger.Info("service started")
	err = g.Run(ctx)
	logger.Info("service stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Main is a service binary's whole main: it parses the common flags plus the
// service's own (registered by flags, which returns the builder to use once
// they are parsed), runs the service until SIGINT or SIGTERM and exits
// non-zero on error.
func Main(name string, needs Needs, flags func(fs *flag.FlagSet) Builder) {
	service.Exit(name, runMain(name, os.Args[1:], needs, flags))
}

func runMain(name string, args []string, needs Needs, flags func(fs *flag.FlagSet) Builder) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var common Common
	common.Register(fs)
	build := flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if needs.StoreWhen != nil {
		needs.Store = needs.StoreWhen()
	}
	ctx, stop := service.SignalContext()
	defer stop()
	return Run(ctx, name, common, needs, build)
}
