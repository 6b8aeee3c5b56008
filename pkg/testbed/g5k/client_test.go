package g5k_test

// These tests run the client against g5ktest, an in-process stand-in for
// the Grid'5000 API: the real testbed needs an account and holds real
// machines, and cannot be reached from CI. The stand-in follows the API's
// documentation (job states, 201/202 answers, Kwollect items, throttling),
// so what passes here is what the client does against the real API, short
// of the API's own surprises.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

var taurus = map[string][]string{"taurus": {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr", "taurus-3.lyon.grid5000.fr", "taurus-4.lyon.grid5000.fr"}}

func standIn(t *testing.T, clk clock.PassiveClock) *g5ktest.Server {
	s := g5ktest.New("alice", "s3cret", clk, taurus)
	t.Cleanup(s.Close)
	return s
}

func client(t *testing.T, s *g5ktest.Server, user, pass string, clk clock.WithTicker) *g5k.Client {
	c, err := g5k.New(g5k.Config{URL: s.URL + "/stable", User: user, Password: pass}, g5k.Deps{Clock: clk})
	require.NoError(t, err)
	return c
}

var fast = g5k.Backoff{First: time.Millisecond, Max: 4 * time.Millisecond}

var req = g5k.JobRequest{Resources: "{cluster='taurus'}/nodes=3,walltime=1:30", Command: "sleep infinity", Types: []string{"allow_classic_ssh"}, Name: "greenflow"}

func TestJobLifecycle(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC))
	s := standIn(t, clk)
	s.Script(g5ktest.Script{Waiting: 2, Launching: 1})
	c := client(t, s, "alice", "s3cret", clock.RealClock{})
	ctx := context.Background()

	j, err := c.Submit(ctx, "lyon", req)
	require.NoError(t, err)
	require.NotZero(t, j.UID)
	require.Equal(t, g5k.StateWaiting, j.State())

	var reasons []string
	run, err := c.WaitRunning(ctx, "lyon", j.UID, fast, func(_ g5k.Job, why string) { reasons = append(reasons, why) })
	require.NoError(t, err)
	require.Equal(t, g5k.StateRunning, run.State())
	require.Len(t, run.AssignedNodes, 3)
	require.Equal(t, int64(90*60), run.Walltime)
	require.Equal(t, clk.Now().Add(90*time.Minute).Unix(), run.Ends().Unix())
	require.Contains(t, reasons[0], "is waiting, predicted start 2026-11-30T10:02:00Z")
	require.Contains(t, strings.Join(reasons, "\n"), "is launching")

	// The walltime runs out: OAR ends the job by itself.
	clk.SetTime(clk.Now().Add(90 * time.Minute))
	got, err := c.Job(ctx, "lyon", j.UID)
	require.NoError(t, err)
	require.Equal(t, g5k.StateTerminated, got.State())

	require.NoError(t, c.Release(ctx, "lyon", j.UID))
	require.Equal(t, []int64{j.UID}, s.Deletes())
	// Released twice, or a job the API forgot: nothing left to release.
	require.NoError(t, c.Release(ctx, "lyon", 42))
}

func TestWaitRunningStopsOnErrorAndHold(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC))
	s := standIn(t, clk)
	s.Script(g5ktest.Script{Waiting: 1, Fail: "not enough healthy nodes", RawStates: true}, g5ktest.Script{Hold: true})
	c := client(t, s, "alice", "s3cret", clock.RealClock{})
	ctx := context.Background()

	j, err := c.Submit(ctx, "lyon", req)
	require.NoError(t, err)
	_, err = c.WaitRunning(ctx, "lyon", j.UID, fast, nil)
	require.ErrorIs(t, err, g5k.ErrNotStarted)
	require.ErrorContains(t, err, "is toError")
	require.ErrorContains(t, err, "not enough healthy nodes")

	// A held job waits until the caller's deadline, and says why.
	j, err = c.Submit(ctx, "lyon", req)
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var last string
	_, err = c.WaitRunning(wctx, "lyon", j.UID, fast, func(_ g5k.Job, why string) { last = why })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, last, "held, it will not start until resumed")
}

func TestNormalizeRawOARStates(t *testing.T) {
	for raw, want := range map[string]g5k.State{"Waiting": g5k.StateWaiting, "toAckReservation": g5k.StateWaiting, "toLaunch": g5k.StateLaunching,
		"Launching": g5k.StateLaunching, "Running": g5k.StateRunning, "Hold": g5k.StateHold, "Suspended": g5k.StateHold, "toError": g5k.StateError,
		"Error": g5k.StateError, "Finishing": g5k.StateTerminated, "terminated": g5k.StateTerminated} {
		got, ok := g5k.Normalize(raw)
		require.True(t, ok, raw)
		require.Equal(t, want, got, raw)
	}
	_, ok := g5k.Normalize("Schrödinger")
	require.False(t, ok)
}

