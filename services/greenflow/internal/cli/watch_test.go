package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/natsembed"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

// `greenflow submit --watch` with a trust file that does not hold the
// scheduler's key used to skip every event of the experiment without a
// word and wait forever. At the first event it skips it says on stderr
// which trust file it checked and whose signature failed, and it gives up
// with an error once nothing of the experiment has passed the check for
// --watch-unverified-wait. With the deployment's trust file the same
// events are shown and the watch ends with the experiment. NATS with the
// dev stack's users and keys; the scheduler's events are signed by its
// key (its API is a stand-in that announces the experiment and answers).
func TestSubmitWatchSaysWhenTheTrustFileDoesNotVerifyItsEvents(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	users, err := natsembed.EnsureUsers(filepath.Join(dir, devstack.NATSDir))
	require.NoError(t, err)
	srv, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: filepath.Join(dir, "jetstream"), Users: users})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	connect := func(user string) *bus.Bus {
		opts, err := devstack.NATSCreds(dir, user).Options()
		require.NoError(t, err)
		b, err := bus.Connect(t.Context(), srv.ClientURL(), user, zap.NewNop(), nil, opts...)
		require.NoError(t, err)
		t.Cleanup(b.Close)
		return b
	}
	connect(bus.UserAdmin) // declares the streams a user may only look up
	sched := connect(string(events.ServiceScheduler))
	var n atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := fmt.Sprintf("trust-%d", n.Add(1))
		for _, st := range []string{events.ExperimentStateQueued, events.ExperimentStateDone} {
			m := events.ExperimentState{ExperimentID: id, Name: "trust", State: st, RunsTotal: 1, TsMs: time.Now().UnixMilli()}
			if st == events.ExperimentStateDone {
				m.RunsDone = 1
			}
			if err := sched.Publish(r.Context(), m, ""); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(schedapi.SubmitReply{ID: id, Runs: 1})
	}))
	t.Cleanup(api.Close)
	specFile := waitingSpec(t, dir, "trust")
	submit := func(args ...string) (int, string, string) {
		return clitest.Run(append([]string{"submit", "-f", specFile, "--watch", "--watch-unverified-wait", "2s", "--api-url", api.URL, "--token", "any",
			"--state-dir", dir, "--nats-url", srv.ClientURL()}, args...)...)
	}

	// The deployment's trust file (beside the CLI's seed): shown, ended.
	code, out, errOut := submit()
	require.Zero(t, code, out+errOut)
	require.Contains(t, out, "experiment trust-1: done (1/1 runs done, 0 failed)")
	require.NotContains(t, errOut, "skipped")

	// A trust file of other keys: the scheduler's is not among them.
	keys := natsembed.TrustKeys(users)
	var schedKey string
	for _, u := range users {
		if u.Name == string(events.ServiceScheduler) {
			schedKey = u.PublicKey
		}
	}
	delete(keys, string(events.ServiceScheduler))
	other := filepath.Join(t.TempDir(), "other-trust.json")
	require.NoError(t, bus.WriteTrust(other, keys))
	// It used to wait forever: a minute's bound fails the test instead.
	type result struct {
		code        int
		out, errOut string
	}
	ended := make(chan result, 1)
	go func() {
		code, out, errOut := submit("--nats-trust-file", other)
		ended <- result{code, out, errOut}
	}()
	r := testenv.Receive(t, ended, time.Minute, "the watch to give up")
	code, out, errOut = r.code, r.out, r.errOut
	require.NotZero(t, code, out+errOut)
	require.Contains(t, out, "submitted experiment trust-2")
	require.NotContains(t, out, "experiment trust-2: ", "no event of it is shown")
	require.Contains(t, errOut, "greenflow: skipped an event that fails the check against the NATS trust file "+other+
		": experiment.state on "+bus.Subject(events.TypeExperimentState)+": signed by "+schedKey+", a key the trust file does not know")
	require.Equal(t, 1, strings.Count(errOut, "skipped an event"), "the first is reported, not every one: %s", errOut)
	require.Regexp(t, regexp.MustCompile(`watch: no event of experiment trust-2 passed the check against the NATS trust file `+regexp.QuoteMeta(other)+
		` for 2s, and \d+ failed it`), errOut)
	require.Contains(t, errOut, "greenflow status trust-2")
}
