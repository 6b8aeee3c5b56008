package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Where the platform finds the reservation it runs on: `testbed up`
// applies the ConfigMap before deploying, the testbed overlay mounts it
// into the scheduler (optional: absent off a testbed) as
// /etc/greenflow/testbed/reservation.json and passes that file as
// --testbed-reservation-file; the scheduler records it with every
// experiment it accepts (results.TestbedProvenance).
const (
	ProvenanceNamespace = "greenflow"
	ProvenanceConfigMap = "greenflow-testbed"
	ProvenanceKey       = "reservation.json"
)

// ProvenanceJSON is the reservation as the platform reads it.
func ProvenanceJSON(r Reservation) ([]byte, error) {
	b, err := json.MarshalIndent(r.Provenance(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the provenance of reservation %s: %w", r.Name, err)
	}
	return b, nil
}

// HandOver applies the ConfigMap carrying r's provenance (and its
// namespace, which the platform's deployment then labels) to the cluster
// of kubeconfig, and the collectors' sources files (CollectorSources of
// r, their Kwollect at apiURL: "" the real API). ConfigMaps, not flag
// values: the scheduler reads the reservation's file at each acceptance,
// so a reservation re-applied (adopted, its release time changed) reaches
// experiments accepted later without a restart; each collector reads its
// node's sources file at start.
func HandOver(ctx context.Context, kubeconfig []byte, r Reservation, apiURL string) error {
	data, err := ProvenanceJSON(r)
	if err != nil {
		return err
	}
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("hand reservation %s to the platform: kubeconfig: %w", r.Name, err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("hand reservation %s to the platform: %w", r.Name, err)
	}
	opts := metav1.ApplyOptions{FieldManager: "greenflow-testbed", Force: true}
	if _, err := cs.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(ProvenanceNamespace), opts); err != nil {
		return fmt.Errorf("hand reservation %s to the platform: apply namespace %s: %w", r.Name, ProvenanceNamespace, err)
	}
	cm := corev1ac.ConfigMap(ProvenanceConfigMap, ProvenanceNamespace).
		WithLabels(map[string]string{"app.kubernetes.io/part-of": "greenflow"}).
		WithData(map[string]string{ProvenanceKey: string(data)})
	if _, err := cs.CoreV1().ConfigMaps(ProvenanceNamespace).Apply(ctx, cm, opts); err != nil {
		return fmt.Errorf("hand reservation %s to the platform: apply configmap %s/%s: %w", r.Name, ProvenanceNamespace, ProvenanceConfigMap, err)
	}
	return handOverSources(ctx, cs, r, apiURL, opts)
}

// Deployer deploys the GreenFlow platform onto a cluster given its
// kubeconfig: deploy/'s `greenflow cluster up` (issue 19) fills it, with
// the testbed overlay, whose node pools select on RoleLabel, and
// r.KwollectCIDRs as the addresses of its KwollectPolicy. Up returns once
// the platform is ready, or says which part is not and why.
type Deployer interface {
	Up(ctx context.Context, kubeconfig []byte, r Reservation) error
}

// Platform takes a testbed from nothing to a deployed platform and back:
// reserve, bootstrap k3s, hand the reservation to the platform
// (HandOver), deploy, hand over to the work (experiments),
// release. Every failure after the reservation releases it.
type Platform struct {
	Manager  *Manager
	Runner   func(s Spec) (Runner, error) // SSH to the nodes (NewSSHRunner), made before reserving
	Waiter   NodeWaiter
	Deployer Deployer
	// APIServer is the kubeconfig's server for the control host (nil:
	// https://<control>:6443, reachable inside the testbed).
	APIServer func(control string) string
	// Connect, when set, opens this machine's way to the cluster's API
	// once the control node is known — from outside the testbed, a Tunnel
	// through the access gateway — and returns it; it wins over
	// APIServer. What it opens stays open after Up (the caller closes it);
	// a failure releases the reservation.
	Connect func(ctx context.Context, r Reservation) (APIEndpoint, error)
	// KwollectURL is the API root the collectors read the wattmeters
	// from, inside the testbed ("": g5k.DefaultURL).
	KwollectURL string
	// Strimzi installs Strimzi's operator on the control node after the
	// bootstrap (StrimziPlan): a fresh k3s has none, and the overlay's
	// Kafka is Strimzi's.
	Strimzi bool
	// Images are imported into every node's containerd after the
	// bootstrap (ImportImages); the Deployer then pins the manifests to
	// them (UseImages). None: the manifests' references must be pullable.
	Images []Image
	Logger *zap.Logger
}

