package local_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

func cmd(run, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "e", RunID: run, SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}},
		Kafka: events.Kafka{Brokers: []string{"127.0.0.1:1"}, InputTopic: "in-" + run, OutputTopic: "out-" + run}}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// records opens a record store on an embedded NATS server at url (a new
// one when url is "").
func records(t *testing.T, url string) *state.Store {
	t.Helper()
	if url == "" {
		url = testenv.NATS(t)
	}
	ctx := context.Background()
	b, err := bus.Connect(ctx, url, "test", zap.NewNop(), nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	st := state.New(b, "")
	require.NoError(t, st.Open(ctx))
	return st
}

func newBackend(t *testing.T, st *state.Store, cfg local.Config) *local.Backend {
	t.Helper()
	if cfg.Node == "" {
		cfg.Node = "n1"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.StartupGrace == 0 {
		cfg.StartupGrace = 100 * time.Millisecond
	}
	if cfg.LivenessPoll == 0 {
		cfg.LivenessPoll = 50 * time.Millisecond
	}
	b := local.New(cfg, st, testenv.Logger(t))
	t.Cleanup(b.Close)
	return b
}

// provision creates the run's record, as the provisioner does before it
// asks the backend, and provisions it.
func provision(t *testing.T, st *state.Store, b *local.Backend, p events.RunProvision) ([]events.Target, error) {
	t.Helper()
	_, _, err := st.Create(context.Background(), b.Key(p.RunID), state.Record{ExperimentID: p.ExperimentID, RunID: p.RunID, Backend: "local",
		Node: b.Node(), State: state.Starting, Owner: "test", Kafka: &p.Kafka})
	require.NoError(t, err)
	return b.Provision(context.Background(), p)
}

// running marks a provisioned run running (as the provisioner does) and
// returns its record.
func running(t *testing.T, st *state.Store, b *local.Backend, runID string, targets []events.Target) state.Entry {
	t.Helper()
	e, _, err := st.Mutate(context.Background(), b.Key(runID), func(r *state.Record) (bool, error) {
		r.State, r.Targets = state.Running, targets
		return true, nil
	})
	require.NoError(t, err)
	return e
}

// crashes collects what the backend reports crashed.
func crashes(b *local.Backend) chan string {
	c := make(chan string, 4)
	b.OnCrash(func(run, reason string) { c <- run + ": " + reason })
	return c
}

func awaitCrash(t *testing.T, c chan string) string {
	t.Helper()
	select {
	case msg := <-c:
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("crash not reported")
		return ""
	}
}

// stat reads a process's state, process group and session.
func stat(t *testing.T, pid int) (state string, pgrp, session int) {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	pgrp, _ = strconv.Atoi(f[2])
	session, _ = strconv.Atoi(f[3])
	return f[0], pgrp, session
}

func startTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	v, err := strconv.ParseUint(f[19], 10, 64)
	require.NoError(t, err)
	return v
}

func TestStartupFailureFailsTheProvision(t *testing.T) {
	st := records(t, "")
	b := newBackend(t, st, local.Config{})
	_, err := provision(t, st, b, cmd("r1", "echo cannot reach broker >&2; exit 3"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "sh exited during start-up: exit status 3")
	require.Contains(t, err.Error(), "cannot reach broker")

	_, err = provision(t, st, b, events.RunProvision{RunID: "r1b", SUT: events.SUT{Template: "command", Command: []string{"no-such-sut-binary"}}})
	require.ErrorContains(t, err, `start no-such-sut-binary: exec: "no-such-sut-binary": executable file not found`)
}

func TestTheRecordNamesTheProcess(t *testing.T) {
	st := records(t, "")
	dir := t.TempDir()
	b := newBackend(t, st, local.Config{StateDir: dir})
	p := cmd("r-rec", "exec sleep 60")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	defer func() { _, _, _ = b.Remove(context.Background(), "r-rec", nil) }()
	e, err := st.Get(context.Background(), state.LocalKey("r-rec"))
	require.NoError(t, err)
	pr := e.Rec.Process
	require.NotNil(t, pr)
	require.Equal(t, targets[0].PID, pr.PID, "the target is the SUT itself")
	require.Equal(t, startTicks(t, pr.PID), pr.StartTicks, "with its start time, against pid reuse")
	require.Equal(t, startTicks(t, pr.ShimPID), pr.ShimStartTicks)
	_, pgrp, session := stat(t, pr.PID)
	require.Equal(t, pr.PGID, pgrp)
	require.Equal(t, pr.ShimPID, session, "the shim leads the SUT's session")
	require.Equal(t, dir+"/runs/r-rec/sut.log", pr.Log)
	require.Equal(t, dir+"/runs/r-rec/exit-status", pr.Status)
	require.Equal(t, []string{"sh", "-c", "exec sleep 60"}, pr.Argv)
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(boot)), pr.BootID)
	require.Equal(t, &p.Kafka, e.Rec.Kafka)
}

