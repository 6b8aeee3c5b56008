package kube

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/uc3cmd"
)

//go:embed templates/*.yaml
var builtin embed.FS

// Templates lists the built-in templates; "manifest" takes its text from the
// run's sut.kubernetes.manifest.
var Templates = []string{"uc3-go", "uc3-kstreams", "uc3-flink", "manifest"}

// TemplateData is what a template sees.
type TemplateData struct {
	ExperimentID, RunID, Namespace string
	Image, ImagePullPolicy         string
	Replicas                       int
	CPU, Memory                    string
	// KafkaBootstrap is the brokers' address from inside the cluster.
	KafkaBootstrap, SchemaRegistryURL string
	InputTopic, OutputTopic           string
	Partitions                        int
	Params                            map[string]string
	// UC3Args are the reference processor's flags (template uc3-go).
	UC3Args []string
}

// kubeSUT is the run's kubernetes block; a run without one has the zero
// value (every field defaulted).
func kubeSUT(p events.RunProvision) *events.KubernetesSUT {
	if p.SUT.Kubernetes == nil {
		return &events.KubernetesSUT{}
	}
	return p.SUT.Kubernetes
}

// templateData builds the data of run p in namespace ns.
func templateData(p events.RunProvision, ns string) (TemplateData, error) {
	k := kubeSUT(p)
	d := TemplateData{ExperimentID: p.ExperimentID, RunID: p.RunID, Namespace: ns, Image: k.Image, ImagePullPolicy: k.ImagePullPolicy,
		Replicas: max(k.Replicas, 1), CPU: k.CPU, Memory: k.Memory, KafkaBootstrap: k.KafkaBootstrap, SchemaRegistryURL: k.SchemaRegistryURL,
		InputTopic: p.Kafka.InputTopic, OutputTopic: p.Kafka.OutputTopic, Partitions: p.Kafka.Partitions, Params: p.SUT.Params}
	if d.KafkaBootstrap == "" {
		d.KafkaBootstrap = strings.Join(p.Kafka.Brokers, ",")
	}
	if d.Params == nil {
		d.Params = map[string]string{}
	}
	switch p.SUT.Template {
	case "uc3-go":
		args, err := uc3cmd.Flags(p, d.KafkaBootstrap, ":9464")
		if err != nil {
			return d, err
		}
		d.UC3Args = args
	case "uc3-kstreams", "uc3-flink":
		if len(p.SUT.Params) > 0 {
			return d, fmt.Errorf("template %s takes no sut.params; set the containers' environment with sut.kubernetes.env", p.SUT.Template)
		}
	}
	if p.SUT.Template != "manifest" && d.Image == "" {
		return d, fmt.Errorf("template %s: sut.kubernetes.image is empty; name the image to run", p.SUT.Template)
	}
	return d, nil
}

// templateText returns the text of the run's template.
func templateText(p events.RunProvision) (string, error) {
	if p.SUT.Template == "manifest" {
		if p.SUT.Kubernetes == nil || strings.TrimSpace(p.SUT.Kubernetes.Manifest) == "" {
			return "", errors.New("template manifest: sut.kubernetes.manifest is empty")
		}
		return p.SUT.Kubernetes.Manifest, nil
	}
	b, err := builtin.ReadFile("templates/" + p.SUT.Template + ".yaml")
	if err != nil {
		return "", fmt.Errorf("template %q is not a kubernetes template (expected one of %s)", p.SUT.Template, strings.Join(Templates, ", "))
	}
	return string(b), nil
}

// Render renders run p's template into objects (without namespace, labels or
// placement, which the backend adds).
func Render(p events.RunProvision, ns string) ([]*unstructured.Unstructured, error) {
	text, err := templateText(p)
	if err != nil {
		return nil, err
	}
	data, err := templateData(p, ns)
	if err != nil {
		return nil, err
	}
	name := p.SUT.Template
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		// resources renders a container's requests and limits: the run's
		// cpu/memory, else the template's defaults.
		"resources": func(defCPU, defMemory string) (string, error) {
			cpu, mem := or(data.CPU, defCPU), or(data.Memory, defMemory)
			q := map[string]string{}
			if cpu != "" {
				q["cpu"] = cpu
			}
			if mem != "" {
				q["memory"] = mem
			}
			if len(q) == 0 {
				return "{}", nil
			}
			b, err := json.Marshal(map[string]any{"requests": q, "limits": q})
			return string(b), err
		},
		"param": func(key, def string) string { return or(data.Params[key], def) },
	}).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template %s does not parse: %w", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("template %s does not render: %w", name, err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(&buf, 4096)
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("template %s, document %d: not valid YAML: %w", name, i, err)
		}
		if len(m) == 0 {
			continue // an empty document (comments only)
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("template %s, document %d: apiVersion, kind and metadata.name are required (got %q, %q, %q)",
				name, i, u.GetAPIVersion(), u.GetKind(), u.GetName())
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("template %s rendered no objects", name)
	}
	return objs, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
