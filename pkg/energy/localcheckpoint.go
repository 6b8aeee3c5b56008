package energy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Local meters read counters that outlive the collector process — RAPL's
// energy_uj, /proc's CPU times — so a collector restarted on the same node
// can continue from a checkpoint: its first interval then covers the time
// it was down exactly (as exactly as the model is, for ModelMeter). Not
// across a reboot, which resets every counter: a checkpoint names the boot
// it was taken in (/proc/sys/kernel/random/boot_id) and is refused in
// another.

// meterCheckpointer is a NodeMeter whose state can be saved and restored.
type meterCheckpointer interface {
	NodeMeter
	checkpoint() (json.RawMessage, error)
	restore(data json.RawMessage) error
	procFS() ProcFS // whose boot a checkpoint names
}

func (m *RAPLMeter) procFS() ProcFS  { return m.proc }
func (m *ModelMeter) procFS() ProcFS { return m.proc }

var (
	_ meterCheckpointer = (*RAPLMeter)(nil)
	_ meterCheckpointer = (*ModelMeter)(nil)
)

// clockState is a lastReading in a checkpoint (named for its JSON field).
type clockState struct {
	TimeNs int64   `json:"time_ns"`
	Busy   float64 `json:"busy_s"`
	Total  float64 `json:"total_s"`
}

func (r *lastReading) save() (clockState, error) {
	if !r.started {
		return clockState{}, errors.New("checkpoint: no reading yet")
	}
	return clockState{TimeNs: r.time.UnixNano(), Busy: r.cpu.BusySeconds, Total: r.cpu.TotalSeconds}, nil
}

func (r *lastReading) load(s clockState) error {
	if s.TimeNs <= 0 {
		return errors.New("restore checkpoint: no reading time")
	}
	r.started, r.time, r.cpu = true, time.Unix(0, s.TimeNs), CPUTimes{BusySeconds: s.Busy, TotalSeconds: s.Total}
	return nil
}

type raplState struct {
	Clock  clockState               `json:"clock"`
	TotalJ float64                  `json:"total_j"`
	Zones  map[string]raplZoneState `json:"zones"`
}

type raplZoneState struct {
	PrevUJ uint64  `json:"prev_uj"`
	TotalJ float64 `json:"total_j"`
}

// encodeState encodes a local meter's state with its last reading's clock.
func encodeState[T any](last lastReading, state func(clockState) T) (json.RawMessage, error) {
	c, err := last.save()
	if err != nil {
		return nil, err
	}
	return json.Marshal(state(c))
}

func (m *RAPLMeter) checkpoint() (json.RawMessage, error) {
	return encodeState(m.last, func(c clockState) raplState {
		st := raplState{Clock: c, TotalJ: m.totalJ, Zones: make(map[string]raplZoneState, len(m.zones))}
		for _, z := range m.zones {
			st.Zones[z.label] = raplZoneState{PrevUJ: z.counter.prev, TotalJ: z.counter.totalJ}
		}
		return st
	})
}

// restore accepts a checkpoint of the same zones only.
func (m *RAPLMeter) restore(data json.RawMessage) error {
	var st raplState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("restore rapl checkpoint: %w", err)
	}
	if got, want := slices.Sorted(maps.Keys(st.Zones)), slices.Sorted(slices.Values(m.Zones())); !slices.Equal(got, want) {
		return fmt.Errorf("restore rapl checkpoint: zones %v, this meter has %v", got, want)
	}
	var last lastReading
	if err := last.load(st.Clock); err != nil {
		return err
	}
	m.last, m.totalJ = last, st.TotalJ
	for i := range m.zones {
		z := &m.zones[i]
		s := st.Zones[z.label]
		z.counter = Counter{prev: s.PrevUJ, started: true, totalJ: s.TotalJ}
	}
	return nil
}

type modelState struct {
	Clock       clockState `json:"clock"`
	CumulativeJ float64    `json:"cumulative_j"`
	IdleW       float64    `json:"idle_w"`
	MaxW        float64    `json:"max_w"`
}

func (m *ModelMeter) checkpoint() (json.RawMessage, error) {
	return encodeState(m.last, func(c clockState) modelState {
		return modelState{Clock: c, CumulativeJ: m.cumulativeJ, IdleW: m.idleW, MaxW: m.maxW}
	})
}

// restore continues the checkpoint with the checkpoint's model: the model
// is the collector's choice per interval (SetModel: a run's model, a
// calibration), and the interval across the checkpoint keeps the one its
// owner used until the collector sets another. A checkpoint whose watts
// make no model is rejected.
func (m *ModelMeter) restore(data json.RawMessage) error {
	var st modelState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("restore model checkpoint: %w", err)
	}
	var has struct{ IdleW, MaxW *float64 }
	if err := json.Unmarshal(data, &struct {
		IdleW **float64 `json:"idle_w"`
		MaxW  **float64 `json:"max_w"`
	}{&has.IdleW, &has.MaxW}); err != nil || has.IdleW == nil || has.MaxW == nil {
		return errors.New("restore model checkpoint: not a model's checkpoint (no idle_w/max_w)")
	}
	if err := validateModel(st.IdleW, st.MaxW); err != nil {
		return fmt.Errorf("restore model checkpoint: %w", err)
	}
	var last lastReading
	if err := last.load(st.Clock); err != nil {
		return err
	}
	m.last, m.cumulativeJ = last, st.CumulativeJ
	m.idleW, m.maxW, m.invalidModel = st.IdleW, st.MaxW, nil
	return nil
}

