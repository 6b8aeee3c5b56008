package spec_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
)

func TestExampleSpecsValidate(t *testing.T) {
	for _, f := range []string{"../../examples/uc3-local.yaml", "../../examples/uc3-capacity.yaml", "../../examples/uc3-nightly.yaml", "../../examples/uc3-kubernetes.yaml", "../../examples/uc3-testbed.yaml"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		e, err := spec.Parse(b, nil)
		require.NoError(t, err, f)
		n, err := e.Count()
		require.NoError(t, err)
		require.GreaterOrEqual(t, n, 1)
	}
}

func TestEveryProblemIsReportedWithItsPath(t *testing.T) {
	doc := `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: Bad_Name}
spec:
  sut: {template: nope, backend: local}
  workload: {sensors: -1, periodMs: 1000, format: xml}
  factors:
    - name: workload.sensors
  repetitions: 0
`
	_, err := spec.Parse([]byte(doc), nil)
	require.Error(t, err)
	msg := err.Error()
	for _, want := range []string{"metadata.name", "spec.sut.template", "unknown template \"nope\"", "spec.workload.sensors",
		"spec.workload.format", "spec.factors[0]: no values", "spec.repetitions"} {
		require.Contains(t, msg, want)
	}
}

func TestUnknownFieldsAreErrorsWithLine(t *testing.T) {
	doc := head + "spec:\n  repetitons: 3\n"
	_, err := spec.Parse([]byte(doc), nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "line 5")
	require.Contains(t, err.Error(), "repetitons")
}

func TestSetOverridesAndFactorExpansion(t *testing.T) {
	b, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(t, err)
	e, err := spec.Parse(b, []string{"spec.repetitions=3", "spec.order=random", "spec.kafka.partitions=8"})
	require.NoError(t, err)
	require.Equal(t, 3, e.Spec.Repetitions)
	plan, err := e.Expand("exp-1", 42)
	require.NoError(t, err)
	require.Len(t, plan.Runs, 6)
	again, err := e.Expand("exp-1", 42)
	require.NoError(t, err)
	require.Equal(t, plan, again, "same seed, same plan")

	hashes := map[string]string{}
	for i, r := range plan.Runs {
		require.Equal(t, i, r.Index)
		require.True(t, strings.HasPrefix(r.ID, "exp-1-r"))
		require.Equal(t, 8, r.Config.Kafka.Partitions)
		require.Equal(t, r.Factors["workload.sensors"], itoa(r.Config.Workload.Sensors))
		if h, ok := hashes[r.Factors["workload.sensors"]]; ok {
			require.Equal(t, h, r.ConfigHash, "same config, same hash")
		}
		hashes[r.Factors["workload.sensors"]] = r.ConfigHash
		// Interleaved: each block of 2 runs holds one repetition of each config.
		require.Equal(t, i/2, r.Repetition)
	}
	require.NotEqual(t, hashes["500"], hashes["2000"])
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestBadFactorValueIsRejected(t *testing.T) {
	doc := head + `spec:
  factors:
    - name: workload.sensors
      values: ["100", "many"]
    - name: kafka.partitions
      range: {from: 1, to: 4, step: 0}
`
	_, err := spec.Parse([]byte(doc), nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), `spec.factors[0]: value "many"`)
	require.Contains(t, err.Error(), "line 9: spec.factors[1].range.step: got 0, expected a positive step")
	require.NotContains(t, err.Error(), "line 5", "lines of the internal re-encoding never leak into a problem")
}

func TestProblemsCarryTheirLine(t *testing.T) {
	doc := head + "spec:\n  workload:\n    sensors: 0\n    format: avro\n"
	_, err := spec.Parse([]byte(doc), nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "line 6: spec.workload.sensors")
}

func TestIncludeExcludeShapeTheGrid(t *testing.T) {
	doc := head + `spec:
  factors:
    - {name: workload.sensors, values: ["100", "200"]}
    - {name: kafka.partitions, values: ["1", "8"]}
  exclude:
    - {workload.sensors: "200", kafka.partitions: "1"}
  include:
    - {workload.sensors: "5000", kafka.partitions: "16"}
  repetitions: 2
`
	e, err := spec.Parse([]byte(doc), nil)
	require.NoError(t, err)
	n, err := e.Count()
	require.NoError(t, err)
	require.Equal(t, 8, n, "(4 - 1 excluded + 1 included) x 2 repetitions")
	plan, err := e.Expand("x", 1)
	require.NoError(t, err)
	got := map[string]int{}
	for _, r := range plan.Runs {
		got[r.Factors["workload.sensors"]+"/"+r.Factors["kafka.partitions"]]++
		require.NotEqual(t, "200/1", r.Factors["workload.sensors"]+"/"+r.Factors["kafka.partitions"])
	}
	require.Equal(t, 2, got["5000/16"])
	for _, r := range plan.Runs {
		if r.Factors["workload.sensors"] == "5000" {
			require.Equal(t, 16, r.Config.Kafka.Partitions)
		}
	}
}

