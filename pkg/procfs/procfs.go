// Package procfs reads what GreenFlow needs of Linux's /proc about whole
// processes: their identity over the machine's uptime (pid and start time,
// so a pid the kernel reused is never taken for the process that had it),
// their process group and session, and the boot they belong to. It reads
// files only; the root is a parameter, so tests use fake trees.
package procfs

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

// Stat is what is read of /proc/<pid>/stat.
type Stat struct {
	PID, PPID, PGRP, Session int
	State                    byte
	// StartTicks is the process start time in clock ticks since boot: with
	// the pid it names one process for the machine's uptime.
	StartTicks uint64
}

// Dead reports a process that has exited and waits to be reaped.
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' }

// ParseStat parses "pid (comm) state ppid pgrp session … starttime …"; comm
// may hold spaces and parentheses, so fields are counted from the last ')'.
func ParseStat(data []byte) (Stat, error) {
	var s Stat
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

// FS is a /proc tree.
type FS struct{ Root string }

// Default is the machine's /proc.
var Default = FS{Root: "/proc"}

// Stat reads one process's stat.
func (p FS) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// Alive reports whether pid is still the process that started at
// startTicks and has not exited.
func (p FS) Alive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := p.Stat(pid)
	return err == nil && s.StartTicks == startTicks && !s.Dead()
}

// PIDs lists the numeric entries of /proc, sorted.
func (p FS) PIDs() []int {
	ents, err := os.ReadDir(p.Root)
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

// BootID names the current boot: a pid and start time recorded before a
// reboot name nothing after it. "" when unreadable.
func (p FS) BootID() string {
	b, err := os.ReadFile(filepath.Join(p.Root, "sys", "kernel", "random", "boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// clockTicks is USER_HZ, the unit of starttime; 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// StartedAt converts a start time in ticks to wall-clock time (zero when
// the boot time is unreadable).
func (p FS) StartedAt(ticks uint64) time.Time {
	b, err := os.ReadFile(filepath.Join(p.Root, "stat"))
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

// Incarnation names one process of one machine for good: a name on its own
// outlives the process (a restarted service takes it again), a pid is
// reused. Two processes with equal incarnations are the same process.
type Incarnation struct {
	Host       string `json:"host"`
	BootID     string `json:"boot_id"`
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
}

// Self is the calling process's incarnation ("" fields when /proc is
// unreadable; such an incarnation is never judged gone).
func (p FS) Self() Incarnation {
	host, _ := os.Hostname()
	inc := Incarnation{Host: host, BootID: p.BootID(), PID: os.Getpid()}
	if s, err := p.Stat(inc.PID); err == nil {
		inc.StartTicks = s.StartTicks
	}
	return inc
}

// Gone reports whether inc is known to have ended: it is a process of this
// machine's current boot (same host and boot id as self) that no longer
// runs. A process of another machine or boot, or one without a start time,
// is never judged gone here: its holder must rely on a lease.
func (p FS) Gone(self, inc Incarnation) bool {
	if inc.PID <= 0 || inc.StartTicks == 0 || inc.BootID == "" || inc.Host != self.Host || inc.BootID != self.BootID {
		return false
	}
	return !p.Alive(inc.PID, inc.StartTicks)
}
