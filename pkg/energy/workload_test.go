package energy_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
)

func TestAssign(t *testing.T) {
	const (
		c1  = "3f1c9a2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
		c2  = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
		uid = "6f1e2d3c-4b5a-4978-8a1b-2c3d4e5f6a7b"
	)
	ws := []energy.WorkloadUse{
		{Workload: energy.Workload{Key: "a", PID: 100, PPID: 1}},                               // 0: root of a process target
		{Workload: energy.Workload{Key: "b", PID: 101, PPID: 100}},                             // 1: child
		{Workload: energy.Workload{Key: "c", PID: 102, PPID: 101}},                             // 2: grandchild
		{Workload: energy.Workload{Key: "d", PID: 200, PPID: 1, ContainerID: c1, PodUID: uid}}, // 3: SUT container
		{Workload: energy.Workload{Key: "e", PID: 201, PPID: 1, ContainerID: c2, PodUID: uid}}, // 4: sidecar, same pod
		{Workload: energy.Workload{Key: "f", PID: 300, PPID: 1}},                               // 5: unrelated
		{Workload: energy.Workload{Key: "g", Pod: "broker-0", Namespace: "kafka"}},             // 6: exporter pod by name
		{Workload: energy.Workload{Key: "h", PID: 400, PPID: 400}},                             // 7: corrupt self-parent
	}
	tests := []struct {
		name string
		sels []energy.Selector
		want []int
	}{
		{"no targets", nil, []int{-1, -1, -1, -1, -1, -1, -1, -1}},
		{"process tree", []energy.Selector{{ID: "p", PID: 100}}, []int{0, 0, 0, -1, -1, -1, -1, -1}},
		{"subtree", []energy.Selector{{ID: "p", PID: 101}}, []int{-1, 0, 0, -1, -1, -1, -1, -1}},
		{"nested trees: nearest root wins", []energy.Selector{{ID: "outer", PID: 100}, {ID: "inner", PID: 101}}, []int{0, 1, 1, -1, -1, -1, -1, -1}},
		{"pod by container id widens to the whole pod", []energy.Selector{{ID: "pod", ContainerID: "containerd://" + c1}}, []int{-1, -1, -1, 0, 0, -1, -1, -1}},
		{"short container id", []energy.Selector{{ID: "pod", ContainerID: c2[:12]}}, []int{-1, -1, -1, 0, 0, -1, -1, -1}},
		{"pod by name", []energy.Selector{{ID: "broker", Pod: "broker-0", Namespace: "kafka"}}, []int{-1, -1, -1, -1, -1, -1, 0, -1}},
		{"pod by name in another namespace", []energy.Selector{{ID: "broker", Pod: "broker-0", Namespace: "other"}}, []int{-1, -1, -1, -1, -1, -1, -1, -1}},
		{"process inside a pod target counts once, for the process", []energy.Selector{{ID: "pod", ContainerID: c1}, {ID: "p", PID: 200}}, []int{-1, -1, -1, 1, 0, -1, -1, -1}},
		{"self-parent terminates", []energy.Selector{{ID: "p", PID: 1}}, []int{0, 0, 0, 0, 0, 0, -1, -1}},
		{"missing pid matches nothing", []energy.Selector{{ID: "p", PID: 999}}, []int{-1, -1, -1, -1, -1, -1, -1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, energy.Assign(tt.sels, ws))
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		name      string
		total     float64
		parts     map[string]float64
		wantParts map[string]float64
		wantUnatt float64
	}{
		{"parts within total", 60, map[string]float64{"a": 22, "b": 5.5}, map[string]float64{"a": 22, "b": 5.5}, 32.5},
		{"parts above total are scaled down", 10, map[string]float64{"a": 15, "b": 5}, map[string]float64{"a": 7.5, "b": 2.5}, 0},
		{"bad values count as zero", 10, map[string]float64{"a": math.NaN(), "b": -3, "c": math.Inf(1), "d": 4}, map[string]float64{"a": 0, "b": 0, "c": 0, "d": 4}, 6},
		{"negative total", -5, map[string]float64{"a": 1}, map[string]float64{"a": 0}, 0},
		{"nothing", 7, nil, map[string]float64{}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := energy.Split(tt.total, tt.parts)
			require.InDeltaMapValues(t, tt.wantParts, a.Parts, 1e-12)
			require.InDelta(t, tt.wantUnatt, a.Unattributed, 1e-12)
		})
	}
}

