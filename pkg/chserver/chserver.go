// Package chserver runs a ClickHouse server as a child process bound to
// 127.0.0.1 with its own data directory. `greenflow dev` and the test harness
// use it when no external ClickHouse is given. It works with Debian's
// clickhouse-server 18.16 and with current `clickhouse server` binaries.
package chserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/greenflow/greenflow/pkg/freeport"
)

// ErrNoBinary means no ClickHouse server binary was found.
var ErrNoBinary = errors.New("no clickhouse server binary found (looked for clickhouse-server and clickhouse on PATH and in /usr/sbin, /usr/bin); install it with `apt-get install -y clickhouse-server` as root, or pass --clickhouse-dsn to use a running server")

// Server is a running child ClickHouse.
type Server struct {
	Dir      string
	TCPPort  int
	HTTPPort int
	cmd      *exec.Cmd
	// done is closed when the process has exited, exitErr then says how.
	done    chan struct{}
	exitErr error
	// passwords of UserWriter and UserReader (users.go).
	passwords map[string]string
}

// DSN is the native-protocol address for clickhouse-go, as the writer
// (inserts and migrations). It carries the password: never log it (pkg/store
// redacts DSNs in its errors).
func (s *Server) DSN(database string) string { return s.dsn(UserWriter, database) }

// ReaderDSN is DSN as the read-only user: what the CLI's queries and
// dashboards need.
func (s *Server) ReaderDSN(database string) string { return s.dsn(UserReader, database) }

// Base is the writer's DSN without a database.
func (s *Server) Base() string { return strings.TrimSuffix(s.DSN(""), "/") }

func (s *Server) dsn(user, database string) string {
	u := url.URL{Scheme: "clickhouse", User: url.UserPassword(user, s.passwords[user]),
		Host: fmt.Sprintf("127.0.0.1:%d", s.TCPPort), Path: "/" + database}
	return u.String()
}

// FindBinary returns the server command line prefix.
func FindBinary() ([]string, error) {
	for _, name := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p}, nil
		}
	}
	for _, name := range []string{"clickhouse", "/usr/bin/clickhouse"} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p, "server"}, nil
		}
	}
	return nil, ErrNoBinary
}

// Start launches a server whose state lives in dir (created if needed) and
// waits until it answers, at most 60 s. Ports are chosen free on 127.0.0.1.
func Start(ctx context.Context, dir string) (*Server, error) {
	bin, err := FindBinary()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("clickhouse dir: %w", err)
	}
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("create clickhouse dir: %w", err)
		}
	}
	ports, err := freeport.Get(2)
	if err != nil {
		return nil, err
	}
	tcp, httpPort := ports[0], ports[1]
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(configXML(dir, tcp, httpPort)), 0o600); err != nil {
		return nil, fmt.Errorf("write clickhouse config: %w", err)
	}
	passwords, err := EnsurePasswords(dir)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "users.xml"), []byte(usersXML(passwords)), 0o600); err != nil {
		return nil, fmt.Errorf("write clickhouse users: %w", err)
	}
	args := append(bin[1:], "--config-file="+filepath.Join(dir, "config.xml"))
	cmd := exec.Command(bin[0], args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(dir, "log", "stdout.log"))
	if err != nil {
		return nil, fmt.Errorf("create clickhouse log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin[0], err)
	}
	s := &Server{Dir: dir, TCPPort: tcp, HTTPPort: httpPort, cmd: cmd, done: make(chan struct{}), passwords: passwords}
	go func() { s.exitErr = cmd.Wait(); _ = logf.Close(); close(s.done) }()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://127.0.0.1:%d/?query=SELECT%%201", s.HTTPPort)
	client := &http.Client{Timeout: time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("clickhouse readiness request: %w", err)
		}
		req.SetBasicAuth(UserReader, s.passwords[UserReader])
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("clickhouse exited during start-up (%v); see %s", s.exitErr, s.logTail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clickhouse not ready after %s; see %s", within, s.logTail())
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "log", "err.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return filepath.Join(s.Dir, "log") + ": " + strings.Join(lines, " | ")
}

// Stop terminates the server (SIGTERM, then SIGKILL after 15 s) and waits.
// A server that has exited (stopped before, or died) is left alone: its
// process group id may belong to another process by now.
func (s *Server) Stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	if s.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	return nil
}

// configXML: the server's files are its user's only (umask 077; its
// default, 027, lets the group read every table).
func configXML(dir string, tcp, httpPort int) string {
	return fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%[1]s/log/server.log</log><errorlog>%[1]s/log/err.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <umask>077</umask>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</yandex>
`, dir, tcp, httpPort)
}