func TestCrashDuringRunIsReportedWithStatusAndLastOutput(t *testing.T) {
	st := records(t, "")
	b := newBackend(t, st, local.Config{})
	crashed := crashes(b)
	targets, err := provision(t, st, b, cmd("r2", "echo starting; sleep 0.5; echo out of memory; exit 7"))
	require.NoError(t, err)
	require.Len(t, targets, 1)
	require.Equal(t, "n1", targets[0].Node)
	require.Equal(t, "sut", targets[0].Role)
	b.Watch(running(t, st, b, "r2", targets))
	msg := awaitCrash(t, crashed)
	require.Contains(t, msg, "r2: exit status 7")
	require.Contains(t, msg, "out of memory")
	e, err := st.Get(context.Background(), b.Key("r2"))
	require.NoError(t, err)
	isCrash, reason, err := b.Remove(context.Background(), "r2", &e)
	require.NoError(t, err)
	require.True(t, isCrash, "teardown of a SUT that exited on its own reports a crash")
	require.Contains(t, reason, "exit status 7")
}

func TestRedeliveredProvisionAdoptsTheStartedProcessAndTeardownKillsTheGroup(t *testing.T) {
	st := records(t, "")
	pidFile := t.TempDir() + "/child.pid"
	b := newBackend(t, st, local.Config{StopTimeout: 2 * time.Second})
	// The SUT starts a child of its own, as a JVM launcher script would.
	p := cmd("r3", "sleep 60 & echo $! > "+pidFile+"; wait")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	// The provisioner died before recording the run as running: the
	// command comes again, to this or another instance on the node.
	other := newBackend(t, st, local.Config{StopTimeout: 2 * time.Second})
	again, err := other.Provision(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, targets, again, "a redelivered provision finds the started process and starts no second one")
	var child int
	testenv.Eventually(t, 5*time.Second, "child pid written", func() bool {
		raw, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		return err == nil
	})
	require.True(t, alive(child))
	e, err := st.Get(context.Background(), b.Key("r3"))
	require.NoError(t, err)
	isCrash, _, err := other.Remove(context.Background(), "r3", &e)
	require.NoError(t, err)
	require.False(t, isCrash)
	testenv.Eventually(t, 5*time.Second, "child killed with its group", func() bool { return !alive(child) })
	e, err = st.Get(context.Background(), b.Key("r3"))
	require.NoError(t, err)
	require.True(t, e.Rec.Process.Signalled, "the record says it was stopped on purpose before it was")
	_, _, err = other.Remove(context.Background(), "r3", &e)
	require.NoError(t, err, "removing again is harmless")
}

func TestUnknownTemplateParameterIsAClearError(t *testing.T) {
	b := local.New(local.Config{Node: "n1", UC3Command: []string{"/bin/true"}}, nil, zap.NewNop())
	_, err := b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go", Params: map[string]string{"colour": "red"}}})
	require.ErrorContains(t, err, "unknown parameter sut.params.colour")
	_, err = b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-flink"}})
	require.ErrorContains(t, err, "cannot run on the local backend")
}

