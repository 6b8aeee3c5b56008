package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	neturl "net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

// The scheduler's HTTP API: what it accepts, what it refuses and how it
// answers.

// apiServer serves the harness scheduler's HTTP API until the test ends.
func apiServer(t testing.TB, h *harness) string {
	mux := http.NewServeMux()
	h.sched.RegisterHTTP(mux)
	return serveWithToken(t, mux, mintToken(t, h.bus, "api-test", auth.Admin))
}

// call sends method url with body (YAML) as token — with token empty, as
// the one minted for the server (apiClient) — decodes the JSON answer into
// out unless out is nil, and returns the status.
func call(t testing.TB, method, url, token, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := apiClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

// getJSON decodes a GET's JSON answer into v and returns the status.
func getJSON(t testing.TB, url string, v any) int {
	t.Helper()
	return call(t, http.MethodGet, url, "", "", v)
}

// cancel asks the API at url to cancel experiment id and returns the
// status.
func cancel(t testing.TB, url, id string) int {
	t.Helper()
	return call(t, http.MethodPost, url+"/v1/experiments/"+neturl.PathEscape(id)+"/cancel", "", "", nil)
}

func TestHTTPSubmitStatusAndErrors(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)

	// YAML body with a --set equivalent: one repetition more.
	rep := submitAccepted(t, url, "?set=spec.repetitions=2", []byte(fmt.Sprintf(specTmpl, 1)))
	require.Equal(t, 4, rep.Runs)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(rep.ID))

	var st scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments/"+rep.ID, &st))
	require.Equal(t, events.ExperimentStateDone, st.State)
	require.Equal(t, 4, st.RunsDone)
	require.Len(t, st.Runs, 4)
	require.Len(t, st.Runs[0].Phases, 7)
	// Cancelling it now is answered, not queued for the consumer to drop.
	var refusal schedapi.ErrorReply
	require.Equal(t, http.StatusConflict, call(t, http.MethodPost, url+"/v1/experiments/"+rep.ID+"/cancel", "", "", &refusal))
	require.Equal(t, "nothing to cancel: experiment "+rep.ID+" ended done", refusal.Error)

	// Invalid: every problem with its path, nothing queued.
	code, rep := postSpec(t, url, "", []byte("apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec:\n  repetitions: 0\n  workload: {format: xml}\n"))
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Len(t, rep.Problems, 2)
	require.Contains(t, strings.Join(rep.Problems, "\n"), "spec.repetitions")
	require.Contains(t, strings.Join(rep.Problems, "\n"), "spec.workload.format")

	// A sweep over 10,000 runs needs yes=true.
	big := strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, "range: {from: 1, to: 20000, step: 1}", 1)
	code, rep = postSpec(t, url, "", []byte(big))
	require.Equal(t, http.StatusUnprocessableEntity, code)
	require.Contains(t, rep.Error, "20000 runs")

	var list []scheduler.ExperimentStatus
	require.Equal(t, http.StatusOK, getJSON(t, url+"/v1/experiments", &list))
	require.Len(t, list, 1, "rejected submissions queue nothing")
}

// An id no experiment can have — empty, with a dot, a wildcard or a space —
// is an unknown experiment to GET and cancel alike, never a KV error
// ("read experiment : nats: invalid key", a new user saw for an empty id).
func TestOddIDsAreUnknownExperiments(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	for _, id := range []string{"a.b", "exp.>", "a b", "-x", strings.Repeat("x", 300)} {
		var rep map[string]string
		require.Equal(t, http.StatusNotFound, getJSON(t, url+"/v1/experiments/"+neturl.PathEscape(id), &rep), "GET %q", id)
		require.Contains(t, rep["error"], "unknown experiment", "GET %q", id)
		rep = nil
		require.Equal(t, http.StatusNotFound, call(t, http.MethodPost, url+"/v1/experiments/"+neturl.PathEscape(id)+"/cancel", "", "", &rep), "cancel %q", id)
		require.Contains(t, rep["error"], "unknown experiment", "cancel %q", id)
	}
}

// nanSpec sweeps a range whose step is NaN: spec expansion used to panic on
// it (makeslice: cap out of range), killing the scheduler.
var nanSpec = strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, "range: {from: 1, to: 10, step: .nan}", 1)

