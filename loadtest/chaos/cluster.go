package chaos

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/pkg/freeport"
)

// EnvMarker is set in every process the suite starts; the SUT processes the
// provisioner starts inherit it, which is how leftovers are found.
const EnvMarker = "GREENFLOW_CHAOS_SUITE"

// ClusterConfig describes the platform the suite runs: every service and
// the infrastructure as processes of their own, on 127.0.0.1.
type ClusterConfig struct {
	BinDir string // the built binaries (see Build)
	Dir    string // state and logs
	// ClickHouseBase is a running ClickHouse (clickhouse://127.0.0.1:9000,
	// no database); empty starts a clickhouse-server child under Dir.
	ClickHouseBase string
	// Replicas is the number of instances per service (default 1).
	Replicas map[string]int
	// CollectorInterval is the energy collectors' sampling interval.
	CollectorInterval time.Duration
	// Model is the collectors' power model; they run with --source model.
	Model Model
	// KafkaInMemory runs the broker without a data dir: a restart loses
	// every topic.
	KafkaInMemory bool
	// Args are extra arguments per service; "{state}" is replaced by the
	// instance's own state directory (kept across its restarts).
	Args map[string][]string
	// Marker identifies this suite's processes (EnvMarker).
	Marker string
}

// Cluster is the running platform.
type Cluster struct {
	cfg      ClusterConfig
	NATSURL  string
	Brokers  []string
	DSN      string
	Database string
	NATS     *Proc
	Kafka    *Proc
	Services map[string][]*Proc

	ch *chserver.Server
}

// ServiceArgs are the arguments each service gets besides the common ones:
// short timeouts of the scheduler's waits (the runs are short), the UC-3
// processor built beside the services, no Kubernetes, an instance name per
// load generator and collector, the collector's spool directory (its
// documented durable setup) and its CPU power model — on every machine,
// so the suite can meter the same model itself.
func ServiceArgs(bin string, interval time.Duration, m Model) map[string][]string {
	return map[string][]string{
		"scheduler":      {"--provision-timeout", "30s", "--analyze-timeout", "60s"},
		"provisioner":    {"--uc3-command", filepath.Join(bin, "uc3-processor"), "--kubernetes", "off"},
		"load-generator": {"--instance", "chaos-lg-{instance}"},
		"energy-collector": {"--interval", interval.String(), "--instance", "chaos-ec-{instance}", "--spool-dir", "{state}/spool",
			"--source", "model", "--idle-watts", fmt.Sprint(m.IdleW), "--max-watts", fmt.Sprint(m.MaxW)},
		"analyzer": nil,
	}
}

// optionalArgs go only to binaries that know the flag (services newer than
// the suite may have it, older ones would refuse it): the provisioner's
// state directory keeps each suite's run records apart from a developer's
// own (its default is under the home directory).
var optionalArgs = map[string][][]string{"provisioner": {{"--state-dir", "{state}/provisioner"}}}

// knowsFlag reports whether a service binary lists flag in its -h usage.
func knowsFlag(bin, flag string) bool {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return bytes.Contains(out, []byte("-"+flag+" ")) || bytes.Contains(out, []byte("-"+flag+"\n"))
}

