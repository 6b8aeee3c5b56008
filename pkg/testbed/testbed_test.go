package testbed_test

// The Grid'5000 API here is g5ktest's in-process stand-in: the real
// testbed needs an account, holds real machines while a test runs and is
// not reachable from CI. The stand-in follows the API's documentation (job
// states, 201/202 answers, walltime expiry, job listing), so these tests
// show what GreenFlow does with a real reservation: record it in KV,
// release it at the end, on cancel, on failure, before its walltime, and
// after a crash of the process that made it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// holders is the test binary running the crash test's reservation holder
// (runChild) instead of the tests.
var holders = testenv.SpecChild[holderSpec]{Env: "GREENFLOW_TESTBED_CHILD"}

// holderSpec is where the holder finds NATS and the testbed's API.
type holderSpec struct{ NATS, API string }

// startEnvtest is set by the envtest-tagged tests: the API server they
// need, started once for the binary.
var startEnvtest func() (stop func())

func TestMain(m *testing.M) {
	holders.Run(runChild)
	stop := func() {}
	if startEnvtest != nil {
		stop = startEnvtest()
	}
	code := testenv.Run(m)
	stop()
	os.Exit(code)
}

var lyon = map[string][]string{"taurus": {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr", "taurus-3.lyon.grid5000.fr",
	"taurus-4.lyon.grid5000.fr", "taurus-5.lyon.grid5000.fr"}, "nova": {"nova-1.lyon.grid5000.fr", "nova-2.lyon.grid5000.fr",
	"nova-3.lyon.grid5000.fr", "nova-4.lyon.grid5000.fr", "nova-5.lyon.grid5000.fr"}}

const specYAML = `
testbed:
  name: energy-a
  site: lyon
  cluster: taurus
  nodes: {control: 1, sut: 2, broker: 1, loadgen: 1}
  walltime: "2:00"
  types: [monitor=wattmetre_power_watt]
  releaseMargin: 15m
  ssh: {key: /home/alice/.ssh/id_ed25519, gateway: access.grid5000.fr, gatewayUser: alice}
`

func spec(t testing.TB) testbed.Spec {
	s, err := testbed.ParseSpec([]byte(specYAML))
	require.NoError(t, err)
	return s
}

type world struct {
	api *g5ktest.Server
	kv  jetstream.KeyValue
	clk *clocktesting.FakeClock
	url string
}

func newWorld(t *testing.T) *world {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC))
	api := g5ktest.New("alice", "s3cret", clk, lyon)
	t.Cleanup(api.Close)
	api.Reference("taurus-1", map[string]any{"uid": "taurus-1", "processor": map[string]any{"model": "Intel Xeon", "version": "E5-2630"},
		"architecture": map[string]any{"nb_cores": 12}, "main_memory": map[string]any{"ram_size": 34359738368},
		"sensors": map[string]any{"power": map[string]any{"available": true, "via": map[string]any{"pdu": []any{map[string]any{"uid": "wattmetre1"}}}}}})
	url := testenv.NATS(t)
	b := testenv.Bus(t, url, "greenflow")
	kv, err := b.KV(context.Background(), bus.BucketTestbed)
	require.NoError(t, err)
	return &world{api: api, kv: kv, clk: clk, url: url}
}

func (w *world) manager(t testing.TB, holder string, clk clock.WithTicker) *testbed.Manager {
	return testbed.NewManager(testbed.Config{Holder: holder}, testbed.Deps{KV: w.kv, Backend: backend(t, w.api.URL), Clock: clk, Logger: testenv.Logger(t)})
}

