package console_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// seedStored writes a finished experiment into the store as the services
// leave it: two configurations of two repetitions, their phases, targets,
// run results and the nodes' samples.
func seedStored(t *testing.T, st *store.Store, id string) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixMilli()
	require.NoError(t, st.UpsertExperiment(ctx, store.Experiment{ExperimentID: id, Name: "downloads", State: events.ExperimentStateDone,
		CreatedMs: t0, GreenflowVersion: "v0.0.0-test", GitCommit: "0123456"}))
	var runs []store.Run
	var targets []store.RunTarget
	var samples []store.Sample
	for i := range 4 {
		sensors := []string{"10", "100"}[i/2]
		runID := fmt.Sprintf("%s-r%04d", id, i)
		start := t0 + int64(i)*60_000
		ph, _ := json.Marshal([]events.Phase{{Name: "baseline", StartMs: start, EndMs: start + 10_000}, {Name: "measure", StartMs: start + 10_000, EndMs: start + 40_000}})
		runs = append(runs, store.Run{ExperimentID: id, RunID: runID, Index: uint32(i), Repetition: uint32(i % 2), ConfigHash: "cfg" + sensors,
			Factors: `{"sensors":"` + sensors + `"}`, State: events.RunStateDone, Phases: string(ph), MeasureStartMs: start + 10_000, MeasureEndMs: start + 40_000})
		targets = append(targets, store.RunTarget{ExperimentID: id, RunID: runID, TargetID: "process/" + runID + "/n1", Kind: "process", Node: "n1",
			Role: results.RoleSUT})
		tput := 100.0 * float64(i/2+1) * (1 + 0.01*float64(i%2))
		require.NoError(t, st.ReplaceResults(ctx, id, runID, []store.Result{
			{ExperimentID: id, RunID: runID, Scope: results.ScopeRun, Metric: results.DurationS, Value: 30, Unit: results.UnitSecond},
			{ExperimentID: id, RunID: runID, Scope: results.ScopeRun, Metric: results.ThroughputEPS, Value: tput, Unit: results.UnitPerSecond},
			{ExperimentID: id, RunID: runID, Scope: results.ScopeRun, Metric: results.SUTEnergyJ, Value: 300 + float64(i), Unit: results.UnitJoule},
			{ExperimentID: id, RunID: runID, Scope: results.ScopeRun, Metric: results.SUTMicroJPerEvent, Value: (300 + float64(i)) / (tput * 30) * 1e6,
				Unit: results.UnitMicroJoule},
		}))
		for ts := start; ts < start+40_000; ts += 1000 {
			samples = append(samples, store.Sample{TsMs: ts, Node: "n1", Scope: "node", TargetID: "node/n1", Source: "rapl",
				PowerW: 10 + float64(i), DeltaJ: 10 + float64(i), IntervalMs: 1000})
		}
	}
	require.NoError(t, st.UpsertRuns(ctx, runs))
	require.NoError(t, st.ReplaceRunTargets(ctx, targets))
	require.NoError(t, st.InsertSamples(ctx, samples))
}

// greenflowCLI builds the greenflow command once per test binary.
func greenflowCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "greenflow")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/greenflow/greenflow/services/greenflow").CombinedOutput()
	require.NoError(t, err, "build the greenflow command: %s", out)
	return bin
}

// generated is the report's one line that depends on when it is made.
var generated = regexp.MustCompile(`report generated [0-9TZ:-]+`)

// A viewer downloads from the experiment's page the HTML report
// and the export files, and they are the very bytes `greenflow report` and
// `greenflow export` (the real command, on the same database) write for
// the experiment — but the report's generation time.
func TestDownloadsAreWhatTheCLIWrites(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	id := strings.ReplaceAll(testenv.UniqueName("exp"), "_", "-") // seed waits for ids with "exp-"
	e.seed(1, time.Now(), func(_ int, r map[string]any) { r["id"] = id })
	seedStored(t, e.store, id)
	cli := greenflowCLI(t)

	b := e.signedIn("vera", auth.Viewer)
	code, page, _ := b.get("/experiments/" + id)
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, `href="/experiments/`+id+`/report.html"`)
	require.Contains(t, page, `href="/experiments/`+id+`/export.zip"`)

	// The report.
	code, got, resp := b.get("/experiments/" + id + "/report.html")
	require.Equal(t, http.StatusOK, code, got)
	require.Equal(t, `attachment; filename="report-`+id+`.html"`, resp.Header.Get("Content-Disposition"))
	want, err := exec.Command(cli, "report", "--clickhouse-dsn", e.dsn, "-o", "-", id).Output()
	require.NoError(t, err, "greenflow report")
	require.Contains(t, string(want), "<svg", "the CLI's report has its charts")
	require.Equal(t, generated.ReplaceAllString(string(want), "report generated T"), generated.ReplaceAllString(got, "report generated T"))

	// The export files, zipped.
	dir := t.TempDir()
	out, err := exec.Command(cli, "export", "--clickhouse-dsn", e.dsn, "--dir", dir, id).CombinedOutput()
	require.NoError(t, err, "greenflow export: %s", out)
	cliFiles := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, f := range entries {
		cliFiles["export-"+id+"/"+f.Name()], err = os.ReadFile(filepath.Join(dir, f.Name()))
		require.NoError(t, err)
	}
	code, body, resp := b.get("/experiments/" + id + "/export.zip")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "application/zip", resp.Header.Get("Content-Type"))
	zipped := unzip(t, []byte(body))
	require.Equal(t, names(cliFiles), names(zipped))
	for _, want := range []string{"runs.csv", "phases.csv", "targets.csv", "results.csv", "samples.csv", "summary.csv", "meters.csv", "provenance.json"} {
		require.Contains(t, zipped, "export-"+id+"/"+want)
	}
	for name, b := range cliFiles {
		require.Equal(t, string(b), string(zipped[name]), name)
	}
	require.Greater(t, bytes.Count(zipped["export-"+id+"/samples.csv"], []byte("\n")), 100, "the runs' samples")
	// Without samples, as --no-samples.
	_, body, _ = b.get("/experiments/" + id + "/export.zip?samples=0")
	require.NotContains(t, unzip(t, []byte(body)), "export-"+id+"/samples.csv")
}

// An experiment the user's token cannot read gives no download.
func TestDownloadsNeedTheExperiment(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	b := e.signedIn("vera", auth.Viewer)
	for _, path := range []string{"/experiments/nosuch/report.html", "/experiments/nosuch/export.zip"} {
		code, body, _ := b.get(path)
		require.Equal(t, http.StatusNotFound, code, "%s: %s", path, body)
	}
	// Signed out: to the sign-in form.
	code, _, resp := e.browser().get("/experiments/nosuch/report.html")
	require.Equal(t, http.StatusSeeOther, code)
	require.Contains(t, resp.Header.Get("Location"), "/signin")
}

func unzip(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		require.NoError(t, err)
		out[f.Name], err = io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
	}
	return out
}

func names(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
