package provisioner_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/procfs"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/provisioner"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(raw), ") Z ")
}

func TestLocalRunIsProvisionedTornDownAndARepeatedTeardownGetsTheSameAnswer(t *testing.T) {
	w := newWorld(t)
	inst := w.start(t, options{})
	p := w.localRun("r-basic", "echo up; exec sleep 120")
	w.provision(t, p)
	got := w.rec.provisioned(t, p.RunID, 20*time.Second)
	require.Len(t, got.Targets, 1)
	pid := got.Targets[0].PID
	require.True(t, alive(pid))
	require.Equal(t, 2, w.topics(p), "the run's topics are created")
	e, err := inst.store.Get(context.Background(), state.LocalKey(p.RunID))
	require.NoError(t, err)
	require.Equal(t, state.Running, e.Rec.State)
	require.Equal(t, got.Targets, e.Rec.Targets)

	w.teardown(t, p, "teardown:"+p.RunID)
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.Equal(t, events.RunTornDown{ExperimentID: "exp", RunID: p.RunID, TsMs: td.TsMs}, *td, "a clean teardown")
	require.False(t, alive(pid))
	testenv.Eventually(t, 10*time.Second, "topics deleted", func() bool { return w.topics(p) == 0 })

	// The scheduler sends it again (a redelivery, a re-send with another
	// id): the same answer, from the record's tombstone; never "lost".
	w.teardown(t, p, "teardown-again:"+p.RunID)
	testenv.Eventually(t, 10*time.Second, "the repeated teardown handled", func() bool {
		return w.consumerPending(t) == 0
	})
	for _, m := range w.rec.All(events.TypeRunTornDown, p.RunID) {
		require.False(t, m.(*events.RunTornDown).Lost, "a repeated teardown is not a lost run")
	}
	e, err = inst.store.Get(context.Background(), state.LocalKey(p.RunID))
	require.NoError(t, err)
	require.Equal(t, state.TornDown, e.Rec.State)
	require.Equal(t, td.Reason, e.Rec.Result.Reason)
}

func TestTeardownOfAnUnknownRunIsLostNotClean(t *testing.T) {
	w := newWorld(t)
	w.start(t, options{})
	p := w.localRun("r-never", "true")
	w.teardown(t, p, "teardown:"+p.RunID)
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.True(t, td.Lost)
	require.False(t, td.Crashed)
	require.Contains(t, td.Reason, "the provisioner has no record of run r-never and found nothing of it on node node-a")
}

func TestACrashIsReportedAtOnceWithItsExitStatusAndTheRunTornDown(t *testing.T) {
	w := newWorld(t)
	w.start(t, options{})
	p := w.localRun("r-crash", "echo processing; sleep 0.5; echo out of memory >&2; exit 7")
	w.provision(t, p)
	w.rec.provisioned(t, p.RunID, 20*time.Second)
	testenv.Eventually(t, 20*time.Second, "crash reported", func() bool { return w.rec.First(events.TypeRunTornDown, p.RunID) != nil })
	first := w.rec.First(events.TypeRunTornDown, p.RunID).(*events.RunTornDown)
	require.True(t, first.Crashed)
	require.Contains(t, first.Reason, "exit status 7; last output: processing | out of memory")
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.True(t, td.Crashed, "the final report still says it crashed")
	require.Contains(t, td.Reason, "exit status 7")
	testenv.Eventually(t, 10*time.Second, "topics of the crashed run deleted", func() bool { return w.topics(p) == 0 })

	// The scheduler fails the run and sends a teardown: the same answer.
	w.teardown(t, p, "teardown:"+p.RunID)
	testenv.Eventually(t, 10*time.Second, "teardown handled", func() bool { return w.consumerPending(t) == 0 })
	for _, m := range w.rec.All(events.TypeRunTornDown, p.RunID) {
		require.True(t, m.(*events.RunTornDown).Crashed)
	}
}

