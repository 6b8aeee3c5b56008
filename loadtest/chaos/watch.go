package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/service"
)

// ---- lifecycle events ----

// StateSeen is a run.state event as the suite received it.
type StateSeen struct {
	State string    `json:"state"`
	TsMs  int64     `json:"ts_ms"` // the scheduler's time of the transition
	Seen  time.Time `json:"seen"`  // when the suite received it
}

// ReportSeen is a provisioner's report on a run as the suite received it:
// run.provisioned, run.provision_failed or run.torn_down.
type ReportSeen struct {
	Type       string    `json:"type"`
	Seen       time.Time `json:"seen"`
	TsMs       int64     `json:"ts_ms"`
	Incomplete bool      `json:"incomplete,omitempty"`
	Lost       bool      `json:"lost,omitempty"`
	Crashed    bool      `json:"crashed,omitempty"`
	Transient  bool      `json:"transient,omitempty"`
	Reason     string    `json:"reason,omitempty"`
}

// EventLog keeps what the services announced on the bus: run states (to time
// kills), run.analyzed (flags), experiment states, and the provisioner's
// reports (to time what it noticed of a fault).
type EventLog struct {
	mu       sync.Mutex
	states   map[string][]StateSeen
	expOf    map[string]string
	runsOf   map[string][]string
	analyzed map[string]events.RunAnalyzed
	reports  map[string][]ReportSeen
	changed  chan struct{}
}

// NewEventLog returns an empty log.
func NewEventLog() *EventLog {
	return &EventLog{states: map[string][]StateSeen{}, expOf: map[string]string{}, runsOf: map[string][]string{},
		analyzed: map[string]events.RunAnalyzed{}, reports: map[string][]ReportSeen{}, changed: make(chan struct{})}
}

// Run follows the lifecycle stream from since until ctx ends.
func (l *EventLog) Run(ctx context.Context, b *bus.Bus, since time.Time) {
	types := []events.Type{events.TypeRunState, events.TypeRunAnalyzed, events.TypeRunProvisioned, events.TypeRunProvisionFailed, events.TypeRunTornDown}
	for ctx.Err() == nil {
		err := b.Watch(ctx, since, types, l.add)
		if err == nil || ctx.Err() != nil {
			return
		}
		select { // NATS down at the moment: try again
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (l *EventLog) add(d bus.Delivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch m := d.Msg.(type) {
	case *events.RunState:
		ss := l.states[m.RunID]
		if n := len(ss); n > 0 && ss[n-1].State == m.State {
			return // a redelivery or a re-published state
		}
		if _, ok := l.expOf[m.RunID]; !ok {
			l.expOf[m.RunID] = m.ExperimentID
			l.runsOf[m.ExperimentID] = append(l.runsOf[m.ExperimentID], m.RunID)
		}
		l.states[m.RunID] = append(ss, StateSeen{State: m.State, TsMs: m.TsMs, Seen: time.Now()})
	case *events.RunAnalyzed:
		l.analyzed[m.RunID] = *m
	case *events.RunProvisioned:
		l.reports[m.RunID] = append(l.reports[m.RunID], ReportSeen{Type: string(events.TypeRunProvisioned), Seen: time.Now(), TsMs: m.TsMs})
	case *events.RunProvisionFailed:
		l.reports[m.RunID] = append(l.reports[m.RunID], ReportSeen{Type: string(events.TypeRunProvisionFailed), Seen: time.Now(), TsMs: m.TsMs,
			Transient: m.Transient, Reason: m.Reason})
	case *events.RunTornDown:
		l.reports[m.RunID] = append(l.reports[m.RunID], ReportSeen{Type: string(events.TypeRunTornDown), Seen: time.Now(), TsMs: m.TsMs,
			Incomplete: m.Incomplete, Lost: m.Lost, Crashed: m.Crashed, Reason: m.Reason})
	default:
		return
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// State is the newest state seen for a run ("" if none).
func (l *EventLog) State(run string) (StateSeen, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ss := l.states[run]
	if len(ss) == 0 {
		return StateSeen{}, false
	}
	return ss[len(ss)-1], true
}

// States is every state seen for a run, in order.
func (l *EventLog) States(run string) []StateSeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]StateSeen(nil), l.states[run]...)
}

// RunsOf lists the runs of an experiment seen so far, in order of their
// first state.
func (l *EventLog) RunsOf(exp string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.runsOf[exp]...)
}

// Reports is every provisioner report on a run, in order of arrival.
func (l *EventLog) Reports(run string) []ReportSeen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ReportSeen(nil), l.reports[run]...)
}

