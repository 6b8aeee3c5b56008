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

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
	"github.com/greenflow/greenflow/services/provisioner/internal/provtest"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

func cmd(run, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "e", RunID: run, SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}},
		Kafka: events.Kafka{Brokers: []string{"127.0.0.1:1"}, InputTopic: "in-" + run, OutputTopic: "out-" + run}}
}

// records opens a record store on an embedded NATS server at url (a new
// one when url is "").
func records(t *testing.T, url string) *state.Store {
	t.Helper()
	if url == "" {
		url = testenv.NATS(t)
	}
	st, _ := provtest.Records(t, url)
	return st
}

// newBackend is a backend on node n1 with short start-up and polls; mod
// changes its configuration.
func newBackend(t testing.TB, st *state.Store, mod func(*local.Config)) *local.Backend {
	t.Helper()
	cfg := local.Default()
	cfg.Node, cfg.StateDir, cfg.StartupGrace, cfg.LivenessPoll = "n1", t.TempDir(), 100*time.Millisecond, 50*time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	b, err := local.New(cfg, local.Deps{Store: st, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// fixture is a backend (see newBackend) on records of its own.
func fixture(t *testing.T, mod func(*local.Config)) (*state.Store, *local.Backend) {
	t.Helper()
	st := records(t, "")
	return st, newBackend(t, st, mod)
}

// leftovers is what b finds of runs, which it must be able to list.
func leftovers(t *testing.T, b *local.Backend) []state.Leftover {
	t.Helper()
	lefts, err := b.Leftovers(context.Background())
	require.NoError(t, err)
	return lefts
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

func TestStartupFailureFailsTheProvision(t *testing.T) {
	t.Parallel()
	st, b := fixture(t, nil)
	_, err := provision(t, st, b, cmd("r1", "echo cannot reach broker >&2; exit 3"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "sh exited during start-up: exit status 3")
	require.Contains(t, err.Error(), "cannot reach broker")

	_, err = provision(t, st, b, events.RunProvision{RunID: "r1b", SUT: events.SUT{Template: "command", Command: []string{"no-such-sut-binary"}}})
	require.ErrorContains(t, err, `start no-such-sut-binary: exec: "no-such-sut-binary": executable file not found`)
}

func TestTheRecordNamesTheProcess(t *testing.T) {
	t.Parallel()
	st := records(t, "")
	dir := t.TempDir()
	b := newBackend(t, st, func(c *local.Config) { c.StateDir = dir })
	p := cmd("r-rec", "exec sleep 60")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	defer func() { _, _, _ = b.Remove(context.Background(), "r-rec", nil) }()
	e, err := st.Get(context.Background(), state.LocalKey("r-rec"))
	require.NoError(t, err)
	pr := e.Rec.Process
	require.NotNil(t, pr)
	require.Equal(t, targets[0].PID, pr.PID, "the target is the SUT itself")
	sut, shim := provtest.Stat(t, pr.PID), provtest.Stat(t, pr.ShimPID)
	require.Equal(t, sut.StartTicks, pr.StartTicks, "with its start time, against pid reuse")
	require.Equal(t, shim.StartTicks, pr.ShimStartTicks)
	require.Equal(t, pr.PGID, sut.PGRP)
	require.Equal(t, pr.ShimPID, sut.Session, "the shim leads the SUT's session")
	require.Equal(t, dir+"/runs/r-rec/sut.log", pr.Log)
	require.Equal(t, dir+"/runs/r-rec/exit-status", pr.Status)
	require.Equal(t, []string{"sh", "-c", "exec sleep 60"}, pr.Argv)
	require.Equal(t, bootID(t), pr.BootID)
	require.Equal(t, &p.Kafka, e.Rec.Kafka)
}

func TestCrashDuringRunIsReportedWithStatusAndLastOutput(t *testing.T) {
	t.Parallel()
	st, b := fixture(t, nil)
	targets, err := provision(t, st, b, cmd("r2", "echo starting; sleep 0.5; echo out of memory; exit 7"))
	require.NoError(t, err)
	require.Len(t, targets, 1)
	require.Equal(t, "n1", targets[0].Node)
	require.Equal(t, "sut", targets[0].Role)
	msg := provtest.AwaitCrash(t, provtest.Watch(b, running(t, st, b, "r2", targets)))
	require.Contains(t, msg, "exit status 7")
	require.Contains(t, msg, "out of memory")
	e, err := st.Get(context.Background(), b.Key("r2"))
	require.NoError(t, err)
	isCrash, reason, err := b.Remove(context.Background(), "r2", &e)
	require.NoError(t, err)
	require.True(t, isCrash, "teardown of a SUT that exited on its own reports a crash")
	require.Contains(t, reason, "exit status 7")
}

func TestRedeliveredProvisionAdoptsTheStartedProcessAndTeardownKillsTheGroup(t *testing.T) {
	t.Parallel()
	st := records(t, "")
	pidFile := t.TempDir() + "/child.pid"
	stopQuickly := func(c *local.Config) { c.StopTimeout = 2 * time.Second }
	b := newBackend(t, st, stopQuickly)
	// The SUT starts a child of its own, as a JVM launcher script would.
	p := cmd("r3", "sleep 60 & echo $! > "+pidFile+"; wait")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	// The provisioner died before recording the run as running: the
	// command comes again, to this or another instance on the node.
	other := newBackend(t, st, stopQuickly)
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
	require.True(t, provtest.Alive(child))
	e, err := st.Get(context.Background(), b.Key("r3"))
	require.NoError(t, err)
	isCrash, _, err := other.Remove(context.Background(), "r3", &e)
	require.NoError(t, err)
	require.False(t, isCrash)
	testenv.Eventually(t, 5*time.Second, "child killed with its group", func() bool { return !provtest.Alive(child) })
	e, err = st.Get(context.Background(), b.Key("r3"))
	require.NoError(t, err)
	require.True(t, e.Rec.Process.Signalled, "the record says it was stopped on purpose before it was")
	_, _, err = other.Remove(context.Background(), "r3", &e)
	require.NoError(t, err, "removing again is harmless")
}

func TestUnknownTemplateParameterIsAClearError(t *testing.T) {
	t.Parallel()
	c := local.Config{UC3Command: []string{"/bin/true"}}
	_, err := c.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go", Params: map[string]string{"colour": "red"}}})
	require.ErrorContains(t, err, "unknown parameter sut.params.colour")
	_, err = c.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-flink"}})
	require.ErrorContains(t, err, "cannot run on the local backend")
}

// The UC-3 processor gets the provisioner's Kafka credentials file by its
// path, never the password.
func TestUC3ProcessorGetsTheKafkaCredentialsFile(t *testing.T) {
	t.Parallel()
	c := local.Config{UC3Command: []string{"/bin/uc3"}, KafkaSASLFile: "/state/kafka-sasl.yaml"}
	argv, err := c.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go"},
		Kafka: events.Kafka{Brokers: []string{"127.0.0.1:9092"}, InputTopic: "in", OutputTopic: "out"}})
	require.NoError(t, err)
	require.Subset(t, argv, []string{"--kafka-sasl-file", "/state/kafka-sasl.yaml"})
	c.KafkaSASLFile = ""
	argv, err = c.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go"}})
	require.NoError(t, err)
	require.NotContains(t, argv, "--kafka-sasl-file")
}

func TestABadConfigurationNamesEveryField(t *testing.T) {
	t.Parallel()
	c := local.Default()
	c.Node, c.StopTimeout, c.LivenessPoll = "", 0, -time.Second
	_, err := local.New(c, local.Deps{})
	require.ErrorContains(t, err, "local.stopTimeout: got 0s, expected a positive duration")
	require.ErrorContains(t, err, "local.livenessPoll: got -1s, expected a positive duration")
	require.ErrorContains(t, err, "local.node: required")
	require.ErrorContains(t, err, "no record store")
}

func TestSUTHasItsOwnSessionLogAndExitStatus(t *testing.T) {
	t.Parallel()
	st := records(t, "")
	dir := t.TempDir()
	b := newBackend(t, st, func(c *local.Config) { c.StartupGrace, c.StateDir = 200*time.Millisecond, dir })
	targets, err := provision(t, st, b, cmd("r-session", "echo hello from the sut; exec sleep 60"))
	require.NoError(t, err)
	pid := targets[0].PID
	sut, own := provtest.Stat(t, pid), provtest.Stat(t, os.Getpid())
	require.NotEqual(t, own.Session, sut.Session, "a session of its own: no terminal or parent signal reaches it")
	require.NotEqual(t, own.PGRP, sut.PGRP)
	require.Equal(t, sut.Session, sut.PGRP, "the session leader (the shim) leads its process group")
	testenv.Eventually(t, 5*time.Second, "output in the run's log file", func() bool {
		raw, _ := os.ReadFile(dir + "/runs/r-session/sut.log")
		return strings.Contains(string(raw), "hello from the sut")
	})
	crashed := provtest.Watch(b, running(t, st, b, "r-session", targets))

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL)) // the SUT dies on its own, e.g. the OOM killer
	msg := provtest.AwaitCrash(t, crashed)
	require.Contains(t, msg, "exit status 137 (killed by signal 9, killed)")
	require.Contains(t, msg, "last output: hello from the sut")
	raw, err := os.ReadFile(dir + "/runs/r-session/exit-status")
	require.NoError(t, err)
	require.Equal(t, "137\n", string(raw), "the shim recorded the exit status")
}

func TestTeardownKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	st, b := fixture(t, func(c *local.Config) { c.StopTimeout = 500 * time.Millisecond })
	targets, err := provision(t, st, b, cmd("r-stubborn", `trap "" TERM; while :; do sleep 1; done`))
	require.NoError(t, err)
	pgrp := provtest.Stat(t, targets[0].PID).PGRP
	e := running(t, st, b, "r-stubborn", targets)
	start := time.Now()
	crashedRun, _, err := b.Remove(context.Background(), "r-stubborn", &e)
	require.NoError(t, err)
	require.False(t, crashedRun)
	require.Less(t, time.Since(start), 30*time.Second, "SIGKILL follows SIGTERM after the stop timeout")
	testenv.Eventually(t, 10*time.Second, "the whole process group gone (and reaped)", func() bool { return syscall.Kill(-pgrp, 0) != nil })
}

