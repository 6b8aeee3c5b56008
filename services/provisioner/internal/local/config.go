package local

import (
	"errors"
	"fmt"
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
	StopTimeout time.Duration `yaml:"stopTimeout" flag:"stop-timeout" help:"how long a SUT process may take to stop after SIGTERM before SIGKILL"`
	// Node names this machine in targets and records.
	Node string `yaml:"node" flag:"node" help:"node name of this machine in targets"`
	// StateDir holds each run's log and exit status
	// (runs/<run>/sut.log, runs/<run>/exit-status).
	StateDir string `yaml:"stateDir" flag:"state-dir" help:"directory of the local backend's run logs and exit statuses"`
	// LivenessPoll is how often a running SUT is checked for having exited.
	LivenessPoll time.Duration `yaml:"livenessPoll"`
	// StopOnShutdown stops every SUT this backend watches when the
	// provisioner stops (greenflow dev, whose Kafka and NATS stop with it);
	// otherwise they keep running for the next provisioner to adopt.
	StopOnShutdown bool `yaml:"stopOnShutdown"`
	// ProcRoot is the process table (default /proc).
	ProcRoot string `yaml:"procRoot"`
	// KafkaSASLFile is the provisioner's Kafka credentials file
	// (--kafka-sasl-file): the UC-3 processor gets it as its own
	// --kafka-sasl-file, a command SUT as $GREENFLOW_KAFKA_SASL_FILE — a
	// path, so no password is on a command line or in an environment.
	KafkaSASLFile string `yaml:"-"`
}

// Default returns the defaults: this machine's hostname as the node, run
// files under DefaultStateDir. UC3Command has no default here (the
// provisioner's binary knows where the processor is).
func Default() Config {
	node, _ := os.Hostname()
	return Config{StartupGrace: 300 * time.Millisecond, StopTimeout: 10 * time.Second, LivenessPoll: 250 * time.Millisecond,
		Node: node, StateDir: DefaultStateDir(), ProcRoot: "/proc"}
}

// Validate reports every problem with the configuration, by field.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"startupGrace", c.StartupGrace}, {"stopTimeout", c.StopTimeout}, {"livenessPoll", c.LivenessPoll}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("local.%s: got %s, expected a positive duration", f.name, f.d))
		}
	}
	for _, f := range []struct{ name, v string }{{"node", c.Node}, {"stateDir", c.StateDir}, {"procRoot", c.ProcRoot}} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("local.%s: required", f.name))
		}
	}
	return errors.Join(errs...)
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
