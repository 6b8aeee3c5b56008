package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/greenflow/greenflow/pkg/events"
)

// Labels and annotations the backend puts on what it creates.
const (
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	ManagedBy           = "greenflow"
	LabelExperiment     = "greenflow.dev/experiment"
	LabelRun            = "greenflow.dev/run"
	AnnotationRunID     = "greenflow.dev/run-id"
	AnnotationExpID     = "greenflow.dev/experiment-id"
	AnnotationTemplate  = "greenflow.dev/template"
	AnnotationPlacement = "greenflow.dev/placement-nodes"
	// AnnotationReady holds each container's restart count when the run
	// became ready ({"pod/container": n}); its presence marks a ready run.
	AnnotationReady = "greenflow.dev/ready-restarts"
	// AnnotationKafka records the run's brokers and topics (JSON), so that a
	// restarted provisioner can delete the topics of a run that crashed.
	AnnotationKafka = "greenflow.dev/kafka"
	// AnnotationPlatform names the installation that deployed the run (see
	// state.Store.Platform): the reconciler only removes its own.
	AnnotationPlatform = "greenflow.dev/platform"
)

// Pod Security admission labels of a run's namespace. The API server
// refuses, at pod creation, every pod above the enforced level — whatever
// the run's template holds, since an operator's token may deploy any
// manifest. The version is pinned, so a cluster upgrade cannot change what
// a study's runs are admitted with halfway through; v1.30 is also the
// oldest Kubernetes GreenFlow supports (deploy/base's admission policy needs
// it).
const (
	LabelPodSecurityEnforce        = "pod-security.kubernetes.io/enforce"
	LabelPodSecurityEnforceVersion = "pod-security.kubernetes.io/enforce-version"
	LabelPodSecurityAudit          = "pod-security.kubernetes.io/audit"
	LabelPodSecurityAuditVersion   = "pod-security.kubernetes.io/audit-version"
	LabelPodSecurityWarn           = "pod-security.kubernetes.io/warn"
	LabelPodSecurityWarnVersion    = "pod-security.kubernetes.io/warn-version"
	PodSecurityVersion             = "v1.30"
)

// podSecurityLevel is the level a template's pods are held to: "restricted"
// for the reference processor, whose image (ko, distroless nonroot) needs
// nothing more; "baseline" for the Theodolite images and for manifests —
// Theodolite's Kafka Streams image runs as root, and Flink's entrypoint
// starts as root to switch to its user with gosu (needs CAP_SETUID/SETGID),
// both of which "restricted" refuses, while "baseline" still refuses what
// matters on a shared cluster: privileged containers, host namespaces, host
// paths and added capabilities. A manifest may hold any image, so it gets
// what the Theodolite images get, not more.
func podSecurityLevel(template string) string {
	if template == "uc3-go" {
		return "restricted"
	}
	return "baseline"
}

// podSecurityLabels enforce level on a run's namespace, and warn and audit
// at "restricted", so that what a baseline run would need to change to run
// restricted shows in apply warnings and the audit log.
func podSecurityLabels(level string) map[string]string {
	return map[string]string{
		LabelPodSecurityEnforce: level, LabelPodSecurityEnforceVersion: PodSecurityVersion,
		LabelPodSecurityAudit: "restricted", LabelPodSecurityAuditVersion: PodSecurityVersion,
		LabelPodSecurityWarn: "restricted", LabelPodSecurityWarnVersion: PodSecurityVersion,
	}
}

var (
	labelValueRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)
	notLabelRE     = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	notNamespaceRE = regexp.MustCompile(`[^a-z0-9-]+`)
)

// LabelValue is id as a label value: itself when valid, else a readable
// prefix and a hash (the full id is kept in an annotation).
func LabelValue(id string) string {
	if labelValueRE.MatchString(id) {
		return id
	}
	return shorten(notLabelRE.ReplaceAllString(id, "-"), id, 63)
}

// Namespace is the namespace of run runID.
func (b *Backend) Namespace(runID string) string { return b.cfg.Namespace(runID) }

// Namespace is the namespace of run runID: the prefix and the run id made a
// valid name (shortened with a hash when too long).
func (c Config) Namespace(runID string) string {
	name := c.NamespacePrefix + strings.Trim(notNamespaceRE.ReplaceAllString(strings.ToLower(runID), "-"), "-")
	if len(name) <= 63 {
		return name
	}
	return shorten(name, runID, 63)
}

// shorten cuts s to fit n characters with an 8-digit hash of full.
func shorten(s, full string, n int) string {
	sum := sha256.Sum256([]byte(full))
	h := hex.EncodeToString(sum[:4])
	s = strings.TrimRight(s[:min(len(s), n-len(h)-1)], "-._")
	s = strings.TrimLeft(s, "-._")
	return s + "-" + h
}

func (b *Backend) runLabels(p events.RunProvision) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelExperiment: LabelValue(p.ExperimentID), LabelRun: LabelValue(p.RunID)}
}

// object is a rendered object with its resource.
type object struct {
	u       *unstructured.Unstructured
	mapping *meta.RESTMapping
}
