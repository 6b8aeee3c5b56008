package devstack_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// healthz GETs the stack's /healthz.
func healthz(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The dev stack's /healthz is 503, naming each service, until every
// service has started and its consumers consume; then 200. And the message
// that used to crash-loop the whole stack — an experiment.submit whose
// sweep has a NaN step — is dead-lettered while the stack stays up and
// ready.
func TestDevStackReadinessAndAPoisonSubmit(t *testing.T) {
	ctx := context.Background()
	st := devstacktest.New(t, devstacktest.Options(t))
	srv := httptest.NewServer(st.Handler())
	defer srv.Close()

	code, body := healthz(t, srv.URL)
	require.Equal(t, http.StatusServiceUnavailable, code)
	for _, svc := range []string{"scheduler", "provisioner", "load-generator", "energy-collector", "analyzer"} {
		require.Contains(t, body, "- "+svc+": starting", body)
	}

	ended := devstacktest.Run(t, st)
	testenv.Eventually(t, 60*time.Second, "the stack ready", func() bool {
		code, body = healthz(t, srv.URL)
		return code == http.StatusOK
	})

	b := devstacktest.Bus(t, st.Endpoints.NATSURL)
	poison := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: poison}\nspec:\n  factors:\n" +
		"    - {name: workload.sensors, range: {from: 1, to: 10, step: .nan}}\n"
	require.NoError(t, b.Publish(ctx, events.ExperimentSubmit{ExperimentID: "poison-1", Spec: poison}, "submit:poison-1"))
	// Refused with the reason and listed as failed (GET on the API).
	testenv.Eventually(t, 30*time.Second, "the poison submit listed as failed", func() bool {
		resp, err := http.Get(srv.URL + "/v1/experiments/poison-1")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ State, Reason string }
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		return st.State == events.ExperimentStateFailed && strings.Contains(st.Reason, "range.step: got NaN")
	})
	code, body = healthz(t, srv.URL)
	require.Equal(t, http.StatusOK, code, "the stack is still up and ready: %s", body)
	stopped, err := ended()
	require.False(t, stopped, "the stack stopped: %v", err)
}
