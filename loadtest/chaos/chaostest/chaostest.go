// Package chaostest runs a short form of the chaos suite as a Go test: the
// seed from GREENFLOW_CHAOS_SEED or the clock, the suite's progress as test
// log lines, its results kept (and named) when the test fails, every
// violation and harness problem a test error. TestChaosShort and TestChaosKubeShort use it.
package chaostest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/loadtest/chaos"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// lineLogger turns the suite's progress lines into test log lines.
type lineLogger struct{ t *testing.T }

func (l lineLogger) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Run runs the suite as configured by setup (on top of the defaults for
// the repository, a seed, its own binaries, results and ClickHouse) within
// the given time, and fails t on any violation. name names the results
// directory under the temporary directory.
func Run(t *testing.T, name string, within time.Duration, setup func(*chaos.Config)) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("GREENFLOW_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		require.NoError(t, err, "GREENFLOW_CHAOS_SEED: expected an integer")
		seed = v
	}
	results := filepath.Join(os.TempDir(), fmt.Sprintf("greenflow-%s-%d", name, seed))
	require.NoError(t, os.RemoveAll(results))
	cfg := chaos.DefaultConfig(root)
	cfg.BinDir = filepath.Join(t.TempDir(), "bin")
	cfg.ResultsDir = results
	cfg.Seed = seed
	cfg.ClickHouseBase = testenv.ClickHouseBase(t)
	cfg.Progress = lineLogger{t}
	setup(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	t.Logf("seed %d (GREENFLOW_CHAOS_SEED=%d repeats it); report in %s", seed, seed, results)
	rep, err := chaos.Run(ctx, cfg)
	require.NoError(t, err, "the chaos harness could not do its job (report in %s)", results)
	for _, v := range rep.Violations() {
		t.Errorf("violation: %s", v)
	}
	// A slot whose kill was not delivered or whose facts could not be
	// gathered asked nothing: it must not pass as a clean one.
	for _, e := range rep.HarnessErrors() {
		t.Errorf("harness: %s", e)
	}
	if t.Failed() {
		t.Logf("report, per-run facts and every process's log: %s", results)
	} else {
		_ = os.RemoveAll(results)
	}
}
