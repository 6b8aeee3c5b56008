package provisioner

import (
	"context"
	"time"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Backend deploys and removes a run's system under test.
type Backend interface {
	// Key is the record key of run runID as this instance provisions it.
	Key(runID string) string
	// Owns reports whether this instance can remove the run of rec (a
	// local run: on this node).
	Owns(rec state.Record) bool
	// Provision deploys the run, whose record (Key) is in state starting
	// and held by the caller, or running for a repeated provision, and
	// returns its targets; repeated for a deployed run it returns the same
	// targets.
	Provision(ctx context.Context, p events.RunProvision) ([]events.Target, error)
	// Remove removes the run's system under test. e is its record, nil
	// for a leftover with none. crashed reports a running SUT found
	// exited on its own, with the reason.
	Remove(ctx context.Context, runID string, e *state.Entry) (crashed bool, reason string, err error)
	// TeardownBound is the longest one Remove may take.
	TeardownBound() time.Duration
}

// Watcher is a backend that watches running runs for crashes.
type Watcher interface {
	// Watch watches the running run of record e until Unwatch, and calls
	// crashed once, from a goroutine of its own, when the run's system
	// under test ended (or, on a cluster, restarted) on its own; it may
	// be called again for a watched run (with a newer record).
	Watch(e state.Entry, crashed func(reason string))
	Unwatch(runID string)
}

// Sweeper is a backend that can list what of GreenFlow's runs is present
// (marked processes, labelled namespaces), whatever the records say.
type Sweeper interface {
	Leftovers(ctx context.Context) ([]state.Leftover, error)
}

// Forgetter is a backend with local files of a run to remove once its
// record is purged.
type Forgetter interface {
	Forget(rec state.Record)
}

// TopicManager is a backend that creates and deletes a run's Kafka topics
// itself (Strimzi KafkaTopic resources) when ManagesTopics says so;
// otherwise the provisioner uses the Kafka admin API.
type TopicManager interface {
	ManagesTopics() (bool, error)
	CreateTopics(ctx context.Context, p events.RunProvision) error
	DeleteTopics(ctx context.Context, runID string) error
}

// PlatformUser is a backend that marks what it creates with the platform
// id (see state.Store.Platform).
type PlatformUser interface {
	SetPlatform(id string)
}

// closer is a backend with something to stop (its watches) when the
// provisioner stops: Run closes it when it returns.
type closer interface{ Close() }
