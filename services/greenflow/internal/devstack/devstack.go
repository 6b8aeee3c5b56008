// Package devstack runs every GreenFlow service in one process on embedded
// infrastructure: NATS JetStream from the nats-server library, franz-go's
// in-process Kafka cluster (kfake), and ClickHouse from a DSN or a
// clickhouse-server child process with its own data directory. It backs
// `greenflow dev`, `greenflow demo` and the end-to-end tests.
package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svcmain"
	analyzerapp "github.com/greenflow/greenflow/services/analyzer/app"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	loadgenapp "github.com/greenflow/greenflow/services/load-generator/app"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

// Options configures the stack.
type Options struct {
	StateDir      string   // JetStream store and ClickHouse data; required
	Ephemeral     bool     // remove StateDir's contents on Close
	ClickHouseDSN string   // external ClickHouse; empty starts a child server
	NATSPort      int      // -1: any free port
	KafkaPort     int      // 0: any free port
	HTTPAddr      string   // /metrics and /healthz; empty disables
	UC3Command    []string // how the local provisioner starts the UC-3 processor
	Collector     func(*collectorapp.Config)
	Scheduler     func(*schedulerapp.Config)
	Provisioner   func(*provisionerapp.Config)
	Logger        *zap.Logger
	// Skip names services not to run here (they run elsewhere, e.g. as
	// separate processes in tests).
	Skip []string
}

// Endpoints is written to StateDir/endpoints.json so the CLI can find a
// running dev stack.
type Endpoints struct {
	NATSURL       string   `json:"nats_url"`
	KafkaBrokers  []string `json:"kafka_brokers"`
	ClickHouseDSN string   `json:"clickhouse_dsn"`
	HTTPAddr      string   `json:"http_addr,omitempty"`
	PID           int      `json:"pid"`
}

// EndpointsFile is the file name under the state dir.
const EndpointsFile = "endpoints.json"

// Stack is a running set of infrastructure with the services built on it.
type Stack struct {
	Endpoints Endpoints
	Store     *store.Store
	Registry  *prometheus.Registry

	opts   Options
	nats   *server.Server
	kafka  *kfake.Cluster
	ch     *chserver.Server
	group  service.Group
	health *service.Health
	http   *service.HTTPServer
	buses  []*bus.Bus
	logger *zap.Logger
}

// Start brings up the infrastructure and builds every service; Run runs them.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.StateDir == "" {
		return nil, errors.New("devstack: state dir is required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", o.StateDir, err)
	}
	s := &Stack{opts: o, logger: o.Logger, Registry: service.NewRegistry(), health: &service.Health{}}
	// /healthz: ready once every service has started and while each
	// service's bus and components say they can work (see svcmain).
	s.health.Add("", &s.group)
	s.health.SetReady(true)
	// One HTTP server for the whole stack: /metrics, /healthz and every
	// service's API. With no address it serves nothing but still collects
	// the handlers, so tests can drive them with httptest.
	s.http = service.NewHTTPServer(o.HTTPAddr, s.Registry, s.health, o.Logger)
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.nats, err = natsembed.Start(natsembed.Options{Port: o.NATSPort, StoreDir: filepath.Join(o.StateDir, "jetstream")})
	if err != nil {
		return nil, err
	}
	s.Endpoints.NATSURL = s.nats.ClientURL()
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(4)}
	if o.KafkaPort > 0 {
		kopts = append(kopts, kfake.Ports(o.KafkaPort))
	}
	s.kafka, err = kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process kafka: %w", err)
	}
	s.Endpoints.KafkaBrokers = s.kafka.ListenAddrs()
	s.Endpoints.ClickHouseDSN = o.ClickHouseDSN
	if s.Endpoints.ClickHouseDSN == "" {
		s.ch, err = chserver.Start(ctx, filepath.Join(o.StateDir, "clickhouse"))
		if err != nil {
			return nil, fmt.Errorf("start clickhouse (or pass --clickhouse-dsn): %w", err)
		}
		s.Endpoints.ClickHouseDSN = s.ch.DSN("greenflow")
	}
	s.Store, err = store.Open(ctx, s.Endpoints.ClickHouseDSN, o.Logger)
	if err != nil {
		return nil, err
	}
	s.Endpoints.PID = os.Getpid()
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(s.Endpoints, "", "  ")
	if err := os.WriteFile(filepath.Join(o.StateDir, EndpointsFile), b, 0o644); err != nil {
		return nil, fmt.Errorf("write endpoints: %w", err)
	}
	return s, nil
}

