package spec_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
)

func TestSUTEventCarriesEveryField(t *testing.T) {
	s := spec.SUT{Template: "manifest", Backend: "kubernetes", Params: map[string]string{"a": "1"}, Command: []string{"x"},
		Kubernetes: &spec.KubernetesSUT{Image: "img", ImagePullPolicy: "Never", Replicas: 3, Resources: spec.Resources{CPU: "1", Memory: "1Gi"},
			Env: map[string]string{"E": "v"}, KafkaBootstrap: "k:9092", SchemaRegistryURL: "http://sr", Manifest: "m",
			Placement: spec.Placement{Strategy: "spread", Nodes: 2, NodeSelector: map[string]string{"p": "q"}}, ReadyTimeout: spec.Duration{Duration: time.Minute}}}
	require.Equal(t, events.SUT{Template: "manifest", Backend: "kubernetes", Params: map[string]string{"a": "1"}, Command: []string{"x"},
		Kubernetes: &events.KubernetesSUT{Image: "img", ImagePullPolicy: "Never", Replicas: 3, CPU: "1", Memory: "1Gi", Env: map[string]string{"E": "v"},
			KafkaBootstrap: "k:9092", SchemaRegistryURL: "http://sr", Manifest: "m", ReadyTimeoutMs: 60000,
			Placement: events.Placement{Strategy: "spread", Nodes: 2, NodeSelector: map[string]string{"p": "q"}}}}, s.Event())
	require.Nil(t, spec.SUT{Backend: "local"}.Event().Kubernetes)
}