// Analyzed is the newest run.analyzed of a run.
func (l *EventLog) Analyzed(run string) (events.RunAnalyzed, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.analyzed[run]
	return a, ok
}

// Wait blocks until cond (called under no lock) holds, ctx ends or within
// passes; it re-checks after every event and at least every 200 ms.
func (l *EventLog) Wait(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.After(within)
	for {
		l.mu.Lock()
		ch := l.changed
		l.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return cond()
		case <-ch:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ---- liveness and CPU of the system under test, CPU of the node ----

// SUTLife is what the suite saw of a run's SUT processes.
type SUTLife struct {
	PIDs []int `json:"pids"`
	// LastAliveMs is the last poll that found every pid alive; DiedAtMs the
	// first poll that found one gone (0: alive until tracking stopped).
	LastAliveMs int64 `json:"last_alive_ms"`
	DiedAtMs    int64 `json:"died_at_ms,omitempty"`
	// StateAtDeath is the run's phase at DiedAtMs, from its recorded
	// phases; DeathConfirmed: the next poll, 100 ms later, found it gone too.
	StateAtDeath   string `json:"state_at_death,omitempty"`
	DeathConfirmed bool   `json:"death_confirmed,omitempty"`
	Identity       string `json:"identity"` // how the pid was matched to the run
}

// cpuPoint is one poll: the node's busy and total CPU ticks (all CPUs) and
// the SUT's own ticks (utime + stime of its pids; -1 once one is gone).
type cpuPoint struct {
	AtMs        int64
	Busy, Total uint64
	SUT         int64
	StallUs     uint64 // /proc/pressure/cpu "some" total, µs (0 without PSI)
}

type sutTrack struct {
	life    SUTLife
	misses  int
	stopped bool
	points  []cpuPoint
}

// PidWatch polls /proc every 100 ms: the SUT processes of running runs
// (alive? CPU time?) and the node's CPU times. It is the suite's own meter,
// independent of the energy collector.
type PidWatch struct {
	mu   sync.Mutex
	runs map[string]*sutTrack
	ncpu int
}

// NewPidWatch returns an idle watch.
func NewPidWatch() *PidWatch { return &PidWatch{runs: map[string]*sutTrack{}} }

// Track starts watching a run's SUT pids (a second call is ignored).
func (w *PidWatch) Track(run string, pids []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.runs[run]; ok || len(pids) == 0 {
		return
	}
	id := "environ"
	for _, pid := range pids {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			id = "gone before tracking"
			break
		}
		if !bytes.Contains(env, []byte("GREENFLOW_RUN_ID="+run+"\x00")) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if !bytes.Contains(cmdline, []byte(run)) {
				id = fmt.Sprintf("pid %d does not name run %s", pid, run)
			}
		}
	}
	w.runs[run] = &sutTrack{life: SUTLife{PIDs: pids, LastAliveMs: time.Now().UnixMilli(), Identity: id}}
}

// TrackNode watches the node alone for a run whose system under test is
// no process of this machine (a kubernetes run whose pods are API objects):
// the suite's own meter of the node, with no SUT share.
func (w *PidWatch) TrackNode(run, identity string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.runs[run]; ok {
		return
	}
	w.runs[run] = &sutTrack{life: SUTLife{LastAliveMs: time.Now().UnixMilli(), Identity: identity}}
}

// Stop ends watching a run (its teardown began).
func (w *PidWatch) Stop(run string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.runs[run]; ok {
		t.stopped = true
	}
}

// Life returns what was seen of a run's SUT.
func (w *PidWatch) Life(run string) (SUTLife, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.runs[run]
	if !ok {
		return SUTLife{}, false
	}
	return t.life, true
}

