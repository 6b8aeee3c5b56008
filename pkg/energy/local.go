package energy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// LocalSource measures the machine it runs on: a NodeMeter (RAPL or the
// model) for the node's energy, and /proc for the CPU time every process
// used over the same interval, with its parent (for process trees) and the
// container and pod its cgroup names (for pod targets).
//
// It implements Checkpointer (see localcheckpoint.go): a collector
// restarted on the same node continues from its last checkpoint.
//
// Per-process deltas are kept per process — pid and start time, so a reused
// pid is a new process — rather than per tree, so a child exiting costs its
// tree only that child's last partial interval instead of the whole
// interval. A process first seen after the baseline started within the
// interval, and all its CPU time counts.
type LocalSource struct {
	meter   NodeMeter
	proc    ProcFS
	started bool
	prev    map[procKey]uint64 // CPU ticks at the previous reading
	cgroups map[procKey]CgroupInfo
	buf     []byte
	// maxStart is the newest process start time of the previous reading.
	// After a Restore, prev holds only the kept processes: one missing from
	// it is new only if it started after maxStart (restored true).
	maxStart uint64
	restored bool
}

type procKey struct {
	pid   int
	start uint64
}

// NewLocalSource returns a source reading m and the processes under
// procRoot. It does no I/O.
func NewLocalSource(m NodeMeter, procRoot string) *LocalSource {
	return &LocalSource{meter: m, proc: ProcFS{Root: procRoot}, prev: map[procKey]uint64{}, cgroups: map[procKey]CgroupInfo{}}
}

// Read implements Source. The processes are read before the meter, so a
// failure of either leaves the source as it was. A done ctx fails the Read
// (files do not wait for a deadline: there is nothing else to bound).
func (s *LocalSource) Read(ctx context.Context, now time.Time) (Measurement, error) {
	if err := ctx.Err(); err != nil {
		return Measurement{}, fmt.Errorf("local source: %w", err)
	}
	procs, err := s.processes()
	if err != nil {
		return Measurement{}, fmt.Errorf("local source: %w", err)
	}
	r, err := s.meter.Read(now)
	if err != nil {
		return Measurement{}, err
	}

	next := make(map[procKey]uint64, len(procs))
	ws := make([]WorkloadUse, 0, len(procs))
	var maxStart uint64
	for _, p := range procs {
		k := procKey{p.pid, p.starttime}
		ticks := p.utime + p.stime
		next[k] = ticks
		maxStart = max(maxStart, p.starttime)
		var d uint64
		if prev, ok := s.prev[k]; ok {
			if ticks >= prev {
				d = ticks - prev
			}
		} else if s.started && (!s.restored || p.starttime > s.maxStart) {
			d = ticks
		}
		cg, ok := s.cgroups[k]
		if !ok {
			cg = s.cgroup(p.pid)
			s.cgroups[k] = cg
		}
		ws = append(ws, WorkloadUse{
			Workload: Workload{Key: pidKey(p.pid), PID: p.pid, PPID: p.ppid, ContainerID: cg.ContainerID, PodUID: cg.PodUID},
			Value:    float64(d) / userHZ,
		})
	}
	for k := range s.cgroups {
		if _, ok := next[k]; !ok {
			delete(s.cgroups, k)
		}
	}
	s.prev, s.started, s.maxStart, s.restored = next, true, maxStart, false

	m := Measurement{NodeReading: r, Basis: BasisCPU}
	if r.Interval > 0 {
		m.Workloads = ws
	}
	return m, nil
}

func pidKey(pid int) string { return "pid/" + strconv.Itoa(pid) }

type procEntry struct {
	pid int
	pidStat
}

// processes reads every process's stat once.
func (s *LocalSource) processes() ([]procEntry, error) {
	entries, err := os.ReadDir(s.proc.Root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]procEntry, 0, len(entries))
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil || id <= 0 {
			continue
		}
		path := filepath.Join(s.proc.Root, e.Name(), "stat")
		s.buf, err = readSmall(s.buf[:0], path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
				continue // exited between ReadDir and here
			}
			return nil, fmt.Errorf("read stat of pid %d: %w", id, err)
		}
		st, err := parsePIDStat(s.buf)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		out = append(out, procEntry{pid: id, pidStat: st})
	}
	return out, nil
}

// readSmall reads a small file with raw system calls — open, one read,
// close — into buf: the per-process files are read for every process every
// interval, and os.File's bookkeeping and the extra read to see EOF
// dominate their cost. A read that fills the buffer continues until EOF.
func readSmall(buf []byte, path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return buf, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	if cap(buf) < 1024 {
		buf = make([]byte, 0, 1024)
	}
	for {
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		buf = buf[:len(buf)+n]
		if n == 0 || len(buf) < cap(buf) {
			return buf, nil
		}
		buf = append(buf, 0)[:len(buf)] // full: grow and read on
	}
}

// cgroup reads a process's cgroup; a process that exited or hides it is
// outside any container as far as attribution knows.
func (s *LocalSource) cgroup(pid int) CgroupInfo {
	var err error
	s.buf, err = readSmall(s.buf[:0], filepath.Join(s.proc.Root, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return CgroupInfo{}
	}
	return ParseCgroup(s.buf)
}
