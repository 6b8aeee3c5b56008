package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/results"
)

// Phases of a reservation record.
const (
	PhaseSubmitting = "submitting" // recorded before the backend is asked: a crash here may leave a job without id (Backend.Find)
	PhaseWaiting    = "waiting"    // submitted, machines not ours yet
	PhaseRunning    = "running"    // machines ours
	PhaseReleasing  = "releasing"  // release asked
	PhaseReleased   = "released"   // the backend holds nothing for it
)

// Node is one reserved machine and the role it plays.
type Node struct {
	Host  string    `json:"host"`
	Role  string    `json:"role"`
	Facts HostFacts `json:"facts"`
}

// Reservation is the record of one reservation, in KV under its spec's
// name. It is also what an experiment's provenance carries (Provenance).
type Reservation struct {
	Name        string    `json:"name"`
	Backend     string    `json:"backend"`
	ID          string    `json:"id,omitempty"` // backend's handle (grid5000: site/uid)
	Phase       string    `json:"phase"`
	Spec        Spec      `json:"spec"`
	Nodes       []Node    `json:"nodes,omitempty"`
	SubmittedAt time.Time `json:"submitted_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	EndsAt      time.Time `json:"ends_at,omitzero"`    // the backend's walltime end
	ReleaseBy   time.Time `json:"release_by,omitzero"` // EndsAt − the spec's margin
	Holder      string    `json:"holder"`              // the process that made or adopted it
	Progress    string    `json:"progress,omitempty"`  // the backend's last word while waiting
	Released    string    `json:"released,omitempty"`  // why it was released
	// Tunnel is the local address of the holder's tunnel to the cluster's
	// API (`testbed up` from outside the testbed), while it holds one.
	Tunnel string `json:"tunnel,omitempty"`
	// KwollectCIDRs are the testbed API's addresses as its nodes resolve
	// them, the collectors' egress to Kwollect (KwollectPolicy): Platform.Up
	// sets them after the bootstrap, for the Deployer; not kept in KV.
	KwollectCIDRs []string `json:"-"`
	revision      uint64
}

// Hosts of role.
func (r Reservation) Hosts(role string) []string {
	var out []string
	for _, n := range r.Nodes {
		if n.Role == role {
			out = append(out, n.Host)
		}
	}
	return out
}

// Provenance is the part of a reservation an experiment records with its
// results: where it ran, under which job, on what, until when.
func (r Reservation) Provenance() results.TestbedProvenance {
	nodes := make([]results.TestbedNode, len(r.Nodes))
	for i, n := range r.Nodes {
		nodes[i] = results.TestbedNode{Host: n.Host, Role: n.Role, CPUModel: n.Facts.CPUModel, Cores: n.Facts.Cores,
			MemoryBytes: n.Facts.MemoryBytes, FactsMissing: n.Facts.Missing}
		if n.Facts.Missing == "" {
			nodes[i].Wattmeter = &n.Facts.Wattmeter
		}
	}
	p := results.TestbedProvenance{Backend: r.Backend, Reservation: r.Name, ID: r.ID, Site: r.Spec.Site, Cluster: r.Spec.Cluster,
		StartedAt: r.StartedAt.UTC(), EndsAt: r.EndsAt.UTC(), ReleaseBy: r.ReleaseBy.UTC(), Nodes: nodes}
	if r.Spec.Walltime > 0 {
		p.Walltime = time.Duration(r.Spec.Walltime).String()
	}
	// Grid'5000's handle is site/uid: the OAR job is the uid.
	if _, uid, ok := strings.Cut(r.ID, "/"); ok {
		p.JobID = uid
	}
	return p
}

// AssignRoles gives the hosts (sorted) to the roles in Roles' order, as
// many as the spec asks for each.
func AssignRoles(s Spec, hosts []string) ([]Node, error) {
	if len(hosts) != s.Total() {
		return nil, fmt.Errorf("assign roles: %d hosts assigned, %d asked for", len(hosts), s.Total())
	}
	hosts = slices.Sorted(slices.Values(hosts))
	var out []Node
	for _, r := range Roles {
		for range s.Nodes[r] {
			out = append(out, Node{Host: hosts[len(out)], Role: r})
		}
	}
	return out, nil
}

// Config of a Manager.
type Config struct {
	Holder string // this process, recorded in what it reserves
	// ReleaseTimeout bounds a release made after the caller's context
	// ended (cancel, failure). Default 2m.
	ReleaseTimeout time.Duration
}

// Deps of a Manager.
type Deps struct {
	KV      jetstream.KeyValue // bus.BucketTestbed
	Backend Backend
	Clock   clock.WithTicker
	Logger  *zap.Logger
}

// Manager reserves, holds and releases testbeds, keeping each
// reservation's record in KV so that no reservation outlives GreenFlow
// unseen.
type Manager struct {
	cfg Config
	kv  jetstream.KeyValue
	be  Backend
	clk clock.WithTicker
	log *zap.Logger
}

// NewManager does no I/O.
func NewManager(cfg Config, d Deps) *Manager {
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 2 * time.Minute
	}
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	return &Manager{cfg: cfg, kv: d.KV, be: d.Backend, clk: d.Clock, log: d.Logger.With(zap.String("component", "testbed"))}
}

// ErrExists: a live reservation of that name is recorded already.
var ErrExists = errors.New("reservation exists")

// Get returns the record of name.
func (m *Manager) Get(ctx context.Context, name string) (Reservation, error) {
	e, err := m.kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Reservation{}, fmt.Errorf("no reservation named %s (greenflow testbed status lists them): %w", name, err)
	}
	if err != nil {
		return Reservation{}, fmt.Errorf("get reservation %s: %w", name, err)
	}
	var r Reservation
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Reservation{}, fmt.Errorf("decode reservation %s: %w", name, err)
	}
	r.revision = e.Revision()
	return r, nil
}

// List returns every record.
func (m *Manager) List(ctx context.Context) ([]Reservation, error) {
	keys, err := m.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list reservations: %w", err)
	}
	slices.Sort(keys)
	out := make([]Reservation, 0, len(keys))
	for _, k := range keys {
		r, err := m.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// save writes r, checked against the revision it was read at (0: new).
func (m *Manager) save(ctx context.Context, r *Reservation) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode reservation %s: %w", r.Name, err)
	}
	var rev uint64
	if r.revision == 0 {
		rev, err = m.kv.Create(ctx, r.Name, data)
	} else {
		rev, err = m.kv.Update(ctx, r.Name, data, r.revision)
	}
	if err != nil {
		return fmt.Errorf("record reservation %s (%s): %w", r.Name, r.Phase, err)
	}
	r.revision = rev
	return nil
}

// Reserve records, submits and waits for the reservation s asks for,
// reporting the backend's progress. Whatever fails after the submission
// releases what was asked; a reservation of the same name already live
// is ErrExists (release it, or Reconcile adopts it).
func (m *Manager) Reserve(ctx context.Context, s Spec, progress func(string)) (Reservation, error) {
	r := Reservation{Name: s.Name, Backend: s.Backend, Phase: PhaseSubmitting, Spec: s, SubmittedAt: m.clk.Now().UTC(), Holder: m.cfg.Holder}
	if old, err := m.Get(ctx, s.Name); err == nil {
		if old.Phase != PhaseReleased {
			return old, fmt.Errorf("reserve %s: %w (%s, phase %s, held by %s): release it first (greenflow testbed down)", s.Name, ErrExists, old.ID, old.Phase, old.Holder)
		}
		r.revision = old.revision
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Reservation{}, err
	}
	if err := m.save(ctx, &r); err != nil {
		return Reservation{}, fmt.Errorf("reserve %s: %w", s.Name, err)
	}
	id, err := m.be.Submit(ctx, s)
	if err != nil {
		// The job may exist (the answer lost): release by name.
		return r, errors.Join(fmt.Errorf("reserve %s: %w", s.Name, err), m.release(ctx, &r, "submission failed"))
	}
	r.ID, r.Phase = id, PhaseWaiting
	if err := m.save(ctx, &r); err != nil {
		return r, errors.Join(err, m.release(ctx, &r, "could not record the submission"))
	}
	m.log.Info("testbed reservation submitted", zap.String("reservation", r.Name), zap.String("id", id))
	alloc, err := m.be.Wait(ctx, s, id, func(why string) {
		m.log.Info("testbed reservation waiting", zap.String("reservation", r.Name), zap.String("progress", why))
		if progress != nil {
			progress(why)
		}
	})
	if err != nil {
		return r, errors.Join(fmt.Errorf("reserve %s: %w", s.Name, err), m.release(ctx, &r, "never started: "+err.Error()))
	}
	nodes, err := AssignRoles(s, alloc.Hosts)
	if err != nil {
		return r, errors.Join(fmt.Errorf("reserve %s: %w", s.Name, err), m.release(ctx, &r, err.Error()))
	}
	for i := range nodes {
		f, err := m.be.Facts(ctx, s, nodes[i].Host)
		if err != nil {
			m.log.Warn("testbed node facts unavailable", zap.String("node", nodes[i].Host), zap.Error(err))
			f = HostFacts{Missing: err.Error()}
		}
		nodes[i].Facts = f
	}
	r.Nodes, r.Phase, r.StartedAt, r.EndsAt = nodes, PhaseRunning, alloc.StartedAt, alloc.EndsAt
	r.ReleaseBy = alloc.EndsAt.Add(-time.Duration(s.ReleaseMargin))
	if err := m.save(ctx, &r); err != nil {
		return r, errors.Join(err, m.release(ctx, &r, "could not record the nodes"))
	}
	m.log.Info("testbed reservation running", zap.String("reservation", r.Name), zap.String("id", id), zap.Int("nodes", len(nodes)),
		zap.Time("release_by", r.ReleaseBy))
	return r, nil
}

// SetTunnel records (addr) or clears ("") the holder's tunnel to the
// reservation's cluster API, for `testbed status`.
func (m *Manager) SetTunnel(ctx context.Context, name, addr string) error {
	r, err := m.Get(ctx, name)
	if err != nil {
		return err
	}
	r.Tunnel = addr
	return m.save(ctx, &r)
}

// ErrWalltime ends Hold's work when the reservation's release margin is
// reached.
var ErrWalltime = errors.New("reservation's walltime nearly over")

// UntilRelease is ctx, ended also when r reaches its release margin (by
// the manager's clock; the cause wraps ErrWalltime): whatever runs on the
// reservation — the bring-up, the work — stops in time for the release to
// be GreenFlow's, not OAR's kill.
func (m *Manager) UntilRelease(ctx context.Context, r Reservation) (context.Context, context.CancelCauseFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	t := m.clk.NewTimer(max(0, r.ReleaseBy.Sub(m.clk.Now())))
	go func() {
		defer t.Stop()
		select {
		case <-t.C():
			m.log.Warn("testbed reservation reaches its release margin; stopping", zap.String("reservation", r.Name), zap.Time("release_by", r.ReleaseBy))
			cancel(fmt.Errorf("%w: release by %s", ErrWalltime, r.ReleaseBy.Format(time.RFC3339)))
		case <-wctx.Done():
		}
	}()
	return wctx, cancel
}

// Hold runs work with the reservation, then releases it: when work
// returns (done or failed), when ctx ends (cancel) and when the
// reservation's ReleaseBy comes first (work's context ends with
// ErrWalltime as its cause). It returns work's error joined with the
// release's.
func (m *Manager) Hold(ctx context.Context, r Reservation, work func(context.Context, Reservation) error) error {
	wctx, cancel := m.UntilRelease(ctx, r)
	defer cancel(nil)
	err := work(wctx, r)
	why := "work done"
	switch {
	case context.Cause(wctx) != nil && errors.Is(context.Cause(wctx), ErrWalltime):
		why, err = "walltime margin reached", errors.Join(context.Cause(wctx), err)
	case ctx.Err() != nil:
		why = "cancelled"
	case err != nil:
		why = "work failed: " + err.Error()
	}
	cur, gerr := m.Get(context.WithoutCancel(ctx), r.Name)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	return errors.Join(err, m.release(ctx, &cur, why))
}

// Release releases the reservation name records (greenflow testbed down).
// Like every release it goes on after ctx ends, bounded by ReleaseTimeout:
// a failure or cancel is when releasing matters most.
func (m *Manager) Release(ctx context.Context, name, why string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.ReleaseTimeout)
	defer cancel()
	r, err := m.Get(ctx, name)
	if err != nil {
		return err
	}
	if r.Phase == PhaseReleased {
		return nil
	}
	return m.release(ctx, &r, why)
}

// release asks the backend to release r and records it. It runs on after
// ctx ends (a cancel is a reason to release, not to stop releasing),
// bounded by ReleaseTimeout.
func (m *Manager) release(ctx context.Context, r *Reservation, why string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.ReleaseTimeout)
	defer cancel()
	if r.ID == "" {
		id, found, err := m.be.Find(ctx, r.Spec)
		if err != nil {
			return fmt.Errorf("release %s: find its job: %w", r.Name, err)
		}
		r.ID = id
		if !found {
			r.Phase, r.Released = PhaseReleased, why+" (nothing was submitted)"
			return m.save(ctx, r)
		}
	}
	r.Phase, r.Released = PhaseReleasing, why
	if err := m.save(ctx, r); err != nil {
		return err
	}
	if err := m.be.Release(ctx, r.Spec, r.ID); err != nil {
		return fmt.Errorf("release %s (%s): %w", r.Name, r.ID, err)
	}
	r.Phase = PhaseReleased
	m.log.Info("testbed reservation released", zap.String("reservation", r.Name), zap.String("id", r.ID), zap.String("why", why))
	return m.save(ctx, r)
}

// Reconcile looks at every reservation recorded and not released, as a
// process starting must: one the backend no longer holds is marked
// released; one past its release margin is released; one it holds is
// adopted when adopt says so (returned, with this process as holder) and
// released otherwise. A record still
// submitting is resolved through Backend.Find.
func (m *Manager) Reconcile(ctx context.Context, adopt func(Reservation) bool) ([]Reservation, error) {
	return m.ReconcileOnly(ctx, nil, adopt)
}

// ReconcileOnly is Reconcile of the reservations which selects (nil: all),
// for a process that shares the bucket with live holders it must not
// touch: `greenflow testbed up` reconciles only what a dead `up` of its
// own machine left.
func (m *Manager) ReconcileOnly(ctx context.Context, which, adopt func(Reservation) bool) ([]Reservation, error) {
	all, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	var adopted []Reservation
	var errs []error
	for _, r := range all {
		if r.Phase == PhaseReleased || (which != nil && !which(r)) {
			continue
		}
		if r.ID == "" {
			errs = append(errs, m.release(ctx, &r, "found submitting after a restart"))
			continue
		}
		st, err := m.be.Status(ctx, r.Spec, r.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("reconcile %s: %w", r.Name, err))
			continue
		}
		if !st.Active {
			r.Phase, r.Released = PhaseReleased, "found "+st.State+" after a restart"
			errs = append(errs, m.save(ctx, &r))
			continue
		}
		if !r.ReleaseBy.IsZero() && !m.clk.Now().Before(r.ReleaseBy) {
			errs = append(errs, m.release(ctx, &r, fmt.Sprintf("found past its release margin (%s) after a restart of its holder %s", r.ReleaseBy.Format(time.RFC3339), r.Holder)))
			continue
		}
		if r.Phase == PhaseRunning && adopt != nil && adopt(r) {
			r.Holder = m.cfg.Holder
			if err := m.save(ctx, &r); err != nil {
				errs = append(errs, err)
				continue
			}
			m.log.Info("testbed reservation adopted", zap.String("reservation", r.Name), zap.String("id", r.ID))
			adopted = append(adopted, r)
			continue
		}
		errs = append(errs, m.release(ctx, &r, fmt.Sprintf("found %s (%s) after a restart of its holder %s", r.Phase, st.State, r.Holder)))
	}
	return adopted, errors.Join(errs...)
}
