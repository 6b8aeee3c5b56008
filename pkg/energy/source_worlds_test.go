package energy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/energy/energytest"
)

// The worlds the Source contract suite (source_contract_test.go) moves: each
// is what one Source implementation reads — a powercap tree and /proc, an
// exporter's metrics page, a Prometheus server — with a node that spends
// what the suite tells it to, one second per reading, and a target workload
// that uses a known share of it.

// fmtFloat prints v exactly, as exporters do.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// procWorld is the /proc of a node with 4 CPUs: pid 100 is the target, pid
// 200 another process; both keep using CPU.
type procWorld struct {
	proc        fakeProc
	target      uint64 // CPU ticks of pid 100
	other       uint64 // of pid 200
	offline     bool   // CPUs went offline: the node's CPU times went back
	corruptStat bool
}

func newProcWorld(t *testing.T) *procWorld {
	p := &procWorld{proc: fakeProc{root: t.TempDir(), busy: 1000, total: 10000}, target: 300, other: 400}
	writeFile(t, p.proc.root, "sys/kernel/random/boot_id", "0b5e4c1d-0000-4000-8000-000000000001\n")
	p.write(t)
	return p
}

// run advances one second: busy of its 400 ticks were busy, and the target
// used j/120 s of CPU (so its use is j/120 with a CPU basis).
func (p *procWorld) run(t *testing.T, busy, j float64) {
	t.Helper()
	require.Equal(t, busy, float64(int(busy)), "whole ticks")
	p.proc.busy += uint64(busy)
	p.proc.total += 400
	p.target += uint64(j * 100 / 120)
	p.other += 25
	p.write(t)
}

func (p *procWorld) write(t *testing.T) {
	t.Helper()
	p.proc.write(t, []fakeProcess{
		{pid: 1, ppid: 0, ticks: 50, start: 1, cgroup: "0::/init.scope\n"},
		{pid: 100, ppid: 1, ticks: p.target, start: 500, cgroup: "0::/user.slice\n"},
		{pid: 200, ppid: 1, ticks: p.other, start: 700, cgroup: "0::/user.slice\n"},
	})
	if p.corruptStat {
		writeFile(t, p.proc.root, "stat", "cpu  lots of ticks\n")
	}
}

// goOffline makes the node's CPU times go back, as when CPUs go offline.
func (p *procWorld) goOffline(t *testing.T) {
	p.proc.busy, p.proc.total = p.proc.busy/4, p.proc.total/4
	p.write(t)
}

// raplWorld is a node measured by its RAPL counters (the two-packages tree):
// all it spends goes to package-0.
type raplWorld struct {
	*procWorld
	powercap string
	pkgUJ    uint64
	broken   bool // package-0's counter reads "lots"
	local    bool // LocalSource (with workloads) rather than the bare meter
}

const raplPackage0 = "intel-rapl:0"

func newRAPLWorld(local bool) func(t *testing.T) sourceWorld {
	return func(t *testing.T) sourceWorld {
		return &raplWorld{procWorld: newProcWorld(t), powercap: energytest.CopyTree(t, "testdata/powercap/two-packages"), pkgUJ: 100_000_000, local: local}
	}
}

func (w *raplWorld) newSource(t *testing.T) energy.Source {
	m, err := energy.NewRAPLMeter(w.powercap, w.proc.root)
	require.NoError(t, err)
	if w.local {
		return energy.NewLocalSource(m, w.proc.root)
	}
	return energy.SourceOf(m)
}

func (w *raplWorld) setPackage(t *testing.T, uj uint64) {
	w.pkgUJ = uj % pkgRange
	if w.broken {
		writeFile(t, w.powercap, filepath.Join(raplPackage0, "energy_uj"), "lots\n")
		return
	}
	setUJ(t, w.powercap, raplPackage0, w.pkgUJ)
}

func (w *raplWorld) spend(t *testing.T, j float64) {
	w.setPackage(t, w.pkgUJ+uint64(j*1e6))
	w.run(t, 200, j)
}

// reset: the driver reloads; its counter restarts from zero. The meter
// cannot tell what the interval spent and drops it.
func (w *raplWorld) reset(t *testing.T, j float64) bool {
	w.setPackage(t, uint64(j*1e6))
	w.run(t, 200, j)
	return false
}

// jump: the package counter gains extra beyond what was spent; the meter
// drops the interval (no gauge to fall back on).
func (w *raplWorld) jump(t *testing.T, j, extra float64) (bool, bool) {
	w.setPackage(t, w.pkgUJ+uint64((j+extra)*1e6))
	w.run(t, 200, j)
	return false, true
}

