// Package devstacktest is the one set of helpers the tests that drive the
// dev stack share (the end-to-end tests, the kubernetes end-to-end test and
// the dev stack's own): starting a stack on the test ClickHouse and running
// it until the test ends, a bus client, submitting a spec as the CLI does,
// and an Observer of what the services announce about an experiment.
package devstacktest

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/testenv"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

// Options are a test's stack options: its own state directory and
// database on the test ClickHouse, any free NATS port, the test's logger,
// and sampling and ticks fast enough for runs of a few seconds.
func Options(tb testing.TB) devstack.Options {
	return devstack.Options{
		StateDir: tb.TempDir(), ClickHouseDSN: testenv.ClickHouseDSN(tb), NATSPort: -1, Logger: testenv.Logger(tb),
		Collector: func(c *collectorapp.Config) {
			c.Interval = 200 * time.Millisecond
			c.FlushInterval = 200 * time.Millisecond
		},
		Scheduler: func(c *schedulerapp.Config) { c.Tick = 20 * time.Millisecond },
	}
}

// New starts the stack's infrastructure and builds its services without
// running them (see Run); the infrastructure stops when the test ends.
func New(tb testing.TB, o devstack.Options) *devstack.Stack {
	tb.Helper()
	st, err := devstack.Start(context.Background(), o)
	require.NoError(tb, err)
	tb.Cleanup(st.Close)
	return st
}

// Run runs the stack's services until the test ends, then stops them and
// requires that they stopped cleanly. ended reports, meanwhile, whether
// they stopped on their own and with what error.
func Run(tb testing.TB, st *devstack.Stack) (ended func() (bool, error)) {
	ctx, stop := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		done bool
		err  error
	)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		e := st.Run(ctx)
		mu.Lock()
		done, err = true, e
		mu.Unlock()
	}()
	tb.Cleanup(func() {
		stop()
		<-finished
		require.NoError(tb, err, "the dev stack's services stopped with an error")
	})
	return func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return done, err
	}
}

// Start starts a stack with options o and runs it until the test ends, and
// returns it with a bus client on it.
func Start(tb testing.TB, o devstack.Options) (*devstack.Stack, *bus.Bus) {
	tb.Helper()
	st := New(tb, o)
	Run(tb, st)
	return st, AdminBus(tb, st)
}

// StartWithConsole starts a stack with options o, its HTTP API and web
// console on free ports, runs it until the test ends, and returns it with
// the API's and the console's URLs.
func StartWithConsole(tb testing.TB, o devstack.Options) (st *devstack.Stack, api, console string) {
	tb.Helper()
	o.HTTPAddr, o.ConsoleAddr = "127.0.0.1:0", "127.0.0.1:0"
	st = New(tb, o)
	Run(tb, st)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api, err := st.APIURL(ctx)
	require.NoError(tb, err)
	console, err = st.ConsoleURL(ctx)
	require.NoError(tb, err)
	return st, api, console
}

// Bus connects a client to the NATS at url, closed when the test ends.
// opts carry credentials (a server with authentication on).
func Bus(tb testing.TB, url string, opts ...nats.Option) *bus.Bus {
	tb.Helper()
	b, err := bus.Connect(context.Background(), url, "e2e-test", zap.NewNop(), nil, opts...)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	return b
}

// AdminBus connects to st's NATS as its admin user: tests act as the
// operator (they submit, watch and forge events).
func AdminBus(tb testing.TB, st *devstack.Stack) *bus.Bus {
	tb.Helper()
	return BusAs(tb, st, bus.UserAdmin)
}

// BusAs connects to st's NATS as user, with its credentials.
func BusAs(tb testing.TB, st *devstack.Stack, user string) *bus.Bus {
	tb.Helper()
	opts, err := devstack.NATSCreds(st.StateDir(), user).Options()
	require.NoError(tb, err)
	// Named as its user: under authentication the bus declares only what
	// its user owns (bus.Declares), and knows its user by this name.
	b, err := bus.Connect(context.Background(), st.Endpoints.NATSURL, user, zap.NewNop(), nil, opts...)
	require.NoError(tb, err)
	tb.Cleanup(b.Close)
	return b
}

