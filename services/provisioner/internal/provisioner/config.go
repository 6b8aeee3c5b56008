package provisioner

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Config tunes the provisioner core.
type Config struct {
	// Instance names this provisioner in records (default host-pid-random).
	Instance string `yaml:"instance"`
	// Lease is how long a provision holds its run without renewing; an
	// instance that died mid-provision loses it after this.
	Lease time.Duration `yaml:"lease"`
	// Tick is how often wanted teardowns and watches are looked at.
	Tick time.Duration `yaml:"tick"`
	// ReconcileEvery is how often leftovers are looked for.
	ReconcileEvery time.Duration `yaml:"reconcileEvery" flag:"reconcile-every" help:"how often leftovers of ended and unknown runs are looked for"`
	// UnknownGrace is how old a leftover with no record must be before it
	// is removed (a provision writes its record before it starts anything).
	UnknownGrace time.Duration `yaml:"unknownGrace" flag:"leftover-grace" help:"how old a process or namespace of this installation with no record must be before it is removed"`
	// TombstoneTTL is how long a torn-down run's record (its result for a
	// repeated teardown) and a final run's mark are kept.
	TombstoneTTL time.Duration `yaml:"tombstoneTTL"`
	// RetryBase and RetryMax bound the back-off between teardown attempts.
	RetryBase time.Duration `yaml:"retryBase"`
	RetryMax  time.Duration `yaml:"retryMax"`
	// TopicTimeout bounds one create or delete of a run's topics.
	TopicTimeout time.Duration `yaml:"topicTimeout"`
}

// Default returns the defaults; Instance is this process's (host, pid and
// a random part), so every call names a new instance.
func Default() Config {
	host, _ := os.Hostname()
	return Config{Instance: host + "-" + strconv.Itoa(os.Getpid()) + "-" + uuid.NewString()[:8],
		Lease: 45 * time.Second, Tick: 500 * time.Millisecond, ReconcileEvery: 30 * time.Second, UnknownGrace: 2 * time.Minute,
		TombstoneTTL: 24 * time.Hour, RetryBase: time.Second, RetryMax: time.Minute, TopicTimeout: 15 * time.Second}
}

// Validate reports every problem with the configuration, by field.
func (c Config) Validate() error {
	var errs []error
	if c.Instance == "" {
		errs = append(errs, errors.New("provisioner.instance: required (it names the holder of leases in records)"))
	}
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"lease", c.Lease}, {"tick", c.Tick}, {"reconcileEvery", c.ReconcileEvery}, {"unknownGrace", c.UnknownGrace},
		{"tombstoneTTL", c.TombstoneTTL}, {"retryBase", c.RetryBase}, {"retryMax", c.RetryMax}, {"topicTimeout", c.TopicTimeout}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("provisioner.%s: got %s, expected a positive duration", f.name, f.d))
		}
	}
	if c.RetryMax > 0 && c.RetryMax < c.RetryBase {
		errs = append(errs, fmt.Errorf("provisioner.retryMax: got %s, expected at least retryBase (%s)", c.RetryMax, c.RetryBase))
	}
	return errors.Join(errs...)
}
