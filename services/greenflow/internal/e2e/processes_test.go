package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// syncBuffer collects a child's output safely.
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

// TestServicesAsSeparateProcesses runs each service as its own binary against
// external NATS, Kafka and ClickHouse given by flags, runs an experiment
// through them, then stops every service with SIGTERM and checks each exits
// cleanly within the drain bound.
func TestServicesAsSeparateProcesses(t *testing.T) {
	bin := binaries(t)
	natsURL := testenv.NATS(t)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer kafka.Close()
	dsn := testenv.ClickHouseDSN(t)
	brokers := kafka.ListenAddrs()[0]

	common := []string{"--nats-url", natsURL, "--clickhouse-dsn", dsn, "--kafka-brokers", brokers, "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"}
	services := map[string][]string{
		"scheduler":        nil,
		"provisioner":      {"--uc3-command", filepath.Join(bin, "uc3-processor")},
		"load-generator":   nil,
		"energy-collector": {"--interval", "200ms", "--spool-dir", t.TempDir()},
		"analyzer":         nil,
	}
	type proc struct {
		cmd *exec.Cmd
		out *syncBuffer
	}
	procs := map[string]proc{}
	for name, extra := range services {
		cmd := exec.Command(filepath.Join(bin, name), append(append([]string{}, common...), extra...)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		require.NoError(t, cmd.Start(), name)
		procs[name] = proc{cmd, out}
	}
	defer func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := bus.Connect(ctx, natsURL, "e2e-test", zap.NewNop(), nil)
	require.NoError(t, err)
	defer b.Close()
	id, _ := submitExample(ctx, t, b, shortPhases)
	obs := observe(ctx, t, b, id)
	testenv.Eventually(t, 2*time.Minute, "experiment to finish", func() bool {
		for name, p := range procs {
			if p.cmd.ProcessState != nil {
				t.Fatalf("%s exited early: %s", name, p.out.String())
			}
		}
		return obs.state() != ""
	})
	if obs.state() != "done" {
		for name, p := range procs {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	}
	require.Equal(t, "done", obs.state())

	st, err := store.Open(ctx, dsn, zap.NewNop())
	require.NoError(t, err)
	defer st.Close()
	rows, err := cli.LoadResults(ctx, st, id)
	require.NoError(t, err)
	require.NotEmpty(t, rows)
	obs.mu.Lock()
	for _, r := range rows {
		require.Equal(t, "done", r.State)
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		require.Equal(t, float64(obs.finished[r.RunID].RecordsSent), r.Metrics["records_sent_total"])
	}
	obs.mu.Unlock()

	// Graceful shutdown: SIGTERM, exit status 0 within the drain bound.
	for name, p := range procs {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		waited := make(chan error, 1)
		go func() { waited <- p.cmd.Wait() }()
		select {
		case err := <-waited:
			require.NoError(t, err, "%s exit status; output:\n%s", name, p.out.String())
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop within 15s of SIGTERM", name)
		}
	}
}
