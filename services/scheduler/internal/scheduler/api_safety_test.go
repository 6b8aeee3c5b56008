package scheduler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

func postSpec(t *testing.T, url, query string, body []byte) (int, scheduler.SubmitReply) {
	t.Helper()
	resp, err := http.Post(url+"/v1/experiments"+query, "application/yaml", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var rep scheduler.SubmitReply
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	return resp.StatusCode, rep
}

// nanSpec sweeps a range whose step is NaN: spec expansion used to panic on
// it (makeslice: cap out of range), killing the scheduler.
var nanSpec = strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, "range: {from: 1, to: 10, step: .nan}", 1)

// The HTTP submit endpoint refuses what it cannot take whole and exactly:
// an oversized body (413, even when its first part would be a valid spec),
// several YAML documents, a JSON body with more than one value, NaN in a
// spec or an override. Nothing of it is queued.
func TestHTTPSubmitRefusesBadInputAndQueuesNothing(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	mux := http.NewServeMux()
	h.sched.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	valid := fmt.Sprintf(specTmpl, 1)

	// A valid spec padded with a comment past the limit: a silent cut
	// would have submitted it.
	padded := []byte(valid + "# " + strings.Repeat("x", scheduler.MaxSpecBytes) + "\n")
	code, rep := postSpec(t, srv.URL, "", padded)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, rep.Error)
	require.Contains(t, rep.Error, fmt.Sprintf("over the %d bytes allowed", scheduler.MaxSpecBytes))

	cases := []struct {
		name, query, body, want string
	}{
		{"two YAML documents", "", valid + "---\n" + valid, "line 11: a second YAML document"},
		{"JSON with a second value", "", `{"apiVersion": "greenflow.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "j"}} {"x": 1}`,
			"a JSON spec must be a single value"},
		{"NaN range step", "", nanSpec, "spec.factors[0].range.step: got NaN, expected a finite number"},
		{"NaN in a field", "", strings.Replace(valid, "format: avro}", "format: avro, value: .nan}", 1), "spec.workload.value: got NaN"},
		{"Inf in an override", "?set=spec.slos.lagTrendSlope=.inf", valid, "spec.slos.lagTrendSlope: got +Inf"},
	}
	for _, tc := range cases {
		code, rep := postSpec(t, srv.URL, tc.query, []byte(tc.body))
		require.Equal(t, http.StatusUnprocessableEntity, code, tc.name)
		require.Contains(t, strings.Join(rep.Problems, "\n"), tc.want, tc.name)
		require.Empty(t, rep.ID, tc.name)
	}
	require.Empty(t, h.sched.List(), "nothing was queued")

	// Just under the limit is fine: the limit is where it says.
	under := []byte(valid + "# " + strings.Repeat("x", scheduler.MaxSpecBytes-len(valid)-4) + "\n")
	require.LessOrEqual(t, len(under), scheduler.MaxSpecBytes)
	code, rep = postSpec(t, srv.URL, "", under)
	require.Equal(t, http.StatusAccepted, code, rep.Error)
	require.Equal(t, "done", h.waitFinal(rep.ID))
}

// Over NATS request-reply, the spec that used to kill the scheduler gets an
// answer with the problem, and the API goes on answering.
func TestNATSSubmitOfANaNStepIsAnsweredAndTheSchedulerServesOn(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	nc := testenv.NATSConn(t, h.url)
	req, _ := json.Marshal(scheduler.SubmitRequest{Spec: nanSpec})
	var m *nats.Msg
	testenv.Eventually(t, 10*time.Second, "scheduler API to answer", func() bool {
		var err error
		m, err = nc.Request(scheduler.SubjectAPISubmit, req, 2*time.Second)
		return err == nil
	})
	var rep scheduler.SubmitReply
	require.NoError(t, json.Unmarshal(m.Data, &rep))
	require.Equal(t, "invalid spec", rep.Error)
	require.Contains(t, strings.Join(rep.Problems, "\n"), "line 8: spec.factors[0].range.step: got NaN")

	big, _ := json.Marshal(scheduler.SubmitRequest{Spec: strings.Repeat("#", scheduler.MaxSpecBytes+1)})
	m, err := nc.Request(scheduler.SubjectAPISubmit, big, 5*time.Second)
	require.NoError(t, err)
	rep = scheduler.SubmitReply{}
	require.NoError(t, json.Unmarshal(m.Data, &rep))
	require.Contains(t, rep.Error, "spec too large")

	ok, _ := json.Marshal(scheduler.SubmitRequest{Spec: fmt.Sprintf(specTmpl, 1)})
	m, err = nc.Request(scheduler.SubjectAPISubmit, ok, 5*time.Second)
	require.NoError(t, err, "the scheduler still answers")
	rep = scheduler.SubmitReply{}
	require.NoError(t, json.Unmarshal(m.Data, &rep))
	require.NotEmpty(t, rep.ID, rep.Error)
	require.Equal(t, "done", h.waitFinal(rep.ID))
}

// A raw experiment.submit with the same spec (a client that skips the API)
// is refused with the reason — recorded as a failed experiment, so the id
// it got appears in list — instead of crash-looping the scheduler, and the
// next experiment runs.
func TestRawSubmitOfANaNStepIsRefusedAndTheNextRuns(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	ctx := context.Background()
	require.NoError(t, h.bus.Publish(ctx, events.ExperimentSubmit{ExperimentID: "nan-1", Spec: nanSpec}, "submit:nan-1"))
	h.submit(ctx, "good-1", 1)
	require.Equal(t, "done", h.waitFinal("good-1"))
	require.Equal(t, "failed", h.waitFinal("nan-1"))
	st, ok := h.sched.Status("nan-1")
	require.True(t, ok, "the refused experiment is listed")
	require.Equal(t, "failed", st.State)
	require.Contains(t, st.Reason, "spec.factors[0].range.step: got NaN")
}
