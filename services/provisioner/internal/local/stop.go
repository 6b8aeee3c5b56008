package local

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
)

// group is what to stop of a run: its process group and any marked
// process that left it (a daemon that called setsid).
type group struct {
	pgid int // 0: none known
	pids []int
}

// members lists the live processes of run runID on this machine: those in
// its process group and those carrying its markers. A process group is only
// signalled while one of its members carries the run's marker, so a group
// id the kernel reused is never hit.
func (p procs) members(platform, runID string, pgid int) group {
	g := group{}
	seen := map[int]bool{}
	for _, m := range p.scan(platform, runID)[runID] {
		seen[m.stat.PID] = true
		g.pids = append(g.pids, m.stat.PID)
		if pgid > 0 && m.stat.PGRP == pgid {
			g.pgid = pgid
		}
	}
	if g.pgid > 0 {
		for _, pid := range p.PIDs() {
			if s, err := p.Stat(pid); err == nil && s.PGRP == pgid && !s.Dead() && !seen[pid] {
				g.pids = append(g.pids, pid)
			}
		}
	}
	sort.Ints(g.pids)
	return g
}

func (g group) empty() bool { return len(g.pids) == 0 }

func (g group) signal(sig syscall.Signal) {
	if g.pgid > 0 {
		_ = syscall.Kill(-g.pgid, sig)
	}
	for _, pid := range g.pids {
		_ = syscall.Kill(pid, sig)
	}
}

// stop ends every process of run runID: SIGTERM, then SIGKILL after
// timeout, and waits (bounded) until none is left.
func (p procs) stop(ctx context.Context, platform, runID string, pgid int, timeout, every time.Duration) error {
	g := p.members(platform, runID, pgid)
	if g.empty() {
		return nil
	}
	g.signal(syscall.SIGTERM)
	if p.waitGone(ctx, platform, runID, pgid, timeout, every) {
		return nil
	}
	p.members(platform, runID, pgid).signal(syscall.SIGKILL)
	if p.waitGone(ctx, platform, runID, pgid, 5*time.Second, every) {
		return nil
	}
	left := p.members(platform, runID, pgid)
	var desc []string
	for _, pid := range left.pids {
		if s, err := p.Stat(pid); err == nil {
			desc = append(desc, fmt.Sprintf("%d (state %c)", pid, s.State))
		}
	}
	return fmt.Errorf("processes of run %s still running after SIGKILL: %s", runID, strings.Join(desc, ", "))
}

func (p procs) waitGone(ctx context.Context, platform, runID string, pgid int, d, every time.Duration) bool {
	deadline := p.clock.Now().Add(d)
	for {
		if p.members(platform, runID, pgid).empty() {
			return true
		}
		if p.clock.Now().After(deadline) || !poll.Sleep(ctx, p.clock, every) {
			return false
		}
	}
}
