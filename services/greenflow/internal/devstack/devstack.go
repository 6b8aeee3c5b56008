// Package devstack runs every GreenFlow service in one process on embedded
// infrastructure: NATS JetStream from the nats-server library, franz-go's
// in-process Kafka cluster (kfake), and ClickHouse from a DSN or a
// clickhouse-server child process with its own data directory. It backs
// `greenflow dev`, `greenflow demo` and the end-to-end tests.
//
// Its HTTP APIs need tokens like any deployment's (pkg/auth): on its first
// start the stack creates an admin token and writes it to TokenFile in its
// state directory, readable by its user only; later starts reuse it while
// the token store still accepts it. The CLI finds it there.
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
	"strings"
	"syscall"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/kafkasasl"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svcmain"
	analyzerapp "github.com/greenflow/greenflow/services/analyzer/app"
	consoleapp "github.com/greenflow/greenflow/services/console/app"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	loadgenapp "github.com/greenflow/greenflow/services/load-generator/app"
	provisionerapp "github.com/greenflow/greenflow/services/provisioner/app"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

// Options configures the stack.
type Options struct {
	StateDir      string // JetStream store and ClickHouse data; required
	Ephemeral     bool   // remove StateDir's contents on Close
	ClickHouseDSN string // external ClickHouse; empty starts a child server
	NATSPort      int    // -1: any free port
	KafkaPort     int    // 0: any free port
	HTTPAddr      string // /metrics and /healthz; empty disables
	// ConsoleAddr is where the web console listens ("127.0.0.1:0": any
	// free port); empty, or no HTTPAddr (the console acts through the
	// API), runs none.
	ConsoleAddr string
	UC3Command  []string // how the local provisioner starts the UC-3 processor
	Collector   func(*collectorapp.Config)
	Scheduler   func(*schedulerapp.Config)
	Provisioner func(*provisionerapp.Config)
	Logger      *zap.Logger
	// Skip names services not to run here (they run elsewhere, e.g. as
	// separate processes in tests).
	Skip []string
}

// Endpoints is written to StateDir/endpoints.json so the CLI can find a
// running dev stack.
type Endpoints struct {
	NATSURL      string   `json:"nats_url"`
	KafkaBrokers []string `json:"kafka_brokers"`
	// KafkaSASLFile holds the Kafka user's SASL credentials (0600): a
	// client needs them (--kafka-sasl-file) to talk to the stack's Kafka.
	KafkaSASLFile string `json:"kafka_sasl_file"`
	// ClickHouseDSN is the writer's DSN, password included, in memory;
	// endpoints.json (0644) holds it without the password, and the
	// reader's and writer's DSNs are in ClickHouseReaderDSNFile and
	// ClickHouseWriterDSNFile (0600), which ReadEndpoints reads.
	ClickHouseDSN           string `json:"clickhouse_dsn"`
	ClickHouseReaderDSN     string `json:"-"`
	ClickHouseReaderDSNFile string `json:"clickhouse_reader_dsn_file,omitempty"`
	ClickHouseWriterDSNFile string `json:"clickhouse_writer_dsn_file,omitempty"`
	HTTPAddr                string `json:"http_addr,omitempty"`
	ConsoleURL              string `json:"console_url,omitempty"`
	PID                     int    `json:"pid"`
}

// EndpointsFile is the file name under the state dir.
const EndpointsFile = "endpoints.json"

// The ClickHouse DSNs of the read-only user (the CLI's queries) and the
// writer, with their passwords, under the state dir (mode 0600).
const (
	ClickHouseReaderDSNFile = "clickhouse-reader.dsn"
	ClickHouseWriterDSNFile = "clickhouse-writer.dsn"
)

// KafkaSASLFile holds the in-process Kafka's only user's SASL/SCRAM
// credentials under the state dir (mode 0600), made on the first start and
// kept: the broker refuses clients without them.
const KafkaSASLFile = "kafka-sasl.yaml"

