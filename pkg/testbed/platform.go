package testbed

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Deployer deploys the GreenFlow platform onto a cluster given its
// kubeconfig: deploy/'s `greenflow cluster up` (issue 19) fills it, with
// the testbed overlay, whose node pools select on RoleLabel. Up returns
// once the platform is ready, or says which part is not and why.
type Deployer interface {
	Up(ctx context.Context, kubeconfig []byte, r Reservation) error
}

// Platform takes a testbed from nothing to a deployed platform and back:
// reserve, bootstrap k3s, deploy, hand over to the work (experiments),
// release. Every failure after the reservation releases it.
type Platform struct {
	Manager  *Manager
	Runner   func(s Spec) (Runner, error) // SSH to the nodes (NewSSHRunner)
	Waiter   NodeWaiter
	Deployer Deployer
	// APIServer is the kubeconfig's server for the control host (nil:
	// https://<control>:6443; from outside, a tunnel through the gateway).
	APIServer func(control string) string
	Logger    *zap.Logger
}

// Up reserves s's machines, installs k3s on them and deploys the
// platform, returning the reservation and the cluster's kubeconfig.
func (p *Platform) Up(ctx context.Context, s Spec, progress func(string)) (Reservation, []byte, error) {
	r, err := p.Manager.Reserve(ctx, s, progress)
	if err != nil {
		return r, nil, err
	}
	kc, err := p.install(ctx, r)
	if err != nil {
		return r, nil, errors.Join(err, p.Manager.Release(ctx, r.Name, "bring-up failed: "+err.Error()))
	}
	return r, kc, nil
}

func (p *Platform) install(ctx context.Context, r Reservation) ([]byte, error) {
	run, err := p.Runner(r.Spec)
	if err != nil {
		return nil, err
	}
	if c, ok := run.(interface{ Close() error }); ok {
		defer c.Close()
	}
	kc, err := Bootstrap(ctx, run, p.Waiter, r, p.APIServer)
	if err != nil {
		return nil, err
	}
	if p.Deployer != nil {
		if err := p.Deployer.Up(ctx, kc, r); err != nil {
			return nil, fmt.Errorf("deploy the platform on %s: %w", r.Name, err)
		}
	}
	return kc, nil
}

// Run brings the testbed up, runs work on it and releases it — when work
// ends, fails, when ctx is cancelled, and before the walltime (Hold).
func (p *Platform) Run(ctx context.Context, s Spec, progress func(string), work func(ctx context.Context, r Reservation, kubeconfig []byte) error) error {
	r, kc, err := p.Up(ctx, s, progress)
	if err != nil {
		return err
	}
	return p.Manager.Hold(ctx, r, func(ctx context.Context, r Reservation) error { return work(ctx, r, kc) })
}
