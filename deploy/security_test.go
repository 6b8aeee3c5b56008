package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	sigyaml "sigs.k8s.io/yaml"

	"github.com/greenflow/greenflow/pkg/kubetest"
)

// manifests are the typed objects of deploy/base, as kubectl would apply them.
type manifests struct {
	namespaces map[string]corev1.Namespace
	workloads  []workload
	policies   []networkingv1.NetworkPolicy
	svcs       []corev1.Service
}

// workload is a Deployment's or DaemonSet's pod template.
type workload struct {
	kind, name, namespace string
	pod                   corev1.PodTemplateSpec
}

// load renders the kustomization in dir and reads its objects.
func load(t *testing.T, dir string) manifests {
	t.Helper()
	return parse(t, dir, render(t, dir))
}

// deployments are what an operator applies: the base (with their own
// infrastructure), each overlay, and an overlay with the optional Grafana.
var deployments = []string{"base", "overlays/single-node", "overlays/testbed", "overlays/single-node+components/grafana"}

// forEachDeployment runs check on each of deployments as an operator
// configures it.
func forEachDeployment(t *testing.T, check func(t *testing.T, m manifests)) {
	for _, d := range deployments {
		t.Run(strings.ReplaceAll(d, "/", "-"), func(t *testing.T) { check(t, load(t, configured(t, d))) })
	}
}

// has reports a workload named name.
func (m manifests) has(name string) bool {
	for _, w := range m.workloads {
		if w.name == name {
			return true
		}
	}
	return false
}

// hasPolicy reports a NetworkPolicy named name.
func (m manifests) hasPolicy(name string) bool {
	for _, p := range m.policies {
		if p.Name == name {
			return true
		}
	}
	return false
}

// services are GreenFlow's own workloads (not NATS, ClickHouse or Kafka).
func (m manifests) services() []workload {
	var out []workload
	for _, w := range m.workloads {
		if w.pod.Labels["app.kubernetes.io/part-of"] == "greenflow" {
			out = append(out, w)
		}
	}
	return out
}

func parse(t *testing.T, source string, rendered []byte) manifests {
	t.Helper()
	m := manifests{namespaces: map[string]corev1.Namespace{}}
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	for i := 0; ; i++ {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		js, err := sigyaml.Marshal(doc)
		require.NoError(t, err)
		unmarshal := func(into any) {
			require.NoError(t, sigyaml.UnmarshalStrict(js, into), "%s document %d", source, i)
		}
		switch doc["kind"] {
		case "Namespace":
			var ns corev1.Namespace
			unmarshal(&ns)
			m.namespaces[ns.Name] = ns
		case "Deployment":
			var d appsv1.Deployment
			unmarshal(&d)
			m.workloads = append(m.workloads, workload{"Deployment", d.Name, d.Namespace, d.Spec.Template})
		case "DaemonSet":
			var d appsv1.DaemonSet
			unmarshal(&d)
			m.workloads = append(m.workloads, workload{"DaemonSet", d.Name, d.Namespace, d.Spec.Template})
		case "StatefulSet":
			var d appsv1.StatefulSet
			unmarshal(&d)
			m.workloads = append(m.workloads, workload{"StatefulSet", d.Name, d.Namespace, d.Spec.Template})
		case "Service":
			var sv corev1.Service
			unmarshal(&sv)
			m.svcs = append(m.svcs, sv)
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			unmarshal(&p)
			m.policies = append(m.policies, p)
		}
	}
	return m
}

// Every workload is admitted by Pod Security admission's own checks
// (k8s.io/pod-security-admission, what the API server runs) at the level its
// namespace enforces; every service but the energy collector runs in a
// namespace enforcing "restricted"; the collector is refused "baseline"
// only for its host paths, which are read-only, and holds no privilege,
// capability, host namespace or escalation.
func TestWorkloadsPassPodSecurity(t *testing.T) { forEachDeployment(t, workloadsPassPodSecurity) }

