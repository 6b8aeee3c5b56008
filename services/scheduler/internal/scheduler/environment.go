package scheduler

import (
	"bufio"
	"encoding/json"
	"os"
	"runtime"
	"strings"

	"github.com/greenflow/greenflow/pkg/version"
)

// environmentJSON records the facts needed to interpret or repeat an
// experiment: host, CPU model and count, kernel, Go runtime, and where the
// recorded commit came from (version.CommitSource).
func environmentJSON() string {
	host, _ := os.Hostname()
	env := map[string]any{
		"hostname":  host,
		"cpu_model": cpuModel(),
		"num_cpu":   runtime.NumCPU(),
		"kernel":    kernel(),
		"go":        runtime.Version(),
		"os_arch":   runtime.GOOS + "/" + runtime.GOARCH,
		// Where the experiment's commit was read: a binary built without
		// -ldflags and VCS stamping reads the checkout it runs in.
		"commit_source": version.CommitSource(),
	}
	b, _ := json.Marshal(env)
	return string(b)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
