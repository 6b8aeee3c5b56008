package local

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/procfs"
)

// procs is the process table as this backend reads it: the generic /proc
// reading of pkg/procfs, plus the markers of the node's runs.
type procs struct {
	procfs.FS
	node  string // only processes marked with it are the backend's
	clock clock.Clock
}

// environ returns the GREENFLOW_* variables of pid's environment; processes
// of other users (unreadable) have none.
func (p procs) environ(pid int) map[string]string {
	b, err := os.ReadFile(filepath.Join(p.Root, strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil
	}
	var out map[string]string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if !bytes.HasPrefix(kv, []byte("GREENFLOW_")) {
			continue
		}
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

// marked is a live process carrying a run's markers in its environment.
type marked struct {
	stat procfs.Stat
	env  map[string]string
}

// scan lists the live processes whose environment carries the markers of
// platform and this node (every run when runID is ""), by run.
func (p procs) scan(platform, runID string) map[string][]marked {
	out := map[string][]marked{}
	self := os.Getpid()
	for _, pid := range p.PIDs() {
		if pid == self {
			continue
		}
		env := p.environ(pid)
		run := env[EnvRunID]
		if run == "" || env[EnvPlatform] != platform || env[EnvNode] != p.node || (runID != "" && run != runID) {
			continue
		}
		s, err := p.Stat(pid)
		if err != nil || s.Dead() {
			continue
		}
		out[run] = append(out[run], marked{stat: s, env: env})
	}
	return out
}

// children lists the live children of pid.
func (p procs) children(pid int) []procfs.Stat {
	var out []procfs.Stat
	for _, c := range p.PIDs() {
		if s, err := p.Stat(c); err == nil && s.PPID == pid && !s.Dead() {
			out = append(out, s)
		}
	}
	return out
}
