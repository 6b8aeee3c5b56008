package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/energy"
)

// Source kinds.
const (
	KindAuto       = "auto"       // this machine: RAPL when readable, else the model
	KindRAPL       = "rapl"       // this machine's powercap counters
	KindModel      = "model"      // this machine's CPU utilisation model (estimated)
	KindKepler     = "kepler"     // a Kepler exporter
	KindScaphandre = "scaphandre" // a Scaphandre exporter
	KindPromQL     = "promql"     // counters queried from a Prometheus server
	// KindKwollect: a Grid'5000 node's wattmeter (or BMC) read from the
	// Kwollect API, energy.SourceWattmeter; beside a local meter on the same
	// node, the analyzer compares the two (quality_cross_meter_residual_j).
	KindKwollect = "kwollect"
)

// Config configures a collector instance.
type Config struct {
	Instance     string        `yaml:"instance" flag:"instance" help:"instance name, unique among the collectors (default: hostname)"`
	Node         string        `yaml:"node" flag:"node" help:"node this collector measures (default: hostname)"`
	Interval     time.Duration `yaml:"interval" flag:"interval" help:"sampling interval"`
	Source       string        `yaml:"source" flag:"source" help:"local meter when no --sources-file: auto (RAPL when readable, else model), rapl or model"` // auto | rapl | model: the local meter when Sources is empty
	PowercapRoot string        `yaml:"powercapRoot" flag:"powercap-root" help:"powercap sysfs root"`
	ProcRoot     string        `yaml:"procRoot" flag:"proc-root" help:"procfs root"`
	// IdleWatts and MaxWatts, when MaxWatts > 0, are the model's node
	// totals; 0 (the default) uses each node's profile: per-vCPU watts
	// times its vCPUs plus platform watts (energy.DefaultProfile), or the
	// calibrated model.
	IdleWatts     float64       `yaml:"idleWatts" flag:"idle-watts" help:"model: node power at 0% CPU, with --max-watts (0: each node's profile, per-vCPU watts × vCPUs + platform watts; estimated figures)"`
	MaxWatts      float64       `yaml:"maxWatts" flag:"max-watts" help:"model: node power at 100% CPU (0: each node's profile; estimated figures)"`
	BatchSize     int           `yaml:"batchSize"`
	FlushInterval time.Duration `yaml:"flushInterval"`
	// MaxBuffered bounds the samples held in memory: waiting for the next
	// batch, and — without SpoolDir — waiting for ClickHouse to come back.
	MaxBuffered int `yaml:"maxBuffered"`

	// Sources lists what this instance may sample. Empty means one local
	// source for Node with Source, PowercapRoot and ProcRoot: the collector
	// measures the machine it runs on (the single-node default).
	Sources []SourceConfig `yaml:"sources"`
	// SourcesFile is the --sources-file Sources came from. SourcesAbsent
	// says it did not exist: Sources stays empty and the local meter
	// measures, which New logs. On a testbed the file is an optional
	// mount of the ConfigMap `greenflow testbed up` writes, absent when the
	// overlay is applied by hand or a node is not in it: the collector
	// still measures, without the wattmeter, and says so.
	SourcesFile   string `yaml:"-"`
	SourcesAbsent bool   `yaml:"-"`

	// Bucket is the JetStream KV bucket holding membership, source claims
	// (with their hand-over checkpoints) and run assignments.
	Bucket string `yaml:"bucket"`
	// Heartbeat is how often an instance renews its membership; 0 means
	// Interval/2. LeaseTTL is how long a silent instance counts as alive;
	// 0 means 1.5 × Interval, so a dead instance's sources move within two
	// intervals.
	Heartbeat time.Duration `yaml:"heartbeat" flag:"heartbeat" help:"membership heartbeat (0: interval/2)"`
	LeaseTTL  time.Duration `yaml:"leaseTTL" flag:"lease-ttl" help:"a silent instance's sources move after this long (0: 1.5 × interval)"`
	// MaxCheckpointAge: an older hand-over checkpoint — a claim's, or a
	// pinned source's after a restart — is ignored and the source starts
	// from a fresh baseline (one interval without samples: a gap the
	// analyzer bridges and flags) rather than writing one sample spanning
	// the whole pause (in which a RAPL counter could wrap more than once).
	// 0 means one minute.
	MaxCheckpointAge time.Duration `yaml:"maxCheckpointAge"`
	// CommitInterval is how often the owner of a shared source commits its
	// state and the rows since the previous commit to the source's claim (a
	// pinned source, to its file in SpoolDir); the rows are written only
	// then, so they reach ClickHouse up to CommitInterval + FlushInterval
	// late (keep runs' cool-down longer). 0 means 2 × Interval.
	CommitInterval time.Duration `yaml:"commitInterval"`

	// SourceTimeout bounds one reading of a source (an exporter scrape); 0
	// means Interval.
	SourceTimeout time.Duration `yaml:"sourceTimeout"`
	// WriteTimeout bounds one batch insert; 0 means 10 s.
	WriteTimeout time.Duration `yaml:"writeTimeout"`
	// SpoolDir, when set, keeps batches ClickHouse did not take in files
	// there — surviving restarts — up to SpoolMaxBytes; otherwise they wait
	// in memory up to MaxBuffered samples. Beyond the bound new samples are
	// dropped, counted and logged. It also holds the commits of pinned
	// sources (pinned/), so a restarted collector continues them exactly;
	// without it they restart from a baseline.
	SpoolDir      string `yaml:"spoolDir"`
	SpoolMaxBytes int64  `yaml:"spoolMaxBytes" flag:"spool-max-bytes" help:"bound of the spool directory; newer samples beyond it are dropped and counted"`
}

