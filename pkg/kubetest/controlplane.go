package kubetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// AssetsScript builds kube-apiserver and etcd once per machine and prints
// their directory; `make test-kube` finds them the same way.
const AssetsScript = "scripts/envtest-assets.sh"

// FindAssets returns the directory of the kube-apiserver and etcd binaries:
// $KUBEBUILDER_ASSETS when set, else what scripts/envtest-assets.sh (under
// root, the repository) prints — it builds them once per machine when they
// are missing, writing its progress to progress. Either way the directory
// must hold both binaries: an error says which is missing and how to get it.
func FindAssets(ctx context.Context, root string, progress io.Writer) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	from := "KUBEBUILDER_ASSETS"
	if dir == "" {
		script := filepath.Join(root, AssetsScript)
		cmd := exec.CommandContext(ctx, script)
		cmd.Dir = root
		if progress != nil {
			cmd.Stderr = progress
		}
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("find the envtest binaries (kube-apiserver, etcd): KUBEBUILDER_ASSETS is not set and %s failed: %w "+
				"(run it by hand to see why; `make test-kube` uses it too)", script, err)
		}
		dir, from = strings.TrimSpace(string(out)), script
	}
	var missing []string
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		st, err := os.Stat(filepath.Join(dir, bin))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("find the envtest binaries: %s (from %s) has no executable %s; build them with %s (prints the directory to use as KUBEBUILDER_ASSETS)",
			dir, from, strings.Join(missing, " and "), AssetsScript)
	}
	return dir, nil
}

// ControlPlane is a real kube-apiserver and etcd, each a process of its own
// (controller-runtime's envtest), with no kubelet, scheduler or controller
// manager: Controllers plays those. The API server can be stopped and
// started again (an outage); etcd, and with it the cluster's state, stays.
type ControlPlane struct {
	// Admin is the cluster-admin client configuration.
	Admin *rest.Config

	env     *envtest.Environment
	certDir string
}

// loggerOnce: controller-runtime's logger is process-wide and set once.
var loggerOnce sync.Once

// quietLogger drops envtest's own log lines (it only says what it starts;
// the processes' output goes to StartControlPlane's writer): with no logger
// set, controller-runtime prints a stack trace to stderr instead.
func quietLogger() {
	loggerOnce.Do(func() { ctrllog.SetLogger(ctrllog.Log.WithSink(ctrllog.NullLogSink{})) })
}

// StartControlPlane starts etcd and the API server from the binaries in
// assets and waits until the API server serves. Their output goes to out
// (nil: discarded).
func StartControlPlane(assets string, out io.Writer) (*ControlPlane, error) {
	quietLogger()
	env := &envtest.Environment{BinaryAssetsDirectory: assets, ControlPlaneStartTimeout: 90 * time.Second, ControlPlaneStopTimeout: 30 * time.Second}
	if out != nil {
		api, etcd := env.ControlPlane.GetAPIServer(), env.ControlPlane.Etcd
		if etcd == nil {
			etcd = &envtest.Etcd{}
			env.ControlPlane.Etcd = etcd
		}
		api.Out, api.Err, etcd.Out, etcd.Err = out, out, out, out
	}
	// A certificate directory of our own outlives a stop of the API
	// server, so StartAPIServer brings it back with the same serving
	// certificate and service-account signing key (clients and tokens keep
	// working).
	certDir, err := os.MkdirTemp("", "greenflow-envtest-certs-")
	if err != nil {
		return nil, fmt.Errorf("create the envtest certificate dir: %w", err)
	}
	env.ControlPlane.GetAPIServer().CertDir = certDir
	admin, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(certDir)
		return nil, fmt.Errorf("start kube-apiserver and etcd (envtest, binaries in %s): %w", assets, err)
	}
	return &ControlPlane{Admin: admin, env: env, certDir: certDir}, nil
}

// Client is a cluster-admin client.
func (c *ControlPlane) Client() (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(c.Admin)
	if err != nil {
		return nil, fmt.Errorf("kubernetes admin client: %w", err)
	}
	return cs, nil
}

// StopAPIServer stops the kube-apiserver (SIGTERM, SIGKILL after the stop
// timeout), as an outage would: clients get connection refused. etcd keeps
// running.
func (c *ControlPlane) StopAPIServer() error {
	if err := c.env.ControlPlane.GetAPIServer().Stop(); err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	return nil
}

// StartAPIServer starts the stopped kube-apiserver again, on the same
// address with the same certificates, and waits up to within until it
// serves (envtest's own start waits for /healthz; this also waits for a
// read through the admin client, which is what the provisioner needs).
func (c *ControlPlane) StartAPIServer(ctx context.Context, within time.Duration) error {
	if err := c.env.ControlPlane.GetAPIServer().Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	return c.WaitServing(ctx, within)
}

// Serving reports nil when the API server answers a read.
func (c *ControlPlane) Serving(ctx context.Context) error {
	rc := rest.CopyConfig(c.Admin)
	rc.Timeout = 2 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
	return err
}

// WaitServing waits until the API server answers a read, or within passes.
func (c *ControlPlane) WaitServing(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		err := c.Serving(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not serving within %s: %w", within, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the API server and etcd and removes their data.
func (c *ControlPlane) Stop() error {
	err := c.env.Stop()
	_ = os.RemoveAll(c.certDir)
	if err != nil {
		return fmt.Errorf("stop envtest: %w", err)
	}
	return nil
}
