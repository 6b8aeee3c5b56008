package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// Limits bound what one client may send to an API. Services embed it in
// their configuration; the tags give every API the same flags.
type Limits struct {
	// MaxBodyBytes is the largest request body accepted (413 above). A
	// spec is at most spec.MaxBytes; this bounds every route before a
	// handler reads anything.
	MaxBodyBytes int64 `yaml:"maxBodyBytes" flag:"http-max-body-bytes" help:"largest HTTP API request body in bytes (larger ones are refused with 413)"`
	// RatePerSecond and Burst bound the requests of one token (or, for
	// requests without a valid token, of one client address): a token
	// bucket refilled at RatePerSecond holding Burst requests.
	RatePerSecond float64 `yaml:"ratePerSecond" flag:"http-rate" help:"HTTP API requests per second one token (or one client address without a valid token) may make on average (429 above)"`
	Burst         int     `yaml:"burst" flag:"http-burst" help:"HTTP API requests one token or client may make at once before --http-rate applies"`
}

// DefaultLimits fit a person and the CLI polling status: a spec is at most
// spec.MaxBytes (512 KiB), so 1 MiB leaves room for JSON's escaping; 20
// requests a second with bursts of 40 is far beyond interactive use and
// far below what would load the scheduler.
func DefaultLimits() Limits {
	return Limits{MaxBodyBytes: 1 << 20, RatePerSecond: 20, Burst: 40}
}

// Validate reports every limit that cannot work, each named under path
// (the YAML key of the Limits, e.g. "scheduler.http").
func (l Limits) Validate(path string) error {
	var errs []error
	if l.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("%s.maxBodyBytes: got %d, expected a positive size", path, l.MaxBodyBytes))
	}
	if !(l.RatePerSecond > 0) || math.IsInf(l.RatePerSecond, 0) {
		errs = append(errs, fmt.Errorf("%s.ratePerSecond: got %v, expected a positive rate", path, l.RatePerSecond))
	}
	if l.Burst < 1 {
		errs = append(errs, fmt.Errorf("%s.burst: got %d, expected at least 1", path, l.Burst))
	}
	return errors.Join(errs...)
}

// Verifier checks a presented token (Store does, against the bucket).
type Verifier interface {
	Verify(ctx context.Context, plain string) (Token, error)
}

var _ Verifier = (*Store)(nil)

// Guard authenticates and limits API requests. One Guard per service
// (its rate limits are per process).
type Guard struct {
	tokens  Verifier
	limits  Limits
	clock   clock.PassiveClock
	logger  *zap.Logger
	limiter *limiter
}

// NewGuard builds a guard over tokens with limits (validated by the
// caller's Validate); clk and logger may be nil.
func NewGuard(tokens Verifier, limits Limits, clk clock.PassiveClock, logger *zap.Logger) *Guard {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Guard{tokens: tokens, limits: limits, clock: clk, logger: logger.With(zap.String("component", "auth")),
		limiter: newLimiter(limits.RatePerSecond, limits.Burst)}
}

type ctxKey struct{}

// FromContext returns the token a guarded request was made with.
func FromContext(ctx context.Context) (Token, bool) {
	t, ok := ctx.Value(ctxKey{}).(Token)
	return t, ok
}