// Run polls every 100 ms until ctx ends.
func (w *PidWatch) Run(ctx context.Context) {
	service.Every(ctx, clock.RealClock{}, 100*time.Millisecond, nil, func() {
		busy, total, ncpu, nodeErr := nodeCPU()
		stall := cpuStall()
		w.mu.Lock()
		now := time.Now().UnixMilli()
		if nodeErr == nil {
			w.ncpu = ncpu
		}
		for _, tr := range w.runs {
			if tr.stopped {
				continue
			}
			alive := true
			var ticks int64
			for _, pid := range tr.life.PIDs {
				n, ok := treeTicks(pid, 0)
				alive = alive && ok
				ticks += n
			}
			if !alive {
				ticks = -1
			}
			if nodeErr == nil {
				tr.points = append(tr.points, cpuPoint{AtMs: now, Busy: busy, Total: total, SUT: ticks, StallUs: stall})
			}
			if tr.life.DeathConfirmed {
				continue
			}
			switch {
			case alive:
				tr.life.LastAliveMs, tr.misses, tr.life.DiedAtMs = now, 0, 0
			case tr.misses == 0:
				tr.misses, tr.life.DiedAtMs = 1, now
			default:
				tr.life.DeathConfirmed = true
			}
		}
		w.mu.Unlock()
	})
}

// Model is the linear CPU-utilisation power model the collectors are
// started with (--source model): P = IdleW + (MaxW − IdleW) × utilisation.
type Model struct{ IdleW, MaxW float64 }

// OwnMeter is the suite's own measurement of a window.
type OwnMeter struct {
	NodeJ    float64 `json:"node_j"`    // the model over the node's CPU times
	SUTJ     float64 `json:"sut_j"`     // Kepler's split of NodeJ by the SUT's CPU time
	SUTCPUs  float64 `json:"sut_cpus"`  // SUT CPU seconds per second (of one CPU)
	NodeUtil float64 `json:"node_util"` // the machine's CPU utilisation
	// CPUPressure is the share of the window in which some task waited
	// for a CPU (Linux PSI, /proc/pressure/cpu): how overloaded the machine
	// was, whatever ran on it. -1 without PSI.
	CPUPressure float64 `json:"cpu_pressure"`
	Covered     float64 `json:"covered"` // share of the window the polls covered
}

// Measure computes the suite's own meter over [startMs, endMs) of a run,
// from the polls while it was tracked. Each poll interval counts by its
// overlap with the window; SUT ticks after the SUT was gone count 0.
func (w *PidWatch) Measure(run string, startMs, endMs int64, m Model) (OwnMeter, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.runs[run]
	if !ok || endMs <= startMs || w.ncpu == 0 {
		return OwnMeter{}, false
	}
	var o OwnMeter
	var coveredMs, busyTicks, totalTicks, stallUs float64
	psi := true
	for i := 1; i < len(t.points); i++ {
		p, q := t.points[i-1], t.points[i]
		dt := q.AtMs - p.AtMs
		ov := min(q.AtMs, endMs) - max(p.AtMs, startMs)
		if dt <= 0 || ov <= 0 || q.Total <= p.Total {
			continue
		}
		f := float64(ov) / float64(dt)
		dTotal := float64(q.Total - p.Total)
		util := min(max(float64(q.Busy-p.Busy)/dTotal, 0), 1)
		pw := m.IdleW + (m.MaxW-m.IdleW)*util
		j := pw * float64(dt) / 1000 * f
		o.NodeJ += j
		if p.SUT >= 0 && q.SUT >= p.SUT {
			sut := float64(q.SUT - p.SUT)
			o.SUTJ += j * min(sut/dTotal, 1)
			o.SUTCPUs += sut / clockTicks * f
		}
		coveredMs += float64(ov)
		busyTicks += float64(q.Busy-p.Busy) * f
		totalTicks += dTotal * f
		if p.StallUs == 0 || q.StallUs < p.StallUs {
			psi = false
		} else {
			stallUs += float64(q.StallUs-p.StallUs) * f
		}
	}
	win := float64(endMs-startMs) / 1000
	o.SUTCPUs /= win
	if totalTicks > 0 {
		o.NodeUtil = busyTicks / totalTicks
	}
	o.CPUPressure = -1
	if psi && coveredMs > 0 {
		o.CPUPressure = stallUs / 1000 / coveredMs
	}
	o.Covered = coveredMs / float64(endMs-startMs)
	return o, o.Covered > 0.9
}

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// nodeCPU reads the machine's busy and total CPU ticks over all CPUs from
// /proc/stat (busy = everything but idle and iowait), and the CPU count.
func nodeCPU() (busy, total uint64, ncpu int, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] != "cpu" {
			if strings.HasPrefix(f[0], "cpu") {
				ncpu++
			}
			continue
		}
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
			}
			if i >= 8 { // guest times are already in user and nice
				break
			}
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
	}
	if total == 0 || ncpu == 0 {
		return 0, 0, 0, fmt.Errorf("/proc/stat: no cpu lines")
	}
	return busy, total, ncpu, nil
}