func workloadsPassPodSecurity(t *testing.T, m manifests) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	require.NoError(t, err)
	check := func(w workload, level psaapi.Level) policy.AggregateCheckResult {
		return policy.AggregateCheckResults(eval.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()},
			&w.pod.ObjectMeta, &w.pod.Spec))
	}
	require.Len(t, m.services(), 6, "scheduler, provisioner, load-generator, analyzer, console, energy-collector")
	for _, w := range m.workloads { // NATS and ClickHouse too, where the overlay has them
		ns, ok := m.namespaces[w.namespace]
		require.True(t, ok, "%s %s: namespace %q is not among the manifests", w.kind, w.name, w.namespace)
		level, err := psaapi.ParseLevel(ns.Labels[psaapi.EnforceLevelLabel])
		require.NoError(t, err, "namespace %s enforces no Pod Security level", ns.Name)
		res := check(w, level)
		require.True(t, res.Allowed, "%s %s refused at %s: %s", w.kind, w.name, level, res.ForbiddenDetail())
		if w.name != "energy-collector" {
			require.Equal(t, psaapi.LevelRestricted, level, "%s runs under restricted", w.name)
			continue
		}
		// The collector: everything but its host paths fits baseline.
		base := check(w, psaapi.LevelBaseline)
		require.False(t, base.Allowed)
		require.Equal(t, []string{"hostPath volumes"}, base.ForbiddenReasons, base.ForbiddenDetail())
		spec := w.pod.Spec
		require.False(t, spec.HostPID || spec.HostNetwork || spec.HostIPC, "no host namespace")
		require.NotNil(t, spec.AutomountServiceAccountToken)
		require.False(t, *spec.AutomountServiceAccountToken, "no API token")
		hostPaths := map[string]bool{}
		for _, v := range spec.Volumes {
			if v.HostPath != nil {
				hostPaths[v.Name] = true
			}
		}
		require.NotEmpty(t, hostPaths)
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			require.NotNil(t, sc)
			require.False(t, sc.Privileged != nil && *sc.Privileged, "not privileged")
			require.NotNil(t, sc.AllowPrivilegeEscalation)
			require.False(t, *sc.AllowPrivilegeEscalation)
			require.NotNil(t, sc.Capabilities)
			require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			require.Empty(t, sc.Capabilities.Add, "no capability")
			for _, vm := range c.VolumeMounts {
				if hostPaths[vm.Name] {
					require.True(t, vm.ReadOnly, "host path %s mounted read-only", vm.Name)
				}
			}
		}
	}
}

// endpoint is one side of a connection: a pod (namespace, labels) or an
// address outside the cluster's pods (ip).
type endpoint struct {
	ns     string
	labels map[string]string
	ip     string
}

func svc(name string) endpoint {
	ns := "greenflow"
	if name == "energy-collector" {
		ns = "greenflow-collector"
	}
	return endpoint{ns: ns, labels: map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "greenflow"}}
}

// allowed evaluates the policies as the network plugin does: a pod that
// some policy of a direction selects is isolated in it, and a connection
// is allowed when the source may send it and the destination receive it.
func (m manifests) allowed(from, to endpoint, proto corev1.Protocol, port int) bool {
	return m.direction(networkingv1.PolicyTypeEgress, from, to, proto, port) &&
		m.direction(networkingv1.PolicyTypeIngress, to, from, proto, port)
}

func (m manifests) direction(dir networkingv1.PolicyType, self, peer endpoint, proto corev1.Protocol, port int) bool {
	if self.ip != "" {
		return true // not a pod: no policy applies to it
	}
	isolated := false
	for _, p := range m.policies {
		if p.Namespace != self.ns || !hasType(p, dir) || !matches(p.Spec.PodSelector, self.labels) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range p.Spec.Egress {
				if portsMatch(r.Ports, proto, port) && m.peersMatch(r.To, p.Namespace, peer) {
					return true
				}
			}
		} else {
			for _, r := range p.Spec.Ingress {
				if portsMatch(r.Ports, proto, port) && m.peersMatch(r.From, p.Namespace, peer) {
					return true
				}
			}
		}
	}
	return !isolated
}

func hasType(p networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	for _, x := range p.Spec.PolicyTypes {
		if x == t {
			return true
		}
	}
	return false
}