func TestSUTHasItsOwnSessionLogAndExitStatus(t *testing.T) {
	st := records(t, "")
	dir := t.TempDir()
	b := newBackend(t, st, local.Config{StartupGrace: 200 * time.Millisecond, StateDir: dir})
	crashed := crashes(b)
	targets, err := provision(t, st, b, cmd("r-session", "echo hello from the sut; exec sleep 60"))
	require.NoError(t, err)
	pid := targets[0].PID
	_, pgrp, session := stat(t, pid)
	_, ownGroup, ownSession := stat(t, os.Getpid())
	require.NotEqual(t, ownSession, session, "a session of its own: no terminal or parent signal reaches it")
	require.NotEqual(t, ownGroup, pgrp)
	require.Equal(t, session, pgrp, "the session leader (the shim) leads its process group")
	testenv.Eventually(t, 5*time.Second, "output in the run's log file", func() bool {
		raw, _ := os.ReadFile(dir + "/runs/r-session/sut.log")
		return strings.Contains(string(raw), "hello from the sut")
	})
	b.Watch(running(t, st, b, "r-session", targets))

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL)) // the SUT dies on its own, e.g. the OOM killer
	msg := awaitCrash(t, crashed)
	require.Contains(t, msg, "r-session: exit status 137 (killed by signal 9, killed)")
	require.Contains(t, msg, "last output: hello from the sut")
	raw, err := os.ReadFile(dir + "/runs/r-session/exit-status")
	require.NoError(t, err)
	require.Equal(t, "137\n", string(raw), "the shim recorded the exit status")
}

func TestTeardownKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	st := records(t, "")
	b := newBackend(t, st, local.Config{StopTimeout: 500 * time.Millisecond})
	targets, err := provision(t, st, b, cmd("r-stubborn", `trap "" TERM; while :; do sleep 1; done`))
	require.NoError(t, err)
	_, pgrp, _ := stat(t, targets[0].PID)
	e := running(t, st, b, "r-stubborn", targets)
	start := time.Now()
	crashedRun, _, err := b.Remove(context.Background(), "r-stubborn", &e)
	require.NoError(t, err)
	require.False(t, crashedRun)
	require.Less(t, time.Since(start), 30*time.Second, "SIGKILL follows SIGTERM after the stop timeout")
	testenv.Eventually(t, 10*time.Second, "the whole process group gone (and reaped)", func() bool { return syscall.Kill(-pgrp, 0) != nil })
}