// cpuStall reads the "some" total of /proc/pressure/cpu (µs during which at
// least one task waited for a CPU); 0 when the kernel has no PSI.
func cpuStall() uint64 {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				return n
			}
		}
	}
	return 0
}

// treeTicks is a live process's CPU ticks plus its descendants' (a target
// is its process tree, as the collector attributes it); ok reports the
// process itself alive.
func treeTicks(pid, depth int) (int64, bool) {
	n, ok := pidTicks(pid)
	if !ok || depth > 8 {
		return n, ok
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(f); err == nil {
				c, _ := treeTicks(child, depth+1)
				n += c
			}
		}
	}
	return n, true
}

// pidTicks is a live process's utime + stime in clock ticks.
func pidTicks(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	// After the command: state(0) ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime(11) stime(12).
	if len(f) < 13 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return u + s, true
}

// pidAlive reports a process that exists and is not a zombie.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// ---- what the broker holds ----

// recKey identifies a UC-3 record: sensor index and timestamp.
type recKey struct {
	sensor uint32
	ts     int64
}

type hwmPoint struct {
	AtMs int64
	Sum  int64
}

type topicData struct {
	copies   map[recKey]uint16 // input topics
	arrivals []int64           // output topics: when each record was fetched (ms)
	consumed int64
	hwm      []hwmPoint
	maxHWM   int64
	badKeys  int64
}

// TopicWatch consumes every run topic (input-*, output-*) from its start and
// samples the topics' high-water marks, so the suite knows what the broker
// held before the provisioner deleted the topics.
type TopicWatch struct {
	brokers []string
	mu      sync.Mutex
	topics  map[string]*topicData
	errs    int
}

var runTopic = regexp.MustCompile(`^(input|output)-.+`)

// NewTopicWatch watches the run topics of brokers.
func NewTopicWatch(brokers []string) *TopicWatch {
	return &TopicWatch{brokers: brokers, topics: map[string]*topicData{}}
}

func (w *TopicWatch) topic(name string) *topicData {
	t, ok := w.topics[name]
	if !ok {
		t = &topicData{copies: map[recKey]uint16{}}
		w.topics[name] = t
	}
	return t
}

