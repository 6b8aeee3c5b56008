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
}

// Handler processes one delivery. Returning nil acks; returning an error
// retries with backoff, or dead-letters at once when wrapped by Permanent.
// Handlers must be safe to run twice for the same message.
type Handler func(ctx context.Context, d Delivery) error

// Permanent marks an error that retrying cannot fix.
func Permanent(err error) error { return markError(err, permanent) }

// NotYet marks an error that means "not ready to handle this yet" (the
// analyzer waiting for a window's last samples): the message comes back
// after the backoff like a failure, within MaxDeliver, but is logged as
// waiting, at debug level.
func NotYet(err error) error { return markError(err, notYet) }

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool { return errors.Is(err, permanent) }

// handlerMark is what a handler's error tells the bus to do beyond
// retrying. A marked error matches its mark with errors.Is, wherever it
// sits in a chain or join.
type handlerMark int

const (
	permanent handlerMark = iota + 1
	notYet
)

func (m handlerMark) Error() string { return [...]string{permanent: "permanent", notYet: "not yet"}[m] }

type markedError struct {
	err  error
	mark handlerMark
}

func markError(err error, m handlerMark) error {
	if err == nil {
		return nil
	}
	return markedError{err, m}
}

func (e markedError) Error() string        { return e.err.Error() }
func (e markedError) Unwrap() error        { return e.err }
func (e markedError) Is(target error) bool { return target == e.mark }