func matches(sel metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		panic(err)
	}
	return s.Matches(labels.Set(l))
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, proto corev1.Protocol, port int) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pr := corev1.ProtocolTCP
		if p.Protocol != nil {
			pr = *p.Protocol
		}
		if pr == proto && (p.Port == nil || p.Port.IntValue() == port) {
			return true
		}
	}
	return false
}

func (m manifests) peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNS string, peer endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			_, cidr, err := net.ParseCIDR(p.IPBlock.CIDR)
			if err == nil && peer.ip != "" && cidr.Contains(net.ParseIP(peer.ip)) {
				return true
			}
			continue
		}
		if peer.ip != "" {
			continue
		}
		nsOK := peer.ns == policyNS
		if p.NamespaceSelector != nil {
			nsOK = matches(*p.NamespaceSelector, map[string]string{"kubernetes.io/metadata.name": peer.ns})
		}
		podOK := p.PodSelector == nil || matches(*p.PodSelector, peer.labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

// The network policies allow exactly the flows the architecture has: every
// service reaches DNS, NATS and ClickHouse; only the services that use
// Kafka reach it; only the provisioner reaches the Kubernetes API; only the
// console reaches an HTTP API, the scheduler's and the analyzer's; the HTTP
// port is reachable from GreenFlow's namespace (not from its other
// services: they talk over NATS) and Prometheus's; the console's pages from
// the ingress controller's namespace; on a testbed the collectors reach
// the Grid'5000 API (Kwollect, HTTPS) and no other service does; nothing
// else is, in or out.
func TestNetworkPoliciesAllowTheArchitecturesFlowsOnly(t *testing.T) {
	forEachDeployment(t, networkPoliciesAllowTheArchitecturesFlowsOnly)
}

func networkPoliciesAllowTheArchitecturesFlowsOnly(t *testing.T, m manifests) {
	nats := endpoint{ns: "greenflow", labels: map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/part-of": "greenflow-platform"}}
	clickhouse := endpoint{ns: "greenflow", labels: map[string]string{"app.kubernetes.io/name": "clickhouse", "app.kubernetes.io/part-of": "greenflow-platform"}}
	kafka := endpoint{ns: "kafka", labels: map[string]string{"strimzi.io/kind": "Kafka"}}
	dns := endpoint{ns: "kube-system", labels: map[string]string{"k8s-app": "kube-dns"}}
	apiServer := endpoint{ip: testAPIServer}
	prometheus := endpoint{ns: "monitoring", labels: map[string]string{"app.kubernetes.io/name": "prometheus"}}
	stranger := endpoint{ns: "default", labels: map[string]string{"app": "web"}}
	// Grafana: the component's pod (its labels), or without the component
	// any pod of GreenFlow's namespace that is not a service.
	grafana := endpoint{ns: "greenflow", labels: map[string]string{"app.kubernetes.io/name": "grafana", "app.kubernetes.io/part-of": "greenflow-platform"}}
	ingress := endpoint{ns: "ingress-nginx", labels: map[string]string{"app.kubernetes.io/name": "ingress-nginx"}}
	sut := endpoint{ns: "gf-run-e1-r0000", labels: map[string]string{"app": "uc3"}}
	usesKafka := map[string]bool{"scheduler": true, "provisioner": true, "load-generator": true, "analyzer": true}
	kwollect := endpoint{ip: testKwollect}
	onTestbed := m.hasPolicy("greenflow-collector-kwollect")

	type flow struct {
		from, to endpoint
		proto    corev1.Protocol
		port     int
		want     bool
	}
	var flows []flow
	for _, w := range m.services() {
		s := svc(w.name)
		require.Equal(t, s.labels, w.pod.Labels, "%s's pod labels", w.name)
		flows = append(flows,
			flow{s, dns, corev1.ProtocolUDP, 53, true},
			flow{s, nats, corev1.ProtocolTCP, 4222, true},
			flow{s, clickhouse, corev1.ProtocolTCP, 9000, true},
			flow{s, kafka, corev1.ProtocolTCP, 9092, usesKafka[w.name]},
			flow{s, apiServer, corev1.ProtocolTCP, 443, w.name == "provisioner"},
			flow{s, apiServer, corev1.ProtocolTCP, 6443, w.name == "provisioner"},
			flow{s, kwollect, corev1.ProtocolTCP, 443, onTestbed && w.name == "energy-collector"},
			flow{s, kwollect, corev1.ProtocolTCP, 80, false},
			flow{kwollect, s, corev1.ProtocolTCP, 9464, false},
			flow{s, endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 443, false},
			flow{s, endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 6443, false},
			flow{s, endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 80, false},
			flow{s, sut, corev1.ProtocolTCP, 8080, false},
			flow{s, stranger, corev1.ProtocolTCP, 5432, false},
			flow{prometheus, s, corev1.ProtocolTCP, 9464, true},
			flow{stranger, s, corev1.ProtocolTCP, 9464, false},
			flow{sut, s, corev1.ProtocolTCP, 9464, false},
			flow{svc("scheduler"), s, corev1.ProtocolTCP, 22, false},
		)
		// Services never call each other over HTTP (they talk over NATS)
		// but the console, which calls the scheduler's and analyzer's APIs
		// only; a pod of GreenFlow's namespace that is not a service may
		// call the APIs — not the Grafana component's, which reads
		// ClickHouse only.
		flows = append(flows,
			flow{svc("analyzer"), s, corev1.ProtocolTCP, 9464, false},
			flow{svc("console"), s, corev1.ProtocolTCP, 9464, w.name == "scheduler" || w.name == "analyzer"},
			flow{s, svc("console"), corev1.ProtocolTCP, 8080, false},
		)
		if w.name != "energy-collector" {
			flows = append(flows, flow{grafana, s, corev1.ProtocolTCP, 9464, !m.has("grafana")})
		}
		// Browsers come through the ingress controller, to the console's
		// pages only.
		flows = append(flows, flow{ingress, s, corev1.ProtocolTCP, 8080, w.name == "console"},
			flow{ingress, s, corev1.ProtocolTCP, 9464, false})
	}
	require.True(t, m.has("console"), "the console is deployed")
	flows = append(flows,
		flow{stranger, svc("console"), corev1.ProtocolTCP, 8080, false},
		flow{sut, svc("console"), corev1.ProtocolTCP, 8080, false},
		flow{grafana, svc("console"), corev1.ProtocolTCP, 8080, false},
		flow{prometheus, svc("console"), corev1.ProtocolTCP, 8080, false},
		flow{svc("console"), endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 9464, false},
	)
	// With the overlays' NATS and ClickHouse: only GreenFlow reaches them.
	if m.has("nats") {
		flows = append(flows,
			flow{nats, nats, corev1.ProtocolTCP, 6222, true},
			flow{prometheus, nats, corev1.ProtocolTCP, 8222, true},
			flow{stranger, nats, corev1.ProtocolTCP, 4222, false},
			flow{sut, nats, corev1.ProtocolTCP, 4222, false},
			flow{stranger, nats, corev1.ProtocolTCP, 6222, false},
			flow{svc("scheduler"), nats, corev1.ProtocolTCP, 6222, false},
		)
		// The declarer (admin's seed) reaches NATS's clients' port only,
		// and nothing reaches it.
		require.True(t, m.has("nats-topology"), "the declarer comes with the overlays' NATS")
		declarer := endpoint{ns: "greenflow", labels: map[string]string{"app.kubernetes.io/name": "nats-topology", "app.kubernetes.io/part-of": "greenflow-platform"}}
		flows = append(flows,
			flow{declarer, nats, corev1.ProtocolTCP, 4222, true},
			flow{declarer, dns, corev1.ProtocolUDP, 53, true},
			flow{declarer, nats, corev1.ProtocolTCP, 6222, false},
			flow{declarer, clickhouse, corev1.ProtocolTCP, 9000, false},
			flow{declarer, endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 443, false},
			flow{stranger, declarer, corev1.ProtocolTCP, 8080, false},
			flow{svc("scheduler"), declarer, corev1.ProtocolTCP, 9464, false},
		)
	}
	if m.has("clickhouse") {
		flows = append(flows,
			flow{grafana, clickhouse, corev1.ProtocolTCP, 9000, true},
			flow{stranger, clickhouse, corev1.ProtocolTCP, 9000, false},
			flow{sut, clickhouse, corev1.ProtocolTCP, 9000, false},
			flow{svc("scheduler"), clickhouse, corev1.ProtocolTCP, 8123, false},
		)
	}
	// The Grafana component: DNS and ClickHouse's native port out, nothing
	// else (no plugin download, no other service); its HTTP port in.
	if m.has("grafana") {
		require.True(t, m.has("clickhouse"), "Grafana comes with an overlay's ClickHouse here")
		flows = append(flows,
			flow{grafana, dns, corev1.ProtocolUDP, 53, true},
			flow{grafana, clickhouse, corev1.ProtocolTCP, 9000, true},
			flow{grafana, clickhouse, corev1.ProtocolTCP, 8123, false},
			flow{grafana, nats, corev1.ProtocolTCP, 4222, false},
			flow{grafana, kafka, corev1.ProtocolTCP, 9092, false},
			flow{grafana, endpoint{ip: "203.0.113.7"}, corev1.ProtocolTCP, 443, false},
			flow{grafana, apiServer, corev1.ProtocolTCP, 443, false},
			flow{stranger, grafana, corev1.ProtocolTCP, 3000, true},
			flow{stranger, grafana, corev1.ProtocolTCP, 22, false},
		)
	}
	for _, f := range flows {
		name := fmt.Sprintf("%s → %s %s/%d", describe(f.from), describe(f.to), f.proto, f.port)
		require.Equal(t, f.want, m.allowed(f.from, f.to, f.proto, f.port), name)
	}
}

// Until the operator sets the API server's address, the provisioner's
// policy fails closed: it reaches no address on the API ports.
func TestTheKubeAPIPolicyFailsClosedUntilConfigured(t *testing.T) {
	m := load(t, "base")
	for _, ip := range []string{testAPIServer, "10.96.0.1", "172.18.0.2", "203.0.113.7"} {
		for _, port := range []int{443, 6443} {
			require.False(t, m.allowed(svc("provisioner"), endpoint{ip: ip}, corev1.ProtocolTCP, port), "%s:%d before it is configured", ip, port)
		}
	}
}

// Until `testbed up` (or the operator) sets the Grid'5000 API's
// addresses, the collectors' policy on the testbed fails closed too: they
// reach no address on 443, and measure with their local meters.
func TestTheKwollectPolicyFailsClosedUntilConfigured(t *testing.T) {
	m := load(t, "overlays/testbed")
	require.True(t, m.hasPolicy("greenflow-collector-kwollect"))
	for _, ip := range []string{testKwollect, "172.16.0.1", "203.0.113.7"} {
		require.False(t, m.allowed(svc("energy-collector"), endpoint{ip: ip}, corev1.ProtocolTCP, 443), "%s:443 before it is configured", ip)
	}
}

func describe(e endpoint) string {
	if e.ip != "" {
		return e.ip
	}
	name := e.labels["app.kubernetes.io/name"]
	if name == "" {
		name = strings.TrimSpace(fmt.Sprint(e.labels))
	}
	return e.ns + "/" + name
}

// flagsOf reads each service's flags from the golden file the services'
// flag test keeps (services/greenflow/testdata/flags.golden).
func flagsOf(t *testing.T) map[string]map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../services/greenflow/testdata/flags.golden")
	require.NoError(t, err)
	out := map[string]map[string]bool{}
	var cur string
	for _, line := range strings.Split(string(raw), "\n") {
		if name, ok := strings.CutPrefix(line, "## "); ok {
			cur = strings.TrimSpace(name)
			out[cur] = map[string]bool{}
			continue
		}
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "-"); ok && cur != "" && !strings.HasPrefix(line, "    ") {
			out[cur][strings.Fields(f)[0]] = true
		}
	}
	return out
}

