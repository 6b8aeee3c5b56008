// Package procfs reads what GreenFlow needs of Linux's /proc about whole
// processes: their identity over the machine's uptime (pid and start time,
// so a pid the kernel reused is never taken for the process that had it),
// their parent, process group and session, the CPU time they used, and the
// boot they belong to. It is the one parser of /proc/<pid>/stat (the
// provisioner's process tracking and the energy collector's CPU
// attribution both read it). It reads files only; the root is a parameter,
// so tests use fake trees.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"math"
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
	// UTime and STime are the CPU time the process spent in user and in
	// kernel mode, in clock ticks (ClockTicks per second).
	UTime, STime uint64
	// StartTicks is the process start time in clock ticks since boot: with
	// the pid it names one process for the machine's uptime. 0 when the
	// line ends before it (never on a kernel Go supports).
	StartTicks uint64
}

// Dead reports a process that has exited and waits to be reaped.
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' }

// Fields of /proc/<pid>/stat after "(comm)", 0-based.
const (
	fieldState   = 0
	fieldPPID    = 1
	fieldPGRP    = 2
	fieldSession = 3
	fieldUTime   = 11
	fieldSTime   = 12
	fieldStart   = 19
)

// ParseStat parses "pid (comm) state ppid pgrp session … utime stime …
// starttime …". comm may hold spaces and parentheses, but nothing the
// kernel prints after it holds ')', so fields are counted from the last
// ')'. Fields through stime are required, starttime is read when present.
// It allocates nothing: the energy collector parses every process's stat
// every interval.
func ParseStat(data []byte) (Stat, error) {
	var s Stat
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return s, errors.New("stat: no (comm)")
	}
	pid, err := parseDecimal(bytes.TrimSpace(data[:open]))
	if err != nil || pid > math.MaxInt32 {
		return s, fmt.Errorf("stat: pid %q: expected a process id", bytes.TrimSpace(data[:open]))
	}
	s.PID = int(pid)
	rest := data[end+1:]
	field := 0
	for ; field <= fieldStart; field++ {
		rest = bytes.TrimLeft(rest, " \n")
		if len(rest) == 0 {
			break
		}
		word := rest
		if i := bytes.IndexAny(rest, " \n"); i >= 0 {
			word, rest = rest[:i], rest[i:]
		} else {
			rest = nil
		}
		if err := s.set(field, word); err != nil {
			return s, fmt.Errorf("stat: field %d after comm: %w", field+1, err)
		}
	}
	if field <= fieldSTime {
		return s, fmt.Errorf("stat: %d fields after comm, expected at least %d", field, fieldSTime+1)
	}
	return s, nil
}

// set stores one field after comm, when it is one Stat holds.
func (s *Stat) set(field int, word []byte) error {
	if field == fieldState {
		s.State = word[0]
		return nil
	}
	var dst *int
	switch field {
	case fieldPPID:
		dst = &s.PPID
	case fieldPGRP:
		dst = &s.PGRP
	case fieldSession:
		dst = &s.Session
	case fieldUTime, fieldSTime, fieldStart:
	default:
		return nil
	}
	v, err := parseDecimal(word)
	if err != nil {
		return err
	}
	switch {
	case dst != nil && v > math.MaxInt32: // pid_max is at most 2^22
		return fmt.Errorf("%d out of range", v)
	case dst != nil:
		*dst = int(v)
	case field == fieldUTime:
		s.UTime = v
	case field == fieldSTime:
		s.STime = v
	default:
		s.StartTicks = v
	}
	return nil
}

// parseDecimal parses an unsigned decimal without the string conversion
// strconv needs, which would allocate once per process on every walk.
func parseDecimal(b []byte) (uint64, error) {
	if len(b) == 0 {
		return 0, errors.New("empty number")
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("invalid number %q", b)
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("number %q overflows 64 bits", b)
		}
		v = v*10 + d
	}
	return v, nil
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

// ClockTicks is USER_HZ, the unit of the CPU and start times in /proc: 100
// on every Linux architecture Go supports (the kernel fixes it for
// userspace whatever its CONFIG_HZ).
const ClockTicks = 100

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
			return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / ClockTicks)
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
