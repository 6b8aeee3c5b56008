package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/store"
)

// Config configures a suite run.
type Config struct {
	Root       string // repository root (examples/, and the sources when Build)
	BinDir     string // the binaries (built there first when Build)
	Build      bool
	ResultsDir string
	Seed       int64
	// Faults are the segments to run, in order: services, infra, replicas,
	// kube.
	Faults []string
	// Kills per segment: services (0 = every service in every phase),
	// infra (per target: NATS, Kafka), replicas.
	Kills, InfraKills, ReplicaKills int
	// KubeFaults is how many times the kube segment delivers each of its
	// faults (KubeFaults lists them); KubeSchedule, when set, replaces that
	// plan. KubeOutage is how long the API server stays down; KubePhases
	// are the kube segment's phases (its cool-down must outlast the API
	// server's stop, so a teardown fault finds it down).
	KubeFaults   int
	KubeSchedule []Pair
	KubeOutage   time.Duration
	KubePhases   PhaseLengths
	// KubeControlEvery is the kube segment's ControlEvery: by default a
	// control run after every fault (did the platform recover from it?).
	KubeControlEvery int
	// Schedule fixes the services segment's kills (target, phase), in
	// order, instead of drawing them; offsets and delays are still drawn.
	Schedule []Pair
	// References is the number of undisturbed runs per configuration at
	// the start of each segment (at least 2: the spread needs two).
	References int
	// ControlEvery puts an undisturbed control run after every that many
	// kills (0: none): it shows what the machine alone does to a run.
	ControlEvery int
	Configs      []string // workload.sensors values
	Phases       PhaseLengths
	Interval     time.Duration // sampling interval of the collectors and the spec
	// Model is the collectors' power model (they run with --source model,
	// so the suite can meter the same thing itself).
	Model Model
	// RunBound is how long one slot's experiment (its run and a retry) may
	// take before its runs count as stuck.
	RunBound time.Duration
	// ClickHouseBase is a running ClickHouse without database; empty starts
	// one.
	ClickHouseBase string
	KafkaInMemory  bool
	// Args are extra service arguments (see ClusterConfig.Args).
	Args      map[string][]string
	Tolerance *Tolerance // nil: DefaultTolerance
	// MaxPressure: a run whose measured window had a higher CPU pressure
	// (Linux PSI: the share of time some task waited for a CPU) is not
	// compared with the undisturbed runs — its deviations are listed, not
	// counted. 0 compares every run.
	MaxPressure float64
	Progress    io.Writer `json:"-"`
}

// DefaultConfig is `make chaos`: every service in every phase, short runs.
func DefaultConfig(root string) Config {
	return Config{Root: root, BinDir: filepath.Join(root, ".cache", "chaos-bin"), Build: true,
		ResultsDir: filepath.Join(root, ".state", "chaos", time.Now().Format("20060102-150405")),
		Seed:       time.Now().UnixNano() % 1_000_000, Faults: []string{FaultServices}, InfraKills: 4, ReplicaKills: 10, References: 3, ControlEvery: 5, MaxPressure: 0.85,
		KubeFaults: 2, KubeOutage: 20 * time.Second, KubeControlEvery: 1, KubePhases: PhaseLengths{Baseline: time.Second, Warmup: time.Second, Measure: 5 * time.Second, Cooldown: 3 * time.Second},
		Configs: []string{"500", "2000"}, Phases: PhaseLengths{Baseline: 2 * time.Second, Warmup: 2 * time.Second, Measure: 8 * time.Second,
			Cooldown: time.Second}, Interval: 250 * time.Millisecond, Model: Model{IdleW: 1.48, MaxW: 7.0}, RunBound: 4 * time.Minute, Progress: os.Stdout}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Root == "" || c.BinDir == "" || c.ResultsDir == "" {
		errs = append(errs, errors.New("chaos: root, bin dir and results dir are required"))
	}
	for _, f := range c.Faults {
		if f != FaultServices && f != FaultInfra && f != FaultReplicas && f != FaultKube {
			errs = append(errs, fmt.Errorf("chaos.faults: got %q, expected services, infra, replicas or kube", f))
		}
	}
	if slices.Contains(c.Faults, FaultKube) {
		if c.KubeFaults < 0 || (c.KubeFaults == 0 && len(c.KubeSchedule) == 0) {
			errs = append(errs, fmt.Errorf("chaos.kubeFaults: got %d, expected at least 1 (each kube fault that many times)", c.KubeFaults))
		}
		if c.KubeOutage < time.Second {
			errs = append(errs, fmt.Errorf("chaos.kubeOutage: got %s, expected at least 1s", c.KubeOutage))
		}
		if c.KubePhases.Measure < 2*time.Second || c.KubePhases.Baseline <= 0 || c.KubePhases.Warmup <= 0 || c.KubePhases.Cooldown < 2*time.Second {
			errs = append(errs, fmt.Errorf("chaos.kubePhases: baseline and warmup must be positive, measure and cool-down at least 2s "+
				"(the API server's stop must fit in the cool-down) (got %+v)", c.KubePhases))
		}
		for _, p := range c.KubeSchedule {
			if !slices.Contains(KubeFaults, p) {
				errs = append(errs, fmt.Errorf("chaos.kubeSchedule: %s:%s is not a kube fault (expected one of %v)", p.Target, p.Phase, KubeFaults))
			}
		}
	}
	if len(c.Faults) == 0 {
		errs = append(errs, errors.New("chaos.faults: at least one segment"))
	}
	if c.References < 2 {
		errs = append(errs, fmt.Errorf("chaos.references: got %d, expected at least 2 (the spread of undisturbed runs needs two)", c.References))
	}
	if len(c.Configs) == 0 {
		errs = append(errs, errors.New("chaos.configs: at least one workload.sensors value"))
	}
	for _, s := range c.Configs {
		if n, err := strconv.Atoi(s); err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("chaos.configs: %q is not a positive sensor count", s))
		}
	}
	if c.Phases.Measure < 2*time.Second || c.Phases.Baseline <= 0 || c.Phases.Warmup <= 0 {
		errs = append(errs, fmt.Errorf("chaos.phases: baseline and warmup must be positive and measure at least 2s (got %+v)", c.Phases))
	}
	if c.Interval < 50*time.Millisecond || c.Interval > c.Phases.Measure/4 {
		errs = append(errs, fmt.Errorf("chaos.interval: got %s, expected 50ms to a quarter of the measured phase", c.Interval))
	}
	if c.RunBound < c.Phases.Baseline+c.Phases.Warmup+c.Phases.Measure+c.Phases.Cooldown+30*time.Second {
		errs = append(errs, fmt.Errorf("chaos.runBound: %s is too short for the phases plus 30s", c.RunBound))
	}
	if c.Kills < 0 || c.InfraKills < 0 || c.ReplicaKills < 0 {
		errs = append(errs, errors.New("chaos: kill counts must not be negative"))
	}
	return errors.Join(errs...)
}

