//go:build envtest

package cluster_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/greenflow/greenflow/deploy"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/kubetest"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// The tests tagged envtest run against a real kube-apiserver and etcd
// (package kubetest): no kubelet, no controllers, so no pod ever runs and
// no namespace finishes terminating — which is what the readiness and
// teardown reports are checked against.
func TestMain(m *testing.M) { kubetest.Main(m) }

// TestUpStatusDown drives `greenflow cluster up|status|down` against a real
// API server: up refuses a cluster without Strimzi, naming what to install,
// and applies nothing; with Strimzi's CRDs it creates the Secrets from
// credentials it keeps (0600) and every object of the overlay, with the
// provisioner's egress narrowed to the API server's real address, then says
// which components are not ready and why; a second up changes no
// credential; status reports the same; down deletes everything it applied
// and the runs' namespaces and says which namespaces are still terminating.
func TestUpStatusDown(t *testing.T) {
	ctx := context.Background()
	secrets := filepath.Join(t.TempDir(), "secrets")
	var progress []string
	newCluster := func(timeout time.Duration) *cluster.Cluster {
		c, err := cluster.New(kubetest.Admin, cluster.Options{Overlay: "single-node", SecretsDir: secrets, Timeout: timeout,
			Poll: 200 * time.Millisecond, Progress: func(s string) { progress = append(progress, s) }})
		require.NoError(t, err)
		return c
	}
	cs := kubetest.AdminClient(t)
	// A fresh API server publishes its own address a moment after it
	// serves; a cluster always has it.
	testenv.Eventually(t, 30*time.Second, "the kubernetes Service's endpoints", func() bool {
		l, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		return err == nil && len(l.Items) > 0 && len(l.Items[0].Endpoints) > 0
	})

	_, err := newCluster(5 * time.Second).Up(ctx)
	require.ErrorContains(t, err, "the cluster does not serve: Kafka kafka.strimzi.io/v1 (Strimzi's operator")
	_, err = cs.CoreV1().Namespaces().Get(ctx, cluster.Namespace, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "nothing applied before the check: %v", err)

	_, err = kubetest.InstallCRDs(ctx, kubetest.Admin, deploy.FS, "crds/strimzi/*.yaml") // as Strimzi's operator would
	require.NoError(t, err)
	comps, err := newCluster(3 * time.Second).Up(ctx)
	require.ErrorContains(t, err, "not ready after 3s")
	t.Logf("up: %v", err)
	byName := map[string]cluster.Component{}
	for _, c := range comps {
		byName[strings.ToLower(c.Kind)+" "+c.Namespace+"/"+c.Name] = c
	}
	for _, want := range []string{"deployment greenflow/scheduler", "deployment greenflow/provisioner", "deployment greenflow/analyzer",
		"deployment greenflow/load-generator", "deployment greenflow/console", "daemonset greenflow-collector/energy-collector", "statefulset greenflow/nats",
		"statefulset greenflow/clickhouse", "kafka kafka/greenflow"} {
		c, ok := byName[want]
		require.True(t, ok, "%s among %v", want, comps)
		require.False(t, c.Ready, want)
	}
	require.Contains(t, byName["deployment greenflow/scheduler"].Reason, "0/1 replicas ready")
	require.Contains(t, byName["deployment greenflow/scheduler"].Reason, "no pods were created")
	require.Contains(t, byName["kafka kafka/greenflow"].Reason, "is Strimzi's cluster operator running")
	require.NotEmpty(t, progress)

	// The credentials: kept, 0600 in a 0700 directory, and in the Secrets.
	info, err := os.Stat(secrets)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	require.NoError(t, filepath.WalkDir(secrets, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if !d.IsDir() {
			i, err := d.Info()
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), i.Mode().Perm(), p)
		}
		return nil
	}))
	token, err := os.ReadFile(cluster.AdminTokenFile(secrets))
	require.NoError(t, err)
	sched, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-scheduler-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, string(token), string(sched.Data["admin.token"]))
	require.Contains(t, string(sched.Data["clickhouse.dsn"]), "clickhouse://greenflow_writer:")
	require.Contains(t, string(sched.Data["nats.nk"]), "SU", "an nkey user seed")
	require.Contains(t, string(sched.Data[bus.TrustFileName]), `"energy-collector"`, "every user's public key, to check signatures with")
	coll, err := cs.CoreV1().Secrets(cluster.CollectorNamespace).Get(ctx, "greenflow-energy-collector-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, string(sched.Data["nats.nk"]), string(coll.Data["nats.nk"]), "each service its own NATS user")
	// The declarer's: admin's seed, which no service's Secret holds.
	admin, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-nats-admin", metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, string(admin.Data["nats.nk"]), "SU", "an nkey user seed")
	require.NotEqual(t, string(sched.Data["nats.nk"]), string(admin.Data["nats.nk"]), "admin is not the scheduler")
	require.Equal(t, string(sched.Data[bus.TrustFileName]), string(admin.Data[bus.TrustFileName]), "the declarer checks signatures with the same keys")
	reader, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-clickhouse-reader", metav1.GetOptions{})
	require.NoError(t, err)
	readerPassword, err := os.ReadFile(cluster.ReaderPasswordFile(secrets))
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(string(readerPassword)), string(reader.Data["password"]), "Grafana's key")
	require.Contains(t, string(reader.Data["clickhouse.dsn"]), "clickhouse://greenflow_reader:")
	// The console: its own NATS user, the reader's DSN (it writes nothing),
	// and the session key kept in the secrets directory.
	cons, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-console-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	require.Contains(t, string(cons.Data["nats.nk"]), "SU", "an nkey user seed")
	require.NotEqual(t, string(sched.Data["nats.nk"]), string(cons.Data["nats.nk"]), "the console's own NATS user")
	require.Contains(t, string(cons.Data["clickhouse.dsn"]), "clickhouse://greenflow_reader:")
	sessionKey, err := os.ReadFile(filepath.Join(secrets, "console-session.key"))
	require.NoError(t, err)
	require.Len(t, strings.TrimSpace(string(sessionKey)), 64, "32 random bytes, hex")
	require.Equal(t, string(sessionKey), string(cons.Data["session.key"]))
	for _, name := range []string{"greenflow-nats-tls", "greenflow-nats-authorization", "greenflow-clickhouse-users", "greenflow-nats-ca"} {
		_, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err, name)
	}
	// The API servers' HTTPS certificates, the ones the Deployments mount.
	apiTLS := map[string]map[string][]byte{}
	for _, svc := range cluster.APIServers {
		s, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-"+svc+"-tls", metav1.GetOptions{})
		require.NoError(t, err, svc)
		require.Equal(t, corev1.SecretTypeTLS, s.Type)
		apiTLS[svc] = s.Data
		d, err := cs.AppsV1().Deployments(cluster.Namespace).Get(ctx, svc, metav1.GetOptions{})
		require.NoError(t, err, svc)
		mounted := false
		for _, v := range d.Spec.Template.Spec.Volumes {
			mounted = mounted || (v.Secret != nil && v.Secret.SecretName == s.Name)
		}
		require.True(t, mounted, "%s mounts %s", svc, s.Name)
	}

	// The provisioner may reach the API server's real address only.
	eps, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	require.NoError(t, err)
	np, err := cs.NetworkingV1().NetworkPolicies(cluster.Namespace).Get(ctx, "greenflow-provisioner-kube-api", metav1.GetOptions{})
	require.NoError(t, err)
	require.Len(t, np.Spec.Egress[0].To, 1)
	require.Equal(t, eps.Items[0].Endpoints[0].Addresses[0]+"/32", np.Spec.Egress[0].To[0].IPBlock.CIDR)

	// Again: nothing rotates.
	_, err = newCluster(time.Second).Up(ctx)
	require.ErrorContains(t, err, "not ready")
	again, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-scheduler-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, sched.Data, again.Data)
	consAgain, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-console-credentials", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, cons.Data, consAgain.Data, "the session key is kept: sign-ins survive another up")
	for _, svc := range cluster.APIServers {
		s, err := cs.CoreV1().Secrets(cluster.Namespace).Get(ctx, "greenflow-"+svc+"-tls", metav1.GetOptions{})
		require.NoError(t, err, svc)
		require.Equal(t, apiTLS[svc], s.Data, "%s's certificate kept", svc)
	}

	status, err := newCluster(time.Second).Status(ctx)
	require.NoError(t, err)
	require.Len(t, status, len(comps))

	// A run's namespace the provisioner left behind goes too.
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gf-leftover-r0000", Labels: map[string]string{"app.kubernetes.io/managed-by": "greenflow"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	err = newCluster(2 * time.Second).Down(ctx)
	require.ErrorContains(t, err, "namespaces still there after 2s")
	require.ErrorContains(t, err, "is the namespace controller (kube-controller-manager) running?")
	for _, ns := range []string{cluster.Namespace, cluster.CollectorNamespace, "gf-leftover-r0000"} {
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		require.NoError(t, err)
		require.NotNil(t, n.DeletionTimestamp, "%s deleted (terminating: no namespace controller here)", ns)
	}
	_, err = cs.AppsV1().Deployments(cluster.Namespace).Get(ctx, "scheduler", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the scheduler's Deployment is gone: %v", err)
	_, err = cs.RbacV1().ClusterRoles().Get(ctx, "greenflow-provisioner", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "cluster-scoped objects go too: %v", err)
	kafka, err := cs.CoreV1().Namespaces().Get(ctx, "kafka", metav1.GetOptions{})
	require.NoError(t, err)
	require.Nil(t, kafka.DeletionTimestamp, "the kafka namespace may hold the user's Strimzi operator: it stays")
	_, err = dyn(t).Resource(schema.GroupVersionResource{Group: "kafka.strimzi.io", Version: "v1", Resource: "kafkas"}).Namespace("kafka").
		Get(ctx, "greenflow", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "GreenFlow's Kafka in it goes: %v", err)
}

func dyn(t *testing.T) dynamic.Interface {
	d, err := dynamic.NewForConfig(kubetest.Admin)
	require.NoError(t, err)
	return d
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
