package local

import (
	"os"
	"path/filepath"
	"time"
)

// Config configures the local backend.
type Config struct {
	// UC3Command starts the reference UC-3 processor; the backend appends
	// --brokers, --input, --output, --group and template parameters.
	UC3Command []string `yaml:"uc3Command"`
	// StartupGrace is how long a process must stay up to count as started.
	StartupGrace time.Duration `yaml:"startupGrace"`
	// StopTimeout is how long teardown waits after SIGTERM before SIGKILL.
	StopTimeout time.Duration `yaml:"stopTimeout"`
	// Node names this machine in targets and records.
	Node string `yaml:"node"`
	// StateDir holds each run's log and exit status
	// (runs/<run>/sut.log, runs/<run>/exit-status).
	StateDir string `yaml:"stateDir"`
	// LivenessPoll is how often a running SUT is checked for having exited.
	LivenessPoll time.Duration `yaml:"livenessPoll"`
	// StopOnShutdown stops every SUT this backend watches when the
	// provisioner stops (greenflow dev, whose Kafka and NATS stop with it);
	// otherwise they keep running for the next provisioner to adopt.
	StopOnShutdown bool `yaml:"stopOnShutdown"`
	// ProcRoot is the process table (default /proc).
	ProcRoot string `yaml:"procRoot"`
}

// DefaultStateDir is where a provisioner keeps run logs unless told
// otherwise: ~/.local/state/greenflow/provisioner.
func DefaultStateDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "greenflow-provisioner")
	}
	return filepath.Join(home, ".local", "state", "greenflow", "provisioner")
}