// nearWrap: the range is known, so the wrap is resolved exactly.
func (w *raplWorld) nearWrap(t *testing.T, j float64) bool {
	w.setPackage(t, pkgRange-uint64(j*1e6))
	return true
}

func (w *raplWorld) corrupt(t *testing.T) []string {
	w.broken = true
	w.setPackage(t, w.pkgUJ)
	return []string{"package-0", filepath.Join(w.powercap, raplPackage0, "energy_uj")}
}

func (w *raplWorld) mend(t *testing.T) {
	w.broken = false
	w.setPackage(t, w.pkgUJ)
}

// modelWorld is a node without counters: the model P = 10 W + 100 W × CPU
// utilisation estimates what it spends from /proc/stat.
type modelWorld struct {
	*procWorld
	local bool
}

const modelIdleW, modelMaxW = 10, 110

func newModelWorld(local bool) func(t *testing.T) sourceWorld {
	return func(t *testing.T) sourceWorld { return &modelWorld{procWorld: newProcWorld(t), local: local} }
}

func (w *modelWorld) newSource(*testing.T) energy.Source {
	m := energy.NewModelMeter(w.proc.root, modelIdleW, modelMaxW)
	if w.local {
		return energy.NewLocalSource(m, w.proc.root)
	}
	return energy.SourceOf(m)
}

// spend keeps the CPUs busy for the share of the second that makes the
// model estimate j.
func (w *modelWorld) spend(t *testing.T, j float64) {
	util := (j - modelIdleW) / (modelMaxW - modelIdleW)
	require.True(t, util >= 0 && util <= 1, "the model spends %g–%g J a second", modelIdleW, modelMaxW)
	w.run(t, util*400, j)
}

// reset: CPUs go offline and the node's CPU times go back; the interval's
// utilisation is unknown (estimated at idle, and flagged).
func (w *modelWorld) reset(t *testing.T, j float64) bool {
	w.goOffline(t)
	return false
}

// jump: the model has no energy counter.
func (w *modelWorld) jump(t *testing.T, j, _ float64) (bool, bool) {
	w.spend(t, j)
	return true, false
}

// nearWrap: the model has no counter to wrap.
func (w *modelWorld) nearWrap(*testing.T, float64) bool { return true }

func (w *modelWorld) corrupt(t *testing.T) []string {
	w.corruptStat = true
	w.write(t)
	return []string{"model meter", filepath.Join(w.proc.root, "stat")}
}

func (w *modelWorld) mend(t *testing.T) {
	w.corruptStat = false
	w.write(t)
}

// pageWorld is an exporter serving a page the world writes from its state,
// which hangs or breaks on demand.
type pageWorld struct {
	page   *exporter
	render func() string
	broken bool
}

// brokenPage is an exposition no parser accepts: a label set left open.
const brokenPage = "kepler_node_cpu_joules_total{zone=\"package\" 12\n"

func (p *pageWorld) publish() {
	if p.broken {
		p.page.serveBytes([]byte(brokenPage))
		return
	}
	p.page.serveBytes([]byte(p.render()))
}

func (p *pageWorld) hang(*testing.T) { p.page.hang() }

func (p *pageWorld) corrupt(*testing.T) []string {
	p.broken = true
	p.publish()
	return []string{"parse exposition", p.page.URL}
}

func (p *pageWorld) mend(*testing.T) {
	p.broken = false
	p.publish()
}

// keplerWorld is a Kepler exporter: package (80 %) and dram (20 %) joules
// counters with their watts gauges, and process counters — the target pid
// 4242 a quarter of each zone, pid 999 a tenth.
type keplerWorld struct {
	pageWorld
	pkg, dram, core float64 // node counters
	target, other   float64 // process counters, summed over the zones
	watts           float64 // node power of the last second
}

func newKeplerWorld(t *testing.T) sourceWorld {
	w := &keplerWorld{pkg: 1000, dram: 200, core: 600, target: 110, other: 22}
	w.page, w.render = newExporter(t), w.exposition
	w.publish()
	return w
}

func (w *keplerWorld) newSource(*testing.T) energy.Source {
	return energy.NewKeplerSource(energy.KeplerOptions{URL: w.page.URL + "/metrics", NodeName: "worker-1"})
}