// Run consumes and samples until ctx ends.
func (w *TopicWatch) Run(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.brokers...), kgo.ConsumeRegex(), kgo.ConsumeTopics(runTopic.String()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(100*time.Millisecond), kgo.MetadataMaxAge(300*time.Millisecond),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return fmt.Errorf("suite kafka consumer: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	go w.sample(ctx, adm)
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		now := time.Now().UnixMilli()
		var gone []string
		w.mu.Lock()
		fs.EachError(func(topic string, _ int32, err error) {
			w.errs++
			if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
				gone = append(gone, topic)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			t := w.topic(r.Topic)
			t.consumed++
			if strings.HasPrefix(r.Topic, "output-") {
				t.arrivals = append(t.arrivals, now)
				return
			}
			k := string(r.Key)
			n, err := strconv.ParseUint(strings.TrimPrefix(k, "s_"), 10, 32)
			if !strings.HasPrefix(k, "s_") || err != nil {
				t.badKeys++
				return
			}
			key := recKey{uint32(n), r.Timestamp.UnixMilli()}
			t.copies[key]++
		})
		w.mu.Unlock()
		if len(gone) > 0 {
			// A deleted run topic: stop fetching it (it would fail at once,
			// forever); a topic of that name created again is found by the
			// regex on the next metadata refresh.
			cl.PurgeTopicsFromConsuming(gone...)
		}
		if fs.NumRecords() == 0 && len(fs.Errors()) > 0 {
			select { // the broker is down or a topic is gone: do not spin
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// sample records every run topic's summed high-water mark every 200 ms.
func (w *TopicWatch) sample(ctx context.Context, adm *kadm.Client) {
	service.Every(ctx, clock.RealClock{}, 200*time.Millisecond, nil, func() {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		td, err := adm.ListTopics(qctx)
		if err != nil {
			cancel()
			return
		}
		var names []string
		for _, n := range td.Names() {
			if runTopic.MatchString(n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			cancel()
			return
		}
		ends, err := adm.ListEndOffsets(qctx, names...)
		cancel()
		if err != nil {
			return
		}
		now := time.Now().UnixMilli()
		sums := map[string]int64{}
		bad := map[string]bool{}
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err != nil || o.Offset < 0 {
				bad[o.Topic] = true
				return
			}
			sums[o.Topic] += o.Offset
		})
		w.mu.Lock()
		for name, sum := range sums {
			if bad[name] {
				continue
			}
			d := w.topic(name)
			d.hwm = append(d.hwm, hwmPoint{AtMs: now, Sum: sum})
			d.maxHWM = max(d.maxHWM, sum)
		}
		w.mu.Unlock()
	})
}

// TopicCounts is what the suite knows of one run's topics.
type TopicCounts struct {
	InputInWindow   int64  `json:"input_in_window"`   // unique (sensor, ts) with ts in the window
	InputCopies     int64  `json:"input_copies"`      // records beyond the first of each (sensor, ts), whole topic
	InputConsumed   int64  `json:"input_consumed"`    // records the suite read
	InputMaxHWM     int64  `json:"input_max_hwm"`     // the most the broker ever held
	InputComplete   bool   `json:"input_complete"`    // the suite read everything the broker held
	InputHWMDelta   int64  `json:"input_hwm_delta"`   // high-water mark growth across the window (interpolated)
	InputHWMEdges   bool   `json:"input_hwm_edges"`   // samples existed on both sides of both edges
	MaxRecordGapMs  int64  `json:"max_record_gap_ms"` // longest stretch of the window without any record timestamp
	OutputArrivals  int64  `json:"output_arrivals"`   // output records fetched during the window
	OutputHWMDelta  int64  `json:"output_hwm_delta"`
	OutputHWMEdges  bool   `json:"output_hwm_edges"`
	OutputConsumed  int64  `json:"output_consumed"`
	OutputMaxHWM    int64  `json:"output_max_hwm"`
	OutputComplete  bool   `json:"output_complete"`
	ConsumerErrors  int    `json:"consumer_errors"`
	IncompleteNotes string `json:"incomplete_notes,omitempty"`
}

// Counts summarises a run's topics over the window [startMs, endMs).
func (w *TopicWatch) Counts(input, output string, startMs, endMs int64) TopicCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	var c TopicCounts
	c.ConsumerErrors = w.errs
	if in, ok := w.topics[input]; ok {
		var ts []int64
		for k, n := range in.copies {
			c.InputCopies += int64(n) - 1
			if k.ts >= startMs && k.ts < endMs {
				c.InputInWindow++
				ts = append(ts, k.ts)
			}
		}
		c.InputConsumed, c.InputMaxHWM = in.consumed, in.maxHWM
		c.InputComplete = in.consumed >= in.maxHWM && in.maxHWM > 0
		c.MaxRecordGapMs = MaxGap(ts, startMs, endMs)
		c.InputHWMDelta, c.InputHWMEdges = hwmDelta(in.hwm, startMs, endMs)
	}
	if out, ok := w.topics[output]; ok {
		for _, a := range out.arrivals {
			if a >= startMs && a < endMs {
				c.OutputArrivals++
			}
		}
		c.OutputConsumed, c.OutputMaxHWM = out.consumed, out.maxHWM
		c.OutputComplete = out.consumed >= out.maxHWM
		c.OutputHWMDelta, c.OutputHWMEdges = hwmDelta(out.hwm, startMs, endMs)
	}
	if !c.InputComplete {
		c.IncompleteNotes = fmt.Sprintf("the suite read %d of the %d input records the broker held", c.InputConsumed, c.InputMaxHWM)
	}
	return c
}

// Forget drops a topic's data once its run is judged.
func (w *TopicWatch) Forget(topics ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range topics {
		delete(w.topics, t)
	}
}

// hwmDelta interpolates the high-water mark at both edges; ok is false when
// an edge lies outside the sampled span.
func hwmDelta(pts []hwmPoint, startMs, endMs int64) (int64, bool) {
	a, okA := hwmAt(pts, startMs)
	b, okB := hwmAt(pts, endMs)
	return b - a, okA && okB
}

func hwmAt(pts []hwmPoint, t int64) (int64, bool) {
	for i := 1; i < len(pts); i++ {
		p, q := pts[i-1], pts[i]
		if p.AtMs <= t && t <= q.AtMs {
			if q.AtMs == p.AtMs {
				return q.Sum, true
			}
			f := float64(t-p.AtMs) / float64(q.AtMs-p.AtMs)
			return p.Sum + int64(f*float64(q.Sum-p.Sum)+0.5), true
		}
	}
	return 0, false
}

// CPUs is the machine's CPU count as /proc/stat lists it.
func (w *PidWatch) CPUs() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ncpu
}