// kafkaUser is that user: every service and the UC-3 processor share it
// (kfake has no per-topic rights worth deriving yet).
const kafkaUser = "greenflow"

// NATSDir holds every NATS user's nkey seed under the state dir (mode 0700,
// each seed 0600): the embedded server accepts only those users, each
// with the permissions pkg/bus derives from the event contract.
const NATSDir = "nats"

// NATSCreds are user's NATS credentials in the stack at stateDir.
func NATSCreds(stateDir, user string) bus.Credentials {
	return bus.Credentials{NKeyFile: natsembed.SeedFile(filepath.Join(stateDir, NATSDir), user)}
}

// connect connects a bus as NATS user (the service name, or bus.UserAdmin)
// with its credentials, named producer.
func (s *Stack) connect(ctx context.Context, user, producer string, logger *zap.Logger, reg prometheus.Registerer) (*bus.Bus, error) {
	opts, err := NATSCreds(s.opts.StateDir, user).Options()
	if err != nil {
		return nil, err
	}
	return bus.Connect(ctx, s.Endpoints.NATSURL, producer, logger, reg, opts...)
}

// TokenFile holds the stack's admin token under the state dir, mode 0600.
const TokenFile = "admin.token"

// adminTokenName names the stack's admin token in the token store.
const adminTokenName = "dev-admin"

// Stack is a running set of infrastructure with the services built on it.
type Stack struct {
	Endpoints Endpoints
	Store     *store.Store
	Registry  *prometheus.Registry

	opts  Options
	nats  *server.Server
	kafka *kfake.Cluster
	// kafkaAuth authenticates the services' Kafka clients.
	kafkaAuth []kgo.Opt
	ch        *chserver.Server
	group     service.Group
	health    *service.Health
	http      *service.HTTPServer
	buses     []*bus.Bus
	admin     *bus.Bus // the declarer's (declareTopology), admin's
	logger    *zap.Logger
	// adminToken is the token in TokenFile.
	adminToken string
	// apiAddr is the HTTP server's bound address once apiReady is closed.
	apiAddr  string
	apiReady chan struct{}
	console  consoleComponent
	// reader is the console's read-only store.
	reader *store.Store
}

// Start brings up the infrastructure and builds every service; Run runs them.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.StateDir == "" {
		return nil, errors.New("devstack: state dir is required")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	// Absolute: the paths written into endpoints.json (the reader's DSN
	// file, the credentials) must resolve from wherever the CLI runs, not
	// only from the directory this stack was started in.
	abs, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", o.StateDir, err)
	}
	o.StateDir = abs
	// The state dir holds every credential of the stack and every run's
	// data: it and all that this process and its children (clickhouse-
	// server, NATS's store) create in it are this user's only — the umask
	// covers the files servers create themselves, the chmod a dir an older
	// stack made 0755.
	syscall.Umask(0o077)
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", o.StateDir, err)
	}
	if err := os.Chmod(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("make state dir %s private: %w", o.StateDir, err)
	}
	s := &Stack{opts: o, logger: o.Logger, Registry: service.NewRegistry(), health: &service.Health{}, apiReady: make(chan struct{})}
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
	users, err := natsembed.EnsureUsers(filepath.Join(o.StateDir, NATSDir))
	if err != nil {
		return nil, err
	}
	s.nats, err = natsembed.Start(natsembed.Options{Port: o.NATSPort, StoreDir: filepath.Join(o.StateDir, "jetstream"), Users: users})
	if err != nil {
		return nil, err
	}
	s.Endpoints.NATSURL = s.nats.ClientURL()
	kcreds, err := kafkaCredentials(filepath.Join(o.StateDir, KafkaSASLFile))
	if err != nil {
		return nil, err
	}
	s.kafkaAuth = []kgo.Opt{kcreds.Option()}
	s.Endpoints.KafkaSASLFile = filepath.Join(o.StateDir, KafkaSASLFile)
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(4), kfake.EnableSASL(),
		kfake.Superuser(kcreds.Mechanism, kcreds.User, kcreds.Password)}
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
		s.Endpoints.ClickHouseReaderDSN = s.ch.ReaderDSN("greenflow")
	}
	s.Store, err = store.Open(ctx, s.Endpoints.ClickHouseDSN, o.Logger)
	if err != nil {
		return nil, err
	}
	s.Endpoints.PID = os.Getpid()
	// As the operator, before the services: only admin declares streams
	// and buckets (bus.Declares; a service that could would re-route any
	// subject into any other), so the admin's bus declares them all here —
	// and again after a NATS restart that lost them, and the trigger
	// stream's subjects as triggers are armed (FollowTriggers, run with the
	// services) — and the services look them up.
	if err := s.declareTopology(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureAdminToken(ctx); err != nil {
		return nil, err
	}
	if err := s.build(ctx); err != nil {
		return nil, err
	}
	if err := s.writeEndpoints(s.Endpoints); err != nil {
		return nil, err
	}
	return s, nil
}

