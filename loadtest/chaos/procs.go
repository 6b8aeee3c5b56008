package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one child process of the suite — a service instance, the NATS
// server or the Kafka broker — that it starts, kills with SIGKILL and starts
// again. Output of every start is appended to one log file. A process that
// exits without being asked to is an unexpected exit: it is recorded and
// started again after a second, as a supervisor (systemd, a kubelet) would.
type Proc struct {
	Name  string
	Path  string
	Args  []string
	Env   []string
	Ready func(ctx context.Context) error // answers nil once the process serves
	Log   string

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	wantDown   bool // a kill or stop is in progress: an exit is expected
	starts     int
	unexpected []Exit
	restartOn  bool // restart after an unexpected exit
	closed     bool
}

// Exit is an unexpected exit of a process.
type Exit struct {
	Proc   string    `json:"proc"`
	At     time.Time `json:"at"`
	Status string    `json:"status"`
}

// Start starts the process (it must not be running).
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *Proc) startLocked() error {
	if p.closed {
		return fmt.Errorf("start %s: the suite is shutting down", p.Name)
	}
	if p.cmd != nil {
		return fmt.Errorf("start %s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== chaos: start #%d of %s at %s: %s %s\n", p.starts, p.Name, time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a signal to the suite does not reach it
	// first; the kernel kills it if the suite dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.wantDown = cmd, exited, false
	go func() {
		err := cmd.Wait()
		status := "exit status 0"
		if err != nil {
			status = err.Error()
		}
		fmt.Fprintf(logf, "=== chaos: %s (pid %d) ended at %s: %s\n", p.Name, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), status)
		_ = logf.Close()
		p.mu.Lock()
		expected := p.wantDown
		if p.cmd == cmd {
			p.cmd = nil
		}
		if !expected {
			p.unexpected = append(p.unexpected, Exit{Proc: p.Name, At: time.Now(), Status: status})
		}
		restart := !expected && p.restartOn && !p.closed
		p.mu.Unlock()
		close(exited)
		if restart {
			time.AfterFunc(time.Second, func() {
				p.mu.Lock()
				defer p.mu.Unlock()
				if p.cmd == nil && !p.closed && !p.wantDown {
					_ = p.startLocked()
				}
			})
		}
	}()
	return nil
}

// Pid is the running process's id, 0 when it is not running.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL (kill -9) to the process — not its group: children it
// started in groups of their own live or die by its design — and waits for
// it to be gone. It returns the pid killed.
func (p *Proc) Kill() (int, error) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil {
		p.mu.Unlock()
		return 0, fmt.Errorf("kill %s: not running", p.Name)
	}
	p.wantDown = true
	p.mu.Unlock()
	pid := cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return pid, fmt.Errorf("kill -9 %s (pid %d): %w", p.Name, pid, err)
	}
	select {
	case <-exited:
		return pid, nil
	case <-time.After(10 * time.Second):
		return pid, fmt.Errorf("kill -9 %s (pid %d): still running after 10s", p.Name, pid)
	}
}

// Stop ends the process with SIGTERM, then SIGKILL after timeout; it
// returns the exit status (nil for a clean exit 0).
func (p *Proc) Stop(timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.wantDown = true
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.Name, timeout)
	}
	if st := cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("%s exited with %s after SIGTERM", p.Name, st)
	}
	return nil
}

// Close stops the process for good: no restart after this.
func (p *Proc) Close(timeout time.Duration) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.Stop(timeout)
}

// WaitReady polls Ready until it answers nil, the process exits, or within
// passes.
func (p *Proc) WaitReady(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last error
	for {
		if p.Pid() == 0 {
			last = errors.New("not running")
		} else if p.Ready == nil {
			return nil
		} else if last = p.Ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s: %v (log: %s)", p.Name, within, last, p.Log)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Unexpected returns the unexpected exits so far.
func (p *Proc) Unexpected() []Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Exit(nil), p.unexpected...)
}

// httpReady answers nil when url returns 200.
func httpReady(url string) func(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// tcpReady answers nil when addr accepts a connection.
func tcpReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Build compiles every service, the NATS server and the suite's Kafka
// broker into dir (go build, from the module cache: nothing is fetched when
// go.sum is complete). root is the repository root.
func Build(ctx context.Context, root, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create bin dir: %w", err)
	}
	builds := [][]string{
		{"build", "-o", dir + "/", "./services/..."},
		{"build", "-o", filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2"},
		{"build", "-o", filepath.Join(dir, "kfake-broker"), "./loadtest/chaos/cmd/kfake-broker"},
	}
	for _, args := range builds {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}