// TestSUTOutlivesItsProvisioner runs a provisioner in a child process (this
// test binary, re-executed), kills that child with SIGKILL and checks the
// SUT it started is still running; then a new backend adopts it, reports
// its crash with its exit status, and stops it.
func TestSUTOutlivesItsProvisionerAndIsAdopted(t *testing.T) {
	if os.Getenv("GF_LOCAL_HELPER") == "provision" {
		st := records(t, os.Getenv("GF_NATS"))
		b := newBackend(t, st, local.Config{StateDir: os.Getenv("GF_STATE_DIR")})
		targets, err := provision(t, st, b, cmd("r-outlive", "while :; do echo beat; echo beat >> "+os.Getenv("GF_BEATS")+"; sleep 0.05; done"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		running(t, st, b, "r-outlive", targets)
		fmt.Printf("pid=%d\n", targets[0].PID)
		select {} // until killed
	}
	natsURL := testenv.NATS(t)
	beats := t.TempDir() + "/beats"
	stateDir := t.TempDir()
	helper := exec.Command(os.Args[0], "-test.run", "^TestSUTOutlivesItsProvisionerAndIsAdopted$")
	helper.Env = append(os.Environ(), "GF_LOCAL_HELPER=provision", "GF_STATE_DIR="+stateDir, "GF_BEATS="+beats, "GF_NATS="+natsURL)
	out, err := helper.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, helper.Start())
	var pid int
	_, err = fmt.Fscanf(out, "pid=%d\n", &pid)
	require.NoError(t, err)
	_, pgrp, _ := stat(t, pid)
	t.Cleanup(func() { _ = syscall.Kill(-pgrp, syscall.SIGKILL) })
	require.NoError(t, helper.Process.Kill())
	_ = helper.Wait()
	count := func() int { raw, _ := os.ReadFile(beats); return strings.Count(string(raw), "beat") }
	after := count()
	// A parent-death signal would have ended it as its provisioner died:
	// it keeps beating instead.
	testenv.Eventually(t, 10*time.Second, "the SUT to keep running after its provisioner was killed", func() bool { return count() >= after+10 })
	state, _, _ := stat(t, pid)
	require.NotEqual(t, "Z", state)
	state, _, _ = stat(t, pgrp)
	require.NotEqual(t, "Z", state, "the shim that records the SUT's exit status lives on too")

	// A new provisioner adopts it from its record and watches it.
	st := records(t, natsURL)
	b := newBackend(t, st, local.Config{StateDir: t.TempDir()})
	crashed := crashes(b)
	e, err := st.Get(context.Background(), b.Key("r-outlive"))
	require.NoError(t, err)
	b.Watch(e)
	select {
	case msg := <-crashed:
		t.Fatalf("a live adopted SUT reported crashed: %s", msg)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	msg := awaitCrash(t, crashed)
	require.Contains(t, msg, "r-outlive: exit status 137 (killed by signal 9, killed)", "its real exit status, though it is not our child")
	require.Contains(t, msg, "last output: beat")
}

func TestAdoptionReportsACrashThatHappenedWhileNobodyWatched(t *testing.T) {
	st := records(t, "")
	first := newBackend(t, st, local.Config{})
	targets, err := provision(t, st, first, cmd("r-unwatched", "echo working; exec sleep 60"))
	require.NoError(t, err)
	running(t, st, first, "r-unwatched", targets)
	require.NoError(t, syscall.Kill(targets[0].PID, syscall.SIGKILL)) // no provisioner is watching
	e, err := st.Get(context.Background(), first.Key("r-unwatched"))
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "the SUT and its shim gone", func() bool {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(e.Rec.Process.ShimPID) + "/stat")
		return err != nil || strings.Contains(string(raw), ") Z ")
	})

	second := newBackend(t, st, local.Config{})
	crashed := crashes(second)
	second.Watch(e)
	msg := awaitCrash(t, crashed)
	require.Contains(t, msg, "r-unwatched: exited while no provisioner was watching it: exit status 137 (killed by signal 9, killed); last output: working")
}

func TestAReusedPidIsNotTakenForTheSUT(t *testing.T) {
	st := records(t, "")
	b := newBackend(t, st, local.Config{})
	crashed := crashes(b)
	// An unrelated process of ours holds the pid the record names, but it
	// started at another time: the SUT is gone, and the stranger is left
	// alone.
	stranger := exec.Command("sleep", "60")
	require.NoError(t, stranger.Start())
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })
	pid := stranger.Process.Pid
	key := b.Key("r-reused")
	_, _, err := st.Create(context.Background(), key, state.Record{RunID: "r-reused", Backend: "local", Node: "n1", State: state.Running,
		Process: &state.Process{ShimPID: pid, ShimStartTicks: startTicks(t, pid) + 1, PGID: pid, PID: pid, BootID: bootID(t),
			Log: t.TempDir() + "/sut.log", Status: t.TempDir() + "/exit-status"}})
	require.NoError(t, err)
	e, err := st.Get(context.Background(), key)
	require.NoError(t, err)
	b.Watch(e)
	require.Contains(t, awaitCrash(t, crashed), "exited without recording an exit status")
	isCrash, _, err := b.Remove(context.Background(), "r-reused", &e)
	require.NoError(t, err)
	require.True(t, isCrash)
	require.True(t, alive(pid), "a process with the recorded pid but another start time is not signalled")
}

