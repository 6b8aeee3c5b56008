package energy

import (
	"bytes"
	"strings"
)

// CgroupInfo is what a process's cgroup path says about where it runs.
type CgroupInfo struct {
	ContainerID string // 64 (at least 12) lower-case hex digits; "" outside a container
	PodUID      string // Kubernetes pod UID with dashes; "" outside a pod
	Runtime     string // containerd, cri-o, docker, podman, or "" when not named by the path
}

// ParseCgroup reads /proc/<pid>/cgroup and finds the container and pod of
// the process. It understands the cgroup v2 unified line ("0::/…") and the
// v1 per-controller lines, with both the systemd and the cgroupfs drivers:
//
//	0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//	0::/kubepods.slice/kubepods-pod<uid>.slice/crio-<id>.scope
//	0::/system.slice/docker-<id>.scope
//	12:cpu,cpuacct:/kubepods/besteffort/pod<uid-with-dashes>/<id>
//	4:memory:/docker/<id>
//
// CRI-O's conmon monitor (crio-conmon-<id>.scope) is not the container and
// is left out. Lines it cannot read are ignored; garbage yields a zero
// CgroupInfo, never an error, since the file is outside input.
func ParseCgroup(data []byte) CgroupInfo {
	var best CgroupInfo
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		// hierarchy-ID:controller-list:path; the path may contain ':'.
		first := bytes.IndexByte(line, ':')
		if first < 0 {
			continue
		}
		second := bytes.IndexByte(line[first+1:], ':')
		if second < 0 {
			continue
		}
		info := parseCgroupPath(string(line[first+1+second+1:]))
		// Prefer the line that names the most; v1 controllers usually
		// agree, and a v2 line is the only one on a unified host.
		if score(info) > score(best) {
			best = info
		}
	}
	return best
}

func score(c CgroupInfo) int {
	s := 0
	if c.ContainerID != "" {
		s += 2
	}
	if c.PodUID != "" {
		s++
	}
	return s
}

func parseCgroupPath(path string) CgroupInfo {
	var info CgroupInfo
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" {
			continue
		}
		if uid, ok := podUIDOf(seg); ok {
			info.PodUID = uid
			continue
		}
		if id, rt, ok := containerIDOf(seg); ok {
			info.ContainerID, info.Runtime = id, rt
		}
	}
	return info
}

// podUIDOf recognises "kubepods-<qos>-pod<uid>.slice", "kubepods-pod<uid>.slice"
// (systemd driver, '_' for '-') and "pod<uid>" (cgroupfs driver).
func podUIDOf(seg string) (string, bool) {
	name := seg
	if rest, ok := strings.CutSuffix(name, ".slice"); ok {
		i := strings.LastIndex(rest, "-pod")
		if i < 0 || !strings.HasPrefix(rest, "kubepods") {
			return "", false
		}
		name = strings.ReplaceAll(rest[i+len("-pod"):], "_", "-")
	} else {
		var ok bool
		if name, ok = strings.CutPrefix(name, "pod"); !ok {
			return "", false
		}
	}
	if !isUID(name) {
		return "", false
	}
	return strings.ToLower(name), true
}

// isUID reports whether s is an RFC 4122 UUID in its 36-character form.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isHex(s[i]) {
				return false
			}
		}
	}
	return true
}

// containerIDOf recognises "<runtime>-<id>.scope" and a bare id segment.
func containerIDOf(seg string) (id, runtime string, ok bool) {
	if rest, found := strings.CutSuffix(seg, ".scope"); found {
		for _, p := range []struct{ prefix, runtime string }{
			{"cri-containerd-", "containerd"},
			{"crio-", "cri-o"},
			{"docker-", "docker"},
			{"libpod-", "podman"},
		} {
			if id, found := strings.CutPrefix(rest, p.prefix); found {
				if isContainerID(id) {
					return strings.ToLower(id), p.runtime, true
				}
				return "", "", false // e.g. crio-conmon-<id>
			}
		}
		return "", "", false
	}
	if isContainerID(seg) && len(seg) == 64 {
		return strings.ToLower(seg), "", true
	}
	return "", "", false
}

func isContainerID(s string) bool {
	if len(s) < 12 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