// Up reserves s's machines, installs k3s on them and deploys the
// platform, returning the reservation and the cluster's kubeconfig. What
// can be checked before reserving is (the SSH key, the gateway: Runner's
// Preflight), so a configuration error costs no reservation.
func (p *Platform) Up(ctx context.Context, s Spec, progress func(string)) (Reservation, []byte, error) {
	run, err := p.Runner(s)
	if err != nil {
		return Reservation{}, nil, fmt.Errorf("before reserving %s: %w", s.Name, err)
	}
	if c, ok := run.(interface{ Close() error }); ok {
		defer c.Close()
	}
	if pf, ok := run.(interface{ Preflight(context.Context) error }); ok {
		if err := pf.Preflight(ctx); err != nil {
			return Reservation{}, nil, fmt.Errorf("before reserving %s: %w", s.Name, err)
		}
	}
	r, err := p.Manager.Reserve(ctx, s, progress)
	if err != nil {
		return r, nil, err
	}
	// The bring-up too ends at the release margin (a command that hangs
	// must not hold the job until OAR's walltime).
	ctx, cancel := p.Manager.UntilRelease(ctx, r)
	defer cancel(nil)
	api := DirectEndpoint
	if p.APIServer != nil {
		api = func(c string) APIEndpoint { return APIEndpoint{Server: p.APIServer(c)} }
	}
	if p.Connect != nil {
		ep, err := p.Connect(ctx, r)
		if err != nil {
			return r, nil, errors.Join(fmt.Errorf("reach the cluster API of %s: %w", r.Name, err), p.Manager.Release(ctx, r.Name, "could not reach the cluster API: "+err.Error()))
		}
		api = func(string) APIEndpoint { return ep }
	}
	kc, err := p.install(ctx, run, &r, api, progress)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrWalltime) {
		err = errors.Join(cause, err)
	}
	if err != nil {
		return r, nil, errors.Join(err, p.Manager.Release(ctx, r.Name, "bring-up failed: "+err.Error()))
	}
	return r, kc, nil
}

func (p *Platform) install(ctx context.Context, run Runner, r *Reservation, api func(string) APIEndpoint, progress func(string)) ([]byte, error) {
	kc, err := Bootstrap(ctx, run, p.Waiter, *r, api)
	if err != nil {
		return nil, err
	}
	// Where the collectors' pods will resolve it: on a node.
	if r.KwollectCIDRs, err = KwollectCIDRs(ctx, run, r.Hosts(RoleControl)[0], p.KwollectURL); err != nil {
		return nil, err
	}
	if p.Strimzi {
		if progress != nil {
			progress("installing Strimzi's operator on " + r.Hosts(RoleControl)[0] + " (" + StrimziInstallURL + ")")
		}
		if err := InstallStrimzi(ctx, run, *r); err != nil {
			return nil, err
		}
	}
	if len(p.Images) > 0 {
		if err := ImportImages(ctx, run, *r, p.Images, progress); err != nil {
			return nil, err
		}
	}
	// Before the platform starts, so its first experiment carries it and
	// each collector finds its node's sources.
	if err := HandOver(ctx, kc, *r, p.KwollectURL); err != nil {
		return nil, err
	}
	if p.Deployer != nil {
		if err := p.Deployer.Up(ctx, kc, *r); err != nil {
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
