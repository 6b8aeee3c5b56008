// The scheduler's HTTP API as the CLI uses it: submit, list, status,
// cancel and token management, each request with a bearer token.

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"go.uber.org/zap"
)

// apiClient asks one API with one token.
type apiClient struct {
	base  string // e.g. http://127.0.0.1:9464
	token string
	// tokenFrom says where the token came from, for the hint when it is
	// refused (never the token itself): "--token", "$GREENFLOW_TOKEN" or
	// the dev stack's token file; tokenFile is that file.
	tokenFrom string
	tokenFile string
	hc        *http.Client
}

// errAPI is an API's refusal: its status and its schedapi.ErrorReply.
type errAPI struct {
	Status   int
	Message  string
	Problems []string
	hint     string
}

func (e *errAPI) Error() string {
	msg := fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	if len(e.Problems) > 0 {
		msg += ":\n  " + strings.Join(e.Problems, "\n  ")
	}
	if e.hint != "" {
		msg += "\n" + e.hint
	}
	return msg
}

// maxRateWait bounds how long do waits out the API's rate limit (429,
// Retry-After) before it gives up and reports it.
const maxRateWait = 10 * time.Second

// do sends a request (body as ctype, when not nil) and decodes a 2xx
// answer into out (when not nil); anything else is an *errAPI. An answer
// 429 is waited out as its Retry-After says, up to maxRateWait in all.
func (a *apiClient) do(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+maxRateWait)
	defer cancel()
	var waited time.Duration
	for {
		code, data, retryAfter, err := a.send(ctx, method, path, ctype, body)
		if err != nil {
			return err
		}
		if code == http.StatusTooManyRequests && retryAfter > 0 && waited+retryAfter <= maxRateWait {
			select {
			case <-time.After(retryAfter):
				waited += retryAfter
				continue
			case <-ctx.Done():
				return fmt.Errorf("%s %s: wait out the rate limit: %w", method, path, ctx.Err())
			}
		}
		return a.decode(code, data, out, method, path)
	}
}

// send makes one request and returns the answer's status, body and
// Retry-After.
func (a *apiClient) send(ctx context.Context, method, path, ctype string, body []byte) (int, []byte, time.Duration, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("ask the API at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, 0, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, data, retryAfter, nil
}

// decode turns an answer into out, or into an *errAPI.
func (a *apiClient) decode(code int, data []byte, out any, method, path string) error {
	if code/100 != 2 {
		e := schedapi.ReadError(data)
		apiErr := &errAPI{Status: code, Message: e.Error, Problems: e.Problems}
		apiErr.hint = a.hint(code, e.Error)
		return apiErr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %w", method, path, err)
	}
	return nil
}

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand(args, "create, list or revoke")
	if err != nil {
		return err
	}
	fs, c := newFlagSet[connFlags]("token "+sub, stderr)
	switch sub {
	case "create":
		name := fs.String("name", "", "the token's name (letters, digits, '.', '_', '-'), unique among live tokens")
		role := fs.String("role", "viewer", "viewer (read), operator (read, submit, cancel) or admin (operator and tokens)")
		expires := fs.Duration("expires", 0, "the token stops working after this long, e.g. 720h (0: never)")
		viaNATS := fs.Bool("nats", false, "write the token straight into the token bucket over NATS (--nats-url), with no API token: "+
			"how a deployment gets its first admin token")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *name == "" {
			return errors.New("--name: a name is required")
		}
		parsed, err := auth.ParseRole(*role)
		if err != nil {
			return fmt.Errorf("--role: %w", err)
		}
		if *expires < 0 {
			return fmt.Errorf("--expires %s: expected a positive duration, or 0 for never", *expires)
		}
		if *viaNATS {
			return createOverNATS(ctx, *c, *name, parsed, *expires, stdout, stderr)
		}
		req := auth.CreateRequest{Name: *name, Role: string(parsed)}
		if *expires > 0 {
			req.ExpiresIn = expires.String()
		}
		body, _ := json.Marshal(req)
		var created auth.Created
		if err := c.call(ctx, http.MethodPost, "/v1/tokens", "application/json", body, &created); err != nil {
			return err
		}
		// The token alone on standard output (TOKEN=$(greenflow token
		// create ...)); what it is on standard error.
		fmt.Fprintln(stdout, created.Token)
		fmt.Fprintf(stderr, "created token %s (id %s, role %s, %s); it is shown only this once\n", created.Name, created.ID, created.Role,
			expiry(created.ExpiresMs))
		return nil
	case "list":
		if err := fs.Parse(args); err != nil {
			return err
		}
		var infos []auth.Info
		if err := c.call(ctx, http.MethodGet, "/v1/tokens", "", nil, &infos); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tEXPIRES\tREVOKED")
		for _, t := range infos {
			revoked := "-"
			if t.RevokedMs != 0 {
				revoked = time.UnixMilli(t.RevokedMs).UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, time.UnixMilli(t.CreatedMs).UTC().Format(time.RFC3339),
				expiry(t.ExpiresMs), revoked)
		}
		return tw.Flush()
	case "revoke":
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("expected one token NAME or ID")
		}
		var t auth.Info
		if err := c.call(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(pos[0]), "", nil, &t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked token %s (id %s, role %s)\n", t.Name, t.ID, t.Role)
		return nil
	}
	return fmt.Errorf("token %q: expected create, list or revoke", sub)
}