func TestProvisionFailures(t *testing.T) {
	w := newWorld(t)
	w.start(t, options{})

	bad := w.localRun("r-bad-command", "exit 2")
	bad.SUT.Command = []string{"no-such-sut-binary", "--flag"}
	w.provision(t, bad)
	testenv.Eventually(t, 20*time.Second, "bad command fails", func() bool { return w.rec.First(events.TypeRunProvisionFailed, bad.RunID) != nil })
	f := w.rec.First(events.TypeRunProvisionFailed, bad.RunID).(*events.RunProvisionFailed)
	require.Contains(t, f.Reason, `executable file not found`)
	require.False(t, f.Transient, "a user's mistake is not transient")
	testenv.Eventually(t, 10*time.Second, "its topics removed", func() bool { return w.topics(bad) == 0 })

	down := w.localRun("r-kafka-down", "exec sleep 60")
	down.Kafka.Brokers = []string{"127.0.0.1:1"} // nothing listens there
	w.provision(t, down)
	testenv.Eventually(t, 30*time.Second, "provision fails", func() bool { return w.rec.First(events.TypeRunProvisionFailed, down.RunID) != nil })
	f = w.rec.First(events.TypeRunProvisionFailed, down.RunID).(*events.RunProvisionFailed)
	require.True(t, f.Transient, "a broker that is down is transient: %s", f.Reason)
	require.Contains(t, f.Reason, "create topics")
}

func TestACommandThatCannotBeProcessedIsAnswered(t *testing.T) {
	w := newWorld(t)
	w.start(t, options{})
	for _, typ := range []events.Type{events.TypeRunProvision, events.TypeRunTeardown} {
		msg := nats.NewMsg(bus.Subject(typ))
		msg.Data = []byte(`{"run_id": 42}`) // not the schema
		msg.Header.Set(bus.HeaderType, string(typ))
		msg.Header.Set(bus.HeaderVersion, "1")
		msg.Header.Set(bus.HeaderExperiment, "exp")
		msg.Header.Set(bus.HeaderRun, "r-garbled-"+string(typ))
		_, err := w.bus.JetStream().PublishMsg(context.Background(), msg)
		require.NoError(t, err)
	}
	testenv.Eventually(t, 20*time.Second, "provision answered", func() bool {
		return w.rec.First(events.TypeRunProvisionFailed, "r-garbled-run.provision") != nil
	})
	require.Contains(t, w.rec.First(events.TypeRunProvisionFailed, "r-garbled-run.provision").(*events.RunProvisionFailed).Reason,
		"the provision command could not be processed: undecodable")
	td := w.rec.tornDown(t, "r-garbled-run.teardown", 20*time.Second)
	require.True(t, td.Lost, "an unprocessable teardown cannot vouch for the run")
}

func TestProvisionOnOneInstanceTeardownByAnother(t *testing.T) {
	w := newWorld(t)
	a := w.start(t, options{})
	p := w.localRun("r-handover", "exec sleep 120")
	w.provision(t, p)
	pid := w.rec.provisioned(t, p.RunID, 20*time.Second).Targets[0].PID
	b := w.start(t, options{stateDir: t.TempDir()})
	a.stop() // A goes; its SUT stays, and B knows it from the record
	require.True(t, alive(pid))
	w.teardown(t, p, "teardown:"+p.RunID)
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.False(t, td.Crashed || td.Lost, "%+v", td)
	require.False(t, alive(pid), "B stopped the process A started")
	_ = b
}

func TestTwoInstancesAtOnceStartEachRunOnceAndLeaveNothing(t *testing.T) {
	w := newWorld(t)
	a := w.start(t, options{})
	w.start(t, options{stateDir: t.TempDir()})
	var runs []events.RunProvision
	for i := 0; i < 4; i++ {
		p := w.localRun("r-two-"+strconv.Itoa(i), "exec sleep 120")
		runs = append(runs, p)
		w.provision(t, p)
		// A duplicate command (another message id): still one process.
		require.NoError(t, w.bus.Publish(context.Background(), p, "provision-dup:"+p.RunID))
	}
	var pids []int
	for _, p := range runs {
		pids = append(pids, w.rec.provisioned(t, p.RunID, 20*time.Second).Targets[0].PID)
	}
	testenv.Eventually(t, 10*time.Second, "duplicates handled", func() bool { return w.consumerPending(t) == 0 })
	for _, p := range runs {
		require.Len(t, marked(t, a, p.RunID), 2, "run %s: one shim and one SUT, started once", p.RunID)
	}
	for _, p := range runs {
		w.teardown(t, p, "teardown:"+p.RunID)
	}
	for _, p := range runs {
		td := w.rec.tornDown(t, p.RunID, 20*time.Second)
		require.False(t, td.Lost || td.Crashed, "%+v", td)
	}
	for i, pid := range pids {
		require.False(t, alive(pid), "run %d's process is gone", i)
		require.Empty(t, marked(t, a, runs[i].RunID))
	}
}

