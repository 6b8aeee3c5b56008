package testbed_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/testbed"
)

// unschedulable lists the workloads of objs that cannot all be placed on
// s's nodes: those whose pods require distinct hosts (podAntiAffinity on
// kubernetes.io/hostname) within one pool (nodeSelector or a required
// nodeAffinity on testbed.RoleLabel) and ask more replicas than the pool
// has nodes — what a user sees as pods Pending forever.
func unschedulable(t *testing.T, s testbed.Spec, objs []*unstructured.Unstructured) []string {
	t.Helper()
	var bad []string
	for _, u := range objs {
		var podSpec []string
		switch u.GetKind() {
		case "StatefulSet", "Deployment":
			podSpec = []string{"spec", "template", "spec"}
		case "KafkaNodePool":
			podSpec = []string{"spec", "template", "pod"}
		default:
			continue
		}
		anti, _, _ := unstructured.NestedSlice(u.Object, append(podSpec, "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution")...)
		spread := false
		for _, a := range anti {
			if a.(map[string]any)["topologyKey"] == "kubernetes.io/hostname" {
				spread = true
			}
		}
		if !spread {
			continue
		}
		pool, _, _ := unstructured.NestedString(u.Object, append(podSpec, "nodeSelector", testbed.RoleLabel)...)
		terms, _, _ := unstructured.NestedSlice(u.Object, append(podSpec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")...)
		for _, term := range terms {
			exprs, _, _ := unstructured.NestedSlice(term.(map[string]any), "matchExpressions")
			for _, e := range exprs {
				e := e.(map[string]any)
				if e["key"] == testbed.RoleLabel && e["operator"] == "In" {
					vals := e["values"].([]any)
					require.Len(t, vals, 1, "%s %s: one pool", u.GetKind(), u.GetName())
					pool = vals[0].(string)
				}
			}
		}
		require.NotEmpty(t, pool, "%s %s spreads over hosts but names no pool", u.GetKind(), u.GetName())
		// Rendered from YAML the count is an int; FitToNodes sets an int64.
		v, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "replicas")
		var replicas int64
		switch n := v.(type) {
		case int:
			replicas = int64(n)
		case int64:
			replicas = n
		default:
			t.Fatalf("%s %s: spec.replicas %v (%T)", u.GetKind(), u.GetName(), v, v)
		}
		if nodes := s.PoolNodes(pool); int(replicas) > nodes {
			bad = append(bad, fmt.Sprintf("%s %s/%s: %d replicas on pool %s of %d node(s)", u.GetKind(), u.GetNamespace(), u.GetName(), replicas, pool, nodes))
		}
	}
	return bad
}

func specWith(t *testing.T, nodes map[string]int) testbed.Spec {
	t.Helper()
	data, err := os.ReadFile("../../examples/testbed-grid5000.yaml")
	require.NoError(t, err)
	s, err := testbed.ParseSpec(data)
	require.NoError(t, err)
	for r, n := range nodes {
		s.Nodes[r] = n
	}
	return s
}

// The example spec (broker 1, platform 0) and others: the testbed overlay
// as up deploys it places every pod, and the overlay as written does not
// (three Kafka and three NATS pods, one per host).
func TestTestbedOverlayFitsTheNodesAsked(t *testing.T) {
	for _, nodes := range []map[string]int{
		nil, // the example as shipped
		{testbed.RoleBroker: 2, testbed.RolePlatform: 2},
		{testbed.RoleBroker: 5, testbed.RolePlatform: 4},
		{testbed.RoleBroker: 3, testbed.RolePlatform: 1},
	} {
		s := specWith(t, nodes)
		t.Run(fmt.Sprintf("broker=%d,platform=%d", s.Nodes[testbed.RoleBroker], s.Nodes[testbed.RolePlatform]), func(t *testing.T) {
			objs, err := cluster.Render("testbed", []string{"10.0.0.1/32"}, nil)
			require.NoError(t, err)
			if s.PoolNodes(testbed.RoleBroker) < 3 || s.PoolNodes(testbed.RolePlatform) < 3 {
				require.NotEmpty(t, unschedulable(t, s, objs), "the overlay as written needs three broker and three platform nodes")
			}
			require.NoError(t, testbed.FitToNodes(s, objs))
			require.Empty(t, unschedulable(t, s, objs))

			f := testbed.FitOf(s)
			require.Equal(t, min(s.PoolNodes(testbed.RoleBroker), 3), f.KafkaBrokers)
			wantNATS := 1 // a Raft quorum of two has no spare
			if s.PoolNodes(testbed.RolePlatform) >= 3 {
				wantNATS = 3
			}
			require.Equal(t, wantNATS, f.NATSServers)
			for _, u := range objs {
				switch u.GetKind() + "/" + u.GetName() {
				case "Kafka/greenflow":
					cfg, _, _ := unstructured.NestedMap(u.Object, "spec", "kafka", "config")
					require.EqualValues(t, f.KafkaBrokers, cfg["default.replication.factor"], "no topic asks more replicas than brokers")
					require.EqualValues(t, f.KafkaBrokers, cfg["offsets.topic.replication.factor"])
					require.LessOrEqual(t, cfg["min.insync.replicas"], int64(f.KafkaBrokers))
				case "ConfigMap/nats-config":
					conf, _, _ := unstructured.NestedString(u.Object, "data", "nats.conf")
					routes := f.NATSServers
					if routes == 1 {
						routes = 0
					}
					require.Equal(t, routes, strings.Count(conf, "nats://nats-"), "a route per server of a cluster:\n%s", conf)
					require.Equal(t, f.NATSServers > 1, strings.Contains(conf, "cluster {"), "a lone server is not clustered:\n%s", conf)
					require.Contains(t, conf, "include ./auth/authorization.conf", "the rest of the configuration is kept")
					require.Equal(t, strings.Count(conf, "{"), strings.Count(conf, "}"), "balanced braces:\n%s", conf)
				}
			}
		})
	}
}

// plan says where the control node's pods go and what will run where.
func TestPlacementOfTheExample(t *testing.T) {
	s := specWith(t, nil)
	require.Equal(t, testbed.RolePlatform, s.Pool(testbed.RoleControl), "platform: 0 puts the control node in pool platform")
	require.Equal(t, 1, s.PoolNodes(testbed.RolePlatform))
	p := strings.Join(s.Placement(), "\n")
	require.Contains(t, p, "Kafka: 1 KRaft node(s) on pool broker (1 node(s))")
	require.Contains(t, p, "NATS: 1 server(s) on pool platform (1 node(s)), one per node, not clustered")
}
