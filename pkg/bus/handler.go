package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/greenflow/greenflow/pkg/events"
)

// Delivery is one decoded message handed to a handler.
type Delivery struct {
	Msg          events.Message
	Subject      string
	Headers      nats.Header
	NumDelivered uint64
	Timestamp    time.Time
	// InProgress extends the ack deadline for long handlers.
	InProgress func() error
}

// Handler processes one delivery. Returning nil acks; returning an error
// retries with backoff, or dead-letters at once when wrapped by Permanent.
// Handlers must be safe to run twice for the same message.
type Handler func(ctx context.Context, d Delivery) error

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks an error that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// notYet marks a message that cannot be handled yet but will be (the
// analyzer waiting for a window's last samples): it is retried like a
// failure, within MaxDeliver, but logged as waiting, not as a failure.
type notYet struct{ err error }

func (n notYet) Error() string { return n.err.Error() }
func (n notYet) Unwrap() error { return n.err }

// NotYet marks an error that means "not ready to handle this yet": the
// message comes back after the backoff, and is logged at debug level.
func NotYet(err error) error {
	if err == nil {
		return nil
	}
	return notYet{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