func backend(t testing.TB, apiURL string) *testbed.Grid5000 {
	c, err := g5k.New(g5k.Config{URL: apiURL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	return &testbed.Grid5000{C: c, User: "alice", Backoff: g5k.Backoff{First: time.Millisecond, Max: 5 * time.Millisecond}}
}

func TestReserveHoldRelease(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{Waiting: 2, Launching: 1})
	m := w.manager(t, "host-a", w.clk)
	ctx := context.Background()

	var progress []string
	r, err := m.Reserve(ctx, spec(t), func(s string) { progress = append(progress, s) })
	require.NoError(t, err)
	require.Contains(t, progress[0], "is waiting, predicted start")
	require.Equal(t, testbed.PhaseRunning, r.Phase)
	require.Equal(t, []string{"taurus-1.lyon.grid5000.fr"}, r.Hosts(testbed.RoleControl))
	require.Equal(t, []string{"taurus-2.lyon.grid5000.fr", "taurus-3.lyon.grid5000.fr"}, r.Hosts(testbed.RoleSUT))
	require.Equal(t, []string{"taurus-4.lyon.grid5000.fr"}, r.Hosts(testbed.RoleBroker))
	require.Equal(t, []string{"taurus-5.lyon.grid5000.fr"}, r.Hosts(testbed.RoleLoadgen))
	require.Equal(t, w.clk.Now().Add(2*time.Hour-15*time.Minute), r.ReleaseBy)
	require.Equal(t, "Intel Xeon E5-2630", r.Nodes[0].Facts.CPUModel)
	require.True(t, r.Nodes[0].Facts.Wattmeter)
	// taurus-2's reference is not in the stand-in: its facts are unknown,
	// not "no wattmeter", and the provenance says why.
	prov := r.Provenance()
	require.True(t, *prov.Nodes[0].Wattmeter)
	require.Empty(t, prov.Nodes[0].FactsMissing)
	require.Nil(t, prov.Nodes[1].Wattmeter, "unknown")
	require.Contains(t, prov.Nodes[1].FactsMissing, "taurus-2")
	raw, err := testbed.ProvenanceJSON(r)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"host": "taurus-2.lyon.grid5000.fr",
      "role": "sut",
      "wattmeter": null,
      "facts_missing": `)

	// The submission the API received: the whole job, as OAR wants it.
	var body map[string]any
	require.NoError(t, json.Unmarshal(w.api.Requests()[0].Body, &body))
	require.Equal(t, "{cluster='taurus'}/nodes=5,walltime=2:00:00", body["resources"])
	require.Equal(t, []any{"monitor=wattmetre_power_watt", "allow_classic_ssh"}, body["types"])
	require.Equal(t, "greenflow-energy-a", body["name"])

	// Recorded in KV, where provenance and a restart find it.
	got, err := m.Get(ctx, "energy-a")
	require.NoError(t, err)
	require.Equal(t, r.ID, got.ID)
	require.Equal(t, "lyon", got.Provenance().Site)

	// A second reservation of the same name is refused while this one lives.
	_, err = m.Reserve(ctx, spec(t), nil)
	require.ErrorIs(t, err, testbed.ErrExists)

	require.NoError(t, m.Hold(ctx, r, func(context.Context, testbed.Reservation) error { return nil }))
	require.Len(t, w.api.Deletes(), 1)
	got, err = m.Get(ctx, "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
	require.Equal(t, "work done", got.Released)
}

func TestReleasedOnFailureCancelAndWalltime(t *testing.T) {
	for _, tc := range []struct {
		name, why string
		work      func(w *world, cancel context.CancelFunc) func(context.Context, testbed.Reservation) error
		wantErr   error
	}{
		{name: "failure", why: "work failed: run 3 failed", wantErr: errors.New("run 3 failed"),
			work: func(*world, context.CancelFunc) func(context.Context, testbed.Reservation) error {
				return func(context.Context, testbed.Reservation) error { return errors.New("run 3 failed") }
			}},
		{name: "cancel", why: "cancelled", wantErr: context.Canceled,
			work: func(_ *world, cancel context.CancelFunc) func(context.Context, testbed.Reservation) error {
				return func(ctx context.Context, _ testbed.Reservation) error { cancel(); <-ctx.Done(); return ctx.Err() }
			}},
		{name: "walltime margin", why: "walltime margin reached", wantErr: testbed.ErrWalltime,
			work: func(w *world, _ context.CancelFunc) func(context.Context, testbed.Reservation) error {
				return func(ctx context.Context, r testbed.Reservation) error {
					// Experiments run for 1h45m: the margin (15 min before
					// the 2 h walltime) stops them, not OAR.
					testenv.Eventually(t, 5*time.Second, "hold's timer set", w.clk.HasWaiters)
					w.clk.Step(r.ReleaseBy.Sub(w.clk.Now()))
					<-ctx.Done()
					return ctx.Err()
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager(t, "host-a", w.clk)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := m.Reserve(ctx, spec(t), nil)
			require.NoError(t, err)
			err = m.Hold(ctx, r, tc.work(w, cancel))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.wantErr.Error())
			require.Equal(t, []int64{mustUID(t, r.ID)}, w.api.Deletes())
			require.Empty(t, w.api.Running())
			got, err := m.Get(context.Background(), "energy-a")
			require.NoError(t, err)
			require.Equal(t, testbed.PhaseReleased, got.Phase)
			require.Equal(t, tc.why, got.Released)
		})
	}
}

func TestJobThatNeverStartsIsReleased(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{Waiting: 1, Fail: "node taurus-3 Suspected"})
	m := w.manager(t, "host-a", w.clk)
	_, err := m.Reserve(context.Background(), spec(t), nil)
	require.ErrorIs(t, err, g5k.ErrNotStarted)
	require.ErrorContains(t, err, "node taurus-3 Suspected")
	got, err := m.Get(context.Background(), "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
	require.Contains(t, got.Released, "never started")
}

// TestCrashedHolderReservationReleasedOnRestart kills (SIGKILL) a process
// holding a running reservation: nothing releases it then — the job keeps
// running at the testbed — until another process with the same KV
// reconciles, finds it and releases it (the stand-in sees the DELETE).
func TestCrashedHolderReservationReleasedOnRestart(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{Waiting: 1})
	child := holders.Start(t, "holder", holderSpec{NATS: w.url, API: w.api.URL})

	m := w.manager(t, "host-b", clock.RealClock{})
	ctx := context.Background()
	testenv.Eventually(t, 30*time.Second, "the child holds a running reservation", func() bool {
		r, err := m.Get(ctx, "energy-a")
		return err == nil && r.Phase == testbed.PhaseRunning
	})
	child.Kill9(t)
	running := w.api.Running()
	require.Len(t, running, 1, "a killed holder releases nothing")
	require.Empty(t, w.api.Deletes())

	adopted, err := m.Reconcile(ctx, func(testbed.Reservation) bool { return false })
	require.NoError(t, err)
	require.Empty(t, adopted)
	require.Equal(t, running, w.api.Deletes())
	require.Empty(t, w.api.Running())
	got, err := m.Get(ctx, "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
	require.Contains(t, got.Released, "after a restart of its holder child")
}

func TestReconcileAdoptsAndSettles(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t, "host-a", w.clk)
	ctx := context.Background()
	r, err := m.Reserve(ctx, spec(t), nil)
	require.NoError(t, err)

	// A new process adopts it when told to: nothing released.
	m2 := w.manager(t, "host-b", w.clk)
	adopted, err := m2.Reconcile(ctx, func(testbed.Reservation) bool { return true })
	require.NoError(t, err)
	require.Len(t, adopted, 1)
	require.Equal(t, "host-b", adopted[0].Holder)
	require.Equal(t, r.ID, adopted[0].ID)
	require.Empty(t, w.api.Deletes())

	// Past its release margin, a reservation is released, not adopted.
	w.clk.Step(r.ReleaseBy.Sub(w.clk.Now()))
	adopted, err = w.manager(t, "host-c", w.clk).Reconcile(ctx, func(testbed.Reservation) bool { return true })
	require.NoError(t, err)
	require.Empty(t, adopted)
	require.Equal(t, []int64{mustUID(t, r.ID)}, w.api.Deletes())

	// OAR ended one (walltime) while nobody watched: marked released, no
	// DELETE needed.
	s2 := spec(t)
	s2.Name = "energy-b"
	r2, err := m2.Reserve(ctx, s2, nil)
	require.NoError(t, err)
	w.clk.Step(2 * time.Hour)
	_, err = m2.Reconcile(ctx, nil)
	require.NoError(t, err)
	require.Len(t, w.api.Deletes(), 1)
	got, err := m2.Get(ctx, r2.Name)
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
	require.Equal(t, "found terminated after a restart", got.Released)
}

// A process that died between submitting and recording the job id left a
// "submitting" record: the next one finds the job by its name and
// releases it.
func TestSubmittedButUnrecordedJobFoundByName(t *testing.T) {
	w := newWorld(t)
	s := spec(t)
	b := backend(t, w.api.URL)
	rec, err := json.Marshal(testbed.Reservation{Name: s.Name, Backend: s.Backend, Phase: testbed.PhaseSubmitting, Spec: s, Holder: "dead"})
	require.NoError(t, err)
	_, err = w.kv.Create(context.Background(), s.Name, rec)
	require.NoError(t, err)
	id, err := b.Submit(context.Background(), s)
	require.NoError(t, err)

	_, err = w.manager(t, "host-b", w.clk).Reconcile(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, []int64{mustUID(t, id)}, w.api.Deletes())
}

func TestSpecValidationNamesFields(t *testing.T) {
	_, err := testbed.ParseSpec([]byte(`
testbed:
  backend: aws
  name: Energy_A
  site: ""
  cluster: taurus
  nodes: {control: 2, sut: 0, gpu: 1}
  walltime: 10m
  releaseMargin: 10m
  queue: production
  types: [deploy]
  ssh: {user: alice, gateway: access.grid5000.fr}
`))
	require.Error(t, err)
	for _, want := range []string{
		`testbed.backend: "aws": expected "grid5000"`,
		`testbed.name: "Energy_A": expected lower-case letters`,
		`testbed.site: "": expected a Grid'5000 site`,
		`testbed.nodes.control: 2: expected exactly 1`,
		`testbed.nodes.sut: 0: expected at least 1`,
		`testbed.nodes.gpu: 1: expected a role among`,
		`testbed.releaseMargin: "10m0s": expected positive and shorter than the walltime (10m0s)`,
		`testbed.project: "": expected the OAR project`,
		`testbed.types[0]: "deploy": expected not deploy`,
		`testbed.ssh.gatewayUser: "": expected your Grid'5000 login`,
		`testbed.ssh.sudo: "": expected a command giving root to alice`,
	} {
		require.ErrorContains(t, err, want)
	}
	// How the file is written: each error names its line and the field's
	// path in the file, never a Go type.
	for _, tc := range []struct{ yaml, want string }{
		{"testbed:\n  site: lyon\n  walltim: 2h\n", `line 3: testbed.walltim: unknown field (did you mean "walltime"?)`},
		{"testbed:\n  ssh: {usr: alice}\n", `line 2: testbed.ssh.usr: unknown field (did you mean "user"?)`},
		{"testbed:\n  flavour: big\n", "line 2: testbed.flavour: unknown field, expected one of backend, cluster, k3sVersion"},
		{"testbed:\n  walltime: two hours\n", `line 2: testbed.walltime: "two hours": expected a duration such as 2h, 90m or hours:minutes (2:00)`},
		{"testbed:\n  walltime: 3\n", `line 2: testbed.walltime: "3": expected a duration`},
		{"testbed:\n  nodes: {control: 1, broker: 1.5}\n", `line 2: testbed.nodes.broker: "1.5": expected a whole number`},
		{"testbed:\n  types: monitor\n", `line 2: testbed.types: "monitor": expected a list`},
		{"", "testbed spec: empty: expected a testbed: section (see examples/testbed-grid5000.yaml)"},
		{"# nothing but a comment\n", "testbed spec: empty: expected a testbed: section"},
		{"testbed:\n  site: lyon\n---\ntestbed:\n  site: nancy\n", "testbed spec: line 3: a second YAML document: expected one testbed: section"},
		{"testbed:\n  site: paris\n", `testbed.site: "paris": expected a Grid'5000 site: grenoble, lille`},
	} {
		_, err = testbed.ParseSpec([]byte(tc.yaml))
		require.ErrorContains(t, err, tc.want, "%q", tc.yaml)
		require.NotContains(t, err.Error(), "testbed.Spec", "no Go type")
	}
}

