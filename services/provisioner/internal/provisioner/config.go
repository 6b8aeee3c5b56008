package provisioner

import (
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
	ReconcileEvery time.Duration `yaml:"reconcileEvery"`
	// UnknownGrace is how old a leftover with no record must be before it
	// is removed (a provision writes its record before it starts anything).
	UnknownGrace time.Duration `yaml:"unknownGrace"`
	// TombstoneTTL is how long a torn-down run's record (its result for a
	// repeated teardown) and a final run's mark are kept.
	TombstoneTTL time.Duration `yaml:"tombstoneTTL"`
	// RetryBase and RetryMax bound the back-off between teardown attempts.
	RetryBase time.Duration `yaml:"retryBase"`
	RetryMax  time.Duration `yaml:"retryMax"`
	// TopicTimeout bounds one create or delete of a run's topics.
	TopicTimeout time.Duration `yaml:"topicTimeout"`
}

func (c *Config) defaults() {
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = host + "-" + strconv.Itoa(os.Getpid()) + "-" + uuid.NewString()[:8]
	}
	if c.Lease == 0 {
		c.Lease = 45 * time.Second
	}
	if c.Tick == 0 {
		c.Tick = 500 * time.Millisecond
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = 30 * time.Second
	}
	if c.UnknownGrace == 0 {
		c.UnknownGrace = 2 * time.Minute
	}
	if c.TombstoneTTL == 0 {
		c.TombstoneTTL = 24 * time.Hour
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
	if c.TopicTimeout == 0 {
		c.TopicTimeout = 15 * time.Second
	}
}