// Every service takes its credentials — its NATS nkey seed, its ClickHouse
// DSN with the password, NATS's CA, the console's session key — from files of Secret volumes mounted
// read-only, readable by the container's user and no one else's; no
// credential is in an argument, an environment variable or the ConfigMap;
// and every flag the manifests pass exists on the service.
func TestCredentialsComeFromSecrets(t *testing.T) { forEachDeployment(t, credentialsComeFromSecrets) }

func credentialsComeFromSecrets(t *testing.T, m manifests) {
	flags := flagsOf(t)
	raw, err := os.ReadFile("base/config.yaml")
	require.NoError(t, err)
	require.NotContains(t, string(raw), "@", "no user or password in the ConfigMap's addresses")
	require.NotContains(t, strings.ToLower(string(raw)), "password")
	for _, w := range m.services() {
		spec := w.pod.Spec
		secrets := map[string]corev1.SecretVolumeSource{}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				secrets[v.Name] = *v.Secret
			}
		}
		require.Equal(t, "greenflow-"+w.name+"-credentials", secrets["credentials"].SecretName, "%s: a Secret of its own", w.name)
		for _, c := range spec.Containers {
			mounts := map[string]corev1.VolumeMount{}
			for _, vm := range c.VolumeMounts {
				mounts[vm.Name] = vm
			}
			args := map[string]string{}
			for _, a := range c.Args {
				k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				require.True(t, flags[w.name][k], "%s: --%s is not a flag of the service", w.name, k)
				args[k] = v
			}
			files := []string{"nats-nkey-file", "clickhouse-dsn-file", "nats-ca-file"}
			if w.name == "console" { // the key its session cookies are sealed with
				files = append(files, "session-key-file")
			}
			for _, k := range files {
				path := args[k]
				require.NotEmpty(t, path, "%s: --%s", w.name, k)
				in := ""
				for name, vm := range mounts {
					if strings.HasPrefix(path, vm.MountPath+"/") {
						in = name
						require.True(t, vm.ReadOnly, "%s: %s mounted read-only", w.name, name)
					}
				}
				sv, ok := secrets[in]
				require.True(t, ok, "%s: --%s=%s is not in a Secret volume", w.name, k, path)
				mode := int32(0o644)
				if sv.DefaultMode != nil {
					mode = *sv.DefaultMode
				}
				if k != "nats-ca-file" { // the CA is public
					require.Zero(t, mode&0o007, "%s: %s readable by others (mode %o)", w.name, in, mode)
					root := spec.SecurityContext != nil && spec.SecurityContext.RunAsUser != nil && *spec.SecurityContext.RunAsUser == 0
					if !root {
						require.NotNil(t, spec.SecurityContext.FSGroup, "%s: a non-root user reads its Secret through fsGroup", w.name)
						require.NotZero(t, mode&0o040, "%s: %s group-readable for the fsGroup (mode %o)", w.name, in, mode)
					}
				}
			}
			require.Empty(t, args["clickhouse-dsn"], "%s: no DSN in the arguments", w.name)
			for _, e := range c.Env {
				require.NotContains(t, strings.ToLower(e.Name), "password", w.name)
				require.NotContains(t, e.Value, "@", "%s: no credentials in env %s", w.name, e.Name)
			}
		}
	}
}

