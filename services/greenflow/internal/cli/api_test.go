package cli_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/schedapi"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// Commands in quick succession over the API's rate wait out its 429 as
// Retry-After says rather than fail; a refused token's error says where
// the token came from, never the token.
func TestCLIWaitsOutTheRateLimitAndNamesTheTokensSource(t *testing.T) {
	t.Parallel()
	tokens, admin := tokenStore(t)
	mux := http.NewServeMux()
	auth.RegisterHTTP(mux, auth.NewGuard(tokens, auth.Limits{MaxBodyBytes: 1 << 20, RatePerSecond: 1, Burst: 1}, nil, nil), tokens)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	run := func(args ...string) (string, int) {
		code, out, errOut := clitest.Run(append(args, "--api-url", srv.URL, "--state-dir", t.TempDir())...)
		return out + errOut, code
	}
	for range 2 {
		out, code := run("token", "list", "--token", admin)
		require.Zero(t, code, out)
		require.Contains(t, out, "admin")
	}
	forged := admin[:len(admin)-4] + "0000"
	if forged == admin {
		forged = admin[:len(admin)-4] + "1111"
	}
	out, code := run("token", "list", "--token", forged)
	require.NotZero(t, code)
	require.Contains(t, out, "unknown token (HTTP 401)")
	require.Contains(t, out, "the token given with --token was refused: give a valid one, or ask an admin")
	require.NotContains(t, out, forged)

	// A valid token with too low a role: the hint names the role needed.
	viewer, _, err := tokens.Create(t.Context(), "reader", auth.Viewer, 0)
	require.NoError(t, err)
	out, code = run("token", "list", "--token", viewer)
	require.NotZero(t, code)
	require.Contains(t, out, "(HTTP 403)")
	require.Contains(t, out, "is valid but this needs role admin")
	require.Contains(t, out, "--role admin")
}

// A scheduler that refuses a spec this CLI found valid (a newer one, with
// a rule this CLI lacks: the CLI checks a spec as its own version does
// before it submits) answers a schedapi.ErrorReply; the CLI shows its user
// the error and every problem as the scheduler wrote them, and fails.
func TestCLIShowsTheProblemsOfARefusedSubmission(t *testing.T) {
	t.Parallel()
	refusal := schedapi.ErrorReply{Error: "invalid spec", Problems: []string{
		`line 5: spec.workload.sensors: 10 is below this scheduler's minimum of 100`,
		`--set spec.repetitions=1: spec.repetitions: expected at least 3 "for a comparison"`,
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/experiments" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(refusal)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	code, out, errOut := clitest.Run("submit", "-f", waitingSpec(t, dir, "refused"), "--api-url", srv.URL, "--token", "any", "--state-dir", dir)
	require.NotZero(t, code, out)
	require.NotContains(t, out, "submitted")
	require.Contains(t, errOut, "submit: invalid spec (HTTP 422):\n  "+strings.Join(refusal.Problems, "\n  "))
}

// An API served over TLS (--http-tls-cert-file) answers the CLI that
// trusts its CA (--api-ca-file, or $GREENFLOW_API_CA_FILE); without the CA
// the CLI refuses the server and sends it no token.
func TestCLIOverTLS(t *testing.T) {
	t.Parallel()
	tokens, admin := tokenStore(t)
	certs := testenv.NewTLS(t)
	srv := service.NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, testenv.Logger(t))
	srv.TLS = service.HTTPTLS{CertFile: certs.CertFile, KeyFile: certs.KeyFile}
	auth.RegisterHTTP(srv.Mux, auth.NewGuard(tokens, auth.DefaultLimits(), nil, nil), tokens)
	run := testenv.Go(t, t.Context(), srv.Run)
	t.Cleanup(func() { require.NoError(t, run.Stop(10*time.Second, "the http server")) })
	url := "https://" + testenv.Receive(t, srv.Listening(), 10*time.Second, "the server listening")

	out := clitest.MustRun(t, "token", "list", "--api-url", url, "--api-ca-file", certs.CAFile, "--token", admin, "--state-dir", t.TempDir())
	require.Contains(t, out, "admin")

	code, _, errOut := clitest.Run("token", "list", "--api-url", url, "--token", admin, "--state-dir", t.TempDir())
	require.NotZero(t, code)
	require.Contains(t, errOut, "certificate signed by unknown authority")
}

// tokenStore is a token store on an embedded JetStream with an admin
// token in it.
func tokenStore(t *testing.T) (*auth.Store, string) {
	t.Helper()
	tokens, err := auth.OpenStore(t.Context(), testenv.Bus(t, testenv.NATS(t), "cli-test"), nil)
	require.NoError(t, err)
	admin, _, err := tokens.Create(t.Context(), "admin", auth.Admin, 0)
	require.NoError(t, err)
	return tokens, admin
}