// marked lists the live processes carrying a run's markers.
func marked(t *testing.T, inst *instance, runID string) []string {
	t.Helper()
	lefts, err := inst.local.Leftovers(context.Background())
	require.NoError(t, err)
	for _, l := range lefts {
		if l.RunID == runID {
			return strings.Split(strings.TrimPrefix(strings.Split(l.What, " on ")[0], "processes "), ", ")
		}
	}
	return nil
}

func TestRunsThatAreOverAndUnknownLeftoversAreRemoved(t *testing.T) {
	w := newWorld(t)
	inst := w.start(t, options{core: func(c *provisioner.Config) {
		c.ReconcileEvery = 200 * time.Millisecond
		c.UnknownGrace = 500 * time.Millisecond
	}})
	// A run the scheduler ended while its teardown command was lost.
	over := w.localRun("r-over", "exec sleep 120")
	w.provision(t, over)
	overPID := w.rec.provisioned(t, over.RunID, 20*time.Second).Targets[0].PID
	require.NoError(t, w.bus.Publish(context.Background(), events.RunState{ExperimentID: "exp", RunID: over.RunID, State: events.RunStateFailed}, ""))
	testenv.Eventually(t, 20*time.Second, "the ended run's process stopped", func() bool { return !alive(overPID) })
	testenv.Eventually(t, 10*time.Second, "and its topics deleted", func() bool { return w.topics(over) == 0 })

	// A process of this installation with no record at all (its record
	// was lost): removed after the grace, topics too.
	unknown := w.localRun("r-unknown", "exec sleep 120")
	w.provision(t, unknown)
	unknownPID := w.rec.provisioned(t, unknown.RunID, 20*time.Second).Targets[0].PID
	e, err := inst.store.Get(context.Background(), state.LocalKey(unknown.RunID))
	require.NoError(t, err)
	require.NoError(t, inst.store.Delete(context.Background(), e.Key, e.Rev))
	testenv.Eventually(t, 20*time.Second, "the unknown run's process stopped", func() bool { return !alive(unknownPID) })
	testenv.Eventually(t, 10*time.Second, "and its topics, named in its environment, deleted", func() bool { return w.topics(unknown) == 0 })
	require.Equal(t, 1.0, removed(t, inst.reg, "local", "process", "unknown"))
	require.Equal(t, 1.0, removed(t, inst.reg, "local", "topics", "unknown"))
}

// A run that ended while pending (a cancelled sweep's) had no command sent,
// so the provisioner keeps no mark of it: marks of 100,000 cancelled runs
// filled its bucket, after which no run could be provisioned. A run that
// started gets its mark as before.
func TestRunsThatNeverStartedLeaveNoMark(t *testing.T) {
	w := newWorld(t)
	inst := w.start(t, options{})
	ctx := context.Background()
	for i := range 20 {
		require.NoError(t, w.bus.Publish(ctx, events.RunState{ExperimentID: "exp", RunID: fmt.Sprintf("r-never-%02d", i),
			State: events.RunStateCancelled, NeverStarted: true}, ""))
	}
	require.NoError(t, w.bus.Publish(ctx, events.RunState{ExperimentID: "exp", RunID: "r-started", State: events.RunStateCancelled}, ""))
	testenv.Eventually(t, 20*time.Second, "the started run marked final", func() bool {
		_, err := inst.store.Get(ctx, state.FinalKey("r-started"))
		return err == nil
	})
	cons, err := w.bus.JetStream().Consumer(ctx, bus.StreamLifecycle, bus.ConsumerProvisionerStates.Durable)
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "every run state handled", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
	for i := range 20 {
		_, err := inst.store.Get(ctx, state.FinalKey(fmt.Sprintf("r-never-%02d", i)))
		require.Error(t, err, "no mark for a run that never started")
	}
}

