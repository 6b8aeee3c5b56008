//go:build envtest

package testbed_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/deploy"
	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/clusterdeploy"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
)

func init() { startEnvtest = kubetest.MustStart }

// k3sKubeconfig is the envtest API server's admin kubeconfig as k3s
// writes its own: the server at 127.0.0.1:6443, right only on the
// control node itself.
func k3sKubeconfig(t *testing.T) string {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: kubetest.Admin.CAData}
	cfg.AuthInfos["default"] = &clientcmdapi.AuthInfo{ClientCertificateData: kubetest.Admin.CertData, ClientKeyData: kubetest.Admin.KeyData, Token: kubetest.Admin.BearerToken}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "default"}
	cfg.CurrentContext = "default"
	b, err := clientcmd.Write(*cfg)
	require.NoError(t, err)
	return string(b)
}

// registerNode does what a k3s server or agent does when it starts: its
// node joins the cluster with its labels and turns Ready.
func registerNode(cs kubernetes.Interface, host, role string) error {
	ctx := context.Background()
	labels := map[string]string{testbed.RoleLabel: role, "kubernetes.io/hostname": g5k.ShortName(host)}
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: g5k.ShortName(host), Labels: labels}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) { // a node joining again (-count)
		if n, err = cs.CoreV1().Nodes().Get(ctx, g5k.ShortName(host), metav1.GetOptions{}); err == nil {
			n.Labels = labels
			n, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return err
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// deployer is testbed up's own (clusterdeploy.Deployer: `greenflow
// cluster up --overlay testbed`, fitted to the reservation) against the
// envtest API server. That server runs no kubelet, so nothing it applies
// becomes ready: the wait is short and ends "not ready", and the test
// checks what was applied instead.
type deployer struct {
	d        clusterdeploy.Deployer
	comps    []cluster.Component
	notReady error
	cidrs    []string // the collectors' egress to Kwollect it was given
}

func (d *deployer) Up(ctx context.Context, kubeconfig []byte, r testbed.Reservation) error {
	d.cidrs = r.KwollectCIDRs
	d.d.Deployed = func(c []cluster.Component) { d.comps = c }
	err := d.d.Up(ctx, kubeconfig, r)
	if err != nil && strings.Contains(err.Error(), "not ready after") {
		d.notReady = err
		return nil
	}
	return err
}

// TestWholeExperimentOnStandInTestbed drives a testbed from nothing to
// measured energy and back, everything through stand-ins for what CI
// cannot reach: the Grid'5000 API and Kwollect (g5ktest), the access
// gateway and nodes (sshtest, which registers each node in the envtest
// API server as its k3s would), the platform's deployment (a Deployer
// applying to that API server). The experiment's measured window is read
// with the wattmeter source on each system-under-test node; then the job
// is released.
func TestWholeExperimentOnStandInTestbed(t *testing.T) {
	w := newWorld(t)
	w.api.Script(g5ktest.Script{Waiting: 1, Launching: 1})
	cs := kubetest.AdminClient(t)
	var mu sync.Mutex // the SSH stand-in answers on its own goroutines
	roles := map[string]string{}
	sshw := newSSHWorldFunc(t, func(host, cmd string) (string, int) {
		switch {
		case strings.Contains(cmd, "INSTALL_K3S_EXEC='server"):
			if err := registerNode(cs, host, testbed.RolePlatform); err != nil {
				return err.Error(), 1
			}
		case strings.Contains(cmd, "INSTALL_K3S_EXEC='agent"):
			role := cmd[strings.LastIndex(cmd, "=")+1 : strings.LastIndex(cmd, "'")]
			mu.Lock()
			roles[host] = role
			mu.Unlock()
			if err := registerNode(cs, host, role); err != nil {
				return err.Error(), 1
			}
		case strings.HasSuffix(cmd, testbed.K3sTokenPath):
			return k3sToken + "\n", 0
		case strings.HasSuffix(cmd, testbed.K3sKubeconfigPath):
			return k3sKubeconfig(t), 0
		}
		return "", 0
	})
	// Every node draws 120 W at the wall while the experiment runs;
	// taurus-2 has a wattmeter (the reference API says so), taurus-3 none:
	// its BMC reads 95 W.
	for _, n := range lyon["taurus"] {
		w.api.Power(n, func(time.Time) float64 { return 120 })
	}
	w.api.Reference("taurus-2", map[string]any{"uid": "taurus-2", "processor": map[string]any{"model": "Intel Xeon", "version": "E5-2630"},
		"sensors": map[string]any{"power": map[string]any{"available": true, "via": map[string]any{"pdu": []any{map[string]any{"uid": "wattmetre1"}}}}}})
	w.api.BMC("taurus-3", func(time.Time) float64 { return 95 })

	m := w.manager(t, "host-a", w.clk)
	imgDir := t.TempDir()
	imgBytes := imageTar(t, imgDir, "scheduler", "greenflow/scheduler:v9", 4096)
	images, err := testbed.ReadImages(imgDir)
	require.NoError(t, err)
	// What Strimzi's operator, which up installs over SSH, brings.
	_, err = kubetest.InstallCRDs(context.Background(), kubetest.Admin, deploy.FS, "crds/strimzi/*.yaml")
	require.NoError(t, err)
	// cluster up confines the provisioner's egress to the API server's
	// addresses, which a fresh server publishes a moment after it serves.
	testenv.Eventually(t, 30*time.Second, "the kubernetes Service's endpoints", func() bool {
		l, err := cs.DiscoveryV1().EndpointSlices("default").List(context.Background(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		return err == nil && len(l.Items) > 0 && len(l.Items[0].Endpoints) > 0
	})
	dep := &deployer{d: clusterdeploy.Deployer{SecretsDir: t.TempDir(), Images: images, Timeout: 2 * time.Second, Poll: 200 * time.Millisecond}}
	p := &testbed.Platform{Manager: m, Strimzi: true, Images: images,
		Runner:      func(s testbed.Spec) (testbed.Runner, error) { return sshw.runner(t, s), nil },
		Waiter:      testbed.KubeNodeWaiter{Poll: 50 * time.Millisecond, Clock: clock.RealClock{}},
		Deployer:    dep,
		APIServer:   func(string) string { return kubetest.Admin.Host },
		KwollectURL: w.api.URL + "/stable",
		Logger:      testenv.Logger(t)}

	joules := map[string]float64{}
	var readers map[string]collectorapp.SourceConfig // each SUT node's Kwollect source, as its collector reads it
	var handed results.TestbedProvenance
	var reservationID string
	err = p.Run(context.Background(), spec(t), nil, func(ctx context.Context, r testbed.Reservation, kc []byte) error {
		// The platform is there, reached with the testbed's kubeconfig.
		rc, err := clientcmd.RESTConfigFromKubeConfig(kc)
		if err != nil {
			return err
		}
		kcs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
		// The reservation handed to the platform, as its scheduler reads
		// it (the ConfigMap mounted as a file).
		cm, err := kcs.CoreV1().ConfigMaps(testbed.ProvenanceNamespace).Get(ctx, testbed.ProvenanceConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if handed, err = results.ParseTestbedProvenance([]byte(cm.Data[testbed.ProvenanceKey])); err != nil {
			return fmt.Errorf("configmap %s: %w", testbed.ProvenanceConfigMap, err)
		}
		// Byte for byte what ProvenanceJSON gives, which the scheduler's
		// test (TestTestbedReservationInEveryExperimentsProvenance) reads
		// from the mounted file into status, export and ClickHouse.
		want, err := testbed.ProvenanceJSON(r)
		if err != nil {
			return err
		}
		if cm.Data[testbed.ProvenanceKey] != string(want) {
			return fmt.Errorf("configmap %s holds %s, want %s", testbed.ProvenanceConfigMap, cm.Data[testbed.ProvenanceKey], want)
		}
		reservationID = r.ID
		// The collectors' sources files, as each collector reads its own
		// node's (the ConfigMap mounted, --sources-file=<node>.yaml): parsed
		// with the collector's parser, each names its node's Kwollect
		// source.
		sources, err := kcs.CoreV1().ConfigMaps(testbed.CollectorNamespace).Get(ctx, testbed.SourcesConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		readers = map[string]collectorapp.SourceConfig{}
		for _, host := range r.Hosts(testbed.RoleSUT) {
			list, err := collectorapp.ParseSources([]byte(sources.Data[testbed.SourcesKey(host)]))
			if err != nil {
				return fmt.Errorf("sources of %s: %w", host, err)
			}
			for _, sc := range list {
				if sc.Kind == "kwollect" {
					readers[host] = sc
				}
			}
		}
		// A measured window of 5 minutes on the system under test's nodes,
		// read from Kwollect once its data is in, with the sources the
		// files name (the stand-in asks the testbed's credentials, which
		// the collectors inside do not need).
		begin := w.clk.Now()
		w.clk.SetTime(begin.Add(5*time.Minute + 30*time.Second)) // the run is over, Kwollect has caught up
		for host, sc := range readers {
			if sc.URL != w.api.URL+"/stable" {
				return fmt.Errorf("the collector of %s reads Kwollect at %q, not the stand-in's", host, sc.URL)
			}
			in, err := energy.MeasureWindow(ctx, energy.WattmeterOptions{Series: g5k.KwollectSeries{C: backend(t, w.api.URL).C, Site: sc.Site, Node: sc.Node, BMC: sc.BMC},
				MaxLag: time.Millisecond, Poll: time.Millisecond}, begin, begin.Add(5*time.Minute))
			if err != nil {
				return err
			}
			joules[host] = in.Joules
		}
		return nil
	})
	require.NoError(t, err)

	// Each node measured at the wall through its own file: taurus-2 by its
	// wattmeter, taurus-3 by its BMC, pinned to the node's collector.
	require.Equal(t, map[string]collectorapp.SourceConfig{
		"taurus-2.lyon.grid5000.fr": {ID: "wattmeter/taurus-2", Kind: "kwollect", Node: "taurus-2", Site: "lyon", URL: w.api.URL + "/stable", Pinned: true},
		"taurus-3.lyon.grid5000.fr": {ID: "bmc/taurus-3", Kind: "kwollect", Node: "taurus-3", Site: "lyon", URL: w.api.URL + "/stable", BMC: true, Pinned: true},
	}, readers)
	require.Equal(t, 120.0*300, joules["taurus-2.lyon.grid5000.fr"])
	require.InDelta(t, 95.0*300, joules["taurus-3.lyon.grid5000.fr"], 1e-9)
	mu.Lock()
	require.Equal(t, map[string]string{"taurus-2.lyon.grid5000.fr": "sut", "taurus-3.lyon.grid5000.fr": "sut", "taurus-4.lyon.grid5000.fr": "broker",
		"taurus-5.lyon.grid5000.fr": "loadgen"}, roles)
	mu.Unlock()
	// The platform as cluster up deploys it, fitted to the reservation:
	// every component applied (none ready: envtest runs no kubelet), the
	// scheduler reading the reservation and running the imported image,
	// Kafka on the one broker node, the collectors' egress to Kwollect.
	require.ErrorContains(t, dep.notReady, "not ready after")
	applied := map[string]bool{}
	for _, c := range dep.comps {
		applied[strings.ToLower(c.Kind)+" "+c.Namespace+"/"+c.Name] = true
	}
	for _, want := range []string{"deployment greenflow/scheduler", "deployment greenflow/provisioner", "deployment greenflow/analyzer",
		"deployment greenflow/load-generator", "daemonset greenflow-collector/energy-collector", "statefulset greenflow/nats",
		"statefulset greenflow/clickhouse", "kafka kafka/greenflow"} {
		require.True(t, applied[want], "%s among %v", want, dep.comps)
	}
	sched, err := cs.AppsV1().Deployments("greenflow").Get(context.Background(), "scheduler", metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, strings.Join(sched.Spec.Template.Spec.Containers[0].Args, " "), "--testbed-reservation-file=")
	require.Contains(t, sched.Spec.Template.Spec.Containers[0].Image, "greenflow/scheduler:v9", "the image imported on the nodes")
	dyn, err := dynamic.NewForConfig(kubetest.Admin)
	require.NoError(t, err)
	nodePools, err := dyn.Resource(schema.GroupVersionResource{Group: "kafka.strimzi.io", Version: "v1", Resource: "kafkanodepools"}).Namespace("kafka").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, nodePools.Items)
	for _, p := range nodePools.Items {
		replicas, _, _ := unstructured.NestedInt64(p.Object, "spec", "replicas")
		require.Equal(t, int64(1), replicas, "Kafka on the one broker node asked for (%s)", p.GetName())
	}
	pol, err := cs.NetworkingV1().NetworkPolicies(testbed.CollectorNamespace).Get(context.Background(), testbed.KwollectPolicy, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1/32", pol.Spec.Egress[0].To[0].IPBlock.CIDR)
	// After the bootstrap, before the deployment: Strimzi's operator on
	// the control node, the image on every node.
	var control []string
	imported := map[string]bool{}
	for _, c := range sshw.srv.Commands() {
		if c.Host == "taurus-1.lyon.grid5000.fr" {
			control = append(control, c.Cmd)
		}
		if c.Cmd == testbed.ImportCommand(spec(t)) && c.Stdin == string(imgBytes) {
			imported[c.Host] = true
		}
	}
	require.Len(t, imported, 5, "every node received the whole tarball")
	require.Equal(t, "sudo-g5k cat "+testbed.K3sKubeconfigPath, control[3])
	require.Contains(t, control, "sudo-g5k k3s kubectl create -n kafka -f '"+testbed.StrimziInstallURL+"'")
	require.Equal(t, []string{"127.0.0.1/32"}, dep.cidrs, "the stand-in's address, for the collectors' policy")
	// What the platform was handed names the job, the site, the walltime
	// and every node in its pool.
	require.Equal(t, "grid5000", handed.Backend)
	require.Equal(t, "energy-a", handed.Reservation)
	require.Equal(t, reservationID, handed.ID)
	require.Equal(t, "lyon/"+handed.JobID, handed.ID)
	require.Equal(t, []string{"lyon", "taurus"}, []string{handed.Site, handed.Cluster})
	require.False(t, handed.EndsAt.IsZero())
	require.True(t, handed.ReleaseBy.Before(handed.EndsAt), "released before the walltime ends")
	pools := map[string]string{}
	for _, n := range handed.Nodes {
		pools[n.Host] = n.Role
	}
	require.Equal(t, map[string]string{"taurus-1.lyon.grid5000.fr": "control", "taurus-2.lyon.grid5000.fr": "sut", "taurus-3.lyon.grid5000.fr": "sut",
		"taurus-4.lyon.grid5000.fr": "broker", "taurus-5.lyon.grid5000.fr": "loadgen"}, pools)
	require.Len(t, w.api.Deletes(), 1, "released at the end")
	require.Empty(t, w.api.Running())
	got, err := m.Get(context.Background(), "energy-a")
	require.NoError(t, err)
	require.Equal(t, testbed.PhaseReleased, got.Phase)
}

// A node that never turns Ready fails the bring-up, saying which, and the
// reservation is released.
func TestBringUpFailureReleases(t *testing.T) {
	w := newWorld(t)
	sshw := newSSHWorldFunc(t, func(host, cmd string) (string, int) {
		switch {
		case strings.HasSuffix(cmd, testbed.K3sTokenPath):
			return k3sToken + "\n", 0
		case strings.HasSuffix(cmd, testbed.K3sKubeconfigPath):
			return k3sKubeconfig(t), 0
		}
		return "", 0 // no node ever registers
	})
	p := &testbed.Platform{Manager: w.manager(t, "host-a", w.clk),
		Runner:    func(s testbed.Spec) (testbed.Runner, error) { return sshw.runner(t, s), nil },
		Waiter:    testbed.KubeNodeWaiter{Poll: 50 * time.Millisecond},
		APIServer: func(string) string { return kubetest.Admin.Host }}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s := spec(t)
	s.Name, s.Cluster = "never-ready", "nova" // nodes no other test registers
	_, _, err := p.Up(ctx, s, nil)
	require.ErrorContains(t, err, "wait for nodes ready:")
	require.ErrorContains(t, err, "not registered")
	require.Len(t, w.api.Deletes(), 1)
}
