package testbed

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/greenflow/greenflow/pkg/testbed/g5k"
)

// What the energy collectors read on a testbed: `testbed up` applies the
// ConfigMap SourcesConfigMap, one key per node of the system under test
// (<node>.yaml, the node's Kubernetes name), and the testbed overlay
// mounts it into the collectors' DaemonSet (optional) at SourcesMountDir
// with --sources-file=SourcesMountDir/$(NODE_NAME).yaml, so each collector
// reads its own node's file: its local meter and its wattmeter at the
// wall (Kwollect). A collector whose file is absent — the overlay applied
// by hand, a node not in the reservation — measures with its local meter
// and logs that it does.
const (
	CollectorNamespace = "greenflow-collector"
	SourcesConfigMap   = "greenflow-collector-sources"
	SourcesMountDir    = "/etc/greenflow/sources"
	// KwollectPolicy is the testbed overlay's NetworkPolicy letting the
	// collectors reach the testbed's API over HTTPS; its addresses are
	// the ones Platform.Up resolves on the control node
	// (Reservation.KwollectCIDRs), filled in by the Deployer as `cluster
	// up` fills the Kubernetes API server's.
	KwollectPolicy = "greenflow-collector-kwollect"
)

// sourceEntry is one entry of the collector's sources file, with the
// YAML keys of its SourceConfig (services/energy-collector; pkg/ does not
// import services, so the shape is repeated here and the testbed's tests
// parse what CollectorSources writes with the collector's own parser).
type sourceEntry struct {
	ID     string `yaml:"id"`
	Kind   string `yaml:"kind"`
	Node   string `yaml:"node,omitempty"`
	Site   string `yaml:"site,omitempty"`
	URL    string `yaml:"url,omitempty"`
	BMC    bool   `yaml:"bmc,omitempty"`
	Pinned bool   `yaml:"pinned,omitempty"`
}

// SourcesKey is the key of node's file in SourcesConfigMap: its
// Kubernetes node name (the host's short name, which k3s is given as
// --node-name) and .yaml.
func SourcesKey(host string) string { return g5k.ShortName(host) + ".yaml" }

// CollectorSources is the sources file of each node of the system under
// test, by SourcesKey: the collector's local meter (kind auto, id local,
// as without a file) and the node's power from Kwollect — its wattmeter,
// or its BMC where the reference API says it has none — pinned, so the
// collector on the node reads it (one per node, under its node lock) and
// the analyzer compares the two on that node. apiURL is the API root the
// collectors ask ("" or g5k.DefaultURL: the collector's default, left
// out).
func CollectorSources(r Reservation, apiURL string) (map[string]string, error) {
	if apiURL == g5k.DefaultURL {
		apiURL = ""
	}
	out := map[string]string{}
	for _, n := range r.Nodes {
		if n.Role != RoleSUT {
			continue
		}
		node := g5k.ShortName(n.Host)
		meter, what := "wattmeter", g5k.MetricWattmeter
		if !n.Facts.Wattmeter {
			meter, what = "bmc", g5k.MetricBMC
		}
		list := []sourceEntry{
			{ID: "local", Kind: "auto"},
			{ID: meter + "/" + node, Kind: "kwollect", Node: node, Site: r.Spec.Site, URL: apiURL, BMC: !n.Facts.Wattmeter, Pinned: true},
		}
		b, err := yaml.Marshal(list)
		if err != nil {
			return nil, fmt.Errorf("sources of %s: %w", n.Host, err)
		}
		head := fmt.Sprintf("# greenflow testbed up, reservation %s (%s): %s's local meter and its %s from Kwollect (%s)\n",
			r.Name, r.ID, n.Host, meter, what)
		out[SourcesKey(n.Host)] = head + string(b)
	}
	return out, nil
}

// handOverSources applies SourcesConfigMap (and its namespace) with r's
// sources files.
func handOverSources(ctx context.Context, cs kubernetes.Interface, r Reservation, apiURL string, opts metav1.ApplyOptions) error {
	files, err := CollectorSources(r, apiURL)
	if err != nil {
		return err
	}
	if _, err := cs.CoreV1().Namespaces().Apply(ctx, corev1ac.Namespace(CollectorNamespace), opts); err != nil {
		return fmt.Errorf("hand the collectors' sources of %s over: apply namespace %s: %w", r.Name, CollectorNamespace, err)
	}
	cm := corev1ac.ConfigMap(SourcesConfigMap, CollectorNamespace).
		WithLabels(map[string]string{"app.kubernetes.io/part-of": "greenflow"}).
		WithData(files)
	if _, err := cs.CoreV1().ConfigMaps(CollectorNamespace).Apply(ctx, cm, opts); err != nil {
		return fmt.Errorf("hand the collectors' sources of %s over: apply configmap %s/%s: %w", r.Name, CollectorNamespace, SourcesConfigMap, err)
	}
	return nil
}

// ResolveCommand asks a node for host's addresses as the node resolves
// them (getent: the node's resolver, /etc/hosts included).
func ResolveCommand(host string) string { return "getent ahosts " + host }

// KwollectCIDRs are the addresses of apiURL's host as the testbed's nodes
// resolve it — asked on the control node, where the collectors' pods
// resolve through the same site resolver; not on this machine, which may
// be outside the testbed and see the API's public addresses — each as a
// host CIDR, sorted: the collectors' egress to Kwollect. An address
// literal needs no asking.
func KwollectCIDRs(ctx context.Context, run Runner, control, apiURL string) ([]string, error) {
	if apiURL == "" {
		apiURL = g5k.DefaultURL
	}
	u, err := url.Parse(apiURL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("the collectors' API %q: expected an absolute URL such as %s", apiURL, g5k.DefaultURL)
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil {
		return []string{hostCIDR(ip)}, nil
	}
	out, err := run.Run(ctx, control, ResolveCommand(u.Hostname()), "")
	if err != nil {
		return nil, fmt.Errorf("resolve %s on %s (the collectors' egress): %w", u.Hostname(), control, err)
	}
	var cidrs []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ip := net.ParseIP(f[0])
		if ip == nil {
			return nil, fmt.Errorf("resolve %s on %s: line %q: expected an address first", u.Hostname(), control, strings.TrimSpace(line))
		}
		cidrs = append(cidrs, hostCIDR(ip))
	}
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("resolve %s on %s: no address (%s printed nothing)", u.Hostname(), control, ResolveCommand(u.Hostname()))
	}
	slices.Sort(cidrs)
	return slices.Compact(cidrs), nil
}

func hostCIDR(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String() + "/32"
	}
	return ip.String() + "/128"
}
