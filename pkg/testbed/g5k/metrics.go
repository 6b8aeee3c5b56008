package g5k

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Kwollect metric names of node power.
const (
	// MetricWattmeter is the wattmeter's reading of the whole node at the
	// wall: 1 Hz by default (50–100 Hz with the job type
	// monitor=wattmetre_power_watt).
	MetricWattmeter = "wattmetre_power_watt"
	// MetricBMC is the node's own BMC's reading, about every 5 s: the
	// fallback where no wattmeter is wired.
	MetricBMC = "bmc_node_power_watt"
)

// MetricPoint is one Kwollect value.
type MetricPoint struct {
	Time   time.Time
	Device string // the node's short name (taurus-3)
	Metric string
	Value  float64
	Labels map[string]string
}

// metricItem is Kwollect's JSON shape.
type metricItem struct {
	Timestamp string            `json:"timestamp"`
	DeviceID  string            `json:"device_id"`
	MetricID  string            `json:"metric_id"`
	Value     *float64          `json:"value"`
	Labels    map[string]string `json:"labels"`
}

// MetricsQuery selects Kwollect values.
type MetricsQuery struct {
	Nodes      []string // short names or FQDNs (the domain is dropped)
	Metrics    []string
	Start, End time.Time
}

// ShortName is a node's name as Kwollect knows it: taurus-3 for
// taurus-3.lyon.grid5000.fr.
func ShortName(node string) string {
	if i := strings.IndexByte(node, '.'); i > 0 {
		return node[:i]
	}
	return node
}

// Metrics returns the values of q on site, sorted by device then time.
// A value Kwollect could not read (null) is left out: it is a gap.
func (c *Client) Metrics(ctx context.Context, site string, q MetricsQuery) ([]MetricPoint, error) {
	nodes := make([]string, len(q.Nodes))
	for i, n := range q.Nodes {
		nodes[i] = ShortName(n)
	}
	v := url.Values{}
	v.Set("nodes", strings.Join(nodes, ","))
	v.Set("metrics", strings.Join(q.Metrics, ","))
	v.Set("start_time", q.Start.UTC().Format(time.RFC3339))
	v.Set("end_time", q.End.UTC().Format(time.RFC3339))
	var items []metricItem
	if _, err := c.do(ctx, http.MethodGet, "/sites/"+url.PathEscape(site)+"/metrics", v, nil, &items, http.StatusOK); err != nil {
		return nil, fmt.Errorf("get %s of %s on %s: %w", strings.Join(q.Metrics, ","), strings.Join(nodes, ","), site, err)
	}
	out := make([]MetricPoint, 0, len(items))
	for i, it := range items {
		if it.Value == nil {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, it.Timestamp)
		if err != nil {
			return nil, fmt.Errorf("get %s of %s on %s: item %d: timestamp %q: expected RFC 3339", strings.Join(q.Metrics, ","), strings.Join(nodes, ","), site, i, it.Timestamp)
		}
		out = append(out, MetricPoint{Time: ts, Device: it.DeviceID, Metric: it.MetricID, Value: *it.Value, Labels: it.Labels})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Device != out[j].Device {
			return out[i].Device < out[j].Device
		}
		return out[i].Time.Before(out[j].Time)
	})
	return out, nil
}

// NodeFacts are the hardware facts of a node from the reference API, as
// provenance records them.
type NodeFacts struct {
	UID          string `json:"uid"`
	CPUModel     string `json:"cpu_model,omitempty"`
	Cores        int    `json:"cores,omitempty"`
	MemoryBytes  int64  `json:"memory_bytes,omitempty"`
	Wattmeter    bool   `json:"wattmeter"`
	ReferenceURL string `json:"reference_url,omitempty"`
}

// referenceNode is the part of the reference API's node description used.
type referenceNode struct {
	UID       string `json:"uid"`
	Processor struct {
		Model   string `json:"model"`
		Version string `json:"version"`
	} `json:"processor"`
	Architecture struct {
		NbCores int `json:"nb_cores"`
	} `json:"architecture"`
	MainMemory struct {
		RAMSize int64 `json:"ram_size"`
	} `json:"main_memory"`
	Sensors struct {
		Power struct {
			Available bool `json:"available"`
			Via       struct {
				PDU []any `json:"pdu"`
			} `json:"via"`
		} `json:"power"`
	} `json:"sensors"`
}

// NodeFacts returns what the reference API says of node (an FQDN or short
// name) of cluster on site.
func (c *Client) NodeFacts(ctx context.Context, site, cluster, node string) (NodeFacts, error) {
	p := fmt.Sprintf("/sites/%s/clusters/%s/nodes/%s", url.PathEscape(site), url.PathEscape(cluster), url.PathEscape(ShortName(node)))
	var r referenceNode
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, &r, http.StatusOK); err != nil {
		return NodeFacts{}, fmt.Errorf("get reference of node %s: %w", node, err)
	}
	model := strings.TrimSpace(r.Processor.Model + " " + r.Processor.Version)
	return NodeFacts{UID: r.UID, CPUModel: model, Cores: r.Architecture.NbCores, MemoryBytes: r.MainMemory.RAMSize,
		Wattmeter: r.Sensors.Power.Available && len(r.Sensors.Power.Via.PDU) > 0, ReferenceURL: p}, nil
}