// Submit prepares a spec with overrides as the CLI does (every problem
// fails the test here) and queues it as the operator: b publishes the
// experiment.submit command — what the scheduler's HTTP API publishes for
// a submission — so a scheduler that starts later, or runs as a separate
// process, takes it. It returns the experiment id and its number of runs.
// (The scheduler's NATS request-reply API is gone: it bypassed the HTTP
// API's tokens.)
func Submit(ctx context.Context, tb testing.TB, b *bus.Bus, specYAML []byte, sets []string) (string, int) {
	tb.Helper()
	p, err := spec.Prepare(specYAML, sets, false)
	require.NoError(tb, err)
	id := spec.NewExperimentID(p.Experiment.Metadata.Name, time.Now())
	require.NoError(tb, b.Publish(ctx, events.ExperimentSubmit{ExperimentID: id, Spec: p.Resolved, SubmittedBy: "test"}, "submit:"+id))
	return id, p.Runs
}

// Observer keeps, in order, the messages of chosen types the services
// publish about one experiment (replayed from a minute before it starts, so
// it may start after the submission), and the experiment's final state.
type Observer struct {
	mu    sync.Mutex
	msgs  []events.Message
	final string
}

// Observe watches the messages of the given types (experiment.state
// always) about experimentID until the test ends.
func Observe(tb testing.TB, b *bus.Bus, experimentID string, types ...events.Type) *Observer {
	o := &Observer{}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = b.Watch(ctx, time.Now().Add(-time.Minute), append(slices.Clone(types), events.TypeExperimentState), func(d bus.Delivery) {
			if exp, _ := d.Msg.IDs(); exp != experimentID {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			o.msgs = append(o.msgs, d.Msg)
			if m, ok := d.Msg.(*events.ExperimentState); ok && events.ExperimentFinal(m.State) {
				o.final = m.State
			}
		})
	}()
	tb.Cleanup(func() { cancel(); <-stopped })
	return o
}

// Final is the experiment's final state; "" while it has none.
func (o *Observer) Final() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.final
}

// WaitFinal waits up to within for the experiment's final state and
// returns it. While it waits, check (when not nil) may fail the test.
func (o *Observer) WaitFinal(tb testing.TB, within time.Duration, check func()) string {
	tb.Helper()
	testenv.Eventually(tb, within, "experiment to finish", func() bool {
		if check != nil {
			check()
		}
		return o.Final() != ""
	})
	return o.Final()
}

// Count is how many messages of type typ about run were seen.
func (o *Observer) Count(typ events.Type, runID string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, m := range o.msgs {
		if _, run := m.IDs(); run == runID && m.MessageType() == typ {
			n++
		}
	}
	return n
}

// RunStates are the states run announced, in order (when run.state is
// observed).
func (o *Observer) RunStates(runID string) []string {
	var out []string
	for _, m := range All[*events.RunState](o) {
		if m.RunID == runID {
			out = append(out, m.State)
		}
	}
	return out
}

// All returns the observed messages of type M, in order.
func All[M events.Message](o *Observer) []M {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []M
	for _, m := range o.msgs {
		if m, ok := m.(M); ok {
			out = append(out, m)
		}
	}
	return out
}

// Last returns the last observed message of type M about run.
func Last[M events.Message](o *Observer, runID string) (M, bool) {
	var last M
	found := false
	for _, m := range All[M](o) {
		if _, run := m.IDs(); run == runID {
			last, found = m, true
		}
	}
	return last, found
}

// ConsoleClient signs in to the web console at base with token, as its
// sign-in form does, and returns an HTTP client holding the session.
func ConsoleClient(tb testing.TB, base, token string) *http.Client {
	tb.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	resp, err := hc.Get(base + "/signin")
	require.NoError(tb, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	require.NotNil(tb, m, "the sign-in form has a CSRF token")
	once := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = once.PostForm(base+"/signin", url.Values{"token": {token}, "csrf": {string(m[1])}})
	require.NoError(tb, err)
	resp.Body.Close()
	require.Equal(tb, http.StatusSeeOther, resp.StatusCode, "signed in")
	return hc
}
