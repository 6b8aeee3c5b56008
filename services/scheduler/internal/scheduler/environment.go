package scheduler

import (
	"bufio"
	"encoding/json"
	"os"
	"runtime"
	"strings"

	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/version"
)

// testbed reads the reservation the platform runs on from
// Config.TestbedReservationFile, at each acceptance: the file is a
// mounted ConfigMap that `greenflow testbed up` may re-apply while the
// scheduler runs. Nil and "" when no file is configured; nil and why
// when it is and cannot be read (the experiment is accepted all the same,
// its provenance naming what is missing).
func (s *Scheduler) testbed() (*results.TestbedProvenance, string) {
	if s.cfg.TestbedReservationFile == "" {
		return nil, ""
	}
	data, err := os.ReadFile(s.cfg.TestbedReservationFile)
	if err != nil {
		return nil, err.Error()
	}
	tb, err := results.ParseTestbedProvenance(data)
	if err != nil {
		return nil, s.cfg.TestbedReservationFile + ": " + err.Error()
	}
	return &tb, ""
}

// environmentJSON records the facts needed to interpret or repeat an
// experiment: host, CPU model and count, kernel, Go runtime, where the
// recorded commit came from (version.CommitSource), and the testbed
// reservation the platform runs on (testbed, or testbed_error saying why
// it could not be read; neither off a testbed).
func environmentJSON(tb *results.TestbedProvenance, tbErr string) string {
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
	if tb != nil {
		env["testbed"] = tb
	}
	if tbErr != "" {
		env["testbed_error"] = tbErr
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
