package collector_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// keplerFarm serves one synthetic Kepler exporter per node at
// /<node>/metrics. Each node draws a constant power — package 40 W + i,
// dram 8 W, core inside the package — and its pod sut-<node> gets a quarter
// of the package and dram energy; counters are the energy since the farm
// started, computed when scraped, like a live exporter's.
type keplerFarm struct {
	*httptest.Server
	start time.Time
	pods  int // per node; 0 means 1
	mu    sync.Mutex
	bad   map[string]string // node → "malformed" | "hang"
}

func newKeplerFarm(tb testing.TB) *keplerFarm {
	tb.Helper()
	f := &keplerFarm{start: time.Now(), bad: map[string]string{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	tb.Cleanup(f.Close)
	return f
}

func (f *keplerFarm) setBad(node, how string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bad[node] = how
}

func (f *keplerFarm) url(node string) string { return f.URL + "/" + node + "/metrics" }

func (f *keplerFarm) serve(w http.ResponseWriter, r *http.Request) {
	node, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	f.mu.Lock()
	how := f.bad[node]
	f.mu.Unlock()
	switch how {
	case "malformed":
		_, _ = fmt.Fprintf(w, "kepler_node_cpu_joules_total{zone=\"package\" 12\n")
		return
	case "hang":
		<-r.Context().Done()
		return
	}
	var idx int
	_, _ = fmt.Sscanf(node, "node-%d", &idx)
	s := time.Since(f.start).Seconds()
	pkg, dram := (40+float64(idx))*s, 8*s
	fmt.Fprintf(w, "# HELP kepler_node_cpu_joules_total Energy consumption of cpu at node level in joules\n# TYPE kepler_node_cpu_joules_total counter\n")
	fmt.Fprintf(w, "kepler_node_cpu_joules_total{node_name=%q,path=\"/sys/class/powercap/intel-rapl:0\",zone=\"package\"} %.6f\n", node, pkg)
	fmt.Fprintf(w, "kepler_node_cpu_joules_total{node_name=%q,path=\"/sys/class/powercap/intel-rapl:0:0\",zone=\"core\"} %.6f\n", node, pkg*0.6)
	fmt.Fprintf(w, "kepler_node_cpu_joules_total{node_name=%q,path=\"/sys/class/powercap/intel-rapl:0:1\",zone=\"dram\"} %.6f\n", node, dram)
	fmt.Fprintf(w, "# HELP kepler_pod_cpu_joules_total Energy consumption of cpu at pod level in joules\n# TYPE kepler_pod_cpu_joules_total counter\n")
	pods := max(f.pods, 1)
	for p := range pods {
		name := "sut-" + node
		if p > 0 {
			name = fmt.Sprintf("sut-%s-%d", node, p)
		}
		for _, z := range []struct {
			zone string
			j    float64
		}{{"package", pkg / 4}, {"dram", dram / 4}} {
			fmt.Fprintf(w, "kepler_pod_cpu_joules_total{node_name=%q,pod_id=\"%08d-0000-4000-8000-%012d\",pod_name=%q,pod_namespace=\"gf\",state=\"running\",zone=%q} %.6f\n",
				node, idx, p, name, z.zone, z.j/float64(pods))
		}
	}
	fmt.Fprintf(w, "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %d\n", f.start.Unix())
}

func nodeName(i int) string { return fmt.Sprintf("node-%02d", i) }

// keplerSources is one shared Kepler source per node.
func (f *keplerFarm) sources(n int) []collector.SourceConfig {
	out := make([]collector.SourceConfig, n)
	for i := range out {
		out[i] = collector.SourceConfig{ID: "kepler/" + nodeName(i), Kind: collector.KindKepler, Node: nodeName(i), URL: f.url(nodeName(i)), NodeLabel: nodeName(i)}
	}
	return out
}
