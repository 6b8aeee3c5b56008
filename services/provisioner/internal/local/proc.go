package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// procStat is what the backend reads of /proc/<pid>/stat.
type procStat struct {
	PID, PPID, PGRP, Session int
	State                    byte
	// StartTicks is the process start time in clock ticks since boot: with
	// the pid it names one process for the machine's uptime, so a pid the
	// kernel reused for another process is not taken for the SUT.
	StartTicks uint64
}

// dead reports a process that has exited and waits to be reaped.
func (s procStat) dead() bool { return s.State == 'Z' || s.State == 'X' }

// parseStat parses "pid (comm) state ppid pgrp session … starttime …"; comm
// may hold spaces and parentheses, so fields are counted from the last ')'.
func parseStat(data []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return s, errors.New("stat: no (comm)")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data[:open])))
	if err != nil {
		return s, fmt.Errorf("stat: pid: %w", err)
	}
	f := strings.Fields(string(data[end+1:]))
	// After comm, 0-based: state(0) ppid(1) pgrp(2) session(3) … starttime(19).
	if len(f) < 20 {
		return s, fmt.Errorf("stat: %d fields after comm, expected at least 20", len(f))
	}
	s.PID, s.State = pid, f[0][0]
	nums := []*int{&s.PPID, &s.PGRP, &s.Session}
	for i, p := range nums {
		if *p, err = strconv.Atoi(f[1+i]); err != nil {
			return s, fmt.Errorf("stat: field %d: %w", 4+i, err)
		}
	}
	if s.StartTicks, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return s, fmt.Errorf("stat: starttime: %w", err)
	}
	return s, nil
}

// procfs reads the process table; root is /proc. node is this backend's
// node: only processes marked with it are the backend's.
type procfs struct{ root, node string }

func (p procfs) stat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(p.root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// alive reports whether pid is still the process that started at
// startTicks and has not exited.
func (p procfs) alive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := p.stat(pid)
	return err == nil && s.StartTicks == startTicks && !s.dead()
}

// pids lists the numeric entries of /proc.
func (p procfs) pids() []int {
	ents, err := os.ReadDir(p.root)
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// environ returns the GREENFLOW_* variables of pid's environment; processes
// of other users (unreadable) have none.
func (p procfs) environ(pid int) map[string]string {
	b, err := os.ReadFile(filepath.Join(p.root, strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil
	}
	var out map[string]string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if !bytes.HasPrefix(kv, []byte("GREENFLOW_")) {
			continue
		}
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// bootID names the current boot: a pid and start time recorded before a
// reboot name nothing after it.
func (p procfs) bootID() string {
	b, err := os.ReadFile(filepath.Join(p.root, "sys", "kernel", "random", "boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// clockTicks is USER_HZ, the unit of starttime; 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// startedAt converts a start time in ticks to wall-clock time.
func (p procfs) startedAt(ticks uint64) time.Time {
	b, err := os.ReadFile(filepath.Join(p.root, "stat"))
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}
			}
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / clockTicks)
		}
	}
	return time.Time{}
}

// marked is a live process carrying a run's markers in its environment.
type marked struct {
	stat procStat
	env  map[string]string
}

// scan lists the live processes whose environment carries the markers of
// platform and this node (every run when runID is ""), by run.
func (p procfs) scan(platform, runID string) map[string][]marked {
	out := map[string][]marked{}
	self := os.Getpid()
	for _, pid := range p.pids() {
		if pid == self {
			continue
		}
		env := p.environ(pid)
		run := env[EnvRunID]
		if run == "" || env[EnvPlatform] != platform || env[EnvNode] != p.node || (runID != "" && run != runID) {
			continue
		}
		s, err := p.stat(pid)
		if err != nil || s.dead() {
			continue
		}
		out[run] = append(out[run], marked{stat: s, env: env})
	}
	return out
}

// children lists the live children of pid.
func (p procfs) children(pid int) []procStat {
	var out []procStat
	for _, c := range p.pids() {
		if s, err := p.stat(c); err == nil && s.PPID == pid && !s.dead() {
			out = append(out, s)
		}
	}
	return out
}
