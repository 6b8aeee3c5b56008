package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ChildProc is the test binary re-executed as a process of its own, running
// a service instead of the tests (its TestMain calls RunAsChild), with its
// lifecycle: its log kept in a file, killed at cleanup. A crash test kills it with SIGKILL: an in-process "crash" (closing
// a connection) still lets buffers flush, which hides exactly the losses
// such tests look for. The load generator's and the energy collector's
// crash tests use it.
type ChildProc struct {
	Name string
	Log  string // the file holding its stdout and stderr

	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's, once done is closed
}

// StartChildProc re-executes the test binary, running no tests, in the
// mode env names (see Child and RunAsChild) with extraEnv ("K=V") added. It
// is killed at cleanup if still running; when the test failed, the last
// lines of its log are printed.
func StartChildProc(tb testing.TB, name, env string, extraEnv ...string) *ChildProc {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	f, err := os.Create(logPath)
	require.NoError(tb, err)
	cmd := Child(env, []string{"-test.run=^$"}, extraEnv...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Start()
	_ = f.Close() // the child has its own descriptor
	require.NoError(tb, err)
	c := &ChildProc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	tb.Cleanup(func() {
		c.Kill()
		if tb.Failed() {
			c.dumpLog(tb)
		}
	})
	return c
}

// Pid is the process id.
func (c *ChildProc) Pid() int { return c.cmd.Process.Pid }

// Kill sends SIGKILL, unless the process is gone already, and waits until
// it is.
func (c *ChildProc) Kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// Kill9 kills the running process with SIGKILL and reaps it — no drain, no
// hand-over, no flush — and checks that SIGKILL is what ended it.
func (c *ChildProc) Kill9(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.done
	var ee *exec.ExitError
	require.ErrorAs(tb, c.err, &ee)
	require.Equal(tb, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal(), "killed by SIGKILL")
}

// Stop sends SIGTERM and waits, up to within, for a clean exit.
func (c *ChildProc) Stop(tb testing.TB, within time.Duration) {
	tb.Helper()
	require.NoError(tb, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-c.done:
		require.NoError(tb, c.err, "%s exits cleanly", c.Name)
	case <-time.After(within):
		tb.Fatalf("%s did not stop within %s", c.Name, within)
	}
}

// dumpLog prints the last lines of the log.
func (c *ChildProc) dumpLog(tb testing.TB) {
	b, err := os.ReadFile(c.Log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 100 {
		lines = lines[len(lines)-100:]
	}
	tb.Logf("log of %s (pid %d), last lines:\n%s", c.Name, c.Pid(), strings.Join(lines, "\n"))
}

// SpecChild is a mode of the test binary in which it runs one process
// configured by a JSON document S instead of the tests: Start starts one
// from a test, and TestMain hands the process's main to Run. The spec
// travels in the environment variable Env+"_SPEC".
type SpecChild[S any] struct {
	Env string // names the mode
}

// Run does nothing unless this process was started in c's mode (call it
// first in TestMain). Then it decodes the spec, runs main with a context
// cancelled on SIGTERM or SIGINT, and exits with main's code — 2 for a
// spec that does not decode.
func (c SpecChild[S]) Run(main func(ctx context.Context, spec S) int) {
	RunAsChild(c.Env, func() {
		var spec S
		if err := json.Unmarshal([]byte(os.Getenv(c.Env+"_SPEC")), &spec); err != nil {
			fmt.Fprintf(os.Stderr, "%s_SPEC: %v\n", c.Env, err)
			os.Exit(2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		code := main(ctx, spec)
		stop()
		os.Exit(code)
	})
}

// Start starts a process named name in c's mode with spec, as
// StartChildProc does.
func (c SpecChild[S]) Start(tb testing.TB, name string, spec S) *ChildProc {
	tb.Helper()
	b, err := json.Marshal(spec)
	require.NoError(tb, err, "child spec")
	return StartChildProc(tb, name, c.Env, c.Env+"_SPEC="+string(b))
}