// KillRecord is what happened to one planned kill.
type KillRecord struct {
	Kill
	Delivered     bool      `json:"delivered"`
	NotDelivered  string    `json:"not_delivered,omitempty"`
	Proc          string    `json:"proc,omitempty"`
	Pid           int       `json:"pid,omitempty"`
	KilledAt      time.Time `json:"killed_at"`
	PhaseObserved string    `json:"phase_observed,omitempty"` // the run's state at the kill, from run.state events
	RestartedAt   time.Time `json:"restarted_at"`
	ReadyAt       time.Time `json:"ready_at"`
	RestartError  string    `json:"restart_error,omitempty"`
	ExperimentID  string    `json:"experiment_id"`
	RunIDs        []string  `json:"run_ids"`
	FinalAfter    float64   `json:"final_after_s"` // submit to the experiment's end
	// DetectS is the time from the kill to the killed run's failed state,
	// when it failed (0 otherwise): how long a fault takes to be noticed.
	DetectS    float64 `json:"detect_s"`
	Stuck      bool    `json:"stuck,omitempty"`
	Outcome    string  `json:"outcome"`
	Violations string  `json:"violation_kinds,omitempty"`
	// The numbers per kill, from the killed run (see RunFacts).
	DownS          float64 `json:"down_s"`    // kill until the process served again
	RecoverS       float64 `json:"recover_s"` // restart until it served
	RecordsLost    int64   `json:"records_lost"`
	SamplesLost    int64   `json:"samples_lost"`
	MaxRecordGapMs int64   `json:"max_record_gap_ms"`
	MaxSampleHole  int64   `json:"max_sample_hole_ms"`
	// CPUPressure is the share of the killed run's window in which a task
	// waited for a CPU (PSI; -1 unknown): a loaded machine shows here.
	CPUPressure float64 `json:"cpu_pressure"`
	// The kube faults' numbers (segment kube): NoticedS from the fault's
	// start to the provisioner's first report naming it (Noticed, -1:
	// none), RecoveredS from the fault's end to the run's recovery
	// (Recovery says which: provisioned, its namespace gone; -1: never),
	// LeftBehind what of the slot's runs was still there after it ended,
	// Reason the killed run's reason.
	NoticedS   float64 `json:"noticed_s,omitempty"`
	Noticed    string  `json:"noticed,omitempty"`
	RecoveredS float64 `json:"recovered_s,omitempty"`
	Recovery   string  `json:"recovery,omitempty"`
	LeftBehind string  `json:"left_behind,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	Error      string  `json:"error,omitempty"` // a harness problem in this slot (not a finding)
}

// Segment is one fault segment's outcome.
type Segment struct {
	Name       string                     `json:"name"`
	Replicas   map[string]int             `json:"replicas"`
	References []RunFacts                 `json:"references"`
	Bands      map[string]map[string]Band `json:"bands"`
	HoleTolMs  int64                      `json:"hole_tolerance_ms"`
	Kills      []KillRecord               `json:"kills"`
	Runs       []RunFacts                 `json:"runs"`
	Suite      []Violation                `json:"suite_violations"` // not tied to one run
	Exits      []Exit                     `json:"unexpected_exits"`
	Shutdown   []string                   `json:"shutdown_problems,omitempty"`
	Notes      []string                   `json:"notes,omitempty"`
	Error      string                     `json:"error,omitempty"`
}

// Report is the suite's whole outcome.
type Report struct {
	Seed     int64     `json:"seed"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Config   Config    `json:"config"`
	Segments []Segment `json:"segments"`
}