// writeEndpoints replaces endpoints.json whole: a CLI reading it meanwhile
// sees the old or the new one, never a part. The ClickHouse DSNs carry
// passwords: they go to files only the stack's user reads.
func (s *Stack) writeEndpoints(e Endpoints) error {
	reader := e.ClickHouseReaderDSN
	if reader == "" { // an external ClickHouse: one DSN for all
		reader = e.ClickHouseDSN
	}
	e.ClickHouseReaderDSNFile = filepath.Join(s.opts.StateDir, ClickHouseReaderDSNFile)
	e.ClickHouseWriterDSNFile = filepath.Join(s.opts.StateDir, ClickHouseWriterDSNFile)
	if err := writeFile(e.ClickHouseReaderDSNFile, []byte(reader+"\n"), 0o600); err != nil {
		return err
	}
	if err := writeFile(e.ClickHouseWriterDSNFile, []byte(e.ClickHouseDSN+"\n"), 0o600); err != nil {
		return err
	}
	e.ClickHouseDSN = store.RedactDSN(e.ClickHouseDSN)
	b, _ := json.MarshalIndent(e, "", "  ")
	return writeFile(filepath.Join(s.opts.StateDir, EndpointsFile), b, 0o600)
}

// declareTopology declares every stream and bucket as admin on a bus kept
// open with the stack, and adds the declarer's trigger follower to the
// services it runs.
func (s *Stack) declareTopology(ctx context.Context) error {
	b, err := s.connect(ctx, bus.UserAdmin, bus.UserAdmin, s.logger.With(zap.String("service", "nats-topology")), nil)
	if err != nil {
		return err
	}
	s.buses = append(s.buses, b)
	s.admin = b
	if err := bus.DeclareTopology(ctx, b); err != nil {
		return err
	}
	if err := s.sealOnce(ctx, b); err != nil {
		return err
	}
	s.group.Add("nats-topology", service.Func(func(ctx context.Context) error { return bus.FollowTriggers(ctx, b) }))
	return nil
}

// SealedMarker, under the state dir, says that the records a version from
// before signatures left in its buckets were sealed (bus.SealUnsigned):
// it is done once, at the first start that signs, never again — a later
// unsigned record is a forgery, not history.
const SealedMarker = "nats/records-sealed"

// sealOnce seals the records an older stack left, the first time.
func (s *Stack) sealOnce(ctx context.Context, b *bus.Bus) error {
	marker := filepath.Join(s.opts.StateDir, SealedMarker)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	sealed, err := bus.SealUnsigned(ctx, b)
	if err != nil {
		return err
	}
	if len(sealed) > 0 {
		s.logger.Info("records from before signatures sealed as admin (once, at this first start that signs)", zap.Any("by_bucket", sealed))
	}
	return writeFile(marker, []byte("records written before signatures were sealed by this state dir's admin\n"), 0o600)
}

