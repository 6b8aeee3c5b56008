package scheduler

import (
	"errors"
	"fmt"
	"time"

	"github.com/greenflow/greenflow/pkg/auth"
)

// Config configures the scheduler.
type Config struct {
	// Brokers are the Kafka bootstrap addresses runs use.
	Brokers []string `yaml:"brokers"`
	// Concurrency is how many runs may be active at once on one target
	// cluster (backend), across every scheduler sharing the state bucket
	// (runs sharing nodes must not overlap, so the default is 1). Each
	// scheduler enforces its own value: run them with the same.
	Concurrency int `yaml:"concurrency" flag:"concurrency" help:"runs active at once on the target cluster"`
	// Tick is how often timed phases are checked.
	Tick time.Duration `yaml:"tick"`
	// Timeouts bound the phases that wait for another service.
	ProvisionTimeout time.Duration `yaml:"provisionTimeout" flag:"provision-timeout" help:"time a run may wait for provisioning"`
	LoadGrace        time.Duration `yaml:"loadGrace"` // after measure+cooldown, waiting for load.finished
	TeardownTimeout  time.Duration `yaml:"teardownTimeout"`
	AnalyzeTimeout   time.Duration `yaml:"analyzeTimeout" flag:"analyze-timeout" help:"time a run may wait for analysis"`
	// Retries is how many times a run that failed for a transient reason
	// (a timeout, a load generator failure, a crash of the system under
	// test) is run again, as a new run "<run>-aN" with the same config.
	Retries int `yaml:"retries" flag:"retries" help:"times a run failing for a transient reason is run again"`
	// RetryBackoff is how long the first retry of a run waits after the
	// failure; each further attempt waits twice as long as the one before,
	// at most RetryBackoffMax. An outage shorter than the sum of the waits
	// (5 s + 10 s + 20 s with the defaults) is survived.
	RetryBackoff    time.Duration `yaml:"retryBackoff" flag:"retry-backoff" help:"wait before the first retry of a run; each further retry waits twice as long (0: retry at once)"`
	RetryBackoffMax time.Duration `yaml:"retryBackoffMax" flag:"retry-backoff-max" help:"longest wait before a retry"`
	// Resend re-publishes the current state's command (same message id, so
	// the stream drops it unless the first was lost) when no answer came.
	Resend time.Duration `yaml:"resend"`
	// HTTP bounds what one client may send to the HTTP API.
	HTTP auth.Limits `yaml:"http"`
	// AdminTokenFile holds a token drawn before the platform ran (`greenflow
	// cluster up` puts one in a Secret): the scheduler adopts it as the
	// admin token "cluster-admin" when it starts, so a new cluster has a
	// first token without anyone reaching its NATS.
	AdminTokenFile string `yaml:"adminTokenFile" flag:"admin-token-file" help:"file holding a drawn API token to adopt as the admin token cluster-admin at start (a Secret from greenflow cluster up)"`
	// TestbedReservationFile is the reservation the platform runs on, as
	// `greenflow testbed up` hands it over (the ConfigMap
	// greenflow-testbed mounted by the testbed overlay): read at each
	// acceptance and recorded in the experiment's provenance. Empty: not
	// on a testbed.
	TestbedReservationFile string `yaml:"testbedReservationFile" flag:"testbed-reservation-file" help:"the testbed reservation (JSON from greenflow testbed up) recorded in each accepted experiment's provenance"`
	// Version and Commit are stored with each experiment.
	Version string `yaml:"-"`
	Commit  string `yaml:"-"`
}

// Default returns the default configuration.
func Default() Config {
	return Config{Concurrency: 1, Tick: 100 * time.Millisecond, ProvisionTimeout: 2 * time.Minute, LoadGrace: 30 * time.Second,
		TeardownTimeout: time.Minute, AnalyzeTimeout: 2 * time.Minute, Resend: 10 * time.Second, Retries: 3,
		RetryBackoff: 5 * time.Second, RetryBackoffMax: time.Minute, HTTP: auth.DefaultLimits()}
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("scheduler.brokers: at least one Kafka broker address is required"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("scheduler.concurrency: got %d, expected 1 or more", c.Concurrency))
	}
	if c.Tick <= 0 {
		errs = append(errs, fmt.Errorf("scheduler.tick: got %s, expected a positive duration", c.Tick))
	}
	if c.Retries < 0 {
		errs = append(errs, fmt.Errorf("scheduler.retries: got %d, expected 0 or more", c.Retries))
	}
	if c.RetryBackoff < 0 {
		errs = append(errs, fmt.Errorf("scheduler.retryBackoff: got %s, expected 0 (retry at once) or a positive duration", c.RetryBackoff))
	}
	if c.RetryBackoffMax < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("scheduler.retryBackoffMax: got %s, expected at least scheduler.retryBackoff (%s)", c.RetryBackoffMax, c.RetryBackoff))
	}
	if err := c.HTTP.Validate("scheduler.http"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
