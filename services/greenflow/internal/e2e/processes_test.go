package e2e

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// TestServicesAsSeparateProcesses runs each service as its own binary against
// external NATS, Kafka and ClickHouse given by flags, runs an experiment
// through them, then stops every service with SIGTERM and checks each exits
// cleanly within the drain bound.
func TestServicesAsSeparateProcesses(t *testing.T) {
	bin := binaries(t)
	secure := testenv.NATSWithAuth(t) // every process connects as its own NATS user
	natsURL := secure.URL
	kafka := testenv.Kafka(t, 0)
	dsn := testenv.ClickHouseDSN(t)
	brokers := kafka.ListenAddrs()[0]

	// The DSN carries the ClickHouse password: by file, not on the command line.
	dsnFile := filepath.Join(t.TempDir(), "clickhouse.dsn")
	require.NoError(t, os.WriteFile(dsnFile, []byte(dsn), 0o600))
	common := []string{"--nats-url", natsURL, "--clickhouse-dsn-file", dsnFile, "--kafka-brokers", brokers, "--metrics-addr", "127.0.0.1:0", "--log-level", "warn"}
	services := map[string][]string{
		"scheduler":        nil,
		"provisioner":      {"--uc3-command", filepath.Join(bin, "uc3-processor")},
		"load-generator":   nil,
		"energy-collector": {"--interval", "200ms", "--spool-dir", t.TempDir()},
		"analyzer":         nil,
	}
	procs := map[string]*process{}
	for name, extra := range services {
		creds := []string{"--nats-nkey-file", secure.Creds(name).NKeyFile}
		procs[name] = startProcess(t, name, append(append(append([]string{}, common...), creds...), extra...)...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adminOpts, err := secure.Creds(bus.UserAdmin).Options()
	require.NoError(t, err)
	b := devstacktest.Bus(t, natsURL, adminOpts...)
	id, _, obs := submitExample(ctx, t, b, phases("1s", "1s", "4s"), events.TypeLoadFinished)
	final := obs.WaitFinal(t, 2*time.Minute, func() {
		for name, p := range procs {
			if !p.running() {
				t.Fatalf("%s exited early: %s", name, p.output())
			}
		}
	})
	if final != events.ExperimentStateDone {
		for name, p := range procs {
			t.Logf("%s output:\n%s", name, p.output())
		}
	}
	require.Equal(t, events.ExperimentStateDone, final)

	st := testenv.StoreOn(t, dsn)
	rows, err := report.LoadResults(ctx, st, id)
	require.NoError(t, err)
	require.NotEmpty(t, rows)
	for _, r := range rows {
		requireDoneUnlessStarved(t, r)
		require.Greater(t, r.Metrics["sut_energy_j"], 0.0)
		fin, ok := devstacktest.Last[*events.LoadFinished](obs, r.RunID)
		require.True(t, ok, "load generator reported run %s", r.RunID)
		require.Equal(t, float64(fin.RecordsSent), r.Metrics["records_sent_total"])
	}

	// No process was refused a subject its work needs: the bus logs every
	// permission violation the server reports.
	for name, p := range procs {
		require.NotContains(t, p.output(), "nats reported an error", "%s output:\n%s", name, p.output())
	}

	// Graceful shutdown: SIGTERM, exit status 0 within the drain bound.
	for name, p := range procs {
		exited, err := p.stop(syscall.SIGTERM, 15*time.Second)
		require.True(t, exited, "%s did not stop within 15s of SIGTERM (%v)", name, err)
		require.NoError(t, err, "%s exit status; output:\n%s", name, p.output())
	}
}
