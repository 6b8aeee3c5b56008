// Package kubeready says what a Kubernetes workload or pod still lacks, in
// words a user can act on: the provisioner's readiness wait for a run's
// system under test and `greenflow cluster status` for the platform use
// the same reasons.
package kubeready

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// FatalWaiting are container waiting reasons that do not heal by waiting.
var FatalWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CrashLoopBackOff": true, "CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// Workload says what a Deployment, StatefulSet, ReplicaSet or DaemonSet (as
// read from the API server) still lacks, or "" when it is ready; other
// kinds are ready once applied.
func Workload(u *unstructured.Unstructured) string {
	num := func(path ...string) int64 {
		v, _, _ := unstructured.NestedInt64(u.Object, path...)
		return v
	}
	var want, ready int64
	switch u.GetKind() {
	case "Deployment", "StatefulSet", "ReplicaSet":
		want = 1
		if v, found, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); found {
			want = v
		}
		ready = min(num("status", "readyReplicas"), num("status", "updatedReplicas"))
		if u.GetKind() == "ReplicaSet" {
			ready = num("status", "readyReplicas")
		}
		if u.GetKind() == "Deployment" && num("status", "replicas") > num("status", "updatedReplicas") {
			// old pods of an earlier spec are still around (kubectl rollout status)
			return fmt.Sprintf("deployment %s: %d old replica(s) still terminating", u.GetName(), num("status", "replicas")-num("status", "updatedReplicas"))
		}
		if g := u.GetGeneration(); num("status", "observedGeneration") < g {
			return fmt.Sprintf("%s %s: %d/%d replicas ready (its controller has not yet seen generation %d)",
				strings.ToLower(u.GetKind()), u.GetName(), ready, want, g)
		}
	case "DaemonSet":
		want, ready = num("status", "desiredNumberScheduled"), min(num("status", "numberReady"), num("status", "updatedNumberScheduled"))
		if g := u.GetGeneration(); num("status", "observedGeneration") < g {
			return fmt.Sprintf("daemonset %s: its controller has not yet seen generation %d", u.GetName(), g)
		}
	default:
		return ""
	}
	if ready >= want {
		return ""
	}
	return fmt.Sprintf("%s %s: %d/%d replicas ready", strings.ToLower(u.GetKind()), u.GetName(), ready, want)
}

// Diagnose finds a pod problem that waiting will not heal — a failed pod,
// an image that cannot be pulled, a crash loop, a pod unschedulable for
// grace or longer at now — and describes the pods not ready yet.
func Diagnose(pods []corev1.Pod, now time.Time, grace time.Duration) (fatal string, waiting []string) {
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Status.Phase == corev1.PodFailed {
			return fmt.Sprintf("pod %s failed: %s %s", p.Name, p.Status.Reason, p.Status.Message), nil
		}
		for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if w := c.State.Waiting; w != nil && FatalWaiting[w.Reason] {
				s := fmt.Sprintf("pod %s container %s: %s", p.Name, c.Name, w.Reason)
				if w.Message != "" {
					s += ": " + w.Message
				}
				if t := c.LastTerminationState.Terminated; t != nil {
					s += fmt.Sprintf(" (last exit code %d, %s)", t.ExitCode, t.Reason)
				}
				return s, nil
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				since := c.LastTransitionTime.Time
				if since.IsZero() {
					since = p.CreationTimestamp.Time
				}
				s := fmt.Sprintf("pod %s unschedulable: %s", p.Name, c.Message)
				if now.Sub(since) >= grace {
					return s + fmt.Sprintf(" (for %s)", now.Sub(since).Round(time.Second)), nil
				}
				waiting = append(waiting, s)
			}
		}
		if !PodReady(p) {
			waiting = append(waiting, fmt.Sprintf("pod %s %s", p.Name, PodState(p)))
		}
	}
	return "", waiting
}

// PodReady reports the pod's Ready condition.
func PodReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodState is a pod's state in a few words ("app ImagePullBackOff", "not
// scheduled", "Running on n1, not ready").
func PodState(p corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
			return c.Name + " " + c.State.Waiting.Reason
		}
	}
	if p.Spec.NodeName == "" {
		return "not scheduled"
	}
	return string(p.Status.Phase) + " on " + p.Spec.NodeName + ", not ready"
}

// Warnings lists the latest three warning events, newest first, for error
// messages ("; warning events: …"), or "".
func Warnings(evs []corev1.Event) string {
	var warn []corev1.Event
	for _, e := range evs {
		if e.Type == corev1.EventTypeWarning {
			warn = append(warn, e)
		}
	}
	if len(warn) == 0 {
		return ""
	}
	sort.Slice(warn, func(i, j int) bool { return EventTime(warn[i]).After(EventTime(warn[j])) })
	var out []string
	for _, e := range warn[:min(len(warn), 3)] {
		out = append(out, fmt.Sprintf("%s %s/%s: %s", e.Reason, strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, e.Message))
	}
	return "; warning events: " + strings.Join(out, "; ")
}

// EventTime is when an event last happened.
func EventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}
