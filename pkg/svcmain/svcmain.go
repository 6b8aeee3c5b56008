// Package svcmain is the start-up every standalone GreenFlow binary
// shares: common flags (NATS, ClickHouse, Kafka, metrics address, logging),
// connecting to the infrastructure, serving /metrics and /healthz, and running
// the service's component until SIGINT/SIGTERM, draining every component (each bounds its own drain).
// /healthz is ready only once the component has started (service.Initializer)
// and while its service.Checker and the bus's Check pass; otherwise it
// answers 503 with every reason. A Standalone binary outside the platform's
// messaging (the reference UC-3 processor) uses the same start-up without
// NATS.
//
// It is a package of its own, not part of pkg/service, because it connects
// to NATS and ClickHouse (pkg/bus, pkg/store) and parses flags: components
// and the one-process dev stack use pkg/service without either (see
// pkg/service's package comment).
package svcmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/kafkasasl"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/version"
)

// Common holds the flags every service takes.
type Common struct {
	NATSURL       string
	NATS          bus.Credentials // nkey seed file and TLS files
	ClickHouseDSN string
	// ClickHouseDSNFile holds the DSN instead (it carries a password,
	// which a command line shows to every local user).
	ClickHouseDSNFile string
	KafkaBrokers      string
	KafkaSASL         kafkasasl.Flag // the service's Kafka credentials
	MetricsAddr       string
	HTTPTLS           service.HTTPTLS // serve the HTTP server over TLS
	LogLevel          string
	LogConsole        bool
}

// DefaultMetricsAddr is where a platform service serves /metrics and
// /healthz unless told otherwise.
const DefaultMetricsAddr = "127.0.0.1:9464"

// register adds the flags a service with needs takes: a Standalone one
// takes only the HTTP and logging flags.
func (c *Common) register(fs *flag.FlagSet, needs Needs) {
	if !needs.Standalone {
		fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL")
		if err := BindFlags(fs, &c.NATS); err != nil {
			panic(err) // the tags are declared in pkg/bus; a bad one is a programming error
		}
		fs.StringVar(&c.ClickHouseDSN, "clickhouse-dsn", "clickhouse://127.0.0.1:9000/greenflow", "ClickHouse native-protocol DSN")
		fs.StringVar(&c.ClickHouseDSNFile, "clickhouse-dsn-file", "", "file holding the ClickHouse DSN with its password (clickhouse://user:password@host:9000/db); overrides --clickhouse-dsn")
		fs.StringVar(&c.KafkaBrokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
		if err := BindFlags(fs, &c.KafkaSASL); err != nil {
			panic(err) // the tags are declared in pkg/kafkasasl; a bad one is a programming error
		}
	}
	addr := DefaultMetricsAddr
	if needs.MetricsAddr != "" {
		addr = needs.MetricsAddr
	}
	fs.StringVar(&c.MetricsAddr, "metrics-addr", addr, "address serving /metrics and /healthz (empty disables)")
	if err := BindFlags(fs, &c.HTTPTLS); err != nil {
		panic(err) // the tags are declared in pkg/service; a bad one is a programming error
	}
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&c.LogConsole, "log-console", false, "human-readable logs instead of JSON")
}

// DSN is the ClickHouse DSN: --clickhouse-dsn-file's content, else
// --clickhouse-dsn.
func (c *Common) DSN() (string, error) {
	if c.ClickHouseDSNFile == "" {
		return c.ClickHouseDSN, nil
	}
	return ReadDSNFile(c.ClickHouseDSNFile)
}

// ReadDSNFile reads the ClickHouse DSN in path (--clickhouse-dsn-file of
// the services and the CLI): a DSN holds a password, so it is kept out of
// command lines.
func ReadDSNFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read --clickhouse-dsn-file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return "", fmt.Errorf("--clickhouse-dsn-file %s: empty, expected clickhouse://user:password@host:9000/database", path)
	}
	return dsn, nil
}

// Brokers splits the broker list.
func (c *Common) Brokers() []string { return SplitList(c.KafkaBrokers) }

// SplitList splits a comma-separated flag value, dropping empty items and
// the spaces around each.
func SplitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// Deps are what a service component is built from.
type Deps struct {
	Name    string
	Bus     *bus.Bus     // nil for a Standalone binary
	Store   *store.Store // nil unless Needs.Store
	Brokers []string
	// Kafka authenticates every Kafka client the service makes (SASL from
	// --kafka-sasl-file; none without it), whatever brokers a command
	// names; KafkaSASLFile is that file, for a process the service starts
	// (the provisioner's local UC-3 processor) to read too.
	Kafka         []kgo.Opt
	KafkaSASLFile string
	Logger        *zap.Logger
	Registry      prometheus.Registerer
	// Mux is the service's HTTP server (beside /metrics and /healthz) where
	// it may register API handlers; nil when HTTP is disabled.
	Mux *http.ServeMux
}

// Needs says which infrastructure a service uses.
type Needs struct {
	Store bool
	// ReadOnlyStore opens the store as a reader (store.OpenReadOnly): no
	// database is created, no migration applied, so the DSN may be the
	// read-only user's (the console's).
	ReadOnlyStore bool
	// Standalone is a binary outside the platform's messaging — the
	// reference UC-3 processor, a system under test: it connects to no NATS
	// (Deps.Bus is nil) and takes none of the infrastructure flags, only
	// --metrics-addr and the logging ones; its own flags say what it
	// connects to.
	Standalone bool
	// MetricsAddr is the default of --metrics-addr (DefaultMetricsAddr
	// when empty); many instances on one machine want "127.0.0.1:0".
	MetricsAddr string
}

