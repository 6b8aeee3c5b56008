package console_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/console/internal/console"
)

// With the scheduler's API on HTTPS (as in the cluster), the console
// checks its certificate against --api-ca-file's CA: trusting the CA
// that signed it, it lists the experiments; trusting another CA, it
// refuses the server — the user's token is never sent — and says why.
func TestTheConsoleChecksTheAPIsCertificateAgainstItsCA(t *testing.T) {
	t.Parallel()
	certs := testenv.NewTLS(t)
	trusting := newEnvServing(t, &certs, func(c *console.Config) { c.APICAFile = certs.CAFile })
	trusting.seed(1, time.Now().Add(-time.Hour), nil)
	b := trusting.browser()
	b.signIn(trusting.token("erin", auth.Viewer))
	code, page, _ := b.get("/")
	require.Equal(t, http.StatusOK, code, page)
	require.Contains(t, page, "exp-00000")

	other := testenv.NewTLS(t) // another CA
	refusing := newEnvServing(t, &certs, func(c *console.Config) { c.APICAFile = other.CAFile })
	b = refusing.browser()
	b.signIn(refusing.token("frank", auth.Viewer))
	code, page, _ = b.get("/")
	require.Equal(t, http.StatusBadGateway, code)
	require.Contains(t, page, "certificate signed by unknown authority")
}

// A CA file that is not one fails the console's start, naming the field.
func TestABadAPICAFileFailsInit(t *testing.T) {
	t.Parallel()
	cfg := console.Default()
	cfg.APICAFile = "testdata/no-such-ca.pem"
	c, err := console.New(cfg, console.Deps{Tokens: noTokens{}})
	require.NoError(t, err)
	require.ErrorContains(t, c.Init(t.Context()), "console.apiCAFile: read the CA file: open testdata/no-such-ca.pem")
}

// noTokens verifies no token (the test signs nobody in).
type noTokens struct{}

func (noTokens) Verify(context.Context, string) (auth.Token, error) {
	return auth.Token{}, errors.New("no tokens here")
}
