package kube

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"
)

// An unschedulable pod is waited for within the grace (an autoscaler may
// add a node) and fails the provision after it, saying for how long.
func TestUnschedulableFailsOnlyAfterTheGrace(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sut-0"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/3 nodes are available: 3 Insufficient cpu.", LastTransitionTime: metav1.NewTime(since)}}}}
	for _, c := range []struct {
		after          time.Duration
		fatal, waiting string
	}{
		{0, "", "pod sut-0 unschedulable: 0/3 nodes are available: 3 Insufficient cpu."},
		{29 * time.Second, "", "pod sut-0 unschedulable: 0/3 nodes are available: 3 Insufficient cpu."},
		{30 * time.Second, "pod sut-0 unschedulable: 0/3 nodes are available: 3 Insufficient cpu. (for 30s)", ""},
		{95 * time.Second, "pod sut-0 unschedulable: 0/3 nodes are available: 3 Insufficient cpu. (for 1m35s)", ""},
	} {
		b := &Backend{cfg: Default(), clock: testingclock.NewFakeClock(since.Add(c.after))}
		fatal, waiting := b.diagnose([]corev1.Pod{pod})
		require.Equal(t, c.fatal, fatal, "after %s", c.after)
		if c.waiting != "" {
			require.Contains(t, waiting, c.waiting, "after %s", c.after)
		} else {
			require.Empty(t, waiting, "after %s", c.after)
		}
	}
}