func bootID(t *testing.T) string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	return strings.TrimSpace(string(raw))
}

func TestLeftoversAreFoundByTheirMarkersAndRemoved(t *testing.T) {
	st := records(t, "")
	b := newBackend(t, st, local.Config{})
	p := cmd("r-left", "exec sleep 60")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	lefts, err := b.Leftovers(context.Background())
	require.NoError(t, err)
	require.Len(t, lefts, 1)
	l := lefts[0]
	require.Equal(t, "r-left", l.RunID)
	require.Equal(t, "e", l.ExperimentID)
	require.Equal(t, st.Platform(), l.Platform)
	require.Equal(t, &p.Kafka, l.Kafka, "its topics, from its environment")
	require.WithinDuration(t, time.Now(), l.Since, time.Minute)
	require.Contains(t, l.What, strconv.Itoa(targets[0].PID))
	// With no record at all, the markers are enough to stop it.
	_, _, err = b.Remove(context.Background(), "r-left", nil)
	require.NoError(t, err)
	lefts, err = b.Leftovers(context.Background())
	require.NoError(t, err)
	require.Empty(t, lefts)

	// Another node name on this machine (a misconfiguration) does not see
	// them either: each node's provisioner stops only its own.
	elsewhere := newBackend(t, st, local.Config{Node: "n2"})
	_, err = provision(t, st, b, cmd("r-n1", "exec sleep 60"))
	require.NoError(t, err)
	defer func() { _, _, _ = b.Remove(context.Background(), "r-n1", nil) }()
	lefts, err = elsewhere.Leftovers(context.Background())
	require.NoError(t, err)
	require.Empty(t, lefts)
	_, _, err = elsewhere.Remove(context.Background(), "r-n1", nil)
	require.NoError(t, err)
	lefts, err = b.Leftovers(context.Background())
	require.NoError(t, err)
	require.Len(t, lefts, 1, "untouched by the other node name")
	_, _, err = b.Remove(context.Background(), "r-n1", nil)
	require.NoError(t, err)

	// Another installation's processes are not ours to see.
	other := records(t, "")
	ob := newBackend(t, other, local.Config{})
	_, err = provision(t, other, ob, cmd("r-theirs", "exec sleep 60"))
	require.NoError(t, err)
	defer func() { _, _, _ = ob.Remove(context.Background(), "r-theirs", nil) }()
	lefts, err = b.Leftovers(context.Background())
	require.NoError(t, err)
	require.Empty(t, lefts)
}

// TestStopOnShutdownStopsTheSUTsAndTheNextProvisionerSaysSo: greenflow dev
// stops its SUTs with it; the run cannot go on, and whoever adopts its
// record reports that.
func TestStopOnShutdownStopsTheSUTsAndTheNextProvisionerSaysSo(t *testing.T) {
	st := records(t, "")
	dev := local.New(local.Config{Node: "n1", StateDir: t.TempDir(), StartupGrace: 100 * time.Millisecond, StopOnShutdown: true}, st, testenv.Logger(t))
	crashes(dev)
	targets, err := provision(t, st, dev, cmd("r-dev", "echo serving; exec sleep 60"))
	require.NoError(t, err)
	dev.Watch(running(t, st, dev, "r-dev", targets))
	dev.Close()
	require.True(t, gone(targets[0].PID), "stopped with its provisioner")

	next := newBackend(t, st, local.Config{})
	crashed := crashes(next)
	e, err := st.Get(context.Background(), next.Key("r-dev"))
	require.NoError(t, err)
	require.True(t, e.Rec.Process.StoppedAtShutdown)
	next.Watch(e)
	require.Contains(t, awaitCrash(t, crashed), "r-dev: stopped when its provisioner shut down; last output: serving")
}

// gone reports a process that has exited (reaped or not).
func gone(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err != nil || strings.Contains(string(raw), ") Z ")
}