func TestCounterSet(t *testing.T) {
	var c energy.CounterSet
	obs := func(v float64) (float64, energy.CounterStatus) {
		d, st := c.Observe("s", v, 100)
		c.Commit()
		return d, st
	}
	steps := []struct {
		v      float64
		wantD  float64
		wantSt energy.CounterStatus
	}{
		{10, 0, energy.CounterBaseline},
		{15, 5, energy.CounterOK},
		{15, 0, energy.CounterOK},
		{3, 0, energy.CounterReset},         // went back: exporter restart
		{8, 5, energy.CounterOK},            // continues from the new base
		{500, 0, energy.CounterImplausible}, // +492 > 100: a spike, not energy
		{550, 50, energy.CounterOK},
		{math.NaN(), 0, energy.CounterInvalid},
		{560, 0, energy.CounterBaseline}, // the invalid sample dropped the series
		{-1, 0, energy.CounterInvalid},
	}
	for i, s := range steps {
		d, st := obs(s.v)
		require.Equal(t, s.wantSt, st, "step %d", i)
		require.Equal(t, s.wantD, d, "step %d", i)
	}

	// Staged values take effect only on Commit.
	var c2 energy.CounterSet
	c2.Observe("s", 10, 0)
	c2.Commit()
	c2.Observe("s", 20, 0)
	c2.Discard()
	d, st := c2.Observe("s", 25, 0)
	require.Equal(t, energy.CounterOK, st)
	require.Equal(t, 15.0, d)
}

// fakeProc is a /proc tree the test rewrites between readings: the node's
// CPU times and, per process, its parent, CPU ticks and cgroup.
type fakeProc struct {
	root        string
	busy, total uint64
}

type fakeProcess struct {
	pid, ppid int
	ticks     uint64
	cgroup    string
	start     uint64
}

func (f *fakeProc) write(tb testing.TB, procs []fakeProcess) {
	tb.Helper()
	setCPU(tb, f.root, f.busy, f.total-f.busy)
	entries, err := os.ReadDir(f.root)
	require.NoError(tb, err)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			require.NoError(tb, os.RemoveAll(filepath.Join(f.root, e.Name())))
		}
	}
	for _, p := range procs {
		writeFile(tb, f.root, fmt.Sprintf("%d/stat", p.pid),
			fmt.Sprintf("%d (p%d) S %d 1 1 0 -1 0 0 0 0 0 %d 0 0 0 20 0 1 0 %d 1000 100\n", p.pid, p.pid, p.ppid, p.ticks, p.start))
		writeFile(tb, f.root, fmt.Sprintf("%d/cgroup", p.pid), p.cgroup)
	}
}

