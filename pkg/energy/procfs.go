package energy

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/greenflow/greenflow/pkg/procfs"
)

// userHZ is the unit of the CPU times in /proc (USER_HZ).
const userHZ = procfs.ClockTicks

// CPUTimes is an amount of CPU time summed over all CPUs of a node. Busy
// excludes idle and iowait; Total includes them, so on a node with n CPUs
// Total grows by about n seconds per wall-clock second.
type CPUTimes struct {
	BusySeconds  float64
	TotalSeconds float64
}

// sub returns c − prev, clamping each field at zero: the kernel's counters
// only grow, and a decrease (CPU hot-unplug) must not produce negative time.
func (c CPUTimes) sub(prev CPUTimes) CPUTimes {
	return CPUTimes{
		BusySeconds:  max(c.BusySeconds-prev.BusySeconds, 0),
		TotalSeconds: max(c.TotalSeconds-prev.TotalSeconds, 0),
	}
}

// ProcFS reads CPU accounting from a proc filesystem mounted at Root
// ("/proc" on a host, a fake tree in tests). Its methods are safe for
// concurrent use.
type ProcFS struct{ Root string }

// NodeCPU returns the node's cumulative CPU times since boot from the
// aggregate "cpu" line of stat.
func (p ProcFS) NodeCPU() (CPUTimes, error) {
	path := filepath.Join(p.Root, "stat")
	data, err := os.ReadFile(path)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("read node cpu times: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "cpu "); ok {
			t, err := parseCPULine(rest)
			if err != nil {
				return CPUTimes{}, fmt.Errorf("parse cpu line of %s: %w", path, err)
			}
			return t, nil
		}
	}
	return CPUTimes{}, fmt.Errorf("parse %s: no aggregate cpu line", path)
}

// parseCPULine parses the fields after "cpu": user nice system idle iowait
// irq softirq steal guest guest_nice. guest and guest_nice are already
// included in user and nice, so they are ignored. Kernels before 2.6.11
// print fewer columns; the missing ones count as zero.
func parseCPULine(fields string) (CPUTimes, error) {
	const (
		idle   = 3
		iowait = 4
		steal  = 7
	)
	cols := strings.Fields(fields)
	if len(cols) < idle+1 {
		return CPUTimes{}, fmt.Errorf("want at least 4 columns, got %d", len(cols))
	}
	var busy, total float64 // exact below 2^53 ticks, and cannot overflow
	for i, col := range cols[:min(len(cols), steal+1)] {
		v, err := strconv.ParseUint(col, 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("column %d: %w", i+1, err)
		}
		total += float64(v)
		if i != idle && i != iowait {
			busy += float64(v)
		}
	}
	return CPUTimes{BusySeconds: busy / userHZ, TotalSeconds: total / userHZ}, nil
}

// NumCPU counts the per-CPU lines ("cpu0", "cpu1", …) of stat: the CPUs
// online on the node, which may differ from what the calling process may
// use.
func (p ProcFS) NumCPU() (int, error) {
	path := filepath.Join(p.Root, "stat")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("count cpus: %w", err)
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "cpu"); ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("count cpus: no per-cpu lines in %s", path)
	}
	return n, nil
}

// ProcessTreeCPUSeconds returns the user plus system CPU time of pid and of
// all its live descendants, in seconds. Descendants that already exited are
// not included (their time moves to the parent's cutime only once reaped),
// and processes that exit during the walk are skipped. It fails with an
// error wrapping fs.ErrNotExist when pid itself does not exist.
//
// It reads every /proc/<pid>/stat once, so its cost grows with the number of
// processes on the node, not with the size of the tree; to measure several
// trees, ProcessTreesCPUSeconds scans only once.
func (p ProcFS) ProcessTreeCPUSeconds(pid int) (float64, error) {
	snap, err := p.scan()
	if err != nil {
		return 0, fmt.Errorf("cpu time of process tree %d: %w", pid, err)
	}
	if _, ok := snap.ticks[pid]; !ok {
		return 0, fmt.Errorf("cpu time of process tree %d: pid %w", pid, fs.ErrNotExist)
	}
	return snap.treeSeconds(pid), nil
}

// ProcessTreesCPUSeconds is ProcessTreeCPUSeconds for several pids from one
// consistent scan of /proc. Pids that do not exist are left out of the
// result rather than failing the others. A process inside two of the trees
// counts in both.
func (p ProcFS) ProcessTreesCPUSeconds(pids []int) (map[int]float64, error) {
	snap, err := p.scan()
	if err != nil {
		return nil, fmt.Errorf("cpu time of process trees: %w", err)
	}
	out := make(map[int]float64, len(pids))
	for _, pid := range pids {
		if _, ok := snap.ticks[pid]; ok {
			out[pid] = snap.treeSeconds(pid)
		}
	}
	return out, nil
}

// procSnapshot is the process tree and CPU ticks read in one pass over /proc.
type procSnapshot struct {
	children map[int][]int
	ticks    map[int]uint64 // utime + stime
}

func (p ProcFS) scan() (procSnapshot, error) {
	entries, err := os.ReadDir(p.Root)
	if err != nil {
		return procSnapshot{}, fmt.Errorf("list processes: %w", err)
	}
	snap := procSnapshot{
		children: make(map[int][]int, len(entries)),
		ticks:    make(map[int]uint64, len(entries)),
	}
	buf := make([]byte, 0, 512)
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil || id <= 0 {
			continue // not a process directory ("self", "sys", …)
		}
		path := filepath.Join(p.Root, e.Name(), "stat")
		buf, err = readInto(buf[:0], path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
				continue // exited between ReadDir and here
			}
			return procSnapshot{}, fmt.Errorf("read stat of pid %d: %w", id, err)
		}
		st, err := parsePIDStat(buf)
		if err != nil {
			return procSnapshot{}, fmt.Errorf("parse %s: %w", path, err)
		}
		snap.children[st.ppid] = append(snap.children[st.ppid], id)
		snap.ticks[id] = st.utime + st.stime
	}
	return snap, nil
}

// treeSeconds sums the ticks of pid and its descendants.
func (s procSnapshot) treeSeconds(pid int) float64 {
	var sum uint64
	seen := make(map[int]bool)
	queue := []int{pid}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue // guards against a ppid cycle in a corrupt or racing snapshot
		}
		seen[id] = true
		sum += s.ticks[id]
		queue = append(queue, s.children[id]...)
	}
	return float64(sum) / userHZ
}

// pidStat holds the fields of /proc/<pid>/stat that attribution needs.
type pidStat struct {
	ppid         int
	utime, stime uint64
	// starttime (ticks after boot) tells a reused pid from its previous
	// process; 0 when the line ends before it.
	starttime uint64
}

// parsePIDStat reads a process's stat line with pkg/procfs's parser, the
// one every GreenFlow reader of /proc uses.
func parsePIDStat(data []byte) (pidStat, error) {
	st, err := procfs.ParseStat(data)
	if err != nil {
		return pidStat{}, err
	}
	return pidStat{ppid: st.PPID, utime: st.UTime, stime: st.STime, starttime: st.StartTicks}, nil
}

// readInto reads the whole file at path into buf, reusing its capacity.
// procfs files report a size of zero, so it reads until EOF.
func readInto(buf []byte, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
