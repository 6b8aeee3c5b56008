package kube

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/greenflow/greenflow/pkg/events"
)

func provision(template string, k *events.KubernetesSUT) events.RunProvision {
	return events.RunProvision{ExperimentID: "e", RunID: "e-r0001", SUT: events.SUT{Template: template, Backend: "kubernetes", Kubernetes: k},
		Kafka: events.Kafka{Brokers: []string{"b1:9092", "b2:9092"}, InputTopic: "in", OutputTopic: "out", Partitions: 3}}
}

func TestBuiltinTemplatesRenderTheirObjects(t *testing.T) {
	t.Parallel()
	kinds := func(template string) []string {
		objs, err := Render(provision(template, &events.KubernetesSUT{Image: "img:1", Replicas: 2}), "gf-e-r0001")
		require.NoError(t, err, template)
		var out []string
		for _, o := range objs {
			out = append(out, o.GetKind()+"/"+o.GetName())
		}
		return out
	}
	require.Equal(t, []string{"Deployment/uc3-processor"}, kinds("uc3-go"))
	require.Equal(t, []string{"Deployment/uc3-kstreams"}, kinds("uc3-kstreams"))
	require.Equal(t, []string{"Service/flink-jobmanager", "Deployment/flink-jobmanager", "Deployment/flink-taskmanager"}, kinds("uc3-flink"))

	objs, err := Render(provision("uc3-go", &events.KubernetesSUT{Image: "img:1"}), "ns")
	require.NoError(t, err)
	c := objs[0].Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	require.Equal(t, "img:1", c["image"])
	require.Equal(t, []any{"--brokers", "b1:9092,b2:9092", "--input", "in", "--output", "out", "--group", "uc3-e-r0001", "--metrics-addr", ":9464"}, c["args"])
	require.Equal(t, map[string]any{}, c["resources"], "no resources unless the run sets them")
}

func TestRenderErrorsNameTheProblem(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		p    events.RunProvision
		want string
	}{
		"unknown template": {provision("uc3-spark", &events.KubernetesSUT{Image: "x"}), `template "uc3-spark" is not a kubernetes template (expected one of uc3-go, uc3-kstreams, uc3-flink, manifest)`},
		"no image":         {provision("uc3-flink", &events.KubernetesSUT{}), "template uc3-flink: sut.kubernetes.image is empty"},
		"no kubernetes":    {provision("uc3-go", nil), "template uc3-go: sut.kubernetes.image is empty"},
		"empty manifest":   {provision("manifest", &events.KubernetesSUT{}), "template manifest: sut.kubernetes.manifest is empty"},
		"parse":            {provision("manifest", &events.KubernetesSUT{Manifest: "kind: {{ .Image"}), "template manifest does not parse"},
		"missing key":      {provision("manifest", &events.KubernetesSUT{Manifest: "x: {{ .Params.window }}"}), `map has no entry for key "window"`},
		"bad yaml":         {provision("manifest", &events.KubernetesSUT{Manifest: "a: [1,\n"}), "template manifest, document 1: not valid YAML"},
		"no name":          {provision("manifest", &events.KubernetesSUT{Manifest: "apiVersion: v1\nkind: ConfigMap\n"}), "template manifest, document 1: apiVersion, kind and metadata.name are required"},
		"only comments":    {provision("manifest", &events.KubernetesSUT{Manifest: "# nothing\n---\n"}), "template manifest rendered no objects"},
		"params on kstreams": {func() events.RunProvision {
			p := provision("uc3-kstreams", &events.KubernetesSUT{Image: "x"})
			p.SUT.Params = map[string]string{"threads": "2"}
			return p
		}(), "template uc3-kstreams takes no sut.params; set the containers' environment with sut.kubernetes.env"},
		"unknown uc3 param": {func() events.RunProvision {
			p := provision("uc3-go", &events.KubernetesSUT{Image: "x"})
			p.SUT.Params = map[string]string{"colour": "red"}
			return p
		}(), "unknown parameter sut.params.colour"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Render(c.p, "ns")
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestNamesAreValidKubernetesNames(t *testing.T) {
	t.Parallel()
	b := Default()
	require.Equal(t, "gf-uc3-local-demo-20261125-101010-ab12-r0001", b.Namespace("uc3-local-demo-20261125-101010-ab12-r0001"))
	long := strings.Repeat("very-long-experiment-name-", 4) + "20261125-101010-ab12-r0001-a1"
	ns := b.Namespace(long)
	require.LessOrEqual(t, len(ns), 63)
	require.Regexp(t, `^gf-[a-z0-9-]+-[0-9a-f]{8}$`, ns)
	require.NotEqual(t, ns, b.Namespace(long+"x"), "distinct runs, distinct namespaces")
	require.Equal(t, "exp-1-r0001", LabelValue("exp-1-r0001"))
	lv := LabelValue(long)
	require.LessOrEqual(t, len(lv), 63)
	require.Regexp(t, labelValueRE, lv)
	require.Regexp(t, labelValueRE, LabelValue("exp/with spaces_"))
}

func TestNoKubeconfigIsAClearError(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err := RESTConfig("", "")
	require.ErrorContains(t, err, "kubernetes backend: no kubeconfig: --kubeconfig is not set")
	require.ErrorContains(t, err, "KUBERNETES_SERVICE_HOST is unset")
	_, err = RESTConfig("/nonexistent/kubeconfig", "")
	require.ErrorContains(t, err, "kubeconfig /nonexistent/kubeconfig: stat /nonexistent/kubeconfig: no such file or directory")
}

// Each built-in template's pods are admitted at the Pod Security level its
// run namespace enforces (Pod Security admission's own checks, as the API
// server runs them), with the placement and environment the backend adds.
func TestBuiltinTemplatesPassTheirPodSecurityLevel(t *testing.T) {
	t.Parallel()
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	require.NoError(t, err)
	version, err := psaapi.ParseVersion(PodSecurityVersion)
	require.NoError(t, err)
	require.Equal(t, "restricted", podSecurityLevel("uc3-go"), "the reference processor needs nothing more")
	for _, template := range Templates[:3] {
		objs, err := Render(provision(template, &events.KubernetesSUT{Image: "img:1", Replicas: 2}), "ns")
		require.NoError(t, err)
		level, err := psaapi.ParseLevel(podSecurityLevel(template))
		require.NoError(t, err)
		for _, u := range objs {
			if u.GetKind() != "Deployment" {
				continue
			}
			var d appsv1.Deployment
			require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d))
			res := policy.AggregateCheckResults(eval.EvaluatePod(psaapi.LevelVersion{Level: level, Version: version},
				&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec))
			require.True(t, res.Allowed, "template %s, deployment %s refused at %s: %s", template, d.Name, level, res.ForbiddenDetail())
		}
	}
	// What the namespace carries: enforced level, and restricted's warnings.
	require.Equal(t, map[string]string{
		"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.30",
		"pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/audit-version": "v1.30",
		"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "v1.30",
	}, podSecurityLabels(podSecurityLevel("manifest")))
}