// SourceConfig is one thing a collector samples: a node, through a meter on
// this machine or an exporter endpoint.
type SourceConfig struct {
	// ID names the source in metrics, logs and claims; unique. Default:
	// kind/node.
	ID   string `yaml:"id"`
	Kind string `yaml:"kind"`
	// Node is the node the source measures; targets on that node are
	// attributed from it. Default for local kinds: the collector's Node.
	Node string `yaml:"node"`

	// Local kinds (auto, rapl, model). Defaults: the collector's.
	PowercapRoot string  `yaml:"powercapRoot"`
	ProcRoot     string  `yaml:"procRoot"`
	IdleWatts    float64 `yaml:"idleWatts"`
	MaxWatts     float64 `yaml:"maxWatts"`

	// Exporters: the metrics page (kepler, scaphandre) or the Prometheus
	// server (promql).
	URL string `yaml:"url"`
	// NodeLabel, kepler only: the exposition's node_name must equal it.
	NodeLabel string `yaml:"nodeLabel"`
	// NodeQuery and WorkloadQuery, promql only: see energy.PromQLOptions.
	NodeQuery     string `yaml:"nodeQuery"`
	WorkloadQuery string `yaml:"workloadQuery"`
	Estimated     bool   `yaml:"estimated"` // promql: the series come from a model
	// Kwollect only: the node's site; BMC when it has no wattmeter;
	// Delay, the API's lag the readings stay behind (default 60s). URL is
	// the API root (default https://api.grid5000.fr/stable); no
	// credentials: collectors run inside the testbed.
	Site  string        `yaml:"site"`
	BMC   bool          `yaml:"bmc"`
	Delay time.Duration `yaml:"delay"`
	// MaxPowerW bounds the power a counter delta may imply before it is
	// taken for a reset (energy.MaxPlausibleJ); 0 means
	// energy.DefaultMaxPowerW. RAPL zones with a powercap power constraint
	// use twice their largest constraint instead.
	MaxPowerW float64 `yaml:"maxPowerW"`

	// Pinned keeps an exporter source on this instance instead of sharing
	// it among the live instances. Local kinds are always pinned: they read
	// this machine's files.
	Pinned bool `yaml:"pinned"`
}

// Default returns the defaults: the interval is energy.DefaultInterval and
// the model each node's profile (energy.DefaultProfile: Cloud Carbon
// Footprint's per-vCPU figures times the node's vCPUs, plus its memory).
func Default() Config {
	host, _ := os.Hostname()
	return Config{Instance: host, Node: host, Interval: energy.DefaultInterval, Source: KindAuto, PowercapRoot: "/sys/class/powercap", ProcRoot: "/proc",
		BatchSize: 10000, FlushInterval: time.Second, MaxBuffered: 1_000_000,
		Bucket: bus.BucketCollectors, SpoolMaxBytes: 1 << 30}
}

// ParseSources reads a sources file: a YAML list of SourceConfig, as
// --sources-file takes it and `greenflow testbed up` writes it
// (pkg/testbed.CollectorSources). A key no SourceConfig field has is an
// error naming its line, so a misspelt one (pinnned) is not silently
// dropped.
func ParseSources(b []byte) ([]SourceConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var list []SourceConfig
	if err := dec.Decode(&list); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return list, nil
}

func isLocal(kind string) bool { return kind == KindAuto || kind == KindRAPL || kind == KindModel }

