package provtest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Backend is what the contract asks of a backend: the provisioner's
// Backend and Watcher (declared again here so that the backends' own
// tests can use the suite without importing the provisioner).
type Backend interface {
	Key(runID string) string
	Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error)
	Remove(ctx context.Context, runID string, e *state.Entry) (crashed bool, reason string, err error)
	Watch(e state.Entry, crashed func(reason string))
	Unwatch(runID string)
}

// Harness adapts one backend to the contract suite.
type Harness struct {
	// Name is the record's backend ("local", "kubernetes").
	Name string
	// Store holds the runs' records, for a backend that keeps what it
	// started in them (local); nil for one that keeps it where it runs
	// (kubernetes): the suite then makes up the records it passes.
	Store *state.Store
	// New builds a backend instance with nothing in memory, as a restarted
	// provisioner does, on the same store and machine or cluster; the
	// harness closes it when the test ends.
	New func(tb testing.TB) Backend
	// Run is a run named name that becomes ready and keeps running until
	// it is stopped or crashes.
	Run func(name string) events.RunProvision
	// Deploy, when set, prepares what the run needs besides the backend
	// (a kubelet for its namespace).
	Deploy func(tb testing.TB, b Backend, p events.RunProvision)
	// Crash makes the run's system under test fail on its own (the OOM
	// killer) and returns what the watch's crash report must contain.
	Crash func(tb testing.TB, b Backend, p events.RunProvision, targets []events.Target) (want string)
	// CrashReason is what both the watch's report and the teardown's
	// reason of a crashed run contain.
	CrashReason string
	// Gone reports the run's system under test removed.
	Gone func(tb testing.TB, b Backend, p events.RunProvision, targets []events.Target) bool
	// Parallel runs the suite's tests in parallel (each has runs of its
	// own).
	Parallel bool
}

// Contract runs the behaviour every backend owes the provisioner, as
// subtests of t: provision and readiness, a redelivered provision, a crash
// during the run, teardown, adoption by a new instance, and teardown of a
// run nothing is known of.
func Contract(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"ProvisionReadyAndTeardown", contractProvisionAndTeardown},
		{"CrashDuringTheRun", contractCrash},
		{"AdoptionByANewInstance", contractAdoption},
		{"TeardownOfAnUnknownRun", contractUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			if h.Parallel {
				t.Parallel()
			}
			c.fn(t, h)
		})
	}
}

// quiet is a stimulus-free window in which a healthy run must not be
// reported crashed.
const quiet = 500 * time.Millisecond

// provision starts run name on b as the provisioner does: its record
// created (starting) first, then marked running with its targets.
func (h Harness) provision(tb testing.TB, b Backend, name string) (events.RunProvision, []events.Target, state.Entry) {
	tb.Helper()
	p := h.Run(name)
	if h.Deploy != nil {
		h.Deploy(tb, b, p)
	}
	ctx := context.Background()
	if h.Store != nil {
		rec := state.Record{ExperimentID: p.ExperimentID, RunID: p.RunID, Backend: h.Name, State: state.Starting, Owner: "contract", Kafka: &p.Kafka}
		if n, ok := b.(interface{ Node() string }); ok {
			rec.Node = n.Node()
		}
		_, _, err := h.Store.Create(ctx, b.Key(p.RunID), rec)
		require.NoError(tb, err)
	}
	targets, err := b.Provision(ctx, p)
	require.NoError(tb, err, "provision %s", p.RunID)
	require.NotEmpty(tb, targets, "a ready run has targets to measure")
	for _, tg := range targets {
		require.Equal(tb, "sut", tg.Role)
		require.NotEmpty(tb, tg.ID)
	}
	return p, targets, h.running(tb, b, p, targets)
}

// running marks the run running with its targets (or makes its record up)
// and returns the record.
func (h Harness) running(tb testing.TB, b Backend, p events.RunProvision, targets []events.Target) state.Entry {
	tb.Helper()
	if h.Store == nil {
		return state.Entry{Key: b.Key(p.RunID), Rec: state.Record{ExperimentID: p.ExperimentID, RunID: p.RunID, Backend: h.Name,
			State: state.Running, Targets: targets, Kafka: &p.Kafka}}
	}
	e, _, err := h.Store.Mutate(context.Background(), b.Key(p.RunID), func(r *state.Record) (bool, error) {
		r.State, r.Targets = state.Running, targets
		return true, nil
	})
	require.NoError(tb, err)
	return e
}