// Violations lists every violation that counts (confirmed, not excused).
func (r *Report) Violations() []Violation {
	var out []Violation
	for _, s := range r.Segments {
		for _, run := range append(append([]RunFacts(nil), s.References...), s.Runs...) {
			for _, v := range run.Violations {
				if v.Counts() {
					out = append(out, v)
				}
			}
		}
		for _, v := range s.Suite {
			if v.Counts() {
				out = append(out, v)
			}
		}
	}
	return out
}

// HarnessErrors lists the problems of the harness itself (not findings).
func (r *Report) HarnessErrors() []string {
	var out []string
	for _, s := range r.Segments {
		if s.Error != "" {
			out = append(out, s.Name+": "+s.Error)
		}
		for _, k := range s.Kills {
			if k.Error != "" {
				out = append(out, fmt.Sprintf("%s slot %d: %s", s.Name, k.Slot, k.Error))
			}
		}
	}
	return out
}

// Run runs the suite and writes its report files. The error is about the
// harness (it could not do its job); violations are in the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.ResultsDir, 0o755); err != nil {
		return nil, fmt.Errorf("create results dir: %w", err)
	}
	rep := &Report{Seed: cfg.Seed, Started: time.Now(), Config: cfg}
	s := &suite{cfg: cfg, rep: rep}
	s.logf("chaos suite: seed %d, segments %v, results in %s", cfg.Seed, cfg.Faults, cfg.ResultsDir)
	if cfg.Build {
		s.logf("building the services, nats-server and kfake-broker into %s", cfg.BinDir)
		if err := Build(ctx, cfg.Root, cfg.BinDir); err != nil {
			return rep, err
		}
	}
	plans, err := s.plan()
	if err != nil {
		return rep, err
	}
	var errs []error
	for _, seg := range cfg.Faults {
		res := s.segment(ctx, seg, plans[seg])
		rep.Segments = append(rep.Segments, res)
		if res.Error != "" {
			errs = append(errs, fmt.Errorf("segment %s: %s", seg, res.Error))
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Finished = time.Now()
	if err := WriteReport(cfg.ResultsDir, rep); err != nil {
		errs = append(errs, err)
	}
	PrintSummary(cfg.Progress, rep)
	return rep, errors.Join(errs...)
}

type suite struct {
	cfg Config
	rep *Report
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.cfg.Progress, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// plan draws every segment's kills from the seed and prints them.
func (s *suite) plan() (map[string][]Kill, error) {
	rng := rand.New(rand.NewPCG(uint64(s.cfg.Seed), 0x6368616f73)) // "chaos"
	base := PlanOptions{Configs: s.cfg.Configs, Phases: s.cfg.Phases, RestartMin: 500 * time.Millisecond, RestartMax: 3 * time.Second,
		ControlEvery: s.cfg.ControlEvery}
	out := map[string][]Kill{}
	slot := 1
	for _, seg := range s.cfg.Faults {
		o := base
		o.Segment, o.FirstSlot = seg, slot
		switch seg {
		case FaultServices:
			o.Targets, o.Kills, o.Schedule = Services, s.cfg.Kills, s.cfg.Schedule
		case FaultInfra:
			o.Targets, o.Kills = []string{TargetNATS, TargetKafka}, 2*s.cfg.InfraKills
			o.Fixed = map[string]time.Duration{TargetNATS: 10 * time.Second}
			o.RestartMin, o.RestartMax = 2*time.Second, 5*time.Second
			if o.ControlEvery > 0 {
				o.ControlEvery = 2 // recovery from a NATS or broker restart is the question here
			}
		case FaultReplicas:
			o.Targets, o.Kills, o.Replicas = Services, s.cfg.ReplicaKills, 2
		case FaultKube:
			o.Targets, o.Configs, o.Phases = []string{TargetAPIServer, TargetRBAC}, s.cfg.Configs[:1], s.cfg.KubePhases
			o.Fixed = map[string]time.Duration{TargetAPIServer: s.cfg.KubeOutage, TargetRBAC: 0}
			o.Schedule = s.cfg.KubeSchedule
			if len(o.Schedule) == 0 {
				for i := 0; i < s.cfg.KubeFaults; i++ {
					o.Schedule = append(o.Schedule, KubeFaults...)
				}
				rng.Shuffle(len(o.Schedule), func(i, j int) { o.Schedule[i], o.Schedule[j] = o.Schedule[j], o.Schedule[i] })
			}
			o.ControlEvery = s.cfg.KubeControlEvery
		}
		kills, err := Plan(rng, o)
		if err != nil {
			return nil, err
		}
		if seg == FaultReplicas {
			for i := range kills {
				if kills[i].Target != TargetNone && replicasOf(seg)[kills[i].Target] < 2 {
					kills[i].Instance = 1
				}
			}
		}
		out[seg] = kills
		slot += len(kills)
		s.logf("plan %s (%d slots; %s):", seg, len(kills), CoverageOf(kills, nil))
		for _, k := range kills {
			s.logf("  %s", k)
		}
	}
	return out, nil
}

// replicasOf is the topology of a segment: two of every service. The two
// energy collectors share one node — one reads its meter, the other stands
// by and takes over when it dies.
func replicasOf(seg string) map[string]int {
	if seg != FaultReplicas {
		return map[string]int{}
	}
	return map[string]int{"scheduler": 2, "provisioner": 2, "load-generator": 2, "energy-collector": 2, "analyzer": 2}
}

// segCtx is one segment's running platform and observers.
type segCtx struct {
	*suite
	seg      *Segment
	cluster  *Cluster
	bus      *bus.Bus
	api      API
	kv       KV
	store    *store.Store
	events   *EventLog
	pids     *PidWatch
	topics   *TopicWatch
	gather   *Gatherer
	idsMu    sync.Mutex // expIDs and runIDs: the slots add, the SUT tracker reads
	expIDs   []string
	runIDs   []string
	example  string
	sut      map[string]any // replaces the example's sut (nil: keep it)
	tolerate Tolerance
	kube     *kubeEnv // segment kube: the cluster
}

func (s *suite) segment(ctx context.Context, name string, kills []Kill) Segment {
	seg := Segment{Name: name, Replicas: replicasOf(name)}
	fail := func(format string, args ...any) Segment {
		seg.Error = fmt.Sprintf(format, args...)
		s.logf("segment %s: harness error: %s", name, seg.Error)
		return seg
	}
	dir := filepath.Join(s.cfg.ResultsDir, name)
	marker := fmt.Sprintf("%d-%s", s.cfg.Seed, name)
	args := map[string][]string{}
	var kube *kubeEnv
	if name == FaultKube {
		// Its own phases and one configuration (the faults hit provisioning
		// and teardown, not the load), on a cluster of its own.
		cfg := s.cfg
		cfg.Phases, cfg.Configs = cfg.KubePhases, cfg.Configs[:1]
		s = &suite{cfg: cfg, rep: s.rep}
		s.logf("segment %s: starting kube-apiserver and etcd (envtest), the nodes' stand-ins and the provisioner's service account", name)
		var err error
		if kube, err = startKube(ctx, s.cfg.Root, dir, s.cfg.Progress, s.logf); err != nil {
			return fail("start the kubernetes cluster: %v", err)
		}
		defer kube.Close()
		for svc, a := range kube.serviceArgs() {
			args[svc] = append(args[svc], a...)
		}
	}
	for svc, a := range s.cfg.Args { // the command line's last: it may override the segment's
		args[svc] = append(args[svc], a...)
	}
	s.logf("segment %s: starting ClickHouse, NATS, Kafka and the services (%v)", name, seg.Replicas)
	cl, err := StartCluster(ctx, ClusterConfig{BinDir: s.cfg.BinDir, Dir: dir, ClickHouseBase: s.cfg.ClickHouseBase, Replicas: seg.Replicas,
		CollectorInterval: s.cfg.Interval, Model: s.cfg.Model, KafkaInMemory: s.cfg.KafkaInMemory, Args: args, Marker: marker})
	if err != nil {
		return fail("start the platform: %v", err)
	}
	defer cl.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b, err := bus.Connect(sctx, cl.NATSURL, "chaos-suite", zap.NewNop(), nil)
	if err != nil {
		return fail("connect the suite to NATS: %v", err)
	}
	defer b.Close()
	st, err := store.Open(sctx, cl.DSN, zap.NewNop())
	if err != nil {
		return fail("open ClickHouse: %v", err)
	}
	defer st.Close()
	tol := DefaultTolerance(s.cfg.Interval.Milliseconds())
	if s.cfg.Tolerance != nil {
		tol = *s.cfg.Tolerance
	}
	c := &segCtx{suite: s, seg: &seg, cluster: cl, bus: b, api: API{b.Conn()}, kv: KV{b.JetStream()}, store: st,
		events: NewEventLog(), pids: NewPidWatch(), topics: NewTopicWatch(cl.Brokers), tolerate: tol,
		example: filepath.Join(s.cfg.Root, "examples", "uc3-local.yaml")}
	c.gather = &Gatherer{KV: c.kv, Store: st, Events: c.events, Pids: c.pids, Topics: c.topics, IntervalMs: s.cfg.Interval.Milliseconds(), Model: s.cfg.Model}
	if kube != nil {
		c.kube, c.sut = kube, kubeSUT()
		c.gather.AcceptFlags, c.gather.SUTUnmeasured = AcceptedKubeFlags, true
	}
	since := time.Now().Add(-time.Second)
	go c.events.Run(sctx, b, since)
	go c.pids.Run(sctx)
	go func() { _ = c.topics.Run(sctx) }()
	go c.trackSUTs(sctx)

	if err := c.references(ctx); err != nil {
		return fail("reference runs: %v", err)
	}
	for i, k := range kills {
		if ctx.Err() != nil {
			seg.Notes = append(seg.Notes, fmt.Sprintf("deadline reached: %d of %d kills not run", len(kills)-i, len(kills)))
			break
		}
		rec := c.slot(ctx, k, i+1, len(kills))
		seg.Kills = append(seg.Kills, rec)
	}
	// The end-of-segment checks run even when the deadline has passed: a
	// cut-short suite still says what it left behind.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 4*time.Minute)
	defer fcancel()
	c.finish(fctx)
	n := Rejudge(&seg, tol, c.cfg.MaxPressure)
	c.logf("segment %s: final verdicts against %d undisturbed runs (references and clean controls); bands:", name, n)
	c.logBands()
	seg.Exits = cl.Unexpected()
	for _, err := range cl.StopServices(20 * time.Second) {
		seg.Shutdown = append(seg.Shutdown, err.Error())
	}
	// Whatever of the segment still runs once the services stopped is the
	// suite's own descendant: it goes (already counted above if it was a
	// finished run's).
	for pid, p := range c.leftoverProcs(nil, true) {
		seg.Notes = append(seg.Notes, fmt.Sprintf("killed pid %d (%s) still running after the services stopped", pid, p.desc))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return seg
}

// trackSUTs starts watching a run's SUT processes once it is provisioned and
// stops at its teardown.
func (c *segCtx) trackSUTs(ctx context.Context) {
	tracked := map[string]bool{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, run := range c.allRuns() {
			st, ok := c.events.State(run)
			if !ok {
				continue
			}
			switch {
			case inRun[st.State] && !tracked[run]:
				r, err := c.kv.Run(ctx, run)
				if err != nil {
					continue // NATS may be down: next round
				}
				var pids []int
				for _, t := range r.Targets {
					if (t.Role == "" || t.Role == "sut") && t.PID > 0 {
						pids = append(pids, t.PID)
					}
				}
				tracked[run] = true
				if len(pids) == 0 && c.kube != nil {
					c.pids.TrackNode(run, "no process: the SUT's pods are API objects played by kubetest.Controllers")
					continue
				}
				c.pids.Track(run, pids)
			case !inRun[st.State] && st.State != "provisioning" && tracked[run]:
				c.pids.Stop(run)
			}
		}
	}
}

func (c *segCtx) allRuns() []string {
	var out []string
	for _, e := range c.experiments() {
		out = append(out, c.events.RunsOf(e)...)
	}
	return out
}

func (c *segCtx) experiments() []string {
	c.idsMu.Lock()
	defer c.idsMu.Unlock()
	return slices.Clone(c.expIDs)
}

func (c *segCtx) addExperiment(id string) {
	c.idsMu.Lock()
	defer c.idsMu.Unlock()
	c.expIDs = append(c.expIDs, id)
}

func (c *segCtx) addRun(id string) {
	c.idsMu.Lock()
	defer c.idsMu.Unlock()
	c.runIDs = append(c.runIDs, id)
}

func (c *segCtx) runs() []string {
	c.idsMu.Lock()
	defer c.idsMu.Unlock()
	return slices.Clone(c.runIDs)
}

// references runs the undisturbed runs and derives the bands.
func (c *segCtx) references(ctx context.Context) error {
	n := c.cfg.References * len(c.cfg.Configs)
	c.logf("segment %s: %d undisturbed reference runs (%d per configuration)", c.seg.Name, n, c.cfg.References)
	spec, err := BuildSpec(c.example, SpecOptions{Name: "chaos-ref", Sensors: c.cfg.Configs, Repetitions: c.cfg.References,
		Phases: c.cfg.Phases, Interval: c.cfg.Interval, SUT: c.sut})
	if err != nil {
		return err
	}
	id, _, err := c.api.Submit(ctx, spec)
	if err != nil {
		return err
	}
	c.addExperiment(id)
	bound := time.Duration(n)*(c.cfg.Phases.Baseline+c.cfg.Phases.Warmup+c.cfg.Phases.Measure+c.cfg.Phases.Cooldown+20*time.Second) + c.cfg.RunBound
	state, _ := c.waitFinal(ctx, id, bound)
	runs, err := c.gatherAll(ctx, id, 0, "reference", bound)
	if err != nil {
		return err
	}
	c.seg.References = runs
	c.seg.Bands = Bands(runs, c.tolerate)
	c.seg.HoleTolMs = HoleTolerance(runs, c.tolerate)
	for _, cfg := range c.cfg.Configs {
		if len(c.seg.Bands[cfg]) == 0 {
			return fmt.Errorf("configuration sensors=%s has fewer than two undisturbed runs that ended done without flags (experiment %s ended %s); "+
				"the suite cannot tell a violation from this machine's noise without them: see the reference runs in the report", cfg, id, state)
		}
	}
	c.logBands()
	judgeRuns(c.seg.References, c.seg.Bands, c.seg.HoleTolMs, c.cfg.MaxPressure)
	for i := range c.seg.References {
		r := &c.seg.References[i]
		for _, v := range r.Violations {
			c.logf("  reference %s", v)
		}
		c.logf("  reference %s: CPU pressure %s of its window, machine CPU %s busy", r.RunID, pct(r.Pressure()), pct(utilOf(*r)))
	}
	return nil
}

// logBands prints the bands of every configuration and metric.
func (c *segCtx) logBands() {
	for _, cfg := range c.cfg.Configs {
		bs := c.seg.Bands[cfg]
		for _, m := range append(JudgedMetrics(), InfoMetrics()...) {
			b, ok := bs[m]
			if !ok {
				c.logf("  sensors=%s %-26s no band (not measured in two undisturbed runs)", cfg, m)
				continue
			}
			note := ""
			if slices.Contains(InfoMetrics(), m) {
				note = "  (information only)"
			}
			if b.Weak() {
				note += "  WEAK: wider than ×2, catches gross errors only"
			}
			c.logf("  sensors=%s %-26s %s%s", cfg, m, b, note)
		}
	}
	c.logf("  sample hole tolerance: %d ms (twice the longest hole of the undisturbed runs, at least two intervals)", c.seg.HoleTolMs)
}

// waitFinal waits until the experiment's KV record is final; it returns the
// last state read and whether it was final within the bound.
func (c *segCtx) waitFinal(ctx context.Context, id string, bound time.Duration) (string, bool) {
	state := "unknown"
	final := poll(ctx, bound, 300*time.Millisecond, func() bool {
		if e, err := c.kv.Experiment(ctx, id); err == nil {
			state = e.State
		}
		return finalStates[state]
	})
	return state, final
}

// gatherAll collects the facts of every run of an experiment.
func (c *segCtx) gatherAll(ctx context.Context, id string, slot int, role string, bound time.Duration) ([]RunFacts, error) {
	e, err := c.kv.Experiment(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read experiment %s: %w", id, err)
	}
	var out []RunFacts
	for i, rid := range e.RunIDs {
		f, err := c.gather.Gather(ctx, rid)
		if err != nil {
			return out, err
		}
		f.Slot, f.Role, f.Bound = slot, role, bound
		if role != "reference" && i > 0 {
			f.Role = "retry"
		}
		if !finalStates[f.State] {
			// Stuck for sure when every read over a few seconds says so.
			f.StuckConfirmed = len(confirmed(ctx, 3*time.Second, []string{rid}, func() []string {
				if r2, err := c.kv.Run(ctx, rid); err == nil && !finalStates[r2.State] {
					return []string{rid}
				}
				return nil
			})) > 0
		}
		c.addRun(rid)
		out = append(out, f)
		in, outT := "input-"+rid, "output-"+rid
		c.topics.Forget(in, outT)
	}
	return out, nil
}

// slot runs one planned kill: submit, kill in the phase, restart, wait for
// the end, gather and judge. In the kube segment the fault is a kube fault
// (see deliverKube) instead of a kill.
func (c *segCtx) slot(ctx context.Context, k Kill, i, n int) KillRecord {
	rec := KillRecord{Kill: k, CPUPressure: -1}
	if err := c.cluster.WaitReady(ctx, 60*time.Second); err != nil {
		rec.Error = "platform not ready before the slot: " + err.Error()
	}
	if c.kube != nil {
		if err := c.kube.cp.WaitServing(ctx, 60*time.Second); err != nil {
			rec.Error = strings.TrimPrefix(rec.Error+"; "+err.Error(), "; ")
		}
	}
	spec, err := BuildSpec(c.example, SpecOptions{Name: fmt.Sprintf("chaos-s%02d", k.Slot), Sensors: []string{k.Config}, Repetitions: 1,
		Phases: c.cfg.Phases, Interval: c.cfg.Interval, SUT: c.sut})
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	var kf *kubeFault
	if c.kube != nil && k.Target != TargetNone {
		if kf, err = c.prepareKube(ctx, k); err != nil {
			rec.Error = err.Error()
			return rec
		}
		// Whatever happens, the hold goes and the verb comes back.
		defer c.undoKube(ctx, kf, &rec)
	}
	submitted := time.Now()
	id, _, err := c.api.Submit(ctx, spec)
	if err != nil {
		rec.Error = "submit: " + err.Error()
		rec.Outcome = OutViolation
		c.seg.Suite = append(c.seg.Suite, Violation{Kind: "submit_refused", Detail: err.Error(), Confirmed: true})
		return rec
	}
	rec.ExperimentID = id
	c.addExperiment(id)
	switch {
	case k.Target == TargetNone:
		rec.NotDelivered = "control: nothing to kill"
	case kf != nil:
		c.deliverKube(ctx, k, id, kf, &rec)
	default:
		c.deliverKill(ctx, k, id, &rec)
	}
	if rec.NotDelivered != "" && k.Target != TargetNone {
		c.logf("slot %d/%d (%s): kill NOT delivered: %s", i, n, k, rec.NotDelivered)
	}

	state, final := c.waitFinal(ctx, id, max(c.cfg.RunBound-time.Since(submitted), 10*time.Second))
	rec.FinalAfter = time.Since(submitted).Seconds()
	if !final {
		rec.Stuck = true
		c.logf("slot %d/%d: experiment %s still %s after %s: cancelling it", i, n, id, state, c.cfg.RunBound)
		if err := c.api.Cancel(ctx, id); err != nil {
			rec.Error = "cancel a stuck experiment: " + err.Error()
		}
		c.waitFinal(ctx, id, 30*time.Second)
	}
	c.undoKube(ctx, kf, &rec)
	role := "chaos"
	if k.Target == TargetNone {
		role = "control"
	}
	runs, err := c.gatherAll(ctx, id, k.Slot, role, c.cfg.RunBound)
	if err != nil {
		rec.Error = strings.TrimPrefix(rec.Error+"; gather: "+err.Error(), "; ")
	}
	if rec.Stuck {
		for j := range runs {
			if runs[j].State == "cancelled" {
				// Cancelled by the suite after the bound: it was stuck.
				runs[j].State, runs[j].StuckConfirmed = "stuck (cancelled by the suite)", true
			}
		}
	}
	c.attachLeftovers(ctx, k, &rec, runs)
	// A preliminary verdict against the reference runs; the segment's end
	// judges again with the control runs among the undisturbed ones.
	all := judgeRuns(runs, c.seg.Bands, c.seg.HoleTolMs, c.cfg.MaxPressure)
	c.seg.Runs = append(c.seg.Runs, runs...)
	rec.summarize(runs, all)
	c.logSlot(k, i, n, id, kf != nil, &rec, runs, all)
	return rec
}

// attachLeftovers looks for what the slot's runs left behind (and, on a
// cluster, judges the kube fault) and adds each leftover to its run; the
// first run of a control also gets a violation when the platform had not
// recovered from the slot before.
func (c *segCtx) attachLeftovers(ctx context.Context, k Kill, rec *KillRecord, runs []RunFacts) {
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	left := c.leftovers(ctx, ids, false, 15*time.Second)
	if c.kube != nil {
		// The provisioner retries a teardown up to a minute apart and
		// sweeps leftovers every 30 s: a namespace has that long to go.
		left = append(left, c.namespaceLeftovers(ctx, ids, 90*time.Second)...)
		c.judgeKube(ctx, k, rec, runs)
	}
	var leftBehind []string
	for j := range runs {
		r := &runs[j]
		for _, v := range left {
			if v.RunID == r.RunID {
				r.Extra = append(r.Extra, v)
				if v.Confirmed {
					leftBehind = append(leftBehind, v.Kind)
				}
			}
		}
		if j == 0 && k.Target == TargetNone {
			if v, ok := notRecovered(runs, c.cfg.MaxPressure); ok {
				r.Extra = append(r.Extra, v)
			}
		}
		rec.RunIDs = append(rec.RunIDs, r.RunID)
	}
	rec.LeftBehind = "nothing"
	if len(leftBehind) > 0 {
		rec.LeftBehind = strings.Join(leftBehind, ",")
	}
}

// summarize fills in the slot's outcome from its experiment's first run
// and the violations found.
func (rec *KillRecord) summarize(runs []RunFacts, all []Violation) {
	if len(runs) == 0 {
		rec.Outcome = OutViolation
		if rec.Error == "" {
			rec.Error = "no run of the experiment was found"
		}
		return
	}
	first := runs[0]
	rec.Outcome = OutcomeOf(first, all)
	rec.Violations = kindsOf(all)
	rec.RecordsLost, rec.SamplesLost, rec.MaxRecordGapMs = first.RecordsLost, first.SamplesLost, first.Topics.MaxRecordGapMs
	rec.CPUPressure = -1
	if first.Own != nil {
		rec.CPUPressure = first.Own.CPUPressure
	}
	if rec.Delivered && first.State == "failed" {
		for _, st := range first.States {
			if st.State == "failed" {
				rec.DetectS = max(0, float64(st.TsMs-rec.KilledAt.UnixMilli())/1000)
			}
		}
	}
	for _, s := range first.Series {
		rec.MaxSampleHole = max(rec.MaxSampleHole, s.Coverage.MaxHoleMs)
	}
}

// logSlot prints the slot's progress line and its violations.
func (c *segCtx) logSlot(k Kill, i, n int, id string, kube bool, rec *KillRecord, runs []RunFacts, all []Violation) {
	switch {
	case k.Target == TargetNone:
		c.logf("slot %d/%d: control, no kill → %s: %s%s", i, n, id, describeRuns(runs), errSuffix(rec.Error))
	case kube:
		c.logf("slot %d/%d: %s in %s (covered %s), down %.1fs, noticed %s s, recovered %s s (%s) → %s: %s; left behind: %s%s", i, n, k.Target, k.Phase,
			orDash(rec.PhaseObserved), rec.DownS, secs(rec.NoticedS), secs(rec.RecoveredS), orDash(rec.Recovery), id, describeRuns(runs), rec.LeftBehind,
			errSuffix(rec.Error))
	default:
		c.logf("slot %d/%d: %s%s in %s (observed %s) pid %d, back after %.1fs → %s: %s%s", i, n, k.Target, instSuffix(k.Instance), k.Phase,
			orDash(rec.PhaseObserved), rec.Pid, rec.DownS, id, describeRuns(runs), errSuffix(rec.Error))
	}
	for _, v := range all {
		c.logf("    %s", v)
	}
}

// deliverKill waits for the experiment's first run to enter the kill's
// phase (and the offset into it), kills the process with SIGKILL and starts
// it again after the planned delay.
func (c *segCtx) deliverKill(ctx context.Context, k Kill, id string, rec *KillRecord) {
	proc, err := c.cluster.Target(k.Target, k.Instance)
	if err != nil {
		rec.Error = err.Error()
		return
	}
	rec.Proc = proc.Name

	// Wait for the first run to enter the phase (or to end without it).
	run, reached := c.awaitRunState(ctx, id, k.Phase)
	var phaseSeen StateSeen
	for _, st := range c.events.States(run) {
		if st.State == k.Phase {
			phaseSeen = st
		}
	}
	switch {
	case !reached:
		rec.NotDelivered = fmt.Sprintf("the run did not reach %s within %s", k.Phase, c.cfg.RunBound)
		return
	case phaseSeen.State == "":
		last, _ := c.events.State(run)
		rec.NotDelivered = fmt.Sprintf("the run ended %s without entering %s", last.State, k.Phase)
		return
	}
	if wait := time.Until(phaseSeen.Seen.Add(k.Offset)); wait > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	cur, _ := c.events.State(run)
	rec.PhaseObserved = cur.State
	rec.KilledAt = time.Now()
	rec.Pid, err = proc.Kill()
	if err != nil {
		rec.Error = err.Error()
		return
	}
	rec.Delivered = true
	select {
	case <-ctx.Done():
	case <-time.After(k.RestartAfter):
	}
	rec.RestartedAt = time.Now()
	if err := proc.Start(); err != nil {
		rec.RestartError = err.Error()
	} else if err := proc.WaitReady(ctx, 60*time.Second); err != nil {
		rec.RestartError = err.Error()
		// Ask once more before calling it: a process that cannot serve
		// again after kill -9 (corrupt state, a lock it left) is a finding.
		again := proc.WaitReady(ctx, 5*time.Second)
		c.seg.Suite = append(c.seg.Suite, Violation{Kind: "restart_failed", Confirmed: again != nil,
			Detail: fmt.Sprintf("slot %d: %s did not serve again within 60s of its restart after kill -9: %v", k.Slot, proc.Name, err)})
	} else {
		rec.ReadyAt = time.Now()
		rec.DownS = rec.ReadyAt.Sub(rec.KilledAt).Seconds()
		rec.RecoverS = rec.ReadyAt.Sub(rec.RestartedAt).Seconds()
	}
}

// notRecovered: a control run (no kill) and every retry of it ended without
// done. The platform did not recover from the faults before it — unless the
// machine was overloaded, which can fail runs legitimately.
func notRecovered(runs []RunFacts, maxPressure float64) (Violation, bool) {
	var states []string
	for _, r := range runs {
		if r.State == "done" {
			return Violation{}, false
		}
		states = append(states, fmt.Sprintf("%s %s (%s)", r.RunID, r.State, truncate(r.Reason, 100)))
	}
	if len(runs) == 0 {
		return Violation{}, false
	}
	v := Violation{RunID: runs[0].RunID, Kind: "not_recovered", Confirmed: true,
		Detail: "a control run, with no kill, could not complete: " + strings.Join(states, "; ") + " — the platform did not recover from the faults before it"}
	if p := runs[0].Pressure(); maxPressure > 0 && p > maxPressure {
		v.Excused = fmt.Sprintf("the machine was overloaded: CPU pressure %.0f%%", p*100)
	}
	return v, true
}

func utilOf(r RunFacts) float64 {
	if r.Own == nil {
		return -1
	}
	return r.Own.NodeUtil
}

func instSuffix(i int) string {
	if i > 0 {
		return fmt.Sprintf("#%d", i)
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " [harness: " + e + "]"
}

func describeRuns(runs []RunFacts) string {
	var parts []string
	for _, r := range runs {
		p := r.State
		if len(r.Flags) > 0 {
			p += " flagged " + strings.Join(r.Flags, ",")
		}
		if r.Reason != "" && r.State != "done" {
			p += " (" + truncate(r.Reason, 120) + ")"
		}
		if v, ok := r.Metrics[MDelivered]; ok {
			p += fmt.Sprintf(" %.0f rec/s", v)
		}
		if v, ok := r.Metrics[MSUTPower]; ok {
			p += fmt.Sprintf(" sut %.3fW", v)
		}
		if r.Own != nil {
			p += " pressure " + pct(r.Own.CPUPressure)
		}
		parts = append(parts, r.RunID[strings.LastIndex(r.RunID, "-r")+1:]+" "+p)
	}
	return strings.Join(parts, "; ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
