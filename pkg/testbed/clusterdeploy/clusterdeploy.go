// Package clusterdeploy deploys GreenFlow onto a testbed's k3s as `greenflow
// cluster up --overlay testbed` does. It is apart from pkg/testbed, which
// pkg/cluster's manifests' tests use, so that neither imports the other.
package clusterdeploy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/testbed"
)

// Deployer deploys the platform on the testbed's k3s as `greenflow
// cluster up --overlay testbed` does (pkg/cluster, in process), fitted to
// the reservation: Kafka and NATS as many as the pools have nodes, the
// imported images, the collectors' egress to the Grid'5000 API's
// addresses. `testbed up` uses it; so does the stand-in experiment test,
// against the envtest API server.
type Deployer struct {
	SecretsDir string          // the cluster's credentials (admin token, CA), kept per reservation
	Images     []testbed.Image // imported on the nodes: the manifests use them
	// Timeout and Poll bound the wait for readiness (pkg/cluster's
	// defaults when zero).
	Timeout, Poll time.Duration
	Progress      func(string)
	// Deployed, when set, is given the components (for printing).
	Deployed func([]cluster.Component)
}

// Up deploys on the cluster kubeconfig names.
func (d Deployer) Up(ctx context.Context, kubeconfig []byte, r testbed.Reservation) error {
	rc, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("the bootstrap's kubeconfig: %w", err)
	}
	cl, err := cluster.New(rc, cluster.Options{Overlay: "testbed", SecretsDir: d.SecretsDir,
		EgressCIDRs: map[string][]string{testbed.KwollectPolicy: r.KwollectCIDRs},
		Adjust: func(objs []*unstructured.Unstructured) error {
			return errors.Join(testbed.FitToNodes(r.Spec, objs), testbed.UseImages(d.Images, objs))
		},
		Timeout: d.Timeout, Poll: d.Poll, Progress: d.Progress})
	if err != nil {
		return err
	}
	comps, err := cl.Up(ctx)
	if d.Deployed != nil && comps != nil {
		d.Deployed(comps)
	}
	if err != nil {
		return fmt.Errorf("deploy the platform (as greenflow cluster up --overlay testbed): %w", err)
	}
	return nil
}