func mustUID(t testing.TB, id string) int64 {
	var uid int64
	_, err := fmt.Sscanf(id[strings.IndexByte(id, '/')+1:], "%d", &uid)
	require.NoError(t, err)
	return uid
}

// runChild is the crash test's holder: it reserves and then holds the
// reservation until it is killed.
func runChild(ctx context.Context, cfg holderSpec) int {
	b, err := bus.Connect(ctx, cfg.NATS, "greenflow", zap.NewNop(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	kv, err := b.KV(ctx, bus.BucketTestbed)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, err := g5k.New(g5k.Config{URL: cfg.API + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := testbed.ParseSpec([]byte(specYAML))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	m := testbed.NewManager(testbed.Config{Holder: "child"}, testbed.Deps{KV: kv, Backend: &testbed.Grid5000{C: c, User: "alice",
		Backoff: g5k.Backoff{First: time.Millisecond, Max: 5 * time.Millisecond}}})
	r, err := m.Reserve(ctx, s, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("holding", r.ID)
	select {} // until killed
}

// Only the greenflow command (and admin) may declare, read and write the
// reservations bucket: a service that holds no reservation cannot release
// or forge one.
func TestReservationBucketBelongsToTheCommand(t *testing.T) {
	n := testenv.NATSWithAuth(t)
	ctx := context.Background()
	kv, err := n.Bus(t, "greenflow").KV(ctx, bus.BucketTestbed)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "x", []byte("{}"))
	require.NoError(t, err)
	js, err := jetstream.New(n.Conn(t, "analyzer"))
	require.NoError(t, err)
	other, err := js.KeyValue(ctx, bus.BucketTestbed)
	if err == nil {
		_, err = other.Get(ctx, "x")
	}
	require.Error(t, err, "the analyzer reads reservations")
}

// A process sharing the bucket with live holders reconciles only what it
// selects: the other holder's reservation is left running.
func TestReconcileOnlySelected(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	a, b := spec(t), spec(t)
	a.Name, b.Name = "dead-one", "live-one"
	ra, err := w.manager(t, "greenflow@here/1", w.clk).Reserve(ctx, a, nil)
	require.NoError(t, err)
	_, err = w.manager(t, "greenflow@elsewhere/2", w.clk).Reserve(ctx, b, nil)
	require.NoError(t, err)
	_, err = w.manager(t, "greenflow@here/3", w.clk).ReconcileOnly(ctx, func(r testbed.Reservation) bool { return strings.HasPrefix(r.Holder, "greenflow@here/") }, nil)
	require.NoError(t, err)
	require.Equal(t, []int64{mustUID(t, ra.ID)}, w.api.Deletes())
	require.Len(t, w.api.Running(), 1)
}
