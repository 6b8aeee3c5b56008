package chaos

// One kill slot of a segment: submit an experiment, deliver the planned
// kill (or a kube fault) in its phase, wait for it to end, gather what its
// runs left and judge them against the undisturbed runs.

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// slot runs one planned kill: submit, kill in the phase, restart, wait for
// the end, gather and judge. In the kube segment the fault is a kube fault
// (see deliverKube) instead of a kill.
func (c *segCtx) slot(ctx context.Context, k Kill, i, n int) KillRecord {
	rec := KillRecord{Kill: k, CPUPressure: -1}
	if err := c.cluster.WaitReady(ctx, 60*time.Second); err != nil {
		rec.Error = "platform not ready before the slot: " + err.Error()
	}
	if c.kube != nil {
		if err := c.kube.cp.WaitServing(ctx, 60*time.Second); err != nil {
			rec.Error = strings.TrimPrefix(rec.Error+"; "+err.Error(), "; ")
		}
	}
	spec, err := BuildSpec(c.example, SpecOptions{Name: fmt.Sprintf("chaos-s%02d", k.Slot), Sensors: []string{k.Config}, Repetitions: 1,
		Phases: c.cfg.Phases, Interval: c.cfg.Interval, SUT: c.sut})
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	var kf *kubeFault
	if c.kube != nil && k.Target != TargetNone {
		if kf, err = c.prepareKube(ctx, k); err != nil {
			rec.Error = err.Error()
			return rec
		}
		// Whatever happens, the hold goes and the verb comes back.
		defer c.undoKube(ctx, kf, &rec)
	}
	submitted := time.Now()
	id, _, err := c.api.Submit(ctx, spec)
	if err != nil {
		rec.Error = "submit: " + err.Error()
		rec.Outcome = OutViolation
		c.seg.Suite = append(c.seg.Suite, Violation{Kind: "submit_refused", Detail: err.Error(), Confirmed: true})
		return rec
	}
	rec.ExperimentID = id
	c.addExperiment(id)
	switch {
	case k.Target == TargetNone:
		rec.NotDelivered = "control: nothing to kill"
	case kf != nil:
		c.deliverKube(ctx, k, id, kf, &rec)
	default:
		c.deliverKill(ctx, k, id, &rec)
	}
	if rec.NotDelivered != "" && k.Target != TargetNone {
		c.logf("slot %d/%d (%s): kill NOT delivered: %s", i, n, k, rec.NotDelivered)
	}

	state, final := c.waitFinal(ctx, id, max(c.cfg.RunBound-time.Since(submitted), 10*time.Second))
	rec.FinalAfter = time.Since(submitted).Seconds()
	if !final {
		rec.Stuck = true
		c.logf("slot %d/%d: experiment %s still %s after %s: cancelling it", i, n, id, state, c.cfg.RunBound)
		if err := c.api.Cancel(ctx, id); err != nil {
			rec.Error = "cancel a stuck experiment: " + err.Error()
		}
		c.waitFinal(ctx, id, 30*time.Second)
	}
	c.undoKube(ctx, kf, &rec)
	role := "chaos"
	if k.Target == TargetNone {
		role = "control"
	}
	runs, err := c.gatherAll(ctx, id, k.Slot, role, c.cfg.RunBound)
	if err != nil {
		rec.Error = strings.TrimPrefix(rec.Error+"; gather: "+err.Error(), "; ")
	}
	if rec.Stuck {
		for j := range runs {
			if runs[j].State == "cancelled" {
				// Cancelled by the suite after the bound: it was stuck.
				runs[j].State, runs[j].StuckConfirmed = "stuck (cancelled by the suite)", true
			}
		}
	}
	c.attachLeftovers(ctx, k, &rec, runs)
	// A preliminary verdict against the reference runs; the segment's end
	// judges again with the control runs among the undisturbed ones.
	all := judgeRuns(runs, c.seg.Bands, c.seg.HoleTolMs, c.cfg.MaxPressure)
	c.seg.Runs = append(c.seg.Runs, runs...)
	rec.summarize(runs, all)
	c.logSlot(k, i, n, id, kf != nil, &rec, runs, all)
	return rec
}

