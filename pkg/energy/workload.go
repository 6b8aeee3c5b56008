package energy

import (
	"slices"
	"strings"
)

// Selector says which workloads belong to one target.
//
// A process target (PID > 0) is the process and all its descendants, as far
// as the source knows parents (local /proc does; exporters report single
// processes, so there only the process itself matches). A pod target is
// found by container id — and then is the whole pod: every container with
// the same pod UID, including the sandbox — or by pod name and namespace
// where the source reports names.
type Selector struct {
	ID          string
	PID         int
	ContainerID string // may carry a runtime scheme ("containerd://…")
	Pod         string
	Namespace   string
}

// Assign returns, for each workload, the index in sels of the target it
// belongs to, or -1. Each workload belongs to at most one target, so
// overlapping targets never count the same work twice: process trees are
// matched first, then pods, each in the order of sels.
func Assign(sels []Selector, ws []WorkloadUse) []int {
	out := make([]int, len(ws))
	for i := range out {
		out[i] = -1
	}
	if len(sels) == 0 {
		return out
	}

	// Process trees: walk each workload's ancestry until a target's root.
	roots := make(map[int]int)
	for i, s := range sels {
		if s.PID > 0 {
			if _, dup := roots[s.PID]; !dup {
				roots[s.PID] = i
			}
		}
	}
	if len(roots) > 0 {
		parent := make(map[int]int, len(ws))
		for _, w := range ws {
			if w.PID > 0 {
				parent[w.PID] = w.PPID
			}
		}
		memo := make(map[int]int, len(ws))
		for i, w := range ws {
			if w.PID > 0 {
				out[i] = rootOf(w.PID, roots, parent, memo)
			}
		}
	}

	// Pods: by container id, widened to the container's whole pod, or by
	// name.
	for si, s := range sels {
		cid := normalizeContainerID(s.ContainerID)
		if cid == "" && s.Pod == "" {
			continue
		}
		// The pod's UID comes from its container even when a process target
		// already took that container's processes.
		var uids []string
		for _, w := range ws {
			if cid != "" && w.PodUID != "" && containerIDsMatch(cid, w.ContainerID) && !slices.Contains(uids, w.PodUID) {
				uids = append(uids, w.PodUID)
			}
		}
		for i, w := range ws {
			if out[i] >= 0 {
				continue
			}
			byID := cid != "" && containerIDsMatch(cid, w.ContainerID)
			byName := s.Pod != "" && w.Pod == s.Pod && (s.Namespace == "" || w.Namespace == s.Namespace)
			byPod := w.PodUID != "" && slices.Contains(uids, w.PodUID)
			if byID || byName || byPod {
				out[i] = si
			}
		}
	}
	return out
}

// rootOf returns the target index of the nearest ancestor of pid (itself
// included) that is a target root, or -1.
func rootOf(pid int, roots, parent, memo map[int]int) int {
	var path []int
	found := -1
	for cur, depth := pid, 0; cur > 0 && depth < 4096; depth++ {
		if v, ok := memo[cur]; ok {
			found = v
			break
		}
		path = append(path, cur)
		if i, ok := roots[cur]; ok {
			found = i
			break
		}
		next, ok := parent[cur]
		if !ok || next == cur {
			break
		}
		cur = next
	}
	for _, p := range path {
		memo[p] = found
	}
	return found
}

// Weights sums, per selector ID, the values of the workloads Assign gave it.
// Selectors that matched nothing are absent.
func Weights(sels []Selector, ws []WorkloadUse, assigned []int) map[string]float64 {
	out := make(map[string]float64)
	for i, si := range assigned {
		if si >= 0 {
			out[sels[si].ID] += nonNegative(ws[i].Value)
		}
	}
	return out
}

// Split divides totalJ among parts measured in joules by a source that
// attributes energy itself (an exporter). Sampling skew can make the parts
// add up to more than the total; they are then scaled down to it. Negative,
// NaN and infinite values count as 0. Every part and Unattributed is ≥ 0,
// and Σ Parts + Unattributed = totalJ within floating-point rounding.
func Split(totalJ float64, parts map[string]float64) Attribution {
	totalJ = nonNegative(totalJ)
	names := make([]string, 0, len(parts))
	for name := range parts {
		names = append(names, name)
	}
	slices.Sort(names)
	var sum float64
	for _, name := range names {
		sum += nonNegative(parts[name])
	}
	a := Attribution{Parts: make(map[string]float64, len(names))}
	var attributed float64
	for _, name := range names {
		var part float64
		if sum > 0 {
			p := nonNegative(parts[name])
			if sum <= totalJ {
				part = p
			} else {
				part = totalJ * (p / sum)
			}
		}
		a.Parts[name] = part
		attributed += part
	}
	a.Unattributed = max(totalJ-attributed, 0)
	return a
}

// normalizeContainerID strips a runtime scheme ("containerd://",
// "cri-o://", "docker://") and lower-cases the id.
func normalizeContainerID(id string) string {
	if i := strings.Index(id, "://"); i >= 0 {
		id = id[i+3:]
	}
	return strings.ToLower(strings.TrimSpace(id))
}

// containerIDsMatch compares a normalized target id with a workload's id;
// either may be the usual 12-character short form of the other.
func containerIDsMatch(target, workload string) bool {
	workload = normalizeContainerID(workload)
	if target == "" || workload == "" {
		return false
	}
	if target == workload {
		return true
	}
	const short = 12
	if len(target) >= short && len(workload) >= short {
		return strings.HasPrefix(workload, target) || strings.HasPrefix(target, workload)
	}
	return false
}
