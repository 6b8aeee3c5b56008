package loadgen

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// Config configures the load generator.
type Config struct {
	// Instance names this generator in events and in the membership bucket;
	// instances sharing a NATS server must have different names.
	Instance string `yaml:"instance" flag:"instance" help:"instance name in events and membership; unique per NATS server (default: hostname)"`
	// Tick is the pacing granularity.
	Tick time.Duration `yaml:"tick"`
	// FlushTimeout bounds the wait for outstanding records at the end.
	FlushTimeout time.Duration `yaml:"flushTimeout"`
	// DeliveryTimeout fails the load when Kafka acknowledges nothing for
	// this long while records are outstanding (a broker outage), during the
	// load or the flush at its end: the run fails within about this long of
	// the broker going away, with the count of records not delivered.
	DeliveryTimeout time.Duration `yaml:"deliveryTimeout" flag:"delivery-timeout" help:"fail a load when Kafka acknowledges nothing for this long while records are outstanding (a broker outage)"`
	// MaxCatchUp bounds catching up after a stall: the generator then sends
	// at most MaxCatchUp × its rate until it is back on schedule. Must be > 1.
	MaxCatchUp float64 `yaml:"maxCatchUp" flag:"max-catch-up" help:"after a stall, send at most this multiple of the rate until back on schedule (> 1)"`
	// CatchUpBurst is how much catch-up (at the spare (MaxCatchUp − 1) ×
	// rate) may go out at once after a stall; a step less than
	// LateTolerance after the last lets out the catch-up of its whole gap.
	CatchUpBurst time.Duration `yaml:"catchUpBurst"`
	// LateTolerance is how late a record may be and still count as on
	// schedule: records due less than this long ago go out at the next step
	// however long since the last one, without the catch-up limit. A tick
	// delayed by a busy CPU (40 ms and more on a loaded 2-core machine) must
	// not put the load behind; only a longer stall is caught up at
	// MaxCatchUp. (With the limit on every record, a step more than
	// 2 × CatchUpBurst after the last let out less than was due, so a
	// starved process fell behind for good.)
	LateTolerance time.Duration `yaml:"lateTolerance"`
	// ReportLag is how long after the end of each second of the schedule
	// that second's records are counted for the progress report.
	ReportLag time.Duration `yaml:"reportLag"`
	// StartDelay is between accepting a load and its first record, so every
	// instance is ready when the schedule starts.
	StartDelay time.Duration `yaml:"startDelay"`
	// PrepareTimeout bounds preparing a load (key table, pacers, producer,
	// topic metadata on every instance) before its schedule starts: the
	// start is fixed only once all are prepared, and a load not prepared
	// within this long of its acceptance fails with the instances that
	// were not ready.
	PrepareTimeout time.Duration `yaml:"prepareTimeout" flag:"prepare-timeout" help:"fail a load whose instances have not prepared it (key table, producer, topic metadata) within this long of its acceptance"`
	// CheckpointInterval is how often an instance records its progress
	// (counts and acked watermarks) in KV: a restart or an heir resumes
	// from the last checkpoint, so at most about this much of an instance's
	// schedule is produced twice after it dies.
	CheckpointInterval time.Duration `yaml:"checkpointInterval" flag:"checkpoint-interval" help:"how often an instance checkpoints its progress (acked watermarks, counts) in KV; bounds what is produced twice after a death"`
	// MaxBackfill bounds back-filling: records due more than this long ago
	// when a range is resumed or taken over are not produced any more, and
	// count as missed.
	MaxBackfill time.Duration `yaml:"maxBackfill" flag:"max-backfill" help:"records due longer ago than this when a range is resumed or taken over are not back-filled but counted as missed"`
	// Heartbeat is how often an instance renews its membership entry.
	Heartbeat time.Duration `yaml:"heartbeat" flag:"heartbeat" help:"membership heartbeat interval (at most half of --member-ttl)"`
	// MemberTTL is how old (by the KV server's clock) an instance's last
	// heartbeat may be before it counts as dead and its ranges are taken
	// over: the detection part of the take-over time.
	MemberTTL time.Duration `yaml:"memberTTL" flag:"member-ttl" help:"an instance whose last heartbeat is this old (by the NATS server's clock) is dead and its key ranges are taken over"`
	// PollInterval is how often the run leader checks membership and
	// completion.
	PollInterval time.Duration `yaml:"pollInterval"`
	// SchemaRegistryURL, when set, is a Confluent-compatible schema registry
	// where the Avro schema is registered at the start of each load; the id
	// it returns replaces the load command's schema id.
	SchemaRegistryURL string `yaml:"schemaRegistryURL" flag:"schema-registry-url" help:"Confluent-compatible schema registry to register the Avro schema in at each load start (default: use the load command's schema id)"`
	// SchemaSubject is the registry subject.
	SchemaSubject string `yaml:"schemaSubject" flag:"schema-subject" help:"schema registry subject"`
	// SignalInterval is how often Kafka high-water marks and consumer lag
	// are sampled into run metrics (when a store is configured).
	SignalInterval time.Duration `yaml:"signalInterval" flag:"signal-interval" help:"Kafka signal sampling interval"`
	// RecordKafkaSignals enables that sampling; it needs ClickHouse.
	RecordKafkaSignals bool `yaml:"recordKafkaSignals" flag:"record-kafka-signals" help:"sample topic high-water marks and consumer lag into ClickHouse run metrics (needs --clickhouse-dsn)"`
}

