package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/pkg/uc3"
	"github.com/greenflow/greenflow/services/uc3-processor/app"
)

// runMainEnv makes the test binary act as the command, so the tests can send
// it real signals.
const runMainEnv = "GREENFLOW_UC3_PROCESSOR_RUN_MAIN"

func TestMain(m *testing.M) {
	testenv.RunAsChild(runMainEnv, main)
	os.Exit(m.Run())
}

func TestRunReportsEveryConfigProblem(t *testing.T) {
	var stderr bytes.Buffer
	err := app.Service.Command(context.Background(), []string{"--brokers", " , ", "--format", "xml", "--window-advance", "0s", "--metrics-addr", ""}, &stderr)
	require.ErrorContains(t, err, "brokers: must list at least one broker")
	require.ErrorContains(t, err, `format: "xml" is not "avro" or "json"`)
	require.ErrorContains(t, err, "window_advance: 0s is not a positive")

	require.Error(t, app.Service.Command(context.Background(), []string{"--no-such-flag"}, &stderr))
	require.ErrorContains(t, app.Service.Command(context.Background(), []string{"stray"}, &stderr), `unexpected arguments ["stray"]`)
	require.ErrorContains(t, app.Service.Command(context.Background(), []string{"--log-level", "loud"}, &stderr), `log level "loud"`)
	require.NoError(t, app.Service.Command(context.Background(), []string{"-h"}, &stderr))
	require.Contains(t, stderr.String(), "-emit-interval")
}

// TestBinaryServesMetricsAndStopsOnSIGTERM runs the command against an
// in-process Kafka, feeds it a record, reads its metrics, and stops it.
func TestBinaryServesMetricsAndStopsOnSIGTERM(t *testing.T) {
	cluster := testenv.Kafka(t, 2, "input", "output")
	brokers := strings.Join(cluster.ListenAddrs(), ",")

	cmd := testenv.Child(runMainEnv, []string{"--brokers", brokers, "--emit-interval", "50ms", "--metrics-addr", "127.0.0.1:0"})
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	addr := make(chan string, 1)
	var logs bytes.Buffer
	proc := testenv.Go(t, context.Background(), func(context.Context) error {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http server listening" {
				addr <- line.Addr
			}
		}
		return cmd.Wait()
	})
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // before the wait Go's cleanup does

	metricsURL := "http://" + testenv.Receive(t, addr, 20*time.Second, "the command's HTTP server started")

	get := func(path string) (int, string) {
		resp, err := http.Get(metricsURL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	// The server listens before the processor runs: ready soon after.
	var code int
	var body string
	testenv.Eventually(t, 20*time.Second, "/healthz ready", func() bool { code, body = get("/healthz"); return code == http.StatusOK })
	require.Equal(t, "ok\n", body)

	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer producer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	value := uc3.AppendConfluentAvro(nil, 1, uc3.ActivePowerRecord{Identifier: "s_0", Timestamp: time.Now().UnixMilli(), ValueInW: 10})
	require.NoError(t, producer.ProduceSync(ctx, &kgo.Record{Topic: "input", Key: []byte("s_0"), Value: value}).FirstErr())

	require.Eventually(t, func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, "greenflow_uc3_processor_records_consumed_total 1\n") &&
			strings.Contains(body, "greenflow_uc3_processor_records_emitted_total 30\n")
	}, 20*time.Second, 20*time.Millisecond, "metrics never showed the record")

	began := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, proc.Wait(10*time.Second, "the command after SIGTERM"), "exit status; logs:\n%s", logs.String())
	require.Less(t, time.Since(began), 5*time.Second)
}

func TestBinaryExitsNonZeroOnBadConfig(t *testing.T) {
	cmd := testenv.Child(runMainEnv, []string{"--format", "xml"})
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Contains(t, string(out), `uc3-processor: configure uc3-processor: format: "xml" is not "avro" or "json"`)
}