// createOverNATS creates a token in the token bucket directly: whoever may
// write that bucket on NATS may mint tokens, which is what bootstraps a
// deployment. NATS permissions let only the scheduler and the admin user
// write it, so this connects as admin (the dev stack's admin seed, or
// --nats-nkey-file).
func createOverNATS(ctx context.Context, c connFlags, name string, role auth.Role, ttl time.Duration, stdout, stderr io.Writer) error {
	if err := c.resolve(true); err != nil {
		return err
	}
	opts, err := c.natsOptions(bus.UserAdmin)
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, c.natsURL, bus.UserAdmin, zap.NewNop(), nil, opts...) // named as its user: see bus.Declares
	if err != nil {
		return err
	}
	defer b.Close()
	tokens, err := auth.OpenStore(ctx, b, nil)
	if err != nil {
		return err
	}
	plain, t, err := tokens.Create(ctx, name, role, ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, plain)
	fmt.Fprintf(stderr, "created token %s (id %s, role %s, %s) in the token bucket over NATS; it is shown only this once\n", t.Name, t.ID, t.Role,
		expiry(t.ExpiresMs))
	return nil
}

func expiry(ms int64) string {
	if ms == 0 {
		return "never expires"
	}
	return "expires " + time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// hint says what to do about a refusal: which token was refused and where
// the CLI looks for another (401), which role is needed and how to get it
// (403). The API's message says why (unknown, revoked, expired; the role).
func (a *apiClient) hint(code int, msg string) string {
	switch code {
	case http.StatusUnauthorized:
		switch a.tokenFrom {
		case "--token":
			return "the token given with --token was refused: give a valid one, or ask an admin for one ('greenflow token create --name NAME --role viewer|operator|admin'); " +
				"without --token the CLI takes $" + tokenEnv + ", then the dev stack's " + a.tokenFile
		case "$" + tokenEnv:
			return "the token in $" + tokenEnv + " was refused; it comes before the dev stack's admin token (" + a.tokenFile +
				"): unset " + tokenEnv + " to use that one, or set it to a valid token"
		default:
			return "the dev stack's admin token in " + a.tokenFile + " was refused (a stack started since wrote another, or it was revoked): " +
				"restart 'greenflow dev', which writes a valid one there, or give --token"
		}
	case http.StatusForbidden:
		need := "a higher role"
		if _, r, ok := strings.Cut(msg, "this needs "); ok {
			need = "role " + strings.TrimSpace(r)
		}
		return "the token (from " + a.tokenFrom + ") is valid but this needs " + need + ": use a token with it, or ask an admin for one ('greenflow token create --name NAME --role " +
			strings.TrimPrefix(need, "role ") + "')"
	case http.StatusServiceUnavailable:
		return "the API could not check the token now (its token store is unreachable): retry, and see the API's log if it lasts"
	}
	return ""
}
