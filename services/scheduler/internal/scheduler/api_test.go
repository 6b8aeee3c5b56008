package scheduler_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/scheduler/internal/scheduler"
)

func TestHTTPSubmitStatusAndErrors(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	mux := http.NewServeMux()
	h.sched.RegisterHTTP(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// YAML body with a --set equivalent: one repetition more.
	resp, err := http.Post(srv.URL+"/v1/experiments?set=spec.repetitions=2", "application/yaml", strings.NewReader(fmt.Sprintf(specTmpl, 1)))
	require.NoError(t, err)
	var rep scheduler.SubmitReply
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, rep.Error)
	require.Equal(t, 4, rep.Runs)
	require.Equal(t, "done", h.waitFinal(rep.ID))

	resp, err = http.Get(srv.URL + "/v1/experiments/" + rep.ID)
	require.NoError(t, err)
	var st scheduler.ExperimentStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	resp.Body.Close()
	require.Equal(t, "done", st.State)
	require.Equal(t, 4, st.RunsDone)
	require.Len(t, st.Runs, 4)
	require.Len(t, st.Runs[0].Phases, 7)

	// Invalid: every problem with its path, nothing queued.
	resp, err = http.Post(srv.URL+"/v1/experiments", "application/yaml", strings.NewReader("apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: x}\nspec:\n  repetitions: 0\n  workload: {format: xml}\n"))
	require.NoError(t, err)
	rep = scheduler.SubmitReply{}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	resp.Body.Close()
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	require.Len(t, rep.Problems, 2)
	require.Contains(t, strings.Join(rep.Problems, "\n"), "spec.repetitions")
	require.Contains(t, strings.Join(rep.Problems, "\n"), "spec.workload.format")

	// A sweep over 10,000 runs needs yes=true.
	big := strings.Replace(fmt.Sprintf(specTmpl, 1), `values: ["10", "20"]`, "range: {from: 1, to: 20000, step: 1}", 1)
	resp, err = http.Post(srv.URL+"/v1/experiments", "application/yaml", strings.NewReader(big))
	require.NoError(t, err)
	rep = scheduler.SubmitReply{}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rep))
	resp.Body.Close()
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode)
	require.Contains(t, rep.Error, "20000 runs")

	resp, err = http.Get(srv.URL + "/v1/experiments")
	require.NoError(t, err)
	var list []scheduler.ExperimentStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Len(t, list, 1, "rejected submissions queue nothing")
}

func TestNATSRequestReplySubmitAndCancel(t *testing.T) {
	h, cancel := newHarness(t, nil)
	defer cancel()
	nc := testenv.NATSConn(t, h.url)
	spec := strings.Replace(fmt.Sprintf(specTmpl, 1), "measure: 150ms", "measure: 1h", 1)
	req, _ := json.Marshal(scheduler.SubmitRequest{Spec: spec})
	var msgReply []byte
	testenv.Eventually(t, 10*time.Second, "scheduler API to answer", func() bool {
		m, err := nc.Request(scheduler.SubjectAPISubmit, req, 2*time.Second)
		if err != nil {
			return false
		}
		msgReply = m.Data
		return true
	})
	var rep scheduler.SubmitReply
	require.NoError(t, json.Unmarshal(msgReply, &rep))
	require.NotEmpty(t, rep.ID, rep.Error)
	testenv.Eventually(t, 10*time.Second, "run measuring", func() bool {
		m, err := nc.Request(scheduler.SubjectAPIGet, []byte(rep.ID), time.Second)
		if err != nil {
			return false
		}
		var st scheduler.ExperimentStatus
		return json.Unmarshal(m.Data, &st) == nil && len(st.Runs) == 2 && st.Runs[0].State == "measuring"
	})
	_, err := nc.Request(scheduler.SubjectAPICancel, []byte(rep.ID), time.Second)
	require.NoError(t, err)
	require.Equal(t, "cancelled", h.waitFinal(rep.ID))
}