type localState struct {
	Version int             `json:"v"`
	Boot    string          `json:"boot,omitempty"`
	Meter   json.RawMessage `json:"meter"`
	// Procs are the kept processes' CPU ticks: pid, start time, ticks.
	Procs [][3]uint64 `json:"procs,omitempty"`
	// MaxStart is the newest start time among every process of the
	// checkpointed reading: a process missing from Procs that started
	// later is new and all its CPU time counts; an older one was left out
	// and starts from a baseline.
	MaxStart uint64 `json:"max_start"`
}

const localCheckpointVersion = 1

// Checkpoint implements Checkpointer: the meter's state, and the CPU ticks
// of the processes whose workload key ("pid/<pid>") passes keep (nil keeps
// all).
func (s *LocalSource) Checkpoint(keep func(workloadKey string) bool) ([]byte, error) {
	if !s.started {
		return nil, errors.New("checkpoint: no reading yet")
	}
	st, err := checkpointMeter(s.meter, s.proc)
	if err != nil {
		return nil, err
	}
	st.MaxStart = s.maxStart
	for k, ticks := range s.prev {
		if keep == nil || keep(pidKey(k.pid)) {
			st.Procs = append(st.Procs, [3]uint64{uint64(k.pid), k.start, ticks})
		}
	}
	slices.SortFunc(st.Procs, func(a, b [3]uint64) int { return cmp.Compare(a[0], b[0]) })
	return json.Marshal(st)
}

// Restore implements Checkpointer. It refuses a checkpoint of another boot
// or of another meter; the state is unchanged on error.
func (s *LocalSource) Restore(data []byte) error {
	st, err := restoreMeter(s.meter, s.proc, data)
	if err != nil {
		return err
	}
	s.prev = make(map[procKey]uint64, len(st.Procs))
	for _, p := range st.Procs {
		s.prev[procKey{pid: int(p[0]), start: p[1]}] = p[2]
	}
	s.started, s.restored, s.maxStart = true, true, st.MaxStart
	return nil
}

// Checkpoint implements Checkpointer for the meters that can be
// checkpointed (RAPLMeter, ModelMeter); keep is ignored: a meter sees no
// workloads.
func (s meterSource) Checkpoint(func(workloadKey string) bool) ([]byte, error) {
	st, err := checkpointMeter(s.m, s.proc)
	if err != nil {
		return nil, err
	}
	return json.Marshal(st)
}

// Restore implements Checkpointer, as LocalSource's does.
func (s meterSource) Restore(data []byte) error {
	_, err := restoreMeter(s.m, s.proc, data)
	return err
}

// checkpointMeter encodes m's state, named with the running boot of the
// node whose /proc is proc.
func checkpointMeter(m NodeMeter, proc ProcFS) (localState, error) {
	mc, ok := m.(meterCheckpointer)
	if !ok {
		return localState{}, fmt.Errorf("checkpoint: meter %T cannot be checkpointed", m)
	}
	meter, err := mc.checkpoint()
	if err != nil {
		return localState{}, err
	}
	return localState{Version: localCheckpointVersion, Boot: proc.BootID(), Meter: meter}, nil
}

// restoreMeter decodes a checkpoint and restores its meter state into m,
// refusing one of another boot; m is unchanged on error.
func restoreMeter(m NodeMeter, proc ProcFS, data []byte) (localState, error) {
	mc, ok := m.(meterCheckpointer)
	if !ok {
		return localState{}, fmt.Errorf("restore checkpoint: meter %T cannot be checkpointed", m)
	}
	var st localState
	if err := json.Unmarshal(data, &st); err != nil {
		return localState{}, fmt.Errorf("restore checkpoint: %w", err)
	}
	if st.Version != localCheckpointVersion {
		return localState{}, fmt.Errorf("restore checkpoint: version %d, expected %d", st.Version, localCheckpointVersion)
	}
	if boot := proc.BootID(); st.Boot != "" && boot != "" && boot != st.Boot {
		return localState{}, fmt.Errorf("restore checkpoint: taken in boot %s, the node is now in boot %s (rebooted: its counters restarted)", st.Boot, boot)
	}
	if err := mc.restore(st.Meter); err != nil {
		return localState{}, err
	}
	return st, nil
}

// BootID identifies the running boot of the node (the kernel's
// random/boot_id), or "" when it cannot be read.
func (p ProcFS) BootID() string {
	b, err := os.ReadFile(filepath.Join(p.Root, "sys", "kernel", "random", "boot_id"))
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}
