package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// shimScript runs the SUT in the foreground and writes its exit status to
// a file when it ends: the provisioner that started it may be gone by
// then, and a process that is not our child has no exit status to wait
// for. The traps keep the shim alive through a SIGTERM to the process
// group (a trap set to a command, unlike an ignored signal, is reset for
// the child), so a stop still records how the SUT ended; SIGKILL ends both.
const shimScript = `status=$1; shift
trap : HUP INT TERM
"$@"
code=$?
printf '%d\n' "$code" > "$status.tmp" && mv -f "$status.tmp" "$status"
exit "$code"`

// shimName is the shim's $0, as ps shows it.
const shimName = "greenflow-sut"

// Files are where a run's output and exit status go.
type Files struct {
	Dir, Log, Status string
}

// runFiles are the files of run runID under the state directory.
func runFiles(stateDir, runID string) Files {
	dir := filepath.Join(stateDir, "runs", fileName(runID))
	return Files{Dir: dir, Log: filepath.Join(dir, "sut.log"), Status: filepath.Join(dir, "exit-status")}
}

// filesOf are the files a run's record names.
func filesOf(pr *state.Process) Files {
	return Files{Dir: filepath.Dir(pr.Status), Log: pr.Log, Status: pr.Status}
}

// fileName makes a run id safe as one path element.
func fileName(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "%%%02X", r)
		}
	}
	if s := b.String(); s != "" && s != "." && s != ".." {
		return s
	}
	return "%2E" + b.String()
}

// started is a shim just started: its pid (also its process group and
// session) and start time.
type started struct {
	pid        int
	startTicks uint64
	cmd        *exec.Cmd
}

// startShim starts argv under the shim in a session and process group of
// its own, without a parent-death signal: the SUT outlives this process.
// Its output is appended to files.Log.
func startShim(fs procs, argv []string, env []string, files Files) (started, error) {
	if _, err := exec.LookPath(argv[0]); err != nil {
		return started{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	if err := os.MkdirAll(files.Dir, 0o755); err != nil {
		return started{}, fmt.Errorf("create run directory %s: %w", files.Dir, err)
	}
	if err := os.Remove(files.Status); err != nil && !errors.Is(err, os.ErrNotExist) {
		return started{}, fmt.Errorf("remove old exit status %s: %w", files.Status, err)
	}
	logf, err := os.OpenFile(files.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return started{}, fmt.Errorf("open log %s: %w", files.Log, err)
	}
	defer logf.Close() // the child keeps its own descriptor
	args := append([]string{"-c", shimScript, shimName, files.Status}, argv...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return started{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	// Reap the shim when it ends while we live (a zombie would look alive
	// to kill(2)); its exit status is in the status file anyway.
	go func() { _ = cmd.Wait() }()
	st, err := fs.Stat(pid)
	if err != nil {
		// It exited at once and was reaped: keep its pid with no start
		// time; it is reported as exited with the status it wrote.
		return started{pid: pid, cmd: cmd}, nil
	}
	return started{pid: pid, startTicks: st.StartTicks, cmd: cmd}, nil
}

// exitInfo describes how a run's SUT ended, from the shim's status file
// and the last lines of its log.
func exitInfo(files Files) string {
	status := "exited without recording an exit status (its wrapper was killed too)"
	if b, err := os.ReadFile(files.Status); err == nil {
		if code, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			status = describeExit(code)
		}
	}
	return status + "; last output: " + tail(files.Log, 5)
}

// describeExit renders a shell exit code; above 128 the shell's
// convention is 128 + the signal that killed it.
func describeExit(code int) string {
	if code > 128 && code < 128+65 {
		sig := syscall.Signal(code - 128)
		return fmt.Sprintf("exit status %d (killed by signal %d, %s)", code, code-128, sig)
	}
	return fmt.Sprintf("exit status %d", code)
}

// exitCode reads the recorded exit status; ok is false when there is none.
func exitCode(files Files) (int, bool) {
	b, err := os.ReadFile(files.Status)
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return code, err == nil
}

// tail returns the last n lines of a file joined for a message.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no output)"
	}
	defer f.Close()
	const window = 8 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(-window, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(b, []byte("?"))), "\n"), "\n")
	var out []string
	for _, l := range lines {
		if l = strings.TrimRight(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "(no output)"
	}
	return strings.Join(out[max(0, len(out)-n):], " | ")
}