// ensureAdminToken reuses the admin token in TokenFile while the token
// store accepts it; otherwise (first start, a lost JetStream store, a
// revoked or expired token) it creates one and writes it there.
func (s *Stack) ensureAdminToken(ctx context.Context) error {
	tokens, err := auth.OpenStore(ctx, s.admin, nil)
	if err != nil {
		return err
	}
	path := filepath.Join(s.opts.StateDir, TokenFile)
	if data, err := os.ReadFile(path); err == nil {
		plain := strings.TrimSpace(string(data))
		_, err := tokens.Verify(ctx, plain)
		switch {
		case err == nil:
			s.adminToken = plain
			return os.Chmod(path, 0o600)
		case errors.Is(err, auth.ErrUnknownToken), errors.Is(err, auth.ErrRevoked), errors.Is(err, auth.ErrExpired):
			s.logger.Info("admin token in the state dir is no longer accepted; creating a new one", zap.String("reason", err.Error()))
		default:
			return fmt.Errorf("check the admin token in %s: %w", path, err)
		}
	}
	// A live token of this name whose secret is lost can never be used:
	// revoke it, so the name is free.
	if _, err := tokens.Revoke(ctx, adminTokenName); err != nil && !errors.Is(err, auth.ErrUnknownToken) {
		return fmt.Errorf("revoke the old admin token: %w", err)
	}
	plain, t, err := tokens.Create(ctx, adminTokenName, auth.Admin, 0)
	if err != nil {
		return fmt.Errorf("create the admin token: %w", err)
	}
	if err := writeFile(path, []byte(plain+"\n"), 0o600); err != nil {
		return err
	}
	s.adminToken = plain
	s.logger.Info("admin token created", zap.String("token_id", t.ID), zap.String("file", path))
	return nil
}

// writeFile replaces path with data and mode at once: it is written to a
// temporary file, created readable by this user only (os.CreateTemp), and
// renamed over path — so a secret is never readable by others, not even
// for a moment, and a reader never sees half a file.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after a successful rename, nothing is there
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// AdminToken is the stack's admin token (the one in TokenFile).
func (s *Stack) AdminToken() string { return s.adminToken }

// StateDir is where the stack keeps its state (credentials among it).
func (s *Stack) StateDir() string { return s.opts.StateDir }

