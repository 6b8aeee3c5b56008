package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// egressCIDRs is the first egress rule's ipBlock CIDRs of policy name.
func egressCIDRs(t *testing.T, objs []*unstructured.Unstructured, name string) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "NetworkPolicy" || o.GetName() != name {
			continue
		}
		// The render's maps hold ints (ports), which NestedSlice's deep
		// copy refuses: read the map itself.
		egress := o.Object["spec"].(map[string]any)["egress"].([]any)
		var out []string
		for _, to := range egress[0].(map[string]any)["to"].([]any) {
			cidr, _, _ := unstructured.NestedString(to.(map[string]any), "ipBlock", "cidr")
			out = append(out, cidr)
		}
		return out
	}
	t.Fatalf("no NetworkPolicy %s", name)
	return nil
}

// The testbed overlay's collectors reach the addresses `testbed up`
// resolved for the Grid'5000 API (Options.EgressCIDRs), beside the API
// server's; without them the policy keeps its placeholder and fails
// closed.
func TestRenderFillsTheCollectorsEgressToKwollect(t *testing.T) {
	objs, err := Render("testbed", []string{"10.0.0.1/32"}, map[string][]string{
		"greenflow-collector-kwollect": {"172.16.63.5/32", "2001:660:4406:700::5/128"}})
	require.NoError(t, err)
	require.Equal(t, []string{"172.16.63.5/32", "2001:660:4406:700::5/128"}, egressCIDRs(t, objs, "greenflow-collector-kwollect"))
	require.Equal(t, []string{"10.0.0.1/32"}, egressCIDRs(t, objs, "greenflow-provisioner-kube-api"))

	objs, err = Render("testbed", []string{"10.0.0.1/32"}, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"192.0.2.2/32"}, egressCIDRs(t, objs, "greenflow-collector-kwollect"))
}
