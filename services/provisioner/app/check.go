package app

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/services/provisioner/internal/kube"
	"github.com/greenflow/greenflow/services/provisioner/internal/local"
)

// CheckSpec renders what the provisioner will render for every distinct
// run configuration of experiment e — kubernetes templates, manifests
// included, and local command lines — and reports every one that fails,
// with the spec line it comes from (data is the spec text e was parsed
// from) and the factors of the configuration. It needs no cluster: what only
// the cluster can tell (unknown kinds, quotas, RBAC) is checked at provision.
func CheckSpec(e *spec.Experiment, data []byte) error {
	plan, err := e.Expand("validate", 1)
	if err != nil {
		return err
	}
	var root *yaml.Node
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	lc := local.Config{UC3Command: []string{"uc3-processor"}}
	seen := map[string]bool{}
	var problems []string
	for _, r := range plan.Runs {
		if seen[r.ConfigHash] {
			continue
		}
		seen[r.ConfigHash] = true
		k := r.Config.Kafka
		p := events.RunProvision{ExperimentID: "validate", RunID: r.ID, SUT: r.Config.SUT.Event(),
			Kafka: events.Kafka{Brokers: []string{"kafka:9092"}, InputTopic: k.InputTopic + "-" + r.ID, OutputTopic: k.OutputTopic + "-" + r.ID,
				Partitions: k.Partitions}}
		switch p.SUT.Backend {
		case "kubernetes":
			_, err = kube.Render(p, "gf-validate")
		case "local":
			_, err = lc.Command(p)
		default:
			continue
		}
		if err != nil {
			problems = append(problems, where(root, err)+err.Error()+factors(r.Factors))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "\n"))
}

// templatePos is a Go template error's position: "template: NAME:LINE:COL:"
// or "template: NAME:LINE:".
var templatePos = regexp.MustCompile(`template: manifest:(\d+):(?:(\d+):)?`)

// fieldRef is a spec field an error names.
var fieldRef = regexp.MustCompile(`\bsut\.(params|kubernetes|command)(\.[A-Za-z0-9_]+)*`)

// where is "line N: spec.path: " for an error, as precisely as the spec
// text allows: a manifest template's own line is added to the manifest's
// first line in the spec.
func where(root *yaml.Node, err error) string {
	msg := err.Error()
	if strings.Contains(msg, "template manifest") {
		n, written := spec.Locate(root, "spec.sut.kubernetes.manifest")
		if !written {
			return "spec.sut.kubernetes.manifest: "
		}
		first := n.Line
		if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			first++ // a block scalar's text starts below its indicator
		}
		if m := templatePos.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return fmt.Sprintf("line %d: spec.sut.kubernetes.manifest: ", first+line-1)
		}
		return fmt.Sprintf("line %d: spec.sut.kubernetes.manifest: ", first)
	}
	if f := fieldRef.FindString(msg); f != "" {
		if n, written := spec.Locate(root, "spec."+f); written {
			return fmt.Sprintf("line %d: spec.%s: ", n.Line, f)
		}
		return "spec." + f + ": "
	}
	if n, written := spec.Locate(root, "spec.sut"); written {
		return fmt.Sprintf("line %d: spec.sut: ", n.Line)
	}
	return "spec.sut: "
}

func factors(f map[string]string) string {
	if len(f) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k+"="+f[k])
	}
	sort.Strings(keys)
	return " (run configuration " + strings.Join(keys, ", ") + ")"
}