// Default returns the defaults.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Instance:           bus.SanitizeName(host),
		Tick:               2 * time.Millisecond,
		FlushTimeout:       15 * time.Second,
		DeliveryTimeout:    3 * time.Second,
		MaxCatchUp:         2,
		CatchUpBurst:       20 * time.Millisecond,
		LateTolerance:      100 * time.Millisecond,
		ReportLag:          500 * time.Millisecond,
		StartDelay:         100 * time.Millisecond,
		PrepareTimeout:     time.Minute,
		CheckpointInterval: 200 * time.Millisecond,
		MaxBackfill:        10 * time.Second,
		Heartbeat:          200 * time.Millisecond,
		MemberTTL:          750 * time.Millisecond,
		PollInterval:       100 * time.Millisecond,
		SchemaSubject:      uc3.DefaultSubject,
		SignalInterval:     time.Second,
		RecordKafkaSignals: true,
	}
}

// ErrInvalidConfig is wrapped by every Validate error.
var ErrInvalidConfig = errors.New("invalid load-generator config")

// Validate reports every problem at once, with the field path.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: load-generator.%s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...)))
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			bad(field, "got %s, expected a positive duration", d)
		}
	}
	if c.Instance == "" {
		bad("instance", "required")
	} else if bus.SanitizeName(c.Instance) != c.Instance {
		bad("instance", "got %q, expected only letters, digits, '-' and '_' (try %q)", c.Instance, bus.SanitizeName(c.Instance))
	}
	positive("tick", c.Tick)
	positive("flushTimeout", c.FlushTimeout)
	positive("deliveryTimeout", c.DeliveryTimeout)
	positive("catchUpBurst", c.CatchUpBurst)
	positive("lateTolerance", c.LateTolerance)
	positive("prepareTimeout", c.PrepareTimeout)
	positive("checkpointInterval", c.CheckpointInterval)
	positive("maxBackfill", c.MaxBackfill)
	positive("heartbeat", c.Heartbeat)
	positive("memberTTL", c.MemberTTL)
	if c.Heartbeat > 0 && c.MemberTTL > 0 && c.Heartbeat*2 > c.MemberTTL {
		bad("heartbeat", "got %s with memberTTL %s, expected at most half of memberTTL (a late heartbeat must not look like a death)", c.Heartbeat, c.MemberTTL)
	}
	positive("pollInterval", c.PollInterval)
	positive("signalInterval", c.SignalInterval)
	if c.ReportLag < 0 || c.ReportLag >= time.Second {
		bad("reportLag", "got %s, expected [0, 1s)", c.ReportLag)
	}
	if c.StartDelay < 0 {
		bad("startDelay", "got %s, expected a non-negative duration", c.StartDelay)
	}
	if !(c.MaxCatchUp > 1) {
		bad("maxCatchUp", "got %g, expected a factor above 1", c.MaxCatchUp)
	}
	if c.SchemaRegistryURL != "" {
		if u, err := url.Parse(c.SchemaRegistryURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("schemaRegistryURL", "got %q, expected an http(s) URL", c.SchemaRegistryURL)
		}
		if c.SchemaSubject == "" {
			bad("schemaSubject", "required with a schema registry")
		}
	}
	return errors.Join(errs...)
}