func (w *keplerWorld) exposition() string {
	var b strings.Builder
	b.WriteString("# TYPE kepler_node_cpu_joules_total counter\n")
	for _, z := range []struct {
		zone, path string
		j          float64
	}{{"package", "intel-rapl:0", w.pkg}, {"core", "intel-rapl:0:0", w.core}, {"dram", "intel-rapl:0:1", w.dram}} {
		fmt.Fprintf(&b, "kepler_node_cpu_joules_total{node_name=\"worker-1\",path=\"/sys/class/powercap/%s\",zone=%q} %s\n", z.path, z.zone, fmtFloat(z.j))
	}
	b.WriteString("# TYPE kepler_node_cpu_watts gauge\n")
	fmt.Fprintf(&b, "kepler_node_cpu_watts{node_name=\"worker-1\",path=\"/sys/class/powercap/intel-rapl:0\",zone=\"package\"} %s\n", fmtFloat(0.8*w.watts))
	fmt.Fprintf(&b, "kepler_node_cpu_watts{node_name=\"worker-1\",path=\"/sys/class/powercap/intel-rapl:0:1\",zone=\"dram\"} %s\n", fmtFloat(0.2*w.watts))
	b.WriteString("# TYPE kepler_process_cpu_joules_total counter\n")
	for _, p := range []struct {
		pid, container string
		j              float64
	}{{"4242", fixtureC1, w.target}, {"999", "", w.other}} {
		fmt.Fprintf(&b, "kepler_process_cpu_joules_total{container_id=%q,node_name=\"worker-1\",pid=%q,zone=\"package\"} %s\n", p.container, p.pid, fmtFloat(0.8*p.j))
		fmt.Fprintf(&b, "kepler_process_cpu_joules_total{container_id=%q,node_name=\"worker-1\",pid=%q,zone=\"dram\"} %s\n", p.container, p.pid, fmtFloat(0.2*p.j))
	}
	b.WriteString("# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000\n")
	return b.String()
}

func (w *keplerWorld) spend(_ *testing.T, j float64) {
	w.pkg, w.dram, w.core = w.pkg+0.8*j, w.dram+0.2*j, w.core+0.5*j
	w.target, w.other, w.watts = w.target+j/4, w.other+j/10, j
	w.publish()
}

// reset: the counters restart from zero (without an exporter restart);
// the watts gauges cover the interval.
func (w *keplerWorld) reset(t *testing.T, j float64) bool {
	w.pkg, w.dram, w.core, w.target, w.other = 0, 0, 0, 0, 0
	w.spend(t, j)
	return true
}

// jump: the package counter gains extra; the watts gauge covers the
// interval.
func (w *keplerWorld) jump(t *testing.T, j, extra float64) (bool, bool) {
	w.pkg += extra
	w.spend(t, j)
	return true, true
}

// nearWrap: Kepler resolves its RAPL counters' wraps itself; its joules
// counters only grow.
func (w *keplerWorld) nearWrap(*testing.T, float64) bool { return true }

// scaphandreWorld is a Scaphandre exporter: the host's raw RAPL counter in
// µJ (wrapping at the package range, which the exposition does not give),
// the host power gauge, and process power gauges — the target pid 4242 a
// quarter of the host, pid 999 a tenth.
type scaphandreWorld struct {
	pageWorld
	hostUJ uint64
	watts  float64
}

func newScaphandreWorld(t *testing.T) sourceWorld {
	w := &scaphandreWorld{hostUJ: 50_000_000_000}
	w.page, w.render = newExporter(t), w.exposition
	w.publish()
	return w
}

func (w *scaphandreWorld) newSource(*testing.T) energy.Source {
	return energy.NewScaphandreSource(energy.ScaphandreOptions{URL: w.page.URL + "/metrics"})
}

func (w *scaphandreWorld) exposition() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE scaph_host_energy_microjoules counter\nscaph_host_energy_microjoules %d\n", w.hostUJ)
	fmt.Fprintf(&b, "# TYPE scaph_host_power_microwatts gauge\nscaph_host_power_microwatts %s\n", fmtFloat(w.watts*1e6))
	b.WriteString("# TYPE scaph_process_power_consumption_microwatts gauge\n")
	fmt.Fprintf(&b, "scaph_process_power_consumption_microwatts{container_id=%q,exe=\"java\",kubernetes_pod_name=\"sut-0\",kubernetes_pod_namespace=\"gf\",pid=\"4242\"} %s\n",
		fixtureC1, fmtFloat(w.watts/4*1e6))
	fmt.Fprintf(&b, "scaph_process_power_consumption_microwatts{exe=\"sshd\",pid=\"999\"} %s\n", fmtFloat(w.watts/10*1e6))
	b.WriteString("# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000\n")
	return b.String()
}

func (w *scaphandreWorld) spend(_ *testing.T, j float64) {
	w.hostUJ, w.watts = (w.hostUJ+uint64(j*1e6))%pkgRange, j
	w.publish()
}

// reset: the host rebooted (the raw counter restarts near zero); the power
// gauge covers the interval.
func (w *scaphandreWorld) reset(t *testing.T, j float64) bool {
	w.hostUJ = 0
	w.spend(t, j)
	return true
}

