package spec

import "github.com/greenflow/greenflow/pkg/events"

// Event is the SUT as the provision command carries it (run.provision's
// sut), so that whoever builds that command — the scheduler, or `greenflow
// validate` rendering what the provisioner will render — builds the same.
func (s SUT) Event() events.SUT {
	out := events.SUT{Template: s.Template, Backend: s.Backend, Params: s.Params, Command: s.Command}
	if k := s.Kubernetes; k != nil {
		out.Kubernetes = &events.KubernetesSUT{Image: k.Image, ImagePullPolicy: k.ImagePullPolicy, Replicas: k.Replicas,
			CPU: k.Resources.CPU, Memory: k.Resources.Memory, Env: k.Env, KafkaBootstrap: k.KafkaBootstrap,
			SchemaRegistryURL: k.SchemaRegistryURL, Manifest: k.Manifest, ReadyTimeoutMs: k.ReadyTimeout.Milliseconds(),
			Placement: events.Placement{Strategy: k.Placement.Strategy, Nodes: k.Placement.Nodes, NodeSelector: k.Placement.NodeSelector}}
	}
	return out
}