// TestSUTOutlivesItsProvisionerAndIsAdopted runs a provisioner in a child
// process (this test binary, re-executed), kills that child with SIGKILL
// and checks the SUT it started is still running; then a new backend
// adopts it, reports its crash with its exit status, and stops it.
func TestSUTOutlivesItsProvisionerAndIsAdopted(t *testing.T) {
	if os.Getenv("GF_LOCAL_HELPER") == "provision" {
		st := records(t, os.Getenv("GF_NATS"))
		b := newBackend(t, st, func(c *local.Config) { c.StateDir = os.Getenv("GF_STATE_DIR") })
		targets, err := provision(t, st, b, cmd("r-outlive", "while :; do echo beat; echo beat >> "+os.Getenv("GF_BEATS")+"; sleep 0.05; done"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		running(t, st, b, "r-outlive", targets)
		fmt.Printf("pid=%d\n", targets[0].PID)
		select {} // until killed
	}
	t.Parallel()
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
	pgrp := provtest.Stat(t, pid).PGRP
	t.Cleanup(func() { _ = syscall.Kill(-pgrp, syscall.SIGKILL) })
	require.NoError(t, helper.Process.Kill())
	_ = helper.Wait()
	count := func() int { raw, _ := os.ReadFile(beats); return strings.Count(string(raw), "beat") }
	after := count()
	// A parent-death signal would have ended it as its provisioner died:
	// it keeps beating instead.
	testenv.Eventually(t, 10*time.Second, "the SUT to keep running after its provisioner was killed", func() bool { return count() >= after+10 })
	require.True(t, provtest.Alive(pid))
	require.True(t, provtest.Alive(pgrp), "the shim that records the SUT's exit status lives on too")

	// A new provisioner adopts it from its record and watches it.
	st := records(t, natsURL)
	b := newBackend(t, st, nil)
	e, err := st.Get(context.Background(), b.Key("r-outlive"))
	require.NoError(t, err)
	crashed := provtest.Watch(b, e)
	provtest.NoCrash(t, crashed, 300*time.Millisecond, "a live adopted SUT")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	msg := provtest.AwaitCrash(t, crashed)
	require.Contains(t, msg, "exit status 137 (killed by signal 9, killed)", "its real exit status, though it is not our child")
	require.Contains(t, msg, "last output: beat")
}

func TestAdoptionReportsACrashThatHappenedWhileNobodyWatched(t *testing.T) {
	t.Parallel()
	st, first := fixture(t, nil)
	targets, err := provision(t, st, first, cmd("r-unwatched", "echo working; exec sleep 60"))
	require.NoError(t, err)
	running(t, st, first, "r-unwatched", targets)
	require.NoError(t, syscall.Kill(targets[0].PID, syscall.SIGKILL)) // no provisioner is watching
	e, err := st.Get(context.Background(), first.Key("r-unwatched"))
	require.NoError(t, err)
	testenv.Eventually(t, 5*time.Second, "the SUT and its shim gone", func() bool { return !provtest.Alive(e.Rec.Process.ShimPID) })

	second := newBackend(t, st, nil)
	msg := provtest.AwaitCrash(t, provtest.Watch(second, e))
	require.Contains(t, msg, "exited while no provisioner was watching it: exit status 137 (killed by signal 9, killed); last output: working")
}

func TestAReusedPidIsNotTakenForTheSUT(t *testing.T) {
	t.Parallel()
	st, b := fixture(t, nil)
	// An unrelated process of ours holds the pid the record names, but it
	// started at another time: the SUT is gone, and the stranger is left
	// alone.
	stranger := exec.Command("sleep", "60")
	require.NoError(t, stranger.Start())
	t.Cleanup(func() { _ = stranger.Process.Kill(); _ = stranger.Wait() })
	pid := stranger.Process.Pid
	key := b.Key("r-reused")
	_, _, err := st.Create(context.Background(), key, state.Record{RunID: "r-reused", Backend: "local", Node: "n1", State: state.Running,
		Process: &state.Process{ShimPID: pid, ShimStartTicks: provtest.Stat(t, pid).StartTicks + 1, PGID: pid, PID: pid, BootID: bootID(t),
			Log: t.TempDir() + "/sut.log", Status: t.TempDir() + "/exit-status"}})
	require.NoError(t, err)
	e, err := st.Get(context.Background(), key)
	require.NoError(t, err)
	require.Contains(t, provtest.AwaitCrash(t, provtest.Watch(b, e)), "exited without recording an exit status")
	isCrash, _, err := b.Remove(context.Background(), "r-reused", &e)
	require.NoError(t, err)
	require.True(t, isCrash)
	require.True(t, provtest.Alive(pid), "a process with the recorded pid but another start time is not signalled")
}

func bootID(t *testing.T) string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	require.NoError(t, err)
	return strings.TrimSpace(string(raw))
}

func TestLeftoversAreFoundByTheirMarkersAndRemoved(t *testing.T) {
	t.Parallel()
	st, b := fixture(t, nil)
	p := cmd("r-left", "exec sleep 60")
	targets, err := provision(t, st, b, p)
	require.NoError(t, err)
	lefts := leftovers(t, b)
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
	lefts = leftovers(t, b)
	require.Empty(t, lefts)

	// Another node name on this machine (a misconfiguration) does not see
	// them either: each node's provisioner stops only its own.
	elsewhere := newBackend(t, st, func(c *local.Config) { c.Node = "n2" })
	_, err = provision(t, st, b, cmd("r-n1", "exec sleep 60"))
	require.NoError(t, err)
	defer func() { _, _, _ = b.Remove(context.Background(), "r-n1", nil) }()
	lefts = leftovers(t, elsewhere)
	require.Empty(t, lefts)
	_, _, err = elsewhere.Remove(context.Background(), "r-n1", nil)
	require.NoError(t, err)
	lefts = leftovers(t, b)
	require.Len(t, lefts, 1, "untouched by the other node name")
	_, _, err = b.Remove(context.Background(), "r-n1", nil)
	require.NoError(t, err)

	// Another installation's processes are not ours to see.
	other, ob := fixture(t, nil)
	_, err = provision(t, other, ob, cmd("r-theirs", "exec sleep 60"))
	require.NoError(t, err)
	defer func() { _, _, _ = ob.Remove(context.Background(), "r-theirs", nil) }()
	lefts = leftovers(t, b)
	require.Empty(t, lefts)
}

// TestStopOnShutdownStopsTheSUTsAndTheNextProvisionerSaysSo: greenflow dev
// stops its SUTs with it; the run cannot go on, and whoever adopts its
// record reports that.
func TestStopOnShutdownStopsTheSUTsAndTheNextProvisionerSaysSo(t *testing.T) {
	t.Parallel()
	st := records(t, "")
	cfg := local.Default()
	cfg.Node, cfg.StateDir, cfg.StartupGrace, cfg.StopOnShutdown = "n1", t.TempDir(), 100*time.Millisecond, true
	dev, err := local.New(cfg, local.Deps{Store: st, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	targets, err := provision(t, st, dev, cmd("r-dev", "echo serving; exec sleep 60"))
	require.NoError(t, err)
	provtest.Watch(dev, running(t, st, dev, "r-dev", targets))
	dev.Close()
	require.False(t, provtest.Alive(targets[0].PID), "stopped with its provisioner")

	next := newBackend(t, st, nil)
	e, err := st.Get(context.Background(), next.Key("r-dev"))
	require.NoError(t, err)
	require.True(t, e.Rec.Process.StoppedAtShutdown)
	require.Contains(t, provtest.AwaitCrash(t, provtest.Watch(next, e)), "stopped when its provisioner shut down; last output: serving")
}