// TestANATSRestartIsReportedNotReadyAndSurvived stops the NATS server under
// a running provisioner: its /healthz says not ready while the server is
// down, and once the server is back the provisioner is ready again and
// provisions and tears down as before. With the same store, a run started
// before the outage is torn down cleanly after it (its record and the
// reconciler's view of it survived). With an empty store (the server lost
// its disk) that run's record is gone: its teardown is reported lost, never
// clean, and its processes are stopped; the platform id is recorded again.
func TestANATSRestartIsReportedNotReadyAndSurvived(t *testing.T) {
	for _, tc := range []struct {
		name       string
		emptyStore bool
	}{{"same_store", false}, {"empty_store", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.NewRestartableNATS(t)
			w := newWorldAt(t, srv.URL())
			inst := w.start(t, options{})
			require.NoError(t, inst.health.Check())
			platform := inst.store.Platform()
			before := w.localRun("r-before-restart", "exec sleep 60")
			w.provision(t, before)
			beforePID := w.rec.provisioned(t, before.RunID, 30*time.Second).Targets[0].PID

			srv.Stop()
			down := time.Now()
			testenv.Eventually(t, 10*time.Second, "not ready while NATS is down", func() bool { return inst.health.Check() != nil })
			t.Logf("not ready %s after NATS went down: %v", time.Since(down).Round(time.Millisecond), inst.health.Check())

			if tc.emptyStore {
				srv.StartEmpty()
			} else {
				srv.Start()
			}
			up := time.Now()
			testenv.Eventually(t, 30*time.Second, "ready again once NATS is back", func() bool { return inst.health.Check() == nil })
			t.Logf("ready %s after NATS came back", time.Since(up).Round(time.Millisecond))

			w.rec = record(t, w.bus) // a fresh watch, from before the restart
			p := w.localRun("r-after-restart", "exec sleep 60")
			testenv.Eventually(t, 20*time.Second, "the provision accepted", func() bool {
				return w.bus.Publish(context.Background(), p, "provision:"+p.RunID) == nil
			})
			pid := w.rec.provisioned(t, p.RunID, 30*time.Second).Targets[0].PID
			w.teardown(t, p, "teardown:"+p.RunID)
			td := w.rec.tornDown(t, p.RunID, 30*time.Second)
			require.False(t, td.Lost || td.Crashed, "%+v", td)
			require.False(t, alive(pid))

			w.teardown(t, before, "teardown:"+before.RunID)
			td = w.rec.tornDown(t, before.RunID, 30*time.Second)
			require.False(t, alive(beforePID), "stopped either way")
			require.Empty(t, marked(t, inst, before.RunID))
			if !tc.emptyStore {
				require.False(t, td.Lost || td.Crashed, "%+v", td)
				return
			}
			require.True(t, td.Lost, "its record went with the server's store: %+v", td)
			testenv.Eventually(t, 10*time.Second, "the platform id recorded again", func() bool {
				kv, err := w.bus.KV(context.Background(), state.Bucket)
				if err != nil {
					return false
				}
				e, err := kv.Get(context.Background(), state.KeyPlatform)
				return err == nil && string(e.Value()) == platform
			})
		})
	}
}

// TestAProvisionAbandonedOnAnotherNodeIsTakenOverOnce: the record locks a
// run across nodes; a provision whose node's provisioner died mid-way (its
// lease ran out) is taken over by another node, once.
func TestAProvisionAbandonedOnAnotherNodeIsTakenOverOnce(t *testing.T) {
	w := newWorld(t)
	b := w.start(t, options{node: "node-b", core: func(c *provisioner.Config) { c.Lease = 2 * time.Second }})
	p := w.localRun("r-abandoned", "exec sleep 60")
	_, created, err := b.store.Create(context.Background(), state.LocalKey(p.RunID), state.Record{ExperimentID: p.ExperimentID, RunID: p.RunID,
		Backend: "local", Node: "node-a", State: state.Starting, Owner: "node-a-instance-that-died", LeaseUntilMs: time.Now().Add(time.Second).UnixMilli(),
		Kafka: &p.Kafka})
	require.NoError(t, err)
	require.True(t, created)
	w.provision(t, p)
	require.NoError(t, w.bus.Publish(context.Background(), p, "provision-again:"+p.RunID))
	got := w.rec.provisioned(t, p.RunID, 30*time.Second)
	e, err := b.store.Get(context.Background(), state.LocalKey(p.RunID))
	require.NoError(t, err)
	require.Equal(t, "node-b", e.Rec.Node, "taken over where it now runs")
	require.Equal(t, "node-b", got.Targets[0].Node)
	testenv.Eventually(t, 10*time.Second, "both commands handled", func() bool { return w.consumerPending(t) == 0 })
	require.Len(t, marked(t, b, p.RunID), 2, "one shim and one SUT: started once")
	w.teardown(t, p, "teardown:"+p.RunID)
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.False(t, td.Lost || td.Crashed, "%+v", td)
	require.Empty(t, marked(t, b, p.RunID))
}