// ReadToken reads the admin token a dev stack wrote in stateDir.
func ReadToken(stateDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, TokenFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// APIURL waits until the stack's HTTP server listens (Run must be running)
// and returns its base URL, e.g. http://127.0.0.1:9464.
func (s *Stack) APIURL(ctx context.Context) (string, error) {
	if s.opts.HTTPAddr == "" {
		return "", errors.New("the dev stack serves no HTTP (no address)")
	}
	select {
	case <-s.apiReady:
		return "http://" + s.apiAddr, nil
	case <-ctx.Done():
		return "", fmt.Errorf("wait for the dev stack's HTTP server: %w", ctx.Err())
	}
}

// announceAPI records the HTTP server's bound address (a ":0" port is
// known only then) in endpoints.json, where the CLI reads it.
func (s *Stack) announceAPI(ctx context.Context) error {
	select {
	case addr := <-s.http.Listening():
		e := s.Endpoints
		e.HTTPAddr = addr
		if err := s.writeEndpoints(e); err != nil {
			return err
		}
		s.apiAddr = addr
		close(s.apiReady)
		if s.console != nil {
			// The console's address, once it listens, for the CLI.
			if u, err := s.console.URL(ctx); err == nil {
				e.ConsoleURL = u
				if err := s.writeEndpoints(e); err != nil {
					return err
				}
			}
		}
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

// deps gives one service its own bus connection, logger and metric labels.
func (s *Stack) deps(ctx context.Context, name string) (svcmain.Deps, error) {
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, s.Registry)
	logger := s.logger.With(zap.String("service", name))
	b, err := s.connect(ctx, name, name, logger, reg)
	if err != nil {
		return svcmain.Deps{}, err
	}
	s.buses = append(s.buses, b)
	b.Expect(bus.ExpectedConsumers(name)...)
	s.health.Add(name+" nats", b)
	return svcmain.Deps{Name: name, Bus: b, Store: s.Store, Brokers: s.Endpoints.KafkaBrokers, Kafka: s.kafkaAuth,
		KafkaSASLFile: s.Endpoints.KafkaSASLFile, Logger: logger, Registry: reg, Mux: s.http.Mux}, nil
}

// kafkaCredentials reads the Kafka user's credentials in path, making them
// the first time.
func kafkaCredentials(path string) (kafkasasl.Credentials, error) {
	if _, err := os.Stat(path); err == nil {
		return kafkasasl.Read(path)
	}
	c, err := kafkasasl.Generate(kafkaUser)
	if err != nil {
		return c, err
	}
	return c, kafkasasl.Write(path, c)
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
		s.group.Add("endpoints", service.Func(s.announceAPI))
		s.Endpoints.HTTPAddr = s.opts.HTTPAddr
		if s.opts.ConsoleAddr != "" && !slices.Contains(s.opts.Skip, consoleapp.Service.Name) {
			if err := s.buildConsole(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// consoleComponent is the console as the stack runs it.
type consoleComponent interface {
	service.Component
	URL(ctx context.Context) (string, error)
}

// buildConsole adds the web console: its own NATS user, ClickHouse as the
// read-only user, the stack's API for every action.
func (s *Stack) buildConsole(ctx context.Context) error {
	d, err := s.deps(ctx, consoleapp.Service.Name)
	if err != nil {
		return err
	}
	reader := s.Endpoints.ClickHouseReaderDSN
	if reader == "" { // an external ClickHouse: one DSN for all
		reader = s.Endpoints.ClickHouseDSN
	}
	if s.reader, err = store.OpenReadOnly(ctx, reader, d.Logger); err != nil {
		return err
	}
	d.Store = s.reader
	cfg := consoleapp.Service.Default()
	cfg.Addr = s.opts.ConsoleAddr
	s.console, err = consoleapp.NewWith(cfg, d, s.APIURL)
	if err != nil {
		return fmt.Errorf("configure console: %w", err)
	}
	s.group.Add(consoleapp.Service.Name, s.console)
	return nil
}

// ConsoleURL waits until the console listens (Run must be running) and
// returns its base URL.
func (s *Stack) ConsoleURL(ctx context.Context) (string, error) {
	if s.console == nil {
		return "", errors.New("the dev stack runs no console (no --console-addr or no HTTP address)")
	}
	return s.console.URL(ctx)
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
	if s.reader != nil {
		_ = s.reader.Close()
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
	// A stack that crashed leaves its endpoints behind: its ports may be
	// anyone's now, and a client must not send them its token or password.
	if !processAlive(e.PID) {
		return Endpoints{}, fmt.Errorf("%s: %w (pid %d is gone; it did not stop cleanly)", filepath.Join(stateDir, EndpointsFile), ErrNotRunning, e.PID)
	}
	// The DSNs with passwords: the writer's in ClickHouseDSN, as in the
	// running stack.
	for _, f := range []struct {
		path string
		to   *string
	}{{e.ClickHouseWriterDSNFile, &e.ClickHouseDSN}, {e.ClickHouseReaderDSNFile, &e.ClickHouseReaderDSN}} {
		if f.path == "" {
			continue
		}
		if !filepath.IsAbs(f.path) {
			// Written relative by a stack started with a relative state
			// dir (before Start made it absolute): the file is in the dir.
			f.path = filepath.Join(stateDir, filepath.Base(f.path))
		}
		dsn, err := os.ReadFile(f.path)
		if err != nil {
			return e, fmt.Errorf("read the dev stack's clickhouse dsn: %w", err)
		}
		*f.to = strings.TrimSpace(string(dsn))
	}
	return e, nil
}

// ErrNotRunning means the state dir's endpoints belong to a dev stack that
// is no longer running.
var ErrNotRunning = errors.New("the dev stack that wrote these endpoints is not running")

// processAlive reports whether process pid exists (signal 0 checks it
// without sending anything; EPERM: it exists, another user's).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