func TestLocalSourceAttributesProcessTreesAndPods(t *testing.T) {
	const (
		c1  = "3f1c9a2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"
		us  = "6f1e2d3c_4b5a_4978_8a1b_2c3d4e5f6a7b"
		uid = "6f1e2d3c-4b5a-4978-8a1b-2c3d4e5f6a7b"
	)
	pod := "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + us + ".slice/cri-containerd-" + c1 + ".scope\n"
	sandbox := "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + us + ".slice/cri-containerd-" + "aaaaaaaaaaaabbbbbbbbbbbbccccccccccccddddddddddddeeeeeeeeeeeeffff" + ".scope\n"
	f := &fakeProc{root: t.TempDir(), busy: 1000, total: 10000}
	procs := []fakeProcess{
		{pid: 1, ppid: 0, ticks: 50, cgroup: "0::/init.scope\n", start: 1},
		{pid: 100, ppid: 1, ticks: 300, cgroup: "0::/user.slice\n", start: 500},
		{pid: 101, ppid: 100, ticks: 200, cgroup: "0::/user.slice\n", start: 600},
		{pid: 200, ppid: 1, ticks: 400, cgroup: pod, start: 700},
		{pid: 201, ppid: 1, ticks: 10, cgroup: sandbox, start: 700},
	}
	f.write(t, procs)
	src := energy.NewLocalSource(energy.NewModelMeter(f.root, 10, 110), f.root)
	m, err := src.Read(context.Background(), t0)
	require.NoError(t, err)
	require.Zero(t, m.Interval)

	// One second later on a 1-CPU node... 100 s of CPU time (100 CPUs) of
	// which 50 s busy: the tree of 100 used 20 s, the pod 15 s (SUT 14 + the
	// sandbox 1). pid 101 exits and pid 102 (new, 5 s) appears under 100.
	f.busy, f.total = 1000+5000, 10000+10000
	procs[1].ticks += 1000
	procs = append(procs[:2], procs[3:]...)
	procs = append(procs, fakeProcess{pid: 102, ppid: 100, ticks: 500, cgroup: "0::/user.slice\n", start: 900})
	procs[2].ticks += 1400 // pid 200
	procs[3].ticks += 100  // pid 201
	f.write(t, procs)
	m, err = src.Read(context.Background(), t0.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, energy.BasisCPU, m.Basis)

	sels := []energy.Selector{{ID: "process/sut", PID: 100}, {ID: "pod/sut-0", ContainerID: "containerd://" + c1}}
	w := energy.Weights(sels, m.Workloads, energy.Assign(sels, m.Workloads))
	require.InDeltaMapValues(t, map[string]float64{"process/sut": 15, "pod/sut-0": 15}, w, 1e-9)
	for _, x := range m.Workloads {
		if x.PID == 200 {
			require.Equal(t, uid, x.PodUID)
			require.Equal(t, c1, x.ContainerID)
		}
	}
	// Model: 10 W + 100 W × 50% = 60 J; each target's share is its CPU
	// seconds over the node's 100 CPU-seconds.
	a := energy.Attribute(m.TotalDeltaJ, m.CPU, w)
	require.InDelta(t, 60, m.TotalDeltaJ, 1e-9)
	require.InDelta(t, 9, a.Parts["process/sut"], 1e-9)
	require.InDelta(t, 9, a.Parts["pod/sut-0"], 1e-9)
	require.InDelta(t, 42, a.Unattributed, 1e-9)
}