// Watch watches the run of e on b, collecting what b reports crashed.
func Watch(b Backend, e state.Entry) chan string {
	c := make(chan string, 4)
	b.Watch(e, func(reason string) { c <- reason })
	return c
}

// NoCrash fails the test if a crash is reported on c within the window
// (a stimulus-free one: nothing may be reported in it).
func NoCrash(tb testing.TB, c chan string, within time.Duration, why string) {
	tb.Helper()
	select {
	case msg := <-c:
		tb.Fatalf("%s: reported crashed: %s", why, msg)
	case <-time.After(within):
	}
}

// AwaitCrash is the next crash reported on c; none within 20 s fails the
// test.
func AwaitCrash(tb testing.TB, c chan string) string {
	tb.Helper()
	return testenv.Receive(tb, c, 20*time.Second, "a crash report")
}

func contractProvisionAndTeardown(t *testing.T, h Harness) {
	b := h.New(t)
	p, targets, e := h.provision(t, b, "contract-teardown")
	ctx := context.Background()
	again, err := b.Provision(ctx, p)
	require.NoError(t, err, "a redelivered provision does no harm")
	require.Equal(t, targets, again, "and finds the run it started, starting no second one")
	require.False(t, h.Gone(t, b, p, targets), "the run is up")

	crashes := Watch(b, e)
	NoCrash(t, crashes, quiet, "a healthy run")
	b.Unwatch(p.RunID)
	crashed, reason, err := b.Remove(ctx, p.RunID, &e)
	require.NoError(t, err)
	require.False(t, crashed, "a run stopped on purpose did not crash: %s", reason)
	testenv.Eventually(t, 20*time.Second, "the run removed", func() bool { return h.Gone(t, b, p, targets) })
	NoCrash(t, crashes, 0, "a run torn down after Unwatch")
	_, _, err = b.Remove(ctx, p.RunID, &e)
	require.NoError(t, err, "a repeated teardown does no harm")
}

func contractCrash(t *testing.T, h Harness) {
	b := h.New(t)
	p, targets, e := h.provision(t, b, "contract-crash")
	crashes := Watch(b, e)
	NoCrash(t, crashes, quiet, "a healthy run")
	want := h.Crash(t, b, p, targets)
	got := AwaitCrash(t, crashes)
	require.Contains(t, got, want)
	require.Contains(t, got, h.CrashReason)
	NoCrash(t, crashes, 300*time.Millisecond, "a crash is reported once")
	// The provisioner tears the run down; the crash shows there too.
	crashed, reason, err := b.Remove(context.Background(), p.RunID, &e)
	require.NoError(t, err)
	require.True(t, crashed, "teardown of a run that crashed says so")
	require.Contains(t, reason, h.CrashReason)
	testenv.Eventually(t, 20*time.Second, "the run removed", func() bool { return h.Gone(t, b, p, targets) })
}

func contractAdoption(t *testing.T, h Harness) {
	first := h.New(t)
	p, targets, e := h.provision(t, first, "contract-adopt")
	next := h.New(t) // nothing in memory: what it knows comes from the record and the run
	again, err := next.Provision(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, targets, again, "the new instance finds the same run")
	crashes := Watch(next, e)
	NoCrash(t, crashes, quiet, "a live adopted run")
	want := h.Crash(t, next, p, targets)
	require.Contains(t, AwaitCrash(t, crashes), want, "the adopted run's crash is reported by the instance that adopted it")
	crashed, reason, err := next.Remove(context.Background(), p.RunID, &e)
	require.NoError(t, err)
	require.True(t, crashed)
	require.Contains(t, reason, h.CrashReason)
	testenv.Eventually(t, 20*time.Second, "the run removed", func() bool { return h.Gone(t, next, p, targets) })
}

func contractUnknown(t *testing.T, h Harness) {
	b := h.New(t)
	ctx := context.Background()
	crashed, _, err := b.Remove(ctx, h.Run("contract-never").RunID, nil)
	require.NoError(t, err, "a teardown of a run that never was is no error")
	require.False(t, crashed)

	// A run whose record is lost is found by what the backend marked it
	// with, and removed.
	p, targets, _ := h.provision(t, b, "contract-lost")
	crashed, reason, err := h.New(t).Remove(ctx, p.RunID, nil)
	require.NoError(t, err)
	require.False(t, crashed, reason)
	testenv.Eventually(t, 20*time.Second, "the run removed", func() bool { return h.Gone(t, b, p, targets) })
}