// TestAProvisionHeldByADeadProcessOfThisMachineIsTakenOverAtOnce: a
// provisioner killed mid-provision holds its run's lease for a while (45 s by
// default); the instance that restarts in its place — another process of the
// same machine — sees the holder's process is gone (pid and start time) and
// carries on at once, instead of waiting out the lease (the scheduler's
// provision timeout may come first). The same for a teardown attempt.
func TestAProvisionHeldByADeadProcessOfThisMachineIsTakenOverAtOnce(t *testing.T) {
	w := newWorld(t)
	a := w.start(t, options{core: func(c *provisioner.Config) { c.Lease = time.Hour }})
	dead := deadIncarnation(t)

	p := w.localRun("r-held", "exec sleep 60")
	_, created, err := a.store.Create(context.Background(), state.LocalKey(p.RunID), state.Record{ExperimentID: p.ExperimentID, RunID: p.RunID,
		Backend: "local", Node: "node-a", State: state.Starting, Owner: "provisioner-that-was-killed", LeaseUntilMs: time.Now().Add(time.Hour).UnixMilli(),
		OwnerProc: &dead, Kafka: &p.Kafka})
	require.NoError(t, err)
	require.True(t, created)
	start := time.Now()
	w.provision(t, p)
	got := w.rec.provisioned(t, p.RunID, 30*time.Second)
	require.Less(t, time.Since(start), 20*time.Second, "not waiting out an hour's lease")
	require.Len(t, got.Targets, 1)

	// A teardown attempt left by a dead process (NextMs an hour away) is
	// taken up at once too.
	_, _, err = a.store.Mutate(context.Background(), state.LocalKey(p.RunID), func(r *state.Record) (bool, error) {
		r.State = state.Stopping
		r.Teardown = &state.Teardown{RequestedMs: time.Now().UnixMilli(), Cause: "teardown command", From: state.Running, Report: true,
			Attempts: 1, NextMs: time.Now().Add(time.Hour).UnixMilli(), Owner: "provisioner-that-was-killed", OwnerProc: &dead}
		return true, nil
	})
	require.NoError(t, err)
	td := w.rec.tornDown(t, p.RunID, 30*time.Second)
	require.False(t, td.Lost || td.Crashed || td.Incomplete, "%+v", td)
	require.Empty(t, marked(t, a, p.RunID))
}

// deadIncarnation is the incarnation of a process of this machine that ran
// and was killed.
func deadIncarnation(t *testing.T) procfs.Incarnation {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	st, err := procfs.Default.Stat(cmd.Process.Pid)
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	self := procfs.Default.Self()
	return procfs.Incarnation{Host: self.Host, BootID: self.BootID, PID: st.PID, StartTicks: st.StartTicks}
}

// A burst of record updates costs the reconciler one pass, not one per
// update: with the clock standing still (no tick, every update within a
// tick of the last pass), 50 run records written at once are all taken and
// bring on no pass of their own; the next tick passes over all of them.
func TestABurstOfRecordUpdatesIsCoalescedIntoOnePass(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	fc := testingclock.NewFakeClock(time.Now())
	inst := w.start(t, options{noLocal: true, clock: fc})
	metric := func(name string) float64 { return testenv.CounterValue(t, inst.reg, name, nil) }
	testenv.Eventually(t, 10*time.Second, "the first pass after Init", func() bool {
		return metric("greenflow_provisioner_reconcile_passes_total") >= 1
	})
	passes, updates := metric("greenflow_provisioner_reconcile_passes_total"), metric("greenflow_provisioner_record_updates_total")
	ctx := t.Context()
	for i := range 50 {
		require.NoError(t, inst.store.MarkFinal(ctx, fmt.Sprintf("burst-r%04d", i), events.RunStateDone))
	}
	testenv.Eventually(t, 10*time.Second, "every update taken", func() bool {
		return metric("greenflow_provisioner_record_updates_total") >= updates+50
	})
	require.Equal(t, passes, metric("greenflow_provisioner_reconcile_passes_total"), "no pass per update while the clock stands")
	fc.Step(provisioner.Default().Tick) // more than the test's tick
	testenv.Eventually(t, 10*time.Second, "the tick's pass", func() bool {
		return metric("greenflow_provisioner_reconcile_passes_total") == passes+1
	})
}