// attachLeftovers looks for what the slot's runs left behind (and, on a
// cluster, judges the kube fault) and adds each leftover to its run; the
// first run of a control also gets a violation when the platform had not
// recovered from the slot before.
func (c *segCtx) attachLeftovers(ctx context.Context, k Kill, rec *KillRecord, runs []RunFacts) {
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	left := c.leftovers(ctx, ids, false, 15*time.Second)
	if c.kube != nil {
		// The provisioner retries a teardown up to a minute apart and
		// sweeps leftovers every 30 s: a namespace has that long to go.
		left = append(left, c.namespaceLeftovers(ctx, ids, 90*time.Second)...)
		c.judgeKube(ctx, k, rec, runs)
	}
	var leftBehind []string
	for j := range runs {
		r := &runs[j]
		for _, v := range left {
			if v.RunID == r.RunID {
				r.Extra = append(r.Extra, v)
				if v.Confirmed {
					leftBehind = append(leftBehind, v.Kind)
				}
			}
		}
		if j == 0 && k.Target == TargetNone {
			if v, ok := notRecovered(runs, c.cfg.MaxPressure); ok {
				r.Extra = append(r.Extra, v)
			}
		}
		rec.RunIDs = append(rec.RunIDs, r.RunID)
	}
	rec.LeftBehind = "nothing"
	if len(leftBehind) > 0 {
		rec.LeftBehind = strings.Join(leftBehind, ",")
	}
}

// summarize fills in the slot's outcome from its experiment's first run
// and the violations found.
func (rec *KillRecord) summarize(runs []RunFacts, all []Violation) {
	if len(runs) == 0 {
		rec.Outcome = OutViolation
		if rec.Error == "" {
			rec.Error = "no run of the experiment was found"
		}
		return
	}
	first := runs[0]
	rec.Outcome = OutcomeOf(first, all)
	rec.Violations = kindsOf(all)
	rec.RecordsLost, rec.SamplesLost, rec.MaxRecordGapMs = first.RecordsLost, first.SamplesLost, first.Topics.MaxRecordGapMs
	rec.CPUPressure = -1
	if first.Own != nil {
		rec.CPUPressure = first.Own.CPUPressure
	}
	if rec.Delivered && first.State == "failed" {
		for _, st := range first.States {
			if st.State == "failed" {
				rec.DetectS = max(0, float64(st.TsMs-rec.KilledAt.UnixMilli())/1000)
			}
		}
	}
	for _, s := range first.Series {
		rec.MaxSampleHole = max(rec.MaxSampleHole, s.Coverage.MaxHoleMs)
	}
}

// logSlot prints the slot's progress line and its violations.
func (c *segCtx) logSlot(k Kill, i, n int, id string, kube bool, rec *KillRecord, runs []RunFacts, all []Violation) {
	switch {
	case k.Target == TargetNone:
		c.logf("slot %d/%d: control, no kill → %s: %s%s", i, n, id, describeRuns(runs), errSuffix(rec.Error))
	case kube:
		c.logf("slot %d/%d: %s in %s (covered %s), down %.1fs, noticed %s s, recovered %s s (%s) → %s: %s; left behind: %s%s", i, n, k.Target, k.Phase,
			orDash(rec.PhaseObserved), rec.DownS, secs(rec.NoticedS), secs(rec.RecoveredS), orDash(rec.Recovery), id, describeRuns(runs), rec.LeftBehind,
			errSuffix(rec.Error))
	default:
		c.logf("slot %d/%d: %s%s in %s (observed %s) pid %d, back after %.1fs → %s: %s%s", i, n, k.Target, instSuffix(k.Instance), k.Phase,
			orDash(rec.PhaseObserved), rec.Pid, rec.DownS, id, describeRuns(runs), errSuffix(rec.Error))
	}
	for _, v := range all {
		c.logf("    %s", v)
	}
}