// StartCluster starts ClickHouse (unless given), the NATS server, the Kafka
// broker and every service instance, and waits until each is ready.
func StartCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	for _, sub := range []string{"logs", "state"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", sub, err)
		}
	}
	for _, name := range append([]string{"nats-server", "kfake-broker", "uc3-processor"}, Services...) {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, name)); err != nil {
			return nil, fmt.Errorf("binary %s missing in %s (build them with chaos.Build): %w", name, cfg.BinDir, err)
		}
	}
	c := &Cluster{cfg: cfg, Services: map[string][]*Proc{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	var b [4]byte
	_, _ = rand.Read(b[:])
	c.Database = "chaos_" + hex.EncodeToString(b[:])
	base := strings.TrimRight(cfg.ClickHouseBase, "/")
	if base == "" {
		c.ch, err = chserver.Start(ctx, filepath.Join(cfg.Dir, "clickhouse"))
		if err != nil {
			return nil, fmt.Errorf("start clickhouse: %w", err)
		}
		base = c.ch.Base()
	}
	c.DSN = base + "/" + c.Database
	// The DSN carries the ClickHouse password: the services read it from a
	// file, so no command line (ps, the process table) shows it.
	dsnFile := filepath.Join(cfg.Dir, "clickhouse.dsn")
	if err := os.WriteFile(dsnFile, []byte(c.DSN), 0o600); err != nil {
		return nil, fmt.Errorf("write the clickhouse dsn file: %w", err)
	}

	instances := 0
	for _, s := range Services {
		instances += c.replicas(s)
	}
	ports, err := freeport.Get(3 + instances)
	if err != nil {
		return nil, err
	}
	natsPort, natsMon, kafkaPort := ports[0], ports[1], ports[2]
	ports = ports[3:]
	env := []string{EnvMarker + "=" + cfg.Marker}
	logOf := func(name string) string { return filepath.Join(cfg.Dir, "logs", name+".log") }

	c.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	c.NATS = &Proc{Name: "nats", Path: filepath.Join(cfg.BinDir, "nats-server"), Env: env, Log: logOf("nats"),
		Args: []string{"-a", "127.0.0.1", "-p", fmt.Sprint(natsPort), "-m", fmt.Sprint(natsMon), "-js",
			"-sd", filepath.Join(cfg.Dir, "state", "nats"), "-n", "chaos"},
		Ready: httpReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", natsMon))}
	kargs := []string{"--port", fmt.Sprint(kafkaPort), "--partitions", "4"}
	if !cfg.KafkaInMemory {
		kargs = append(kargs, "--data-dir", filepath.Join(cfg.Dir, "state", "kafka"))
	}
	c.Brokers = []string{fmt.Sprintf("127.0.0.1:%d", kafkaPort)}
	c.Kafka = &Proc{Name: "kafka", Path: filepath.Join(cfg.BinDir, "kfake-broker"), Args: kargs, Env: env, Log: logOf("kafka"),
		Ready: tcpReady(c.Brokers[0])}
	for _, p := range []*Proc{c.NATS, c.Kafka} {
		p.restartOn = true
		if err := p.Start(); err != nil {
			return nil, err
		}
		if err := p.WaitReady(ctx, 30*time.Second); err != nil {
			return nil, err
		}
	}

	args := ServiceArgs(cfg.BinDir, cfg.CollectorInterval, cfg.Model)
	for name, opts := range optionalArgs {
		for _, o := range opts {
			if knowsFlag(filepath.Join(cfg.BinDir, name), strings.TrimPrefix(o[0], "--")) {
				args[name] = append(args[name], o...)
			}
		}
	}
	for name, extra := range cfg.Args {
		args[name] = append(args[name], extra...)
	}
	for _, name := range Services {
		for i := 1; i <= c.replicas(name); i++ {
			port := ports[0]
			ports = ports[1:]
			inst := name
			if c.replicas(name) > 1 {
				inst = fmt.Sprintf("%s-%d", name, i)
			}
			state := filepath.Join(cfg.Dir, "state", inst)
			if err := os.MkdirAll(state, 0o755); err != nil {
				return nil, fmt.Errorf("create state dir of %s: %w", inst, err)
			}
			a := []string{"--nats-url", c.NATSURL, "--clickhouse-dsn-file", dsnFile, "--kafka-brokers", strings.Join(c.Brokers, ","),
				"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "info"}
			for _, x := range args[name] {
				x = strings.ReplaceAll(x, "{state}", state)
				x = strings.ReplaceAll(x, "{instance}", fmt.Sprint(i))
				a = append(a, x)
			}
			p := &Proc{Name: inst, Path: filepath.Join(cfg.BinDir, name), Args: a, Env: env, Log: logOf(inst),
				Ready: httpReady(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)), restartOn: true}
			c.Services[name] = append(c.Services[name], p)
		}
	}
	// The scheduler first: it is the one that applies nothing special, but
	// every service applies the ClickHouse migrations; starting them all
	// at once is what the migrations promise to survive.
	for _, p := range c.serviceProcs() {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// SchedulerURLs are the base URLs of the scheduler instances' HTTP APIs
// (each serves it beside /metrics and /healthz, on --metrics-addr).
func (c *Cluster) SchedulerURLs() []string {
	var out []string
	for _, p := range c.Services["scheduler"] {
		if i := slices.Index(p.Args, "--metrics-addr"); i >= 0 && i+1 < len(p.Args) {
			out = append(out, "http://"+p.Args[i+1])
		}
	}
	return out
}

func (c *Cluster) replicas(service string) int {
	if n := c.cfg.Replicas[service]; n > 1 {
		return n
	}
	return 1
}

func (c *Cluster) serviceProcs() []*Proc {
	var out []*Proc
	for _, s := range Services {
		out = append(out, c.Services[s]...)
	}
	return out
}

// Procs lists every process of the cluster (ClickHouse aside).
func (c *Cluster) Procs() []*Proc {
	var out []*Proc
	if c.NATS != nil {
		out = append(out, c.NATS)
	}
	if c.Kafka != nil {
		out = append(out, c.Kafka)
	}
	return append(out, c.serviceProcs()...)
}

// Target returns the process a kill names: a service instance (1-based;
// 0 means the first), nats or kafka.
func (c *Cluster) Target(name string, instance int) (*Proc, error) {
	switch name {
	case TargetNATS:
		return c.NATS, nil
	case TargetKafka:
		return c.Kafka, nil
	}
	ps := c.Services[name]
	if instance <= 0 {
		instance = 1
	}
	if instance > len(ps) {
		return nil, fmt.Errorf("no instance %d of %s (have %d)", instance, name, len(ps))
	}
	return ps[instance-1], nil
}

// WaitReady waits until every process answers its readiness probe.
func (c *Cluster) WaitReady(ctx context.Context, within time.Duration) error {
	var errs []error
	deadline := time.Now().Add(within)
	for _, p := range c.Procs() {
		if err := p.WaitReady(ctx, max(time.Until(deadline), time.Second)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OwnPids are the pids of the cluster's own processes (not their children).
func (c *Cluster) OwnPids() map[int]string {
	out := map[int]string{}
	for _, p := range c.Procs() {
		if pid := p.Pid(); pid > 0 {
			out[pid] = p.Name
		}
	}
	return out
}

// Unexpected lists every unexpected exit so far, in time order.
func (c *Cluster) Unexpected() []Exit {
	var out []Exit
	for _, p := range c.Procs() {
		out = append(out, p.Unexpected()...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// StopServices stops every service with SIGTERM and reports those that did
// not exit cleanly within the drain bound.
func (c *Cluster) StopServices(timeout time.Duration) []error {
	var errs []error
	for _, p := range c.serviceProcs() {
		if err := p.Close(timeout); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Close stops everything (services first, then the infrastructure).
func (c *Cluster) Close() {
	c.StopServices(15 * time.Second)
	if c.Kafka != nil {
		_ = c.Kafka.Close(10 * time.Second)
	}
	if c.NATS != nil {
		_ = c.NATS.Close(10 * time.Second)
	}
	if c.ch != nil {
		_ = c.ch.Stop()
	}
}