// The provisioner's admission policies (its namespaces, the objects in
// them) name the provisioner by its user name, a string kustomize does not
// rewrite: in every deployment it must be the service account the
// provisioner's pods run as, in their namespace, or a policy would
// restrain nobody.
func TestTheNamespacePolicyNamesTheProvisioner(t *testing.T) {
	for _, d := range deployments {
		t.Run(strings.ReplaceAll(d, "/", "-"), func(t *testing.T) {
			objs, err := kubetest.Decode(render(t, configured(t, d)), d)
			require.NoError(t, err)
			var user string
			conditions := map[string]string{}
			for _, o := range objs {
				switch {
				case o.GetKind() == "Deployment" && o.GetName() == "provisioner":
					sa, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
					user = "system:serviceaccount:" + o.GetNamespace() + ":" + sa
				case o.GetKind() == "ValidatingAdmissionPolicy":
					conds, _, _ := unstructured.NestedSlice(o.Object, "spec", "matchConditions")
					require.Len(t, conds, 1)
					conditions[o.GetName()], _ = conds[0].(map[string]any)["expression"].(string)
				}
			}
			require.NotEmpty(t, user)
			for _, policy := range []string{"greenflow-provisioner-namespaces", "greenflow-provisioner-run-objects"} {
				require.Equal(t, "request.userInfo.username == '"+user+"'", conditions[policy], policy)
			}
		})
	}
}
