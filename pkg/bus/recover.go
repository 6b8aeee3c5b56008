package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// errPanic is a handler's recovered panic.
type errPanic struct {
	value any
	stack []byte
}

func (e errPanic) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// callRecovering runs fn, turning a panic into errPanic with the stack.
func callRecovering(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, fn RawHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = errPanic{value: v, stack: debug.Stack()}
		}
	}()
	return fn(ctx, msg, md)
}

// SafeMsgHandler wraps a core NATS handler — a request-reply API such as
// the scheduler's — so that a panic in it answers the requester with
// {"error": "internal error: panic: ..."} (when it expects a reply), logs
// the stack, counts it under name, and leaves the subscription serving,
// instead of ending the process.
func (b *Bus) SafeMsgHandler(name string, h nats.MsgHandler) nats.MsgHandler {
	return func(m *nats.Msg) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			b.m.panics.WithLabelValues(name).Inc()
			b.logger.Error("request handler panicked", zap.String("subject", m.Subject), zap.String("panic", fmt.Sprint(v)),
				zap.ByteString("stack", debug.Stack()))
			if m.Reply == "" {
				return
			}
			body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("internal error: panic: %v", v)})
			if err := m.Respond(body); err != nil {
				b.logger.Warn("error reply after a panic failed", zap.String("subject", m.Subject), zap.Error(err))
			}
		}()
		h(m)
	}
}
