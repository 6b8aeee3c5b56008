package collector

import (
	"maps"
	"slices"
	"strings"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/store"
)

// Sample scopes: what a row's target is.
const (
	scopeNode         = "node"
	scopeZone         = "zone"
	scopeProcess      = "process"
	scopePod          = "pod"
	scopeUnattributed = "unattributed"
)

// rows turns a reading into sample rows — node, zones, one per target with
// energy, the unattributed rest — and the updated cumulative energy of
// every series. keep lists the workloads attributed to a target, whose
// per-workload state a hand-over must carry.
func (r *runner) rows(m energy.Measurement, targets []events.Target) (out []store.Sample, cum map[string]float64, keep map[string]bool) {
	keep = map[string]bool{}
	if m.Interval <= 0 {
		return nil, maps.Clone(r.cum), keep
	}
	sels, scopes := selectors(targets)
	assigned := energy.Assign(sels, m.Workloads)
	for i, si := range assigned {
		if si >= 0 {
			keep[m.Workloads[i].Key] = true
		}
	}
	att := attribute(m, energy.Weights(sels, m.Workloads, assigned))

	cum = make(map[string]float64, len(r.cum))
	nodeID := "node/" + r.sc.Node
	base := store.Sample{TsMs: m.Time.UnixMilli(), Node: r.sc.Node, Source: m.Source, IntervalMs: uint32(m.Interval.Milliseconds()),
		Estimated: m.Estimated, Collector: r.c.cfg.Instance}
	out = make([]store.Sample, 0, 2+len(m.Zones)+len(att.Parts))
	add := func(scope, target, zone string, deltaJ float64) {
		key := seriesKey(scope, target, zone)
		cum[key] = r.cum[key] + deltaJ
		s := base
		s.Scope, s.TargetID, s.Zone, s.DeltaJ, s.EnergyJ, s.PowerW = scope, target, zone, deltaJ, cum[key], deltaJ/m.Interval.Seconds()
		out = append(out, s)
	}
	add(scopeNode, nodeID, "", m.TotalDeltaJ)
	for _, z := range m.Zones {
		add(scopeZone, nodeID, z.Zone, z.DeltaJ)
	}
	for _, id := range slices.Sorted(maps.Keys(att.Parts)) {
		add(scopes[id], id, "", att.Parts[id])
	}
	add(scopeUnattributed, nodeID, "", att.Unattributed)
	// Keep the running totals of targets still assigned; forget the rest.
	for k, v := range r.cum {
		if _, done := cum[k]; done {
			continue
		}
		scope, rest, _ := strings.Cut(k, "|")
		target, _, _ := strings.Cut(rest, "|")
		if (scope == scopeProcess || scope == scopePod) && scopes[target] == "" {
			continue
		}
		cum[k] = v
	}
	return out, cum, keep
}

// seriesKey names a series in the running totals.
func seriesKey(scope, target, zone string) string { return scope + "|" + target + "|" + zone }

// selectors are the targets a source can match, and each one's scope: a
// process target is its process tree; a pod target is found by container id
// or by pod name.
func selectors(targets []events.Target) ([]energy.Selector, map[string]string) {
	sels := make([]energy.Selector, 0, len(targets))
	scopes := make(map[string]string, len(targets))
	for _, t := range targets {
		switch {
		case t.Kind == scopeProcess && t.PID > 0:
			sels = append(sels, energy.Selector{ID: t.ID, PID: t.PID})
			scopes[t.ID] = scopeProcess
		case t.Kind == scopePod && (t.ContainerID != "" || t.Pod != ""):
			sels = append(sels, energy.Selector{ID: t.ID, ContainerID: t.ContainerID, Pod: t.Pod, Namespace: t.Namespace})
			scopes[t.ID] = scopePod
		}
	}
	return sels, scopes
}

// attribute divides the node total among the targets as the source's basis
// says: by CPU-time share, or as the exporter attributed it.
func attribute(m energy.Measurement, weights map[string]float64) energy.Attribution {
	switch m.Basis {
	case energy.BasisCPU:
		return energy.Attribute(m.TotalDeltaJ, m.CPU, weights)
	case energy.BasisJoules:
		return energy.Split(m.TotalDeltaJ, weights)
	}
	return energy.Split(m.TotalDeltaJ, nil)
}