func TestTriggerAndSLOValidation(t *testing.T) {
	base := head + "spec:\n"
	cases := []struct{ body, want string }{
		{"  trigger: {}\n", "spec.trigger: give subject or cron"},
		{"  trigger: {subject: gf.evt.x}\n", "outside gf.>"},
		// What the declarer would never capture (a trial's stopped the
		// scheduler): NATS's own, inboxes, leading wildcards.
		{"  trigger: {subject: '$KV.greenflow_tokens.>'}\n", "$… (NATS's)"},
		{"  trigger: {subject: '$JS.EVENT.ADVISORY.>'}\n", "$… (NATS's)"},
		{"  trigger: {subject: '>'}\n", "not starting with a wildcard"},
		{"  trigger: {subject: '*.built'}\n", "not starting with a wildcard"},
		{"  trigger: {subject: _INBOX_X.y}\n", "_INBOX… (replies)"},
		{"  trigger: {subject: ci..built}\n", "no empty token"},
		{"  trigger: {cron: '61 * * * *'}\n", "minute field"},
		{"  trigger: {cron: '0 3 * * *', bind: {a: b}}\n", "only subject triggers"},
		{"  slos: {minThroughputRatio: 1.5}\n", "spec.slos.minThroughputRatio"},
		{"  exclude: [{kafka.partitions: '1'}]\n", "not a swept factor"},
	}
	for _, tc := range cases {
		_, err := spec.Parse([]byte(base+tc.body), nil)
		require.Error(t, err, tc.body)
		require.Contains(t, err.Error(), tc.want)
	}
	e, err := spec.Parse([]byte(base+"  trigger: {subject: ci.images, bind: {spec.sut.params.image: image.tag}}\n"), nil)
	require.NoError(t, err)
	require.Equal(t, "ci.images", e.Spec.Trigger.Subject)
}

func TestKubernetesFactorsReachEachRun(t *testing.T) {
	b, err := os.ReadFile("../../examples/uc3-kubernetes.yaml")
	require.NoError(t, err)
	e, err := spec.Parse(b, []string{"spec.repetitions=1"})
	require.NoError(t, err)
	plan, err := e.Expand("exp-1", 7)
	require.NoError(t, err)
	nodes := map[int]bool{}
	for _, r := range plan.Runs {
		k := r.Config.SUT.Kubernetes
		require.NotNil(t, k)
		require.Equal(t, "consolidate", k.Placement.Strategy)
		require.Equal(t, 3, k.Replicas)
		require.Equal(t, map[string]string{"greenflow.dev/pool": "sut"}, k.Placement.NodeSelector)
		nodes[k.Placement.Nodes] = true
	}
	require.Equal(t, map[int]bool{1: true, 2: true, 3: true}, nodes)
}

func TestKubernetesProblemsNameTheirField(t *testing.T) {
	doc := head + `spec:
  sut:
    template: uc3-flink
    backend: kubernetes
    kubernetes:
      imagePullPolicy: Sometimes
      replicas: -1
      resources: {cpu: lots, memory: 4Gi}
      placement: {strategy: pack, nodes: -2}
`
	_, err := spec.Parse([]byte(doc), nil)
	require.Error(t, err)
	for _, want := range []string{
		"spec.sut.kubernetes.image: required for template uc3-flink",
		`spec.sut.kubernetes.imagePullPolicy: got "Sometimes"`,
		"spec.sut.kubernetes.replicas: got -1",
		`spec.sut.kubernetes.resources.cpu: got "lots", expected a Kubernetes quantity`,
		`spec.sut.kubernetes.placement.strategy: got "pack", expected any, spread or consolidate`,
		"spec.sut.kubernetes.placement.nodes: got -2",
		"line 10: spec.sut.kubernetes.replicas", // problems carry their line
	} {
		require.Contains(t, err.Error(), want)
	}
	for doc, want := range map[string]string{
		"sut: {template: uc3-go, backend: kubernetes}":                                                "spec.sut.kubernetes: required for backend kubernetes",
		"sut: {template: uc3-kstreams, backend: local}":                                               "spec.sut.template: template uc3-kstreams runs on backend kubernetes only",
		"sut: {template: command, backend: kubernetes, command: [x], kubernetes: {image: x}}":         "spec.sut.template: template command runs on backend local only",
		"sut: {template: manifest, backend: kubernetes, kubernetes: {}}":                              "spec.sut.kubernetes.manifest: required for template manifest",
		"sut: {template: uc3-go, backend: kubernetes, kubernetes: {image: x, placement: {nodes: 2}}}": "spec.sut.kubernetes.placement.nodes: needs strategy spread or consolidate",
	} {
		_, err := spec.Parse([]byte(head+"spec:\n  "+doc+"\n"), nil)
		require.ErrorContains(t, err, want, doc)
	}
}

// A name starting or ending with '-' made ids the events' schema refuses
// (the submission was dead-lettered after an accepted submit) and that the
// CLI took for a flag; it is refused when the spec is checked.
func TestNamesStartAndEndWithALetterOrDigit(t *testing.T) {
	base, err := os.ReadFile("../../examples/uc3-local.yaml")
	require.NoError(t, err)
	for _, name := range []string{"-", "-x", "x-"} {
		doc := strings.Replace(string(base), "name: uc3-local-demo", "name: \""+name+"\"", 1)
		require.NotEqual(t, string(base), doc, "the example's name line moved")
		_, err := spec.Parse([]byte(doc), nil)
		require.ErrorContains(t, err, "metadata.name", name)
		require.ErrorContains(t, err, "starting and ending with a letter or digit", name)
	}
	_, err = spec.Parse([]byte(strings.Replace(string(base), "name: uc3-local-demo", "name: a-1", 1)), nil)
	require.NoError(t, err)
}
