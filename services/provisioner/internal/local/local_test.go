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

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
)

func cmd(run, script string) events.RunProvision {
	return events.RunProvision{ExperimentID: "e", RunID: run, SUT: events.SUT{Template: "command", Backend: "local", Command: []string{"sh", "-c", script}}}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestStartupFailureFailsTheProvision(t *testing.T) {
	b := local.New(local.Config{Node: "n1", StateDir: t.TempDir()}, zap.NewNop(), nil)
	_, err := b.Provision(context.Background(), cmd("r1", "echo cannot reach broker >&2; exit 3"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "exit status 3")
	require.Contains(t, err.Error(), "cannot reach broker")
}

func TestCrashDuringRunIsReportedWithStatusAndLastOutput(t *testing.T) {
	crashed := make(chan string, 1)
	b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond, StateDir: t.TempDir()}, zap.NewNop(), func(_, run, reason string) { crashed <- run + ": " + reason })
	targets, err := b.Provision(context.Background(), cmd("r2", "echo starting; sleep 0.5; echo out of memory; exit 7"))
	require.NoError(t, err)
	require.Len(t, targets, 1)
	require.Equal(t, "n1", targets[0].Node)
	require.Equal(t, "sut", targets[0].Role)
	select {
	case msg := <-crashed:
		require.Contains(t, msg, "r2: exit status 7")
		require.Contains(t, msg, "out of memory")
	case <-time.After(10 * time.Second):
		t.Fatal("crash not reported")
	}
	isCrash, reason, err := b.Teardown(context.Background(), "r2")
	require.NoError(t, err)
	require.True(t, isCrash)
	require.Contains(t, reason, "exit status 7")
}

func TestTeardownKillsTheWholeProcessGroupAndProvisionIsIdempotent(t *testing.T) {
	pidFile := t.TempDir() + "/child.pid"
	b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond, StopTimeout: 2 * time.Second, StateDir: t.TempDir()}, zap.NewNop(), nil)
	// The SUT starts a child of its own, as a JVM launcher script would.
	p := cmd("r3", "sleep 60 & echo $! > "+pidFile+"; wait")
	targets, err := b.Provision(context.Background(), p)
	require.NoError(t, err)
	again, err := b.Provision(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, targets, again, "a redelivered provision returns the same targets and starts nothing")
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
	isCrash, _, err := b.Teardown(context.Background(), "r3")
	require.NoError(t, err)
	require.False(t, isCrash)
	testenv.Eventually(t, 5*time.Second, "child killed with its group", func() bool { return !alive(child) })
	// Tearing down again is harmless.
	_, _, err = b.Teardown(context.Background(), "r3")
	require.NoError(t, err)
	require.Empty(t, b.Running())
}

func TestUnknownTemplateParameterIsAClearError(t *testing.T) {
	b := local.New(local.Config{Node: "n1", UC3Command: []string{"/bin/true"}}, zap.NewNop(), nil)
	_, err := b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-go", Params: map[string]string{"colour": "red"}}})
	require.ErrorContains(t, err, "unknown parameter sut.params.colour")
	_, err = b.Command(events.RunProvision{RunID: "r", SUT: events.SUT{Template: "uc3-flink"}})
	require.ErrorContains(t, err, "cannot run on the local backend")
}

// stat reads a process's pid, state, session and process group.
func stat(t *testing.T, pid int) (state string, pgrp, session int) {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	require.NoError(t, err)
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	pgrp, _ = strconv.Atoi(f[2])
	session, _ = strconv.Atoi(f[3])
	return f[0], pgrp, session
}

func TestSUTHasItsOwnSessionLogAndExitStatus(t *testing.T) {
	dir := t.TempDir()
	crashed := make(chan string, 1)
	b := local.New(local.Config{Node: "n1", StartupGrace: 200 * time.Millisecond, StateDir: dir}, zap.NewNop(),
		func(_, run, reason string) { crashed <- run + ": " + reason })
	targets, err := b.Provision(context.Background(), cmd("r-session", "echo hello from the sut; exec sleep 60"))
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

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL)) // the SUT dies on its own, e.g. the OOM killer
	select {
	case msg := <-crashed:
		require.Contains(t, msg, "r-session: exit status 137 (killed by signal 9, killed)")
		require.Contains(t, msg, "last output: hello from the sut")
	case <-time.After(10 * time.Second):
		t.Fatal("crash not reported")
	}
	raw, err := os.ReadFile(dir + "/runs/r-session/exit-status")
	require.NoError(t, err)
	require.Equal(t, "137\n", string(raw), "the shim recorded the exit status")
}

func TestTeardownKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond, StopTimeout: 500 * time.Millisecond, StateDir: t.TempDir()},
		zap.NewNop(), nil)
	targets, err := b.Provision(context.Background(), cmd("r-stubborn", `trap "" TERM; while :; do sleep 1; done`))
	require.NoError(t, err)
	_, pgrp, _ := stat(t, targets[0].PID)
	start := time.Now()
	crashedRun, _, err := b.Teardown(context.Background(), "r-stubborn")
	require.NoError(t, err)
	require.False(t, crashedRun)
	require.Less(t, time.Since(start), 30*time.Second, "SIGKILL follows SIGTERM after the stop timeout")
	testenv.Eventually(t, 10*time.Second, "the whole process group gone (and reaped)", func() bool { return syscall.Kill(-pgrp, 0) != nil })
}

// TestSUTOutlivesItsProvisioner runs a provisioner in a child process (this
// test binary, re-executed), kills that child with SIGKILL and checks the
// SUT it started is still running.
func TestSUTOutlivesItsProvisioner(t *testing.T) {
	if os.Getenv("GF_LOCAL_HELPER") == "provision" {
		b := local.New(local.Config{Node: "n1", StartupGrace: 100 * time.Millisecond, StateDir: os.Getenv("GF_STATE_DIR")}, zap.NewNop(), nil)
		targets, err := b.Provision(context.Background(), cmd("r-outlive", "while :; do echo beat >> "+os.Getenv("GF_BEATS")+"; sleep 0.05; done"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("pid=%d\n", targets[0].PID)
		select {} // until killed
	}
	beats := t.TempDir() + "/beats"
	helper := exec.Command(os.Args[0], "-test.run", "^TestSUTOutlivesItsProvisioner$")
	helper.Env = append(os.Environ(), "GF_LOCAL_HELPER=provision", "GF_STATE_DIR="+t.TempDir(), "GF_BEATS="+beats)
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
}