// jump: the host counter gains extra; the power gauge covers the interval.
func (w *scaphandreWorld) jump(t *testing.T, j, extra float64) (bool, bool) {
	w.hostUJ += uint64(extra * 1e6)
	w.spend(t, j)
	return true, true
}

// nearWrap: the raw counter wraps at a range Scaphandre does not publish;
// the power gauge covers the interval.
func (w *scaphandreWorld) nearWrap(_ *testing.T, j float64) bool {
	w.hostUJ = pkgRange - uint64(j*1e6)
	w.publish()
	return true
}

// promqlWorld is a Prometheus server holding Kepler's series of one node:
// package and dram joules counters, and the pods' joules counters — the
// target pod a quarter of the node, another a tenth.
type promqlWorld struct {
	srv *promServer

	mu              sync.Mutex
	pkg, dram       float64
	target, other   float64
	hanging, broken bool
}

const (
	promNodeQuery = `kepler_node_cpu_joules_total{node_name="worker-1",zone=~"package|dram"}`
	promPodQuery  = `sum by (pod_id, pod_name, pod_namespace) (kepler_pod_cpu_joules_total{node_name="worker-1",zone=~"package|dram"})`
)

var (
	promTargetPod = model.Metric{"pod_id": fixturePod, "pod_name": "sut-0", "pod_namespace": "gf"}
	promOtherPod  = model.Metric{"pod_id": "0a0b0c0d-0000-4000-8000-000000000999", "pod_name": "other", "pod_namespace": "gf"}
)

func newPromQLWorld(t *testing.T) sourceWorld {
	w := &promqlWorld{pkg: 1000, dram: 200, target: 100, other: 40}
	w.srv = newPromServer(t, w.results)
	return w
}

func (w *promqlWorld) newSource(t *testing.T) energy.Source {
	src, err := energy.NewPromQLSource(energy.PromQLOptions{URL: w.srv.URL, NodeQuery: promNodeQuery, WorkloadQuery: promPodQuery})
	require.NoError(t, err)
	return src
}

func (w *promqlWorld) results(ctx context.Context, q string) promAnswer {
	w.mu.Lock()
	hanging, broken := w.hanging, w.broken
	pkg, dram, target, other := w.pkg, w.dram, w.target, w.other
	w.mu.Unlock()
	switch {
	case hanging:
		<-ctx.Done()
		return promAnswer{}
	case broken:
		return promAnswer{raw: `{"status":"success","data":{"resultType":"vector","result":[{"metric":`}
	}
	switch q {
	case promNodeQuery:
		return promAnswer{series: []map[string]any{
			series(map[string]string{"__name__": "kepler_node_cpu_joules_total", "zone": "package"}, pkg),
			series(map[string]string{"__name__": "kepler_node_cpu_joules_total", "zone": "dram"}, dram),
		}}
	case promPodQuery:
		return promAnswer{series: []map[string]any{series(labelsOf(promTargetPod), target), series(labelsOf(promOtherPod), other)}}
	}
	return promAnswer{}
}

func labelsOf(m model.Metric) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[string(k)] = string(v)
	}
	return out
}

func (w *promqlWorld) spend(_ *testing.T, j float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pkg, w.dram, w.target, w.other = w.pkg+0.8*j, w.dram+0.2*j, w.target+j/4, w.other+j/10
}

// reset: the series restart from zero (an exporter restart Prometheus
// scraped); without a gauge the interval is a baseline.
func (w *promqlWorld) reset(t *testing.T, j float64) bool {
	w.mu.Lock()
	w.pkg, w.dram, w.target, w.other = 0, 0, 0, 0
	w.mu.Unlock()
	w.spend(t, j)
	return false
}

// jump: the package series gains extra; without a gauge the interval is
// a baseline.
func (w *promqlWorld) jump(t *testing.T, j, extra float64) (bool, bool) {
	w.mu.Lock()
	w.pkg += extra
	w.mu.Unlock()
	w.spend(t, j)
	return false, true
}

// nearWrap: Prometheus holds the exporter's joules counters, which only
// grow.
func (w *promqlWorld) nearWrap(*testing.T, float64) bool { return true }

func (w *promqlWorld) set(hanging, broken bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hanging, w.broken = hanging, broken
}

func (w *promqlWorld) hang(*testing.T) { w.set(true, false) }

func (w *promqlWorld) corrupt(*testing.T) []string {
	w.set(false, true)
	return []string{"promql source", w.srv.URL, "unexpected end of JSON input"}
}

func (w *promqlWorld) mend(*testing.T) { w.set(false, false) }