func TestAuthAndErrorsNamed(t *testing.T) {
	s := standIn(t, clock.RealClock{})
	ctx := context.Background()
	_, err := client(t, s, "alice", "wrong", clock.RealClock{}).Submit(ctx, "lyon", req)
	var api *g5k.APIError
	require.ErrorAs(t, err, &api)
	require.Equal(t, http.StatusUnauthorized, api.Status)
	require.ErrorContains(t, err, "submit job on lyon: grid5000 POST /sites/lyon/jobs: 401 Authentication required")

	c := client(t, s, "alice", "s3cret", clock.RealClock{})
	_, err = c.Submit(ctx, "lyon", g5k.JobRequest{Resources: "{cluster='taurus'}/nodes=9,walltime=1:00", Command: "sleep infinity"})
	require.ErrorContains(t, err, "400 There are not enough resources for your request: 9 nodes of taurus asked, 4 exist")

	_, err = c.Job(ctx, "lyon", 7)
	require.True(t, g5k.IsNotFound(err), err)

	_, err = g5k.New(g5k.Config{URL: "api.grid5000.fr"}, g5k.Deps{})
	require.ErrorContains(t, err, `grid5000 api url "api.grid5000.fr": expected an absolute http(s) URL`)
	_, err = g5k.New(g5k.Config{User: "alice"}, g5k.Deps{})
	require.ErrorContains(t, err, "user and password go together")
}

func TestThrottlingHonoursRetryAfter(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC))
	s := standIn(t, clk)
	c := client(t, s, "alice", "s3cret", clk)
	s.Throttle(1, http.StatusTooManyRequests, "7")
	s.Throttle(1, http.StatusServiceUnavailable, "3")

	done := testenv.Go(t, context.Background(), func(ctx context.Context) error {
		_, err := c.Submit(ctx, "lyon", req)
		return err
	})
	// The client waits the 7 s it was asked, on its clock, then the 3 s.
	for _, d := range []time.Duration{7 * time.Second, 3 * time.Second} {
		testenv.Eventually(t, 5*time.Second, "client waits after a throttled answer", clk.HasWaiters)
		clk.Step(d - time.Millisecond)
		require.True(t, clk.HasWaiters(), "the client retried before its Retry-After")
		clk.Step(time.Millisecond)
	}
	require.NoError(t, done.Wait(5*time.Second, "submit"))
	var statuses []int
	for _, r := range s.Requests() {
		statuses = append(statuses, r.Status)
	}
	require.Equal(t, []int{429, 503, 201}, statuses)

	// A Retry-After longer than the client waits fails, naming it.
	s.Throttle(1, http.StatusTooManyRequests, "3600")
	_, err := c.Job(context.Background(), "lyon", 1)
	var th *g5k.ThrottledError
	require.True(t, errors.As(err, &th), err)
	require.ErrorContains(t, err, "asked to retry after 1h0m0s, longer than the 2m0s the client waits")
}

func TestKwollectGapsAndLateData(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0.Add(60 * time.Second))
	s := standIn(t, clk)
	s.Lag = 20 * time.Second
	s.Power("taurus-1", func(t time.Time) float64 { return 100 + float64(t.Sub(t0)/time.Second) })
	s.Gap("taurus-1", t0.Add(10*time.Second), t0.Add(13*time.Second))
	s.Null("taurus-1", t0.Add(20*time.Second))
	c := client(t, s, "alice", "s3cret", clock.RealClock{})

	pts, err := c.Metrics(context.Background(), "lyon", g5k.MetricsQuery{Nodes: []string{"taurus-1.lyon.grid5000.fr"}, Metrics: []string{g5k.MetricWattmeter},
		Start: t0, End: t0.Add(60 * time.Second)})
	require.NoError(t, err)
	// 0..40 s are there (now − lag), less 3 missing seconds and a null.
	require.Len(t, pts, 41-3-1)
	require.Equal(t, "taurus-1", pts[0].Device)
	require.Equal(t, 100.0, pts[0].Value)
	require.True(t, pts[len(pts)-1].Time.Equal(t0.Add(40*time.Second)))
	require.Equal(t, t0.Add(9*time.Second), pts[9].Time.UTC())
	require.Equal(t, t0.Add(13*time.Second), pts[10].Time.UTC())
}
