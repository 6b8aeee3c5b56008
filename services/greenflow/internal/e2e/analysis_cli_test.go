package e2e

import (
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// TestAnalysisOfRepeatedExperiment runs two load levels with two
// repetitions each through the dev stack, then uses every analysis surface
// as a user would: the results table with its per-configuration summary, the
// HTTP results API, compare, export and report. The CLI's statistics must
// match the analyzer's stored per-configuration rows, and every run's roles
// must add up to its node energy.
func TestAnalysisOfRepeatedExperiment(t *testing.T) {
	ctx, st, b := startStack(t, 3*time.Minute)
	id, n, obs := submitExample(ctx, t, b, phases("1s", "500ms", "2s", "spec.repetitions=2"))
	require.Equal(t, 4, n)
	require.Equal(t, events.ExperimentStateDone, obs.WaitFinal(t, 2*time.Minute, nil))

	// The CLI reaches ClickHouse through --clickhouse-dsn; the state dir is
	// empty so no other dev stack is picked up.
	conn := []string{"--clickhouse-dsn", st.Endpoints.ClickHouseDSN, "--state-dir", t.TempDir()}
	run := func(args ...string) string {
		t.Helper()
		return clitest.MustRun(t, append(args, conn...)...)
	}

	table := run("results", id)
	require.Contains(t, table, "Per configuration")
	require.Contains(t, table, "±")

	// Every run is done, or failed on a load the machine starved and was
	// retried: the counts below are of the runs stored, and the plots of
	// the done ones.
	rows, err := report.LoadResults(ctx, st.Store, id)
	require.NoError(t, err)
	done := map[string]bool{}
	for _, r := range rows {
		done[r.RunID] = requireDoneUnlessStarved(t, r)
	}
	sums := report.SummarizeRuns(rows, report.DefaultLevel)
	require.Len(t, sums, 2)
	for _, s := range sums {
		require.Len(t, s.RunIDs, 2)
	}

	// HTTP results API on the stack's mux, served by the analyzer.
	srv := httptest.NewServer(st.Handler())
	defer srv.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/experiments/"+id+"/results", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+st.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var doc struct {
		Runs []struct {
			RunID   string             `json:"run_id"`
			Metrics map[string]float64 `json:"metrics"`
			Details []struct {
				Scope, Subject, Metric string
				Value                  float64
			} `json:"details"`
		} `json:"runs"`
		Configs []struct {
			ConfigHash string `json:"config_hash"`
			Runs       int    `json:"runs"`
			Metrics    map[string]struct {
				N     int      `json:"n"`
				Mean  float64  `json:"mean"`
				CILow *float64 `json:"ci_low"`
			} `json:"metrics"`
		} `json:"configs"`
		ParetoFront []string `json:"pareto_front"`
		Provenance  struct {
			SpecHash string            `json:"spec_hash"`
			Commit   string            `json:"commit"`
			Spec     json.RawMessage   `json:"spec"`
			Machine  map[string]any    `json:"machine"`
			Meters   []json.RawMessage `json:"meters"`
		} `json:"provenance"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	require.Len(t, doc.Runs, len(rows))
	// Provenance: what the results came from, with the experiment's record.
	exp, err := st.Store.GetExperiment(ctx, id)
	require.NoError(t, err)
	require.Equal(t, exp.SpecHash, doc.Provenance.SpecHash)
	require.NotEmpty(t, doc.Provenance.SpecHash)
	require.Equal(t, exp.GitCommit, doc.Provenance.Commit)
	require.NotEmpty(t, doc.Provenance.Spec)
	require.NotEmpty(t, doc.Provenance.Machine["num_cpu"])
	require.Len(t, doc.Provenance.Meters, 2, "one meter configuration per configuration")
	require.Len(t, doc.Configs, 2)
	require.NotEmpty(t, doc.ParetoFront)
	byHash := map[string]report.ConfigSummary{}
	for _, s := range sums {
		byHash[s.ConfigHash] = s
	}
	for _, c := range doc.Configs {
		require.Equal(t, 2, c.Runs)
		want := byHash[c.ConfigHash].Metrics["sut_uj_per_event"]
		got := c.Metrics["sut_uj_per_event"]
		require.Equal(t, 2, got.N)
		require.InDelta(t, want.Mean, got.Mean, 1e-9*want.Mean, "CLI and analyzer agree on the mean")
		require.NotNil(t, got.CILow)
		require.InDelta(t, want.CILow, *got.CILow, 1e-9*math.Abs(want.CILow)+1e-12, "and on the interval")
	}
	// Attribution conserves energy: the roles add up to the node total.
	for _, r := range doc.Runs {
		var roles, node float64
		for _, d := range r.Details {
			switch {
			case d.Scope == "role" && d.Metric == "energy_j":
				roles += d.Value
			case d.Scope == "node" && d.Metric == "energy_j":
				node += d.Value
			}
		}
		require.Greater(t, node, 0.0)
		require.InDelta(t, node, roles, 1e-6*node, "run %s", r.RunID)
		if done[r.RunID] {
			require.Equal(t, 0.0, r.Metrics["quality_sample_gaps"], "run %s", r.RunID)
		}
	}

	cmp := run("compare", sums[0].ConfigHash[:8], sums[1].ConfigHash[:8], "--experiment", id)
	require.Contains(t, cmp, "Welch")
	require.Contains(t, cmp, "throughput_eps")
	require.Contains(t, cmp, "sut_uj_per_event")

	// More than two groups: the two configurations named as EXP:HASH, and
	// the experiment itself (its two configurations again) — one table in
	// which each configuration is compared with the first argument that ran
	// it, and one plot.
	plotPath := filepath.Join(t.TempDir(), "compare.svg")
	var many struct {
		Baseline string          `json:"baseline"`
		Rows     []cli.GroupStat `json:"rows"`
	}
	require.NoError(t, json.Unmarshal([]byte(run("compare", id+":"+sums[0].ConfigHash[:8], id+":"+sums[1].ConfigHash[:8], id,
		"--format", "json", "--plot", plotPath)), &many))
	groupsSeen := map[string]bool{}
	for _, r := range many.Rows {
		if r.Metric == "sut_uj_per_event" {
			groupsSeen[r.Group] = true
			require.Equal(t, 2, r.N, r.Group)
		}
	}
	require.Len(t, groupsSeen, 4)
	svg, err := os.ReadFile(plotPath)
	require.NoError(t, err)
	require.Contains(t, string(svg), "sut_uj_per_event by group")

	dir := t.TempDir()
	run("export", id, "--dir", dir)
	readCSV := func(name string) []map[string]string {
		f, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err)
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		require.NoError(t, err, name)
		require.NotEmpty(t, recs, name)
		var out []map[string]string
		for _, rec := range recs[1:] {
			m := map[string]string{}
			for i, h := range recs[0] {
				m[h] = rec[i]
			}
			out = append(out, m)
		}
		return out
	}
	runsCSV := readCSV("runs.csv")
	require.Len(t, runsCSV, len(rows))
	require.NotEmpty(t, runsCSV[0]["workload.sensors"], "one column per factor")
	samples := readCSV("samples.csv")
	require.NotEmpty(t, samples)
	components := map[string]bool{}
	for _, s := range samples {
		components[s["component"]] = true
	}
	require.True(t, components["sut"], "samples are labelled with their role: %v", components)
	results := readCSV("results.csv")
	require.Greater(t, len(results), len(rows)*20)
	summary := readCSV("summary.csv")
	found := false
	for _, s := range summary {
		if s["metric"] == "sut_uj_per_event" {
			found = true
			require.Equal(t, "2", s["n"])
			_, err := strconv.ParseFloat(s["ci_low"], 64)
			require.NoError(t, err)
		}
	}
	require.True(t, found)
	// results --by config prints the same statistics as export's summary.csv.
	byConfig := run("results", id, "--by", "config", "--format", "csv")
	summaryFile, err := os.ReadFile(filepath.Join(dir, "summary.csv"))
	require.NoError(t, err)
	require.Equal(t, string(summaryFile), byConfig)
	require.NotEmpty(t, readCSV("phases.csv"))
	require.Len(t, readCSV("targets.csv"), len(rows))
	provJSON, err := os.ReadFile(filepath.Join(dir, "provenance.json"))
	require.NoError(t, err)
	var prov struct {
		SpecHash string `json:"spec_hash"`
		Seed     int64  `json:"seed"`
	}
	require.NoError(t, json.Unmarshal(provJSON, &prov))
	require.Equal(t, exp.SpecHash, prov.SpecHash)
	require.Equal(t, exp.Seed, prov.Seed)

	out := filepath.Join(t.TempDir(), "report.html")
	run("report", id, "-o", out)
	page, err := os.ReadFile(out)
	require.NoError(t, err)
	html := string(page)
	require.NotContains(t, html, "<script", "self-contained, no scripts")
	require.Contains(t, html, "<h2>Provenance</h2>")
	require.Contains(t, html, exp.SpecHash)
	for _, section := range []string{"Per configuration", "Energy per event vs load", "Throughput: did the system keep up?", "Pareto front",
		"Power over time", "Consumer lag", "Data quality", "Provenance", "Runs"} {
		require.Contains(t, html, "<h2>"+section+"</h2>")
	}
	require.NotContains(t, html, ">all<", "legend entries say what they show")
	require.Contains(t, html, ">repetitions<", "the repetitions beside each mean")
	require.Contains(t, html, ">delivered = offered<")
	// The plots are the done runs': n, each submitted run or its retry.
	require.Equal(t, n, strings.Count(html, "Consumer lag: "), "each run's lag (too short a window here for a fitted trend)")
	// Each run's SUT (a few tenths of a watt on average, with bursts of up
	// to 2 W when it emits, beside a node of 11–14 W) is drawn again on a
	// scale of its own, not squashed against the node's watts.
	require.Equal(t, n, strings.Count(html, "smaller components, own scale (sut)"), "the SUT's 0.x W not squashed against the node's watts")
	// Two load plots, throughput, the Pareto front; per run a power plot,
	// a lag plot and the plot of its smaller components.
	require.Equal(t, 4+3*n, strings.Count(html, "<svg "))
	// Every inline SVG is well-formed XML.
	for rest := html; ; {
		i := strings.Index(rest, "<svg ")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "</svg>")
		require.Positive(t, j)
		d := xml.NewDecoder(strings.NewReader(rest[i : i+j+len("</svg>")]))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		rest = rest[i+j:]
	}

	// What a reader sees: the page rendered by a real browser, saved as a
	// test artifact (GREENFLOW_TEST_ARTIFACTS, else the temp dir).
	shot := screenshot(t, out, "report-repeated-experiment.png")
	t.Logf("report screenshot: %s", shot)
}
