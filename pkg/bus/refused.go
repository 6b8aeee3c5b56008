package bus

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// A request the server refuses for permissions gets no answer: nats.go
// reports the violation asynchronously (to the error handler) and the
// request waits for its deadline — 5 s for JetStream calls — ending in a
// timeout that says nothing about why. The bus ties the two: a call made
// refusable ends as soon as the server reports a publish violation on a
// subject it may have used, with an error naming the user and the subject.

// ErrRefused is the error of a call the server refused for permissions.
var ErrRefused = errors.New("refused by the nats server's permissions")

// pendingCall is a call in flight that a violation on a subject match
// accepts ends.
type pendingCall struct {
	match  func(subject string) bool
	cancel context.CancelCauseFunc
}

var violationRE = regexp.MustCompile(`(?i)permissions violation for publish to "([^"]+)"`)

// refusable returns ctx ended, with the violation as its cause, when the
// server reports one for publishing to a subject match accepts; done
// forgets the call.
func (b *Bus) refusable(ctx context.Context, match func(subject string) bool) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	p := &pendingCall{match: match, cancel: cancel}
	b.mu.Lock()
	b.pending[p] = struct{}{}
	b.mu.Unlock()
	return ctx, func() {
		b.mu.Lock()
		delete(b.pending, p)
		b.mu.Unlock()
		cancel(nil)
	}
}

// refused ends the pending calls that may have published to the subject
// of violation err.
func (b *Bus) refused(err error) {
	m := violationRE.FindStringSubmatch(err.Error())
	if m == nil {
		return
	}
	cause := fmt.Errorf("nats user %s may not publish to %q: %w (its permissions come from bus.PermissionsFor)", b.user(), m[1], ErrRefused)
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.pending {
		if p.match(m[1]) {
			p.cancel(cause)
		}
	}
}

// refusal is err, or the refusal that ended ctx.
func refusal(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); errors.Is(cause, ErrRefused) {
		return cause
	}
	return err
}

// The subjects a call may publish to.
func subjectIs(s string) func(string) bool { return func(x string) bool { return x == s } }

// jsAPIOn matches the JetStream API subjects about stream st
// ($JS.API.STREAM.INFO.<st>, $JS.API.CONSUMER.CREATE.<st>.…, …) and, for a
// bucket's stream, its keys ($KV.<bucket>.…).
func jsAPIOn(st string) func(string) bool {
	return func(x string) bool {
		if b, ok := strings.CutPrefix(st, "KV_"); ok && strings.HasPrefix(x, "$KV."+b+".") {
			return true
		}
		rest, ok := strings.CutPrefix(x, "$JS.API.")
		return ok && (strings.HasSuffix(rest, "."+st) || strings.Contains(rest, "."+st+"."))
	}
}

// Request sends a core NATS request and waits for its answer within ctx;
// one the server refuses for permissions fails at once with ErrRefused.
func (b *Bus) Request(ctx context.Context, subject string, data []byte) ([]byte, error) {
	rctx, done := b.refusable(ctx, subjectIs(subject))
	defer done()
	msg, err := b.nc.RequestWithContext(rctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", subject, refusal(rctx, err))
	}
	return msg.Data, nil
}

// user names this connection's NATS user: the one its key belongs to in
// the trust file when it has one (a command may call itself admin but
// connect with a service's seed), else the name it was given.
func (b *Bus) user() string {
	if b.sig != nil && b.sig.user != b.producer {
		return fmt.Sprintf("%s (connected as %q)", b.sig.user, b.producer)
	}
	return b.producer
}