// Require serves h to requests that carry a valid token of role need or
// above, within the limits. Refusals answer JSON {"error": ...}:
//
//	401  no token, a malformed, unknown, revoked or expired one (WWW-Authenticate: Bearer)
//	403  a valid token whose role is below need
//	415  a request body that is not application/json or application/yaml
//	413  a request body over MaxBodyBytes
//	429  over the rate (Retry-After: seconds)
//	503  the token store could not be read (never fails open)
func (g *Guard) Require(need Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := g.clock.Now()
		tok, err := g.authenticate(r)
		if err != nil {
			// A client without a valid token is limited by address, so
			// guessing tokens is slow too.
			if ok, wait := g.limiter.allow("addr:"+clientAddr(r), now); !ok {
				g.refuse(w, r, http.StatusTooManyRequests, wait, "too many requests from this client: retry later", Token{})
				return
			}
			// A token that could not be checked is the API's problem, not
			// the client's: 503, so nobody is sent to find another token.
			if errors.Is(err, errUnchecked) {
				g.refuse(w, r, http.StatusServiceUnavailable, 0, err.Error(), Token{})
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="greenflow"`)
			g.refuse(w, r, http.StatusUnauthorized, 0, err.Error(), Token{})
			return
		}
		if ok, wait := g.limiter.allow("token:"+tok.ID, now); !ok {
			g.refuse(w, r, http.StatusTooManyRequests, wait, fmt.Sprintf("too many requests with token %s: retry later", tok.Name), tok)
			return
		}
		if !tok.Role.Allows(need) {
			g.refuse(w, r, http.StatusForbidden, 0, fmt.Sprintf("token %s has role %s; this needs %s", tok.Name, tok.Role, need), tok)
			return
		}
		if hasBody(r) {
			if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
				g.refuse(w, r, http.StatusUnsupportedMediaType, 0, err.Error(), tok)
				return
			}
			if r.ContentLength > g.limits.MaxBodyBytes {
				g.refuse(w, r, http.StatusRequestEntityTooLarge, 0,
					fmt.Sprintf("request body of %d bytes: expected at most %d", r.ContentLength, g.limits.MaxBodyBytes), tok)
				return
			}
			// A body without a declared length stops at the limit; the
			// handler's read fails with *http.MaxBytesError (413).
			r.Body = http.MaxBytesReader(w, r.Body, g.limits.MaxBodyBytes)
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
	})
}

// errUnchecked: the token store could not be read.
var errUnchecked = errors.New("the token could not be checked")

// authenticate returns the token of the request's Authorization header.
// The error words are safe to show: they never repeat the token.
func (g *Guard) authenticate(r *http.Request) (Token, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Token{}, errors.New("authentication required: send Authorization: Bearer <token> (greenflow token create makes one)")
	}
	scheme, plain, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Token{}, errors.New("authorization: expected the Bearer scheme")
	}
	t, err := g.tokens.Verify(r.Context(), strings.TrimSpace(plain))
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, ErrUnknownToken), errors.Is(err, ErrRevoked), errors.Is(err, ErrExpired):
		return Token{}, err
	default:
		// The bucket could not be read: refuse (never fail open) and say so.
		g.logger.Warn("token check failed", zap.Error(err))
		return Token{}, fmt.Errorf("%w now: %w", errUnchecked, err)
	}
}

func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, code int, wait time.Duration, msg string, tok Token) {
	fields := []zap.Field{zap.Int("status", code), zap.String("method", r.Method), zap.String("path", r.URL.Path),
		zap.String("client", clientAddr(r)), zap.String("reason", msg)}
	if tok.ID != "" {
		fields = append(fields, zap.String("token_name", tok.Name), zap.String("token_id", tok.ID))
	}
	g.logger.Info("http request refused", fields...)
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	}
	WriteError(w, code, msg)
}

// WriteError answers {"error": msg} with code, as every API does.
func WriteError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// hasBody reports whether a request carries a body (or may: an unknown
// length counts).
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

// checkContentType accepts JSON and YAML only: these need a CORS preflight
// from a browser, which the APIs never grant.
func checkContentType(ct string) error {
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		return fmt.Errorf("content type %q: expected application/json or application/yaml", ct)
	}
	switch mt {
	case "application/json", "application/yaml", "application/x-yaml":
		return nil
	}
	return fmt.Errorf("content type %q: expected application/json or application/yaml", mt)
}

// clientAddr is the request's peer address without its port. Proxy
// headers (X-Forwarded-For) are not trusted: any client can set them.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
