package provisioner_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// provisionerBinary builds bin/provisioner into a directory of the test.
func provisionerBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-o", dir+"/", "./services/provisioner")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return filepath.Join(dir, "provisioner")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is bin/provisioner running as a child of the test.
type process struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func (w *world) startProcess(t *testing.T, bin, stateDir string) *process {
	t.Helper()
	cmd := exec.Command(bin, "--nats-url", w.nats, "--kafka-brokers", w.brokers[0], "--metrics-addr", "",
		"--kubernetes", "off", "--state-dir", stateDir, "--node", "node-a", "--log-level", "info")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, out: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("provisioner output:\n%s", out.String())
		}
	})
	return p
}

// logged reports a log line with message msg about run runID.
func (p *process) logged(msg, runID string) bool {
	for _, line := range strings.Split(p.out.String(), "\n") {
		if strings.Contains(line, `"msg":"`+msg+`"`) && strings.Contains(line, `"run_id":"`+runID+`"`) {
			return true
		}
	}
	return false
}

// kill9 kills the provisioner with SIGKILL: no drain, no goodbye.
func (p *process) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	_ = p.cmd.Wait()
}

// TestProvisionerKilledWithSIGKILL is the crash test with real processes:
// bin/provisioner provisions a local run and is killed with SIGKILL; the
// SUT runs on; a restarted provisioner adopts it and reports its crash
// with its exit status; a crash while no provisioner runs is reported by
// the next one; and a teardown of a run nobody knows is reported lost.
func TestProvisionerKilledWithSIGKILL(t *testing.T) {
	bin := provisionerBinary(t)
	w := newWorld(t)
	stateDir := t.TempDir()
	first := w.startProcess(t, bin, stateDir)
	p := w.localRun("r-kill9", "while :; do echo heartbeat; sleep 0.1; done")
	w.provision(t, p)
	pid := w.rec.provisioned(t, p.RunID, 30*time.Second).Targets[0].PID
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	logFile := filepath.Join(stateDir, "runs", p.RunID, "sut.log")
	beats := func() int { raw, _ := os.ReadFile(logFile); return strings.Count(string(raw), "heartbeat") }

	first.kill9(t)
	after := beats()
	testenv.Eventually(t, 10*time.Second, "the SUT to run on after its provisioner was killed", func() bool { return beats() >= after+10 })
	require.True(t, alive(pid))

	restarted := time.Now()
	second := w.startProcess(t, bin, stateDir)
	testenv.Eventually(t, 20*time.Second, "the restarted provisioner to adopt the run", func() bool {
		return second.logged("watching the system under test", p.RunID)
	})
	t.Logf("measured: the restarted provisioner watches the SUT %s after its start", time.Since(restarted).Round(time.Millisecond))
	require.Nil(t, w.rec.First(events.TypeRunTornDown, p.RunID), "an adopted, live SUT is not reported")
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	killed := time.Now()
	testenv.Eventually(t, 20*time.Second, "the crash reported", func() bool { return w.rec.First(events.TypeRunTornDown, p.RunID) != nil })
	t.Logf("measured: crash of an adopted SUT reported %s after its SIGKILL", time.Since(killed).Round(time.Millisecond))
	crash := w.rec.First(events.TypeRunTornDown, p.RunID).(*events.RunTornDown)
	require.True(t, crash.Crashed)
	require.Contains(t, crash.Reason, "exit status 137 (killed by signal 9, killed); last output: heartbeat")
	td := w.rec.tornDown(t, p.RunID, 20*time.Second)
	require.True(t, td.Crashed)

	// Killed again; the SUT of another run dies while no provisioner runs.
	q := w.localRun("r-unwatched", "while :; do echo tick; sleep 0.1; done")
	w.provision(t, q)
	qpid := w.rec.provisioned(t, q.RunID, 30*time.Second).Targets[0].PID
	second.kill9(t)
	require.NoError(t, syscall.Kill(qpid, syscall.SIGTERM))
	testenv.Eventually(t, 10*time.Second, "the SUT gone", func() bool { return !alive(qpid) })
	third := time.Now()
	w.startProcess(t, bin, stateDir)
	testenv.Eventually(t, 30*time.Second, "the crash reported by the next provisioner", func() bool {
		return w.rec.First(events.TypeRunTornDown, q.RunID) != nil
	})
	t.Logf("measured: a crash during the downtime reported %s after the next provisioner started", time.Since(third).Round(time.Millisecond))
	crash = w.rec.First(events.TypeRunTornDown, q.RunID).(*events.RunTornDown)
	require.True(t, crash.Crashed)
	require.Contains(t, crash.Reason, "exited while no provisioner was watching it: exit status 143 (killed by signal 15, terminated); last output: tick")

	// A teardown of a run no provisioner ever saw.
	u := w.localRun("r-nobody", "true")
	w.teardown(t, u, "teardown:"+u.RunID)
	asked := time.Now()
	lost := w.rec.tornDown(t, u.RunID, 30*time.Second)
	t.Logf("measured: the unknown run reported lost %s after its teardown command", time.Since(asked).Round(time.Millisecond))
	require.True(t, lost.Lost)
	require.False(t, lost.Crashed)
}