// The HTTP submit endpoint refuses what it cannot take whole and exactly:
// an oversized body (413, even when its first part would be a valid spec),
// several YAML documents, a JSON body with more than one value, NaN in a
// spec or an override. Nothing of it is queued.
func TestHTTPSubmitRefusesBadInputAndQueuesNothing(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	url := apiServer(t, h)
	valid := fmt.Sprintf(specTmpl, 1)

	// A valid spec padded with a comment past the limit: a silent cut
	// would have submitted it.
	padded := []byte(valid + "# " + strings.Repeat("x", scheduler.MaxSpecBytes) + "\n")
	code, rep := postSpec(t, url, "", padded)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, rep.Error)
	require.Equal(t, fmt.Sprintf("spec too large: the spec is %d bytes, more than the %d bytes (512 KiB) allowed", len(padded), spec.MaxBytes), rep.Error)

	cases := []struct {
		name, query, body, want string
	}{
		{"two YAML documents", "", valid + "---\n" + valid, "line 11: a second YAML document"},
		{"JSON with a second value", "", `{"apiVersion": "greenflow.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "j"}} {"x": 1}`,
			"a JSON spec must be a single value"},
		{"NaN range step", "", nanSpec, "spec.factors[0].range.step: got NaN, expected a finite number"},
		{"NaN in a field", "", strings.Replace(valid, "format: avro}", "format: avro, value: .nan}", 1), "spec.workload.value: got NaN"},
		{"Inf in an override", "?set=spec.slos.lagTrendSlope=.inf", valid, "--set spec.slos.lagTrendSlope=.inf: spec.slos.lagTrendSlope: got +Inf"},
		// A --set value has no line in the file: the argument is named.
		{"unknown field in an override", "?set=spec.nonexistent.x=1", valid, "--set spec.nonexistent.x=1: spec.nonexistent: unknown field"},
		{"NaN in an override", "?set=spec.workload.value=NaN", valid, "--set spec.workload.value=NaN: spec.workload.value: expected a finite number, got `NaN`"},
	}
	for _, tc := range cases {
		code, rep := postSpec(t, url, tc.query, []byte(tc.body))
		require.Equal(t, http.StatusUnprocessableEntity, code, tc.name)
		require.Contains(t, strings.Join(rep.Problems, "\n"), tc.want, tc.name)
		require.NotContains(t, strings.Join(rep.Problems, "\n"), "line 1:", tc.name)
		require.Empty(t, rep.ID, tc.name)
	}
	require.Empty(t, h.sched.List(), "nothing was queued")

	// Just under the limit is fine: the limit is where it says.
	under := []byte(valid + "# " + strings.Repeat("x", scheduler.MaxSpecBytes-len(valid)-4) + "\n")
	require.LessOrEqual(t, len(under), scheduler.MaxSpecBytes)
	rep = submitAccepted(t, url, "", under)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal(rep.ID))
}

// A raw experiment.submit with the same spec (a client that skips the API)
// is refused with the reason — recorded as a failed experiment, so the id
// it got appears in list — instead of crash-looping the scheduler, and the
// next experiment runs.
func TestRawSubmitOfANaNStepIsRefusedAndTheNextRuns(t *testing.T) {
	t.Parallel()
	h, _ := newHarness(t, nil)
	ctx := context.Background()
	h.submitSpec(ctx, "nan-1", nanSpec)
	h.submit(ctx, "good-1", 1)
	require.Equal(t, events.ExperimentStateDone, h.waitFinal("good-1"))
	require.Equal(t, events.ExperimentStateFailed, h.waitFinal("nan-1"))
	st, ok := h.sched.Status("nan-1")
	require.True(t, ok, "the refused experiment is listed")
	require.Equal(t, events.ExperimentStateFailed, st.State)
	require.Contains(t, st.Reason, "spec.factors[0].range.step: got NaN")

	// Over the limit on the bus too: refused with the size and the limit.
	huge := fmt.Sprintf(specTmpl, 1) + "# " + strings.Repeat("x", spec.MaxBytes) + "\n"
	h.submitSpec(ctx, "huge-1", huge)
	require.Equal(t, events.ExperimentStateFailed, h.waitFinal("huge-1"))
	st, ok = h.sched.Status("huge-1")
	require.True(t, ok, "the refused experiment is listed")
	require.Contains(t, st.Reason, fmt.Sprintf("spec too large: the spec is %d bytes, more than the %d bytes (512 KiB) allowed", len(huge), spec.MaxBytes))
}