// Builder constructs the component from its dependencies.
type Builder func(d Deps) (service.Component, error)

// Service declares a service once — its name, the infrastructure it needs,
// its configuration's defaults and flags, and its constructor — so that its
// own binary (Main, Command) and the one-process dev stack (Unit) start it
// the same way from one declaration.
type Service[C any] struct {
	Name  string
	Needs Needs
	// StoreWhen, when set, decides Needs.Store from the parsed
	// configuration (a flag may turn storage off).
	StoreWhen func(C) bool
	// Default returns the configuration's defaults (the zero C when nil).
	Default func() C
	// Flags adds the flags C's tags cannot declare (see BindFlags) over c;
	// every field tagged `flag:"…" help:"…"` gets its flag from its tags.
	Flags func(fs *flag.FlagSet, c *C)
	New   func(c C, d Deps) (service.Component, error)
}

// Unit is a service bound to its configuration, ready to be built from its
// dependencies.
type Unit struct {
	Name  string
	Build Builder
}

// HTTPAPI is a component that serves an API beside /metrics and /healthz
// (the scheduler's experiments, the analyzer's results).
type HTTPAPI interface {
	RegisterHTTP(mux *http.ServeMux)
}

// Unit binds the service to c. The built component's API, when it has one,
// is registered on Deps.Mux (when there is one): its own binary and the dev
// stack serve it alike.
func (s Service[C]) Unit(c C) Unit {
	return Unit{Name: s.Name, Build: func(d Deps) (service.Component, error) {
		comp, err := s.New(c, d)
		if err != nil {
			return nil, err
		}
		if api, ok := comp.(HTTPAPI); ok && d.Mux != nil {
			api.RegisterHTTP(d.Mux)
		}
		return comp, nil
	}}
}

// Main is a service binary's whole main: it runs Command with the process's
// arguments until SIGINT or SIGTERM and exits non-zero on error.
func (s Service[C]) Main() {
	ctx, stop := service.SignalContext()
	err := s.Command(ctx, os.Args[1:], os.Stderr)
	stop()
	service.Exit(s.Name, err)
}

// RegisterFlags adds the service's own flags over c: those its tags
// declare, then those of its Flags function.
func (s Service[C]) RegisterFlags(fs *flag.FlagSet, c *C) error {
	_, err := s.registerFlags(fs, c)
	return err
}

func (s Service[C]) registerFlags(fs *flag.FlagSet, c *C) (flagOf map[string]string, err error) {
	if flagOf, err = bindFlags(fs, c); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	if s.Flags != nil {
		s.Flags(fs, c)
	}
	return flagOf, nil
}

// Command parses args — the common flags plus the service's own — and runs
// the service until ctx ends. Usage and flag errors go to stderr; -h is not
// an error.
func (s Service[C]) Command(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(s.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var common Common
	common.register(fs, s.Needs)
	var cfg C
	if s.Default != nil {
		cfg = s.Default()
	}
	flagOf, err := s.registerFlags(fs, &cfg)
	if err != nil {
		return err
	}
	showVersion := fs.Bool("version", false, "print the version and commit, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		// An image's smoke test runs this: it proves the binary starts
		// in the image without any infrastructure.
		_, err := fmt.Fprintf(os.Stdout, "%s %s (commit %s)\n", s.Name, version.Version, version.Commit())
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	needs := s.Needs
	if s.StoreWhen != nil {
		needs.Store = s.StoreWhen(cfg)
	}
	// A configuration problem names the flag that sets the field, too.
	return flagNames(Run(ctx, s.Name, common, needs, s.Unit(cfg).Build), flagOf)
}

// Run connects, builds and runs one service until ctx ends.
func Run(ctx context.Context, name string, c Common, needs Needs, build Builder) error {
	if needs.Standalone && (needs.Store || needs.ReadOnlyStore) {
		return fmt.Errorf("%s: a standalone binary has no ClickHouse store", name)
	}
	logger, err := service.NewLogger(c.LogLevel, c.LogConsole)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	logger = logger.With(zap.String("service", name))
	reg := service.NewRegistry()
	health := &service.Health{}
	srv := service.NewHTTPServer(c.MetricsAddr, reg, health, logger)
	srv.TLS = c.HTTPTLS
	d := Deps{Name: name, Brokers: c.Brokers(), KafkaSASLFile: c.KafkaSASL.File, Logger: logger, Registry: reg, Mux: srv.Mux}
	if d.Kafka, err = c.KafkaSASL.Options(); err != nil {
		return err
	}
	if !needs.Standalone {
		opts, err := c.NATS.Options()
		if err != nil {
			return err
		}
		b, err := bus.Connect(ctx, c.NATSURL, name, logger, reg, opts...)
		if err != nil {
			return err
		}
		defer b.Close()
		b.Expect(bus.ExpectedConsumers(name)...)
		health.Add("nats", b)
		d.Bus = b
	}
	if needs.Store || needs.ReadOnlyStore {
		dsn, err := c.DSN()
		if err != nil {
			return err
		}
		open := store.Open
		if !needs.Store {
			open = store.OpenReadOnly
		}
		st, err := open(ctx, dsn, logger)
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