// deliverKill waits for the experiment's first run to enter the kill's
// phase (and the offset into it), kills the process with SIGKILL and starts
// it again after the planned delay.
func (c *segCtx) deliverKill(ctx context.Context, k Kill, id string, rec *KillRecord) {
	proc, err := c.cluster.Target(k.Target, k.Instance)
	if err != nil {
		rec.Error = err.Error()
		return
	}
	rec.Proc = proc.Name

	// Wait for the first run to enter the phase (or to end without it).
	run, reached := c.awaitRunState(ctx, id, k.Phase)
	var phaseSeen StateSeen
	for _, st := range c.events.States(run) {
		if st.State == k.Phase {
			phaseSeen = st
		}
	}
	switch {
	case !reached:
		rec.NotDelivered = fmt.Sprintf("the run did not reach %s within %s", k.Phase, c.cfg.RunBound)
		return
	case phaseSeen.State == "":
		last, _ := c.events.State(run)
		rec.NotDelivered = fmt.Sprintf("the run ended %s without entering %s", last.State, k.Phase)
		return
	}
	if wait := time.Until(phaseSeen.Seen.Add(k.Offset)); wait > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	cur, _ := c.events.State(run)
	rec.PhaseObserved = cur.State
	rec.KilledAt = time.Now()
	rec.Pid, err = proc.Kill()
	if err != nil {
		rec.Error = err.Error()
		return
	}
	rec.Delivered = true
	select {
	case <-ctx.Done():
	case <-time.After(k.RestartAfter):
	}
	rec.RestartedAt = time.Now()
	if err := proc.Start(); err != nil {
		rec.RestartError = err.Error()
	} else if err := proc.WaitReady(ctx, 60*time.Second); err != nil {
		rec.RestartError = err.Error()
		// Ask once more before calling it: a process that cannot serve
		// again after kill -9 (corrupt state, a lock it left) is a finding.
		again := proc.WaitReady(ctx, 5*time.Second)
		c.seg.Suite = append(c.seg.Suite, Violation{Kind: "restart_failed", Confirmed: again != nil,
			Detail: fmt.Sprintf("slot %d: %s did not serve again within 60s of its restart after kill -9: %v", k.Slot, proc.Name, err)})
	} else {
		rec.ReadyAt = time.Now()
		rec.DownS = rec.ReadyAt.Sub(rec.KilledAt).Seconds()
		rec.RecoverS = rec.ReadyAt.Sub(rec.RestartedAt).Seconds()
	}
}

// notRecovered: a control run (no kill) and every retry of it ended without
// done. The platform did not recover from the faults before it — unless the
// machine was overloaded, which can fail runs legitimately.
func notRecovered(runs []RunFacts, maxPressure float64) (Violation, bool) {
	var states []string
	for _, r := range runs {
		if r.State == "done" {
			return Violation{}, false
		}
		states = append(states, fmt.Sprintf("%s %s (%s)", r.RunID, r.State, truncate(r.Reason, 100)))
	}
	if len(runs) == 0 {
		return Violation{}, false
	}
	v := Violation{RunID: runs[0].RunID, Kind: "not_recovered", Confirmed: true,
		Detail: "a control run, with no kill, could not complete: " + strings.Join(states, "; ") + " — the platform did not recover from the faults before it"}
	if p := runs[0].Pressure(); maxPressure > 0 && p > maxPressure {
		v.Excused = fmt.Sprintf("the machine was overloaded: CPU pressure %.0f%%", p*100)
	}
	return v, true
}

func utilOf(r RunFacts) float64 {
	if r.Own == nil {
		return -1
	}
	return r.Own.NodeUtil
}

func instSuffix(i int) string {
	if i > 0 {
		return fmt.Sprintf("#%d", i)
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " [harness: " + e + "]"
}

func describeRuns(runs []RunFacts) string {
	var parts []string
	for _, r := range runs {
		p := r.State
		if len(r.Flags) > 0 {
			p += " flagged " + strings.Join(r.Flags, ",")
		}
		if r.Reason != "" && r.State != "done" {
			p += " (" + truncate(r.Reason, 120) + ")"
		}
		if v, ok := r.Metrics[MDelivered]; ok {
			p += fmt.Sprintf(" %.0f rec/s", v)
		}
		if v, ok := r.Metrics[MSUTPower]; ok {
			p += fmt.Sprintf(" sut %.3fW", v)
		}
		if r.Own != nil {
			p += " pressure " + pct(r.Own.CPUPressure)
		}
		parts = append(parts, r.RunID[strings.LastIndex(r.RunID, "-r")+1:]+" "+p)
	}
	return strings.Join(parts, "; ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
