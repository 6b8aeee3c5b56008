package bus

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/nats-io/nats.go/jetstream"
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
