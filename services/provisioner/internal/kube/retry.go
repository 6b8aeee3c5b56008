package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/greenflow/greenflow/services/provisioner/internal/poll"
)

// transientError is a failure of the API server that trying again later
// may get past: unreachable, timing out, overloaded (429) or failing (5xx).
// The provisioner reports a provision that failed this way as transient,
// and the scheduler retries the run.
type transientError struct{ err error }

func (e transientError) Error() string   { return e.err.Error() }
func (e transientError) Unwrap() error   { return e.err }
func (e transientError) Transient() bool { return true }

// IsTransient reports an error of the API server, or of reaching it, that
// retrying may get past — never an answer about what was asked (forbidden,
// invalid, not found, conflict).
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var t interface{ Transient() bool }
	if errors.As(err, &t) {
		return t.Transient()
	}
	// The API server answers server-side apply of an object that does not
	// fit its schema with a 500; it is the object that is wrong.
	if s := err.Error(); strings.Contains(s, "failed to create typed patch object") || strings.Contains(s, "field not declared in schema") {
		return false
	}
	if apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code >= 500 || code == 429
	}
	if utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// Discovery and the REST mapper wrap some of these as text.
	s := err.Error()
	for _, m := range []string{"connection refused", "connection reset", "i/o timeout", "TLS handshake timeout", "client connection lost",
		"EOF", "the server is currently unable to handle the request", "no route to host"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// authSettle is how long after the API server was last unavailable an
// authorization failure (403, 401) still counts as the server not being
// ready: a restarted kube-apiserver serves requests before its authorizer
// has loaded the RBAC objects (kubernetes#101422) and for ~100 ms denies
// everything — "clusterrole ... not found" — which is no answer about the
// provisioner's rights. Measured by the chaos suite's kube segment: the
// denials came 92–200 ms after the server answered again.
const authSettle = 15 * time.Second

// transient is IsTransient, remembering when the API server was last
// unavailable, and taking an authorization failure within authSettle of
// that for the server still starting.
func (b *Backend) transient(err error) bool {
	if err == nil {
		return false
	}
	now := b.clock.Now().UnixMilli()
	if IsTransient(err) {
		b.lastOutage.Store(now)
		return true
	}
	if last := b.lastOutage.Load(); last != 0 && (apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)) &&
		now-last < authSettle.Milliseconds() {
		return true
	}
	return false
}

// retry runs fn until it succeeds, fails in a way retrying cannot fix, the
// phase's deadline comes or ctx ends. Transient failures are retried with
// back-off; what fails past the deadline is marked transient.
func (b *Backend) retry(ctx context.Context, deadline time.Time, what string, fn func() error) error {
	delay := b.cfg.RetryBase
	warned := false
	for {
		err := fn()
		if err == nil || !b.transient(err) || ctx.Err() != nil {
			return err
		}
		if !b.clock.Now().Add(delay).Before(deadline) {
			return transientError{fmt.Errorf("%w (the API server did not answer before the deadline)", err)}
		}
		if !warned {
			b.logger.Warn("kubernetes API unavailable; retrying", zap.String("what", what), zap.Error(err))
			warned = true
		}
		if !poll.Sleep(ctx, b.clock, delay) {
			return err
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// explain adds what to do to an authorization failure; the API server's
// message already names the verb, the resource and the user (or the
// admission policy and its reason).
func explain(err error) error {
	if apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
		return fmt.Errorf("%w (deploy/base/provisioner-namespace-policy.yaml: the provisioner writes only namespaces labelled app.kubernetes.io/managed-by=greenflow and the objects in them)", err)
	}
	if apierrors.IsForbidden(err) && !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) &&
		!strings.Contains(err.Error(), "exceeded quota") {
		return fmt.Errorf("%w (the provisioner's ClusterRole, deploy/base/provisioner-rbac.yaml, grants the verbs it needs)", err)
	}
	return err
}
