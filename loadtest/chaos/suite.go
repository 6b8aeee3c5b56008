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
	api, err := NewAPI(sctx, b, cl.SchedulerURLs())
	if err != nil {
		return fail("a token for the scheduler's API: %v", err)
	}
	st, err := store.Open(sctx, cl.DSN, zap.NewNop())
	if err != nil {
		return fail("open ClickHouse: %v", err)
	}
	defer st.Close()
	tol := DefaultTolerance(s.cfg.Interval.Milliseconds())
	if s.cfg.Tolerance != nil {
		tol = *s.cfg.Tolerance
	}
	c := &segCtx{suite: s, seg: &seg, cluster: cl, bus: b, api: api, kv: KV{b.JetStream()}, store: st,
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
			return fmt.Errorf("configuration sensors=%s has fewer than two undisturbed runs that ended done without data-quality flags (experiment %s ended %s); "+
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