// deps gives one service its own bus connection, logger and metric labels.
func (s *Stack) deps(ctx context.Context, name string) (svcmain.Deps, error) {
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, s.Registry)
	logger := s.logger.With(zap.String("service", name))
	b, err := bus.Connect(ctx, s.Endpoints.NATSURL, name, logger, reg)
	if err != nil {
		return svcmain.Deps{}, err
	}
	s.buses = append(s.buses, b)
	b.Expect(bus.ExpectedConsumers(name)...)
	s.health.Add(name+" nats", b)
	return svcmain.Deps{Name: name, Bus: b, Store: s.Store, Brokers: s.Endpoints.KafkaBrokers, Logger: logger, Registry: reg, Mux: s.http.Mux}, nil
}

func (s *Stack) build(ctx context.Context) error {
	schedCfg := schedulerapp.Service.Default()
	if s.opts.Scheduler != nil {
		s.opts.Scheduler(&schedCfg)
	}
	provCfg := provisionerapp.Service.Default()
	// The SUTs' logs live with the stack's state; they stop with the stack,
	// whose Kafka and NATS go with it.
	provCfg.Local.StateDir = filepath.Join(s.opts.StateDir, "provisioner")
	provCfg.Local.StopOnShutdown = true
	if len(s.opts.UC3Command) > 0 {
		provCfg.Local.UC3Command = s.opts.UC3Command
	}
	if s.opts.Provisioner != nil {
		s.opts.Provisioner(&provCfg)
	}
	collCfg := collectorapp.Service.Default()
	// Rows ClickHouse has not taken and the local meter's checkpoint
	// survive a restart of the dev stack (the collector then continues
	// without a gap).
	collCfg.SpoolDir = filepath.Join(s.opts.StateDir, "collector-spool")
	if s.opts.Collector != nil {
		s.opts.Collector(&collCfg)
	}
	units := []svcmain.Unit{
		schedulerapp.Service.Unit(schedCfg),
		provisionerapp.Service.Unit(provCfg),
		loadgenapp.Service.Unit(loadgenapp.Service.Default()),
		collectorapp.Service.Unit(collCfg),
		analyzerapp.Service.Unit(analyzerapp.Service.Default()),
	}
	for _, u := range units {
		if slices.Contains(s.opts.Skip, u.Name) {
			continue
		}
		d, err := s.deps(ctx, u.Name)
		if err != nil {
			return err
		}
		c, err := u.Build(d)
		if err != nil {
			return fmt.Errorf("configure %s: %w", u.Name, err)
		}
		s.group.Add(u.Name, c)
	}
	if s.opts.HTTPAddr != "" {
		s.group.Add("http", s.http)
		s.Endpoints.HTTPAddr = s.opts.HTTPAddr
	}
	return nil
}

// Handler is the stack's HTTP handler (/metrics, /healthz, service APIs).
func (s *Stack) Handler() http.Handler { return s.http.Handler() }

// Run runs every service until ctx ends or one fails.
func (s *Stack) Run(ctx context.Context) error {
	return s.group.Run(ctx)
}

// Close stops the infrastructure (services must have stopped).
func (s *Stack) Close() {
	for _, b := range s.buses {
		b.Close()
	}
	if s.Store != nil {
		_ = s.Store.Close()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
	if s.ch != nil {
		_ = s.ch.Stop()
	}
	_ = os.Remove(filepath.Join(s.opts.StateDir, EndpointsFile))
	if s.opts.Ephemeral {
		_ = os.RemoveAll(s.opts.StateDir)
	}
}

// ReadEndpoints loads a running stack's endpoints from a state dir.
func ReadEndpoints(stateDir string) (Endpoints, error) {
	var e Endpoints
	b, err := os.ReadFile(filepath.Join(stateDir, EndpointsFile))
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("read %s: %w", EndpointsFile, err)
	}
	return e, nil
}
