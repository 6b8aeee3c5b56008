package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/report"
	"github.com/greenflow/greenflow/pkg/svgplot"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// consoleStack is a dev stack running the console, with the console's
// and the API's addresses.
type consoleStack struct {
	st           *devstack.Stack
	console, api string
}

// startConsoleStack runs the dev stack with its API and console on free
// ports, the UC-3 processor from the built binaries.
func startConsoleStack(t *testing.T) consoleStack {
	t.Helper()
	o := devstacktest.Options(t)
	o.UC3Command = []string{filepath.Join(binaries(t), "uc3-processor")}
	st, api, con := devstacktest.StartWithConsole(t, o)
	testenv.Eventually(t, time.Minute, "the dev stack ready", func() bool {
		resp, err := http.Get(api + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return consoleStack{st: st, console: con, api: api}
}

// token creates an API token with role.
func (s consoleStack) token(t *testing.T, name string, role auth.Role) string {
	t.Helper()
	tokens, err := auth.OpenStore(context.Background(), devstacktest.AdminBus(t, s.st), nil)
	require.NoError(t, err)
	plain, _, err := tokens.Create(context.Background(), name, role, 0)
	require.NoError(t, err)
	return plain
}

// submitAPI submits the example with overrides through the scheduler's
// HTTP API with token and returns the experiment id.
func (s consoleStack) submitAPI(t *testing.T, token string, oneRun bool, sets ...string) string {
	t.Helper()
	example, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "uc3-local.yaml"))
	require.NoError(t, err)
	if oneRun {
		example = []byte(strings.Replace(string(example), `values: ["500", "2000"]`, `values: ["500"]`, 1))
	}
	q := url.Values{"set": sets}
	req, _ := http.NewRequest(http.MethodPost, s.api+"/v1/experiments?"+q.Encode(), strings.NewReader(string(example)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	var rep struct{ ID string }
	require.NoError(t, json.Unmarshal(body, &rep))
	return rep.ID
}

// status reads an experiment's status through the API.
func (s consoleStack) status(t *testing.T, token, id string) (st struct {
	State string
	Runs  []struct {
		RunID string `json:"run_id"`
		State string
	}
}) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.api+"/v1/experiments/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		return st // the token's rate: asked again by the caller
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

// doneRun waits for a finished one-run experiment's runs in ClickHouse —
// the API answers from the scheduler's state, which the runs table
// follows (a page read at once found the run still analyzing, a compare
// found no done run) — and returns them with the done one: the run, or its
// retry when the machine starved its load.
func (s consoleStack) doneRun(t *testing.T, id string) (rows []report.ResultRow, done string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, "the runs of "+id+" stored final", func() bool {
		var err error
		rows, err = report.LoadResults(context.Background(), s.st.Store, id)
		require.NoError(t, err)
		return len(rows) > 0 && !slices.ContainsFunc(rows, func(r report.ResultRow) bool { return !events.RunFinal(r.State) })
	})
	for _, r := range rows {
		if requireDoneUnlessStarved(t, r) {
			require.Empty(t, done, "one done run")
			done = r.RunID
		}
	}
	require.NotEmpty(t, done, "a done run")
	return rows, done
}

// TestConsoleFollowsARealRunLiveAndDrawsItsCharts: a real run through every
// service, watched from the console — the live stream's load and power
// move while it runs — then its page's charts drawn from the stored data.
func TestConsoleFollowsARealRunLiveAndDrawsItsCharts(t *testing.T) {
	s := startConsoleStack(t)
	token := s.st.AdminToken()
	id := s.submitAPI(t, token, true, phases("1s", "1s", "8s")...)
	hc := devstacktest.ConsoleClient(t, s.console, token)
	// get fetches a console page and returns the response and its body.
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := hc.Get(s.console + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, string(body)
	}

	// The live stream, read as a browser's EventSource would.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.console+"/experiments/"+id+"/live", nil)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var mu sync.Mutex
	var records []int64
	var sutPower []float64
	estimated := false
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && event == "run" {
				var r struct {
					Records   int64              `json:"records_sent"`
					Power     map[string]float64 `json:"power_w"`
					Estimated []string           `json:"estimated"`
				}
				if json.Unmarshal([]byte(v), &r) == nil {
					mu.Lock()
					if n := len(records); n == 0 || records[n-1] != r.Records {
						records = append(records, r.Records)
					}
					if w, ok := r.Power["sut"]; ok {
						sutPower = append(sutPower, w)
					}
					for _, c := range r.Estimated {
						estimated = estimated || c == "sut"
					}
					mu.Unlock()
				}
			}
		}
	}()
	testenv.Eventually(t, 2*time.Minute, "the live stream shows the load growing and the SUT's power", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(records) >= 3 && records[len(records)-1] > records[1] && len(sutPower) > 0
	})
	mu.Lock()
	t.Logf("live records_sent values: %v; SUT power: %v W (estimated: %v)", records, sutPower, estimated)
	require.True(t, estimated, "no RAPL here: the SUT's power is labelled estimated")
	mu.Unlock()

	// Polled with a token of its own: the API limits each token's rate,
	// and the console's requests below are the admin's.
	poller := s.token(t, "e2e-poller", auth.Viewer)
	var final string
	testenv.Eventually(t, 3*time.Minute, "the experiment done", func() bool {
		final = s.status(t, poller, id).State
		return events.ExperimentFinal(final)
	})
	require.Equal(t, events.ExperimentStateDone, final)
	rows, run := s.doneRun(t, id)

	resp, page := get("/experiments/" + id + "/runs/" + run)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	svgs := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(string(page), -1)
	require.GreaterOrEqual(t, len(svgs), 3, "power, throughput and lag charts")
	for _, svg := range svgs {
		require.NoError(t, svgplot.WellFormed(svg))
		require.NotContains(t, svg, "no data")
	}
	all := strings.Join(svgs, "")
	for _, series := range []string{">node ", ">sut<", ">offered<", ">delivered<", ">lag, all partitions<"} {
		require.True(t, strings.Contains(all, series), "a chart draws the series %s", series)
	}
	require.Regexp(t, `<polyline [^>]*points="[^"]+ [^"]+"`, all, "a line with several points")
	require.Contains(t, string(page), "sut_uj_per_event")
	require.Contains(t, string(page), "Meter configuration")

	// The finished experiment's page shows each run as analysed — not the
	// dashes of a live stream with nothing left to say (a trial found
	// every figure "—" after the demo) — and no live stream; a notice in
	// ?flash= that the console did not write is not shown.
	resp, page = get("/experiments/" + id + "?flash=visit+evil.example")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "finished: each run as analysed")
	require.NotContains(t, string(page), "data-live=")
	require.NotContains(t, string(page), "evil.example")
	row := regexp.MustCompile(`(?s)<tr id="run-` + regexp.QuoteMeta(run) + `".*?</tr>`).FindString(string(page))
	require.Regexp(t, `data-f="records">[1-9][0-9]*<`, row, "the run's records")
	require.Regexp(t, `data-f="uj">[0-9.]+\*<`, row, "the SUT's energy per event, estimated")
	require.Regexp(t, `data-p="sut">[0-9.]+\*<`, row, "the SUT's mean power")

	// The history: the configuration with its interval, its repetitions,
	// the Pareto chart, and the runs' results as CSV.
	resp, page = get("/experiments/" + id + "/results")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "workload.sensors=500")
	require.Contains(t, string(page), "on the front", "one configuration is its own Pareto front")
	require.Contains(t, string(page), `/runs/`+run+`">rep 0</a>`)
	require.Regexp(t, `<td class="num">[0-9.e+]+<abbr[^>]*>\*`, string(page), "the SUT's energy per event, estimated")
	svgs = regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(string(page), -1)
	require.Len(t, svgs, 1)
	require.NoError(t, svgplot.WellFormed(svgs[0]))
	require.Contains(t, svgs[0], ">Pareto front<")
	resp, csvText := get("/experiments/" + id + "/results.csv")
	require.Equal(t, "text/csv; charset=utf-8", resp.Header.Get("Content-Type"))
	lines := strings.Split(strings.TrimSpace(string(csvText)), "\n")
	require.Len(t, lines, 1+len(rows), "a header and each run")
	require.Contains(t, lines[0], "sut_uj_per_event")
	found := false
	for _, l := range lines[1:] {
		found = found || strings.HasPrefix(l, run+",")
	}
	require.True(t, found, "the done run's line: %v", lines)

	// Compare it with a second experiment of the same configuration, as
	// greenflow compare does: one set, the second against the first.
	second := s.submitAPI(t, token, true, phases("1s", "1s", "4s")...)
	testenv.Eventually(t, 3*time.Minute, "the second experiment final", func() bool {
		return events.ExperimentFinal(s.status(t, poller, second).State)
	})
	s.doneRun(t, second)
	resp, page = get("/compare?e=" + id + "&e=" + second)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", page)
	require.Contains(t, string(page), "<h2>sensors=500</h2>")
	require.Contains(t, string(page), "baseline: "+id+": workload.sensors=500")
	require.Regexp(t, `<td>sut_uj_per_event</td><td class="sub">[^<]*</td><td>B</td><td>`+regexp.QuoteMeta(second)+`: workload.sensors=500</td><td>1</td>`,
		string(page), "the second experiment's group, against the baseline")
	require.Regexp(t, `<td class="num">(&#43;|-)[0-9.]+%</td>`, string(page), "its difference from the baseline in %")
}