// TestConservationProperty drives a LocalSource and an exporter-style split
// through random intervals in which processes start, exit and reuse pids and
// targets appear and disappear, and checks after every interval that the
// parts plus the unattributed rest equal the node total, all non-negative.
func TestConservationProperty(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, seed*7919))
			f := &fakeProc{root: t.TempDir(), busy: 100, total: 1000}
			var procs []fakeProcess
			nextPID := 10
			spawn := func() {
				ppid := 1
				if len(procs) > 0 && r.IntN(2) == 0 {
					ppid = procs[r.IntN(len(procs))].pid
				}
				pid := nextPID
				if r.IntN(5) == 0 && len(procs) > 0 {
					pid = procs[0].pid + 1000 // may collide with an exited pid: reuse
				}
				nextPID++
				procs = append(procs, fakeProcess{pid: pid, ppid: ppid, ticks: uint64(r.IntN(50)), start: uint64(nextPID * 10), cgroup: "0::/x\n"})
			}
			for range 8 {
				spawn()
			}
			f.write(t, procs)
			src := energy.NewLocalSource(energy.NewModelMeter(f.root, 5, 50), f.root)
			ctx := context.Background()
			_, err := src.Read(ctx, t0)
			require.NoError(t, err)

			for step := 1; step <= 20; step++ {
				// Processes use CPU, exit, start.
				for i := range procs {
					procs[i].ticks += uint64(r.IntN(80))
				}
				if len(procs) > 2 && r.IntN(3) == 0 {
					i := r.IntN(len(procs))
					procs = slices.Delete(procs, i, i+1)
				}
				if r.IntN(2) == 0 {
					spawn()
				}
				dedup := map[int]bool{}
				procs = slices.DeleteFunc(procs, func(p fakeProcess) bool {
					if dedup[p.pid] {
						return true
					}
					dedup[p.pid] = true
					return false
				})
				f.busy += uint64(r.IntN(500))
				f.total += 1000
				f.write(t, procs)
				m, err := src.Read(ctx, t0.Add(time.Duration(step)*time.Second))
				require.NoError(t, err)

				// Targets: random live or gone pids, some twice.
				var sels []energy.Selector
				for i := range r.IntN(5) {
					pid := 10 + r.IntN(nextPID)
					sels = append(sels, energy.Selector{ID: fmt.Sprintf("t%d", i), PID: pid})
				}
				w := energy.Weights(sels, m.Workloads, energy.Assign(sels, m.Workloads))
				checkConserved(t, m.TotalDeltaJ, energy.Attribute(m.TotalDeltaJ, m.CPU, w))

				// The same workloads as an exporter's joules, possibly
				// exceeding the total.
				joules := map[string]float64{}
				for k, v := range w {
					joules[k] = v * r.Float64() * 3
				}
				checkConserved(t, m.TotalDeltaJ, energy.Split(m.TotalDeltaJ, joules))
			}
		})
	}
}

func checkConserved(tb testing.TB, total float64, a energy.Attribution) {
	tb.Helper()
	sum := a.Unattributed
	require.GreaterOrEqual(tb, a.Unattributed, 0.0)
	for k, v := range a.Parts {
		require.GreaterOrEqual(tb, v, 0.0, k)
		sum += v
	}
	require.InDelta(tb, total, sum, 1e-9*math.Max(1, total))
}

// BenchmarkLocalSource100Targets is one sampling interval of a node with
// 100 process targets (each a parent and a child) among 400 processes:
// scan /proc, read the meter, match the trees, attribute. At 1 Hz the
// fraction of one core is ns/op ÷ 10⁹.
func BenchmarkLocalSource100Targets(b *testing.B) {
	f := &fakeProc{root: b.TempDir(), busy: 1000, total: 10000}
	var procs []fakeProcess
	var sels []energy.Selector
	for i := range 100 {
		root := 1000 + 2*i
		procs = append(procs, fakeProcess{pid: root, ppid: 1, ticks: 100, start: 1, cgroup: "0::/x\n"},
			fakeProcess{pid: root + 1, ppid: root, ticks: 50, start: 1, cgroup: "0::/x\n"})
		sels = append(sels, energy.Selector{ID: fmt.Sprintf("process/r/t%d", i), PID: root})
	}
	for i := range 200 {
		procs = append(procs, fakeProcess{pid: 5000 + i, ppid: 1, ticks: 10, start: 1, cgroup: "0::/system.slice/x.service\n"})
	}
	f.write(b, procs)
	src := energy.NewLocalSource(energy.NewModelMeter(f.root, 10, 100), f.root)
	_, err := src.Read(context.Background(), t0)
	require.NoError(b, err)
	benchmarkReads(b, src, func(m energy.Measurement) {
		w := energy.Weights(sels, m.Workloads, energy.Assign(sels, m.Workloads))
		_ = energy.Attribute(m.TotalDeltaJ, m.CPU, w)
	})
}

// BenchmarkLocalSourceRealProc is one reading of this machine's /proc with
// the model meter: the cost per interval on a real procfs.
func BenchmarkLocalSourceRealProc(b *testing.B) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		b.Skip("no /proc")
	}
	benchmarkReads(b, energy.NewLocalSource(energy.NewModelMeter("/proc", 10, 100), "/proc"), nil)
}
