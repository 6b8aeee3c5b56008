package app_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/services/provisioner/app"
)

const manifestSpec = `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: manifest-check}
spec:
  sut:
    template: manifest
    backend: kubernetes
    kubernetes:
      manifest: |
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: sut}
        spec:
          replicas: {{ .Replicas }}
          template:
            spec:
              containers:
              - name: app
                image: {{ param "image" "img:1" }}
                args: [{{ .Nope }}]
  workload: {sensors: 10, periodMs: 1000, value: 10, format: avro}
  kafka: {partitions: 2}
  factors:
    - name: sut.kubernetes.replicas
      values: ["1", "2"]
  repetitions: 1
  phases: {baseline: 1s, warmup: 1s, measure: 1s, cooldown: 0s}
`

func check(t *testing.T, text string) error {
	t.Helper()
	e, err := spec.Parse([]byte(text), nil)
	require.NoError(t, err, "the spec itself is valid")
	return app.CheckSpec(e, []byte(text))
}

func TestCheckSpecReportsManifestErrorsWithTheSpecLine(t *testing.T) {
	err := check(t, manifestSpec)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 2, "once per run configuration: %v", err)
	// {{ .Nope }} is on line 11 of the manifest, which starts on line 10.
	require.Contains(t, lines[0], "line 20: spec.sut.kubernetes.manifest: template manifest does not render")
	require.Contains(t, lines[0], "can't evaluate field Nope")
	require.Contains(t, lines[0], "(run configuration sut.kubernetes.replicas=")

	ok := strings.Replace(manifestSpec, "args: [{{ .Nope }}]", "args: [{{ .Replicas }}]", 1)
	require.NoError(t, check(t, ok))

	broken := strings.Replace(manifestSpec, "{{ .Nope }}", "{{ .Replicas", 1)
	err = check(t, broken)
	require.ErrorContains(t, err, "line 20: spec.sut.kubernetes.manifest: template manifest does not parse")

	noKind := strings.Replace(manifestSpec, "        kind: Deployment\n", "", 1)
	noKind = strings.Replace(noKind, "args: [{{ .Nope }}]", "args: []", 1)
	err = check(t, noKind)
	require.ErrorContains(t, err, "line 10: spec.sut.kubernetes.manifest: template manifest, document 1: apiVersion, kind and metadata.name are required")
}

func TestCheckSpecAcceptsTheExamples(t *testing.T) {
	for _, f := range []string{"uc3-local.yaml", "uc3-kubernetes.yaml", "uc3-capacity.yaml", "uc3-nightly.yaml", "uc3-testbed.yaml"} {
		raw, err := os.ReadFile("../../../examples/" + f)
		require.NoError(t, err)
		e, err := spec.Parse(raw, nil)
		require.NoError(t, err, f)
		require.NoError(t, app.CheckSpec(e, raw), f)
	}
}

func TestCheckSpecNamesABadParameter(t *testing.T) {
	text := `apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: params-check}
spec:
  sut:
    template: uc3-go
    backend: local
    params:
      emitInterval: 1s
      colour: red
  workload: {sensors: 10, periodMs: 1000, value: 10, format: avro}
  kafka: {partitions: 2}
  repetitions: 1
  phases: {baseline: 1s, warmup: 1s, measure: 1s, cooldown: 0s}
`
	err := check(t, text)
	require.ErrorContains(t, err, "line 10: spec.sut.params.colour: template uc3-go: unknown parameter sut.params.colour")
}
