package testbed

import (
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The testbed overlay (deploy/overlays/testbed) is written for three
// broker nodes and three platform nodes: Kafka's node pool and NATS's
// servers are three each, one per node (required anti-affinity on the
// host name). A spec asking fewer nodes would leave pods Pending forever
// and `cluster up` time out with the job held for nothing, so up scales
// what it deploys to the nodes asked for (FitToNodes), and plan prints it
// (Placement).

// MaxReplicas caps the replicated parts: three keep a quorum through the
// loss of one, more buy nothing but energy.
const MaxReplicas = 3

// PoolNodes is how many nodes carry pool (the RoleLabel value): the
// control node counts for pool platform when no platform node is asked.
func (s Spec) PoolNodes(pool string) int {
	n := 0
	for _, r := range Roles {
		if s.Pool(r) == pool {
			n += s.Nodes[r]
		}
	}
	return n
}

// Fit is what the overlay runs, scaled to the spec's nodes.
type Fit struct {
	KafkaBrokers int // KRaft nodes (controller and broker), one per broker node
	KafkaMinISR  int // min.insync.replicas: one less than the brokers, at least 1
	NATSServers  int // 3 with three platform nodes or more, else 1 (a quorum of two has no spare)
}

// FitOf computes the replicas for s: the nodes of each pool, capped at
// MaxReplicas.
func FitOf(s Spec) Fit {
	f := Fit{KafkaBrokers: min(s.PoolNodes(RoleBroker), MaxReplicas), NATSServers: 1}
	// JetStream's meta group is a Raft quorum: two servers stop when
	// either does, so one server until there are three.
	if s.PoolNodes(RolePlatform) >= MaxReplicas {
		f.NATSServers = MaxReplicas
	}
	// A write waits for all but one replica: the loss of a broker stops
	// nothing (with one broker there is nothing to lose).
	f.KafkaMinISR = max(f.KafkaBrokers-1, 1)
	return f
}

// Placement says what runs where, one line per part, for plan.
func (s Spec) Placement() []string {
	f := FitOf(s)
	return []string{
		fmt.Sprintf("Kafka: %d KRaft node(s) on pool %s (%d node(s)), one per node; replication factor %d, min.insync.replicas %d",
			f.KafkaBrokers, RoleBroker, s.PoolNodes(RoleBroker), f.KafkaBrokers, f.KafkaMinISR),
		fmt.Sprintf("NATS: %d server(s) on pool %s (%d node(s)), one per node%s", f.NATSServers, RolePlatform, s.PoolNodes(RolePlatform),
			map[bool]string{true: ", clustered", false: ", not clustered"}[f.NATSServers > 1]),
		fmt.Sprintf("scheduler, provisioner, analyzer, console, ClickHouse: pool %s; load generator: pool %s; energy collectors: every node of pool %s",
			RolePlatform, RoleLoadgen, RoleSUT),
	}
}

// FitToNodes scales the rendered testbed overlay to s's nodes: the Kafka
// node pool's replicas and the cluster's replication settings, the NATS
// StatefulSet's replicas and its configuration's routes (none, and no
// cluster block, for one server: a lone server with routes to peers that
// never come would wait for a JetStream quorum). cluster.Options.Adjust
// calls it.
func FitToNodes(s Spec, objs []*unstructured.Unstructured) error {
	f := FitOf(s)
	seen := map[string]bool{}
	for _, u := range objs {
		var err error
		switch key := u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName(); key {
		case "KafkaNodePool/kafka/dual-role":
			err = unstructured.SetNestedField(u.Object, int64(f.KafkaBrokers), "spec", "replicas")
		case "Kafka/kafka/greenflow":
			for k, v := range map[string]int{"offsets.topic.replication.factor": f.KafkaBrokers, "transaction.state.log.replication.factor": f.KafkaBrokers,
				"default.replication.factor": f.KafkaBrokers, "transaction.state.log.min.isr": f.KafkaMinISR, "min.insync.replicas": f.KafkaMinISR} {
				if err = unstructured.SetNestedField(u.Object, int64(v), "spec", "kafka", "config", k); err != nil {
					break
				}
			}
		case "StatefulSet/greenflow/nats":
			err = unstructured.SetNestedField(u.Object, int64(f.NATSServers), "spec", "replicas")
		case "ConfigMap/greenflow/nats-config":
			var conf string
			conf, _, err = unstructured.NestedString(u.Object, "data", "nats.conf")
			if err == nil {
				conf, err = natsRoutes(conf, f.NATSServers)
			}
			if err == nil {
				err = unstructured.SetNestedField(u.Object, conf, "data", "nats.conf")
			}
		default:
			continue
		}
		if err != nil {
			return fmt.Errorf("fit the testbed overlay to %s's nodes: %s %s/%s: %w", s.Name, u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		seen[u.GetKind()] = true
	}
	for _, k := range []string{"KafkaNodePool", "Kafka", "StatefulSet", "ConfigMap"} {
		if !seen[k] {
			return fmt.Errorf("fit the testbed overlay to %s's nodes: no %s to scale (is this the testbed overlay?)", s.Name, k)
		}
	}
	return nil
}

var (
	natsRoutesRE = regexp.MustCompile(`(?s)routes: \[\n(.*?)\n([ \t]*)\]`)
	natsRouteRE  = regexp.MustCompile(`nats://nats-\d+\.`)
)

// natsRoutes rewrites nats.conf's routes to servers nats-0 … nats-(n-1),
// or drops the cluster block for one server.
func natsRoutes(conf string, n int) (string, error) {
	m := natsRoutesRE.FindStringSubmatch(conf)
	if m == nil {
		return "", fmt.Errorf("nats.conf has no routes: [ … ] list to scale")
	}
	lines := strings.Split(m[1], "\n")
	if len(lines) == 0 || !natsRouteRE.MatchString(lines[0]) {
		return "", fmt.Errorf("nats.conf's routes: %q: expected nats://nats-N.… entries", m[1])
	}
	if n <= 1 {
		return dropBlock(conf, "cluster {")
	}
	routes := make([]string, n)
	for i := range routes {
		routes[i] = natsRouteRE.ReplaceAllString(lines[0], fmt.Sprintf("nats://nats-%d.", i))
	}
	return strings.Replace(conf, m[0], "routes: [\n"+strings.Join(routes, "\n")+"\n"+m[2]+"]", 1), nil
}

// dropBlock removes the block opening with the line open (trimmed) up to
// the closing brace at the same indentation.
func dropBlock(conf, open string) (string, error) {
	lines := strings.Split(conf, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != open {
			continue
		}
		closing := l[:len(l)-len(strings.TrimLeft(l, " \t"))] + "}"
		for j := i + 1; j < len(lines); j++ {
			if lines[j] == closing {
				return strings.Join(append(lines[:i:i], lines[j+1:]...), "\n"), nil
			}
		}
		return "", fmt.Errorf("nats.conf: the %q block at line %d has no closing brace", open, i+1)
	}
	return "", fmt.Errorf("nats.conf: no %q block", open)
}