// withDefaults fills the derived defaults in.
func (c Config) withDefaults() Config {
	if c.Heartbeat <= 0 {
		c.Heartbeat = c.Interval / 2
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = c.Interval * 3 / 2
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = 2 * c.Interval
	}
	if c.MaxCheckpointAge <= 0 {
		c.MaxCheckpointAge = time.Minute
	}
	if c.SourceTimeout <= 0 {
		c.SourceTimeout = c.Interval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.Bucket == "" {
		c.Bucket = bus.BucketCollectors
	}
	return c
}

// sources returns the effective source list with every default filled in.
func (c Config) sources() []SourceConfig {
	list := c.Sources
	if len(list) == 0 {
		list = []SourceConfig{{ID: "local", Kind: c.Source}}
	}
	out := make([]SourceConfig, len(list))
	for i, s := range list {
		if isLocal(s.Kind) {
			s.Pinned = true
			if s.Node == "" {
				s.Node = c.Node
			}
			if s.PowercapRoot == "" {
				s.PowercapRoot = c.PowercapRoot
			}
			if s.ProcRoot == "" {
				s.ProcRoot = c.ProcRoot
			}
			if s.IdleWatts == 0 && s.MaxWatts == 0 {
				s.IdleWatts, s.MaxWatts = c.IdleWatts, c.MaxWatts
			}
		}
		if s.ID == "" {
			s.ID = s.Kind + "/" + s.Node
		}
		out[i] = s
	}
	return out
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Instance == "" {
		errs = append(errs, errors.New("energy-collector.instance: required"))
	}
	if c.Node == "" {
		errs = append(errs, errors.New("energy-collector.node: required"))
	}
	if c.Interval < 50*time.Millisecond {
		errs = append(errs, fmt.Errorf("energy-collector.interval: got %s, expected at least 50ms", c.Interval))
	}
	if !isLocal(c.Source) {
		errs = append(errs, fmt.Errorf("energy-collector.source: got %q, expected auto, rapl or model", c.Source))
	}
	if c.IdleWatts < 0 || c.MaxWatts < c.IdleWatts {
		errs = append(errs, fmt.Errorf("energy-collector.idleWatts/maxWatts: got %g/%g, expected 0 <= idle <= max", c.IdleWatts, c.MaxWatts))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("energy-collector.batchSize: got %d, expected 1 or more", c.BatchSize))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("energy-collector.flushInterval: got %s, expected more than 0", c.FlushInterval))
	}
	if c.MaxBuffered < c.BatchSize {
		errs = append(errs, fmt.Errorf("energy-collector.maxBuffered: got %d, expected at least batchSize (%d)", c.MaxBuffered, c.BatchSize))
	}
	if c.SpoolDir != "" && c.SpoolMaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("energy-collector.spoolMaxBytes: got %d, expected more than 0 with a spoolDir", c.SpoolMaxBytes))
	}
	d := c.withDefaults()
	if d.Heartbeat >= d.LeaseTTL {
		errs = append(errs, fmt.Errorf("energy-collector.heartbeat/leaseTTL: got %s/%s, expected heartbeat < leaseTTL", d.Heartbeat, d.LeaseTTL))
	}
	ids := map[string]int{}
	for i, s := range c.sources() {
		path := fmt.Sprintf("energy-collector.sources[%d]", i)
		if j, dup := ids[s.ID]; dup {
			errs = append(errs, fmt.Errorf("%s.id: %q already used by sources[%d]", path, s.ID, j))
		}
		ids[s.ID] = i
		if s.Node == "" {
			errs = append(errs, fmt.Errorf("%s.node: required", path))
		}
		switch s.Kind {
		case KindAuto, KindRAPL, KindModel:
			if s.IdleWatts < 0 || s.MaxWatts < s.IdleWatts {
				errs = append(errs, fmt.Errorf("%s.idleWatts/maxWatts: got %g/%g, expected 0 <= idle <= max", path, s.IdleWatts, s.MaxWatts))
			}
		case KindKepler, KindScaphandre:
			if s.URL == "" {
				errs = append(errs, fmt.Errorf("%s.url: required for %s", path, s.Kind))
			}
		case KindPromQL:
			if s.URL == "" {
				errs = append(errs, fmt.Errorf("%s.url: required for promql", path))
			}
			if s.NodeQuery == "" {
				errs = append(errs, fmt.Errorf("%s.nodeQuery: required for promql", path))
			}
		case KindKwollect:
			if s.Site == "" {
				errs = append(errs, fmt.Errorf("%s.site: required for kwollect (the node's Grid'5000 site, e.g. lyon)", path))
			}
			if s.Delay < 0 {
				errs = append(errs, fmt.Errorf("%s.delay: got %s, expected 0 (default 60s) or more", path, s.Delay))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.kind: got %q, expected auto, rapl, model, kepler, scaphandre, promql or kwollect", path, s.Kind))
		}
		if s.MaxPowerW < 0 {
			errs = append(errs, fmt.Errorf("%s.maxPowerW: got %g, expected 0 (default) or more", path, s.MaxPowerW))
		}
	}
	return errors.Join(errs...)
}
