package deploy

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// apiServers are the services whose HTTP servers carry bearer tokens: the
// scheduler's API, the analyzer's results API, the console's sign-in and
// sessions (pkg/cluster.APIServers issues their certificates; this
// package cannot import it, pkg/cluster embeds this one).
var apiServers = map[string]bool{"scheduler": true, "analyzer": true, "console": true}

// tlsFlags: which flags put the server listening on an address flag on
// TLS — pkg/svcmain's HTTP server (API, /metrics, /healthz) and the
// console's pages.
var tlsFlags = map[string][2]string{
	"metrics-addr": {"http-tls-cert-file", "http-tls-key-file"},
	"console-addr": {"tls-cert-file", "tls-key-file"},
}

// argsOf reads a container's --flag=value arguments.
func argsOf(c corev1.Container) map[string]string {
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		args[k] = v
	}
	return args
}

// Every port of an API server's Service is HTTPS end to end: the port says
// so (appProtocol https), the server listening behind it is started with a
// certificate and key from its own TLS Secret (mounted read-only, the key
// readable by no other user), its probes speak HTTPS and its scrape
// annotation asks for https; and every GreenFlow container that calls an
// API in the cluster calls it at https://<service>.greenflow.svc — a name
// its certificate holds — trusting a CA from a mounted Secret.
func TestEveryAPIPortIsTLS(t *testing.T) { forEachDeployment(t, everyAPIPortIsTLS) }

func everyAPIPortIsTLS(t *testing.T, m manifests) {
	workloads := map[string]workload{}
	for _, w := range m.services() {
		workloads[w.name] = w
	}
	checked := 0
	for _, sv := range m.svcs {
		name := sv.Labels["app.kubernetes.io/name"]
		if sv.Labels["app.kubernetes.io/part-of"] != "greenflow" || !apiServers[name] {
			continue
		}
		w, ok := workloads[name]
		require.True(t, ok, "Service %s selects a workload of the manifests", sv.Name)
		require.Equal(t, 1, len(w.pod.Spec.Containers), "%s: one container", name)
		c := w.pod.Spec.Containers[0]
		args := argsOf(c)
		mounts := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			mounts[vm.Name] = vm
		}
		secretOf := func(path string) (corev1.SecretVolumeSource, bool) {
			for _, v := range w.pod.Spec.Volumes {
				if vm, ok := mounts[v.Name]; ok && v.Secret != nil && strings.HasPrefix(path, vm.MountPath+"/") {
					require.True(t, vm.ReadOnly, "%s: %s mounted read-only", name, v.Name)
					return *v.Secret, true
				}
			}
			return corev1.SecretVolumeSource{}, false
		}
		for _, p := range sv.Spec.Ports {
			what := sv.Name + ":" + p.Name
			require.NotNil(t, p.AppProtocol, "%s: appProtocol", what)
			require.Equal(t, "https", *p.AppProtocol, what)
			var port *corev1.ContainerPort
			for i, cp := range c.Ports {
				if cp.Name == p.TargetPort.String() || cp.ContainerPort == p.TargetPort.IntVal {
					port = &c.Ports[i]
				}
			}
			require.NotNil(t, port, "%s: target port %s is a port of the container", what, p.TargetPort.String())
			addrFlag := ""
			for f := range tlsFlags {
				if a, ok := args[f]; ok && strings.HasSuffix(a, ":"+itoa(port.ContainerPort)) {
					addrFlag = f
				}
			}
			require.NotEmpty(t, addrFlag, "%s: which server listens on %d", what, port.ContainerPort)
			for _, f := range tlsFlags[addrFlag] {
				path := args[f]
				require.NotEmpty(t, path, "%s: the server on --%s has --%s", what, addrFlag, f)
				sec, ok := secretOf(path)
				require.True(t, ok, "%s: --%s=%s is in a Secret volume", what, f, path)
				require.Equal(t, "greenflow-"+name+"-tls", sec.SecretName, "%s: its own certificate", what)
				require.NotNil(t, sec.DefaultMode)
				require.Zero(t, *sec.DefaultMode&0o007, "%s: the key readable by no other user (mode %o)", what, *sec.DefaultMode)
			}
			for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Port.String() == port.Name {
					require.Equal(t, corev1.URISchemeHTTPS, probe.HTTPGet.Scheme, "%s: probe of %s", what, probe.HTTPGet.Path)
				}
			}
			if w.pod.Annotations["prometheus.io/port"] == itoa(port.ContainerPort) {
				require.Equal(t, "https", w.pod.Annotations["prometheus.io/scheme"], "%s: scraped over https", what)
			}
			checked++
		}
	}
	require.Equal(t, 4, checked, "the scheduler's and analyzer's API ports, the console's metrics and pages")

	// The callers: every URL flag naming a GreenFlow Service.
	calls := 0
	for _, w := range m.services() {
		for _, c := range w.pod.Spec.Containers {
			args := argsOf(c)
			for f, v := range args {
				if !strings.HasSuffix(f, "-url") {
					continue
				}
				u, err := url.Parse(v)
				require.NoError(t, err, "%s --%s", w.name, f)
				svcName, _, _ := strings.Cut(u.Hostname(), ".")
				if !apiServers[svcName] {
					continue
				}
				calls++
				require.Equal(t, "https", u.Scheme, "%s --%s=%s", w.name, f, v)
				require.Equal(t, svcName+".greenflow.svc", u.Hostname(), "%s --%s: a name the certificate holds", w.name, f)
				ca := args["api-ca-file"]
				require.NotEmpty(t, ca, "%s calls %s: --api-ca-file", w.name, v)
				var in string
				for _, vm := range c.VolumeMounts {
					if strings.HasPrefix(ca, vm.MountPath+"/") {
						in = vm.Name
					}
				}
				found := false
				for _, vol := range w.pod.Spec.Volumes {
					found = found || (vol.Name == in && vol.Secret != nil && vol.Secret.SecretName == "greenflow-nats-ca")
				}
				require.True(t, found, "%s: --api-ca-file=%s is the cluster's CA (Secret greenflow-nats-ca)", w.name, ca)
			}
		}
	}
	require.Equal(t, 2, calls, "the console calls the scheduler and the analyzer")
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
