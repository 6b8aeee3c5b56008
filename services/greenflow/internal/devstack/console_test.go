package devstack_test

import (
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// The dev stack runs the web console on its own address, says where in
// endpoints.json, and the console signs in with the stack's admin token
// and lists what the stack's scheduler holds.
func TestDevStackServesTheConsole(t *testing.T) {
	o := devstacktest.Options(t)
	st, _, base := devstacktest.StartWithConsole(t, o)
	var e devstack.Endpoints
	testenv.Eventually(t, 30*time.Second, "endpoints.json names the console", func() bool {
		var err error
		e, err = devstack.ReadEndpoints(o.StateDir)
		return err == nil && e.ConsoleURL == base
	})

	hc := devstacktest.ConsoleClient(t, base, st.AdminToken())
	// Signed in, the list answers once the scheduler's state is loaded.
	testenv.Eventually(t, time.Minute, "the console lists the stack's experiments", func() bool {
		resp, err := hc.Get(base + "/")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && regexp.MustCompile(`dev-admin · admin`).Match(body) &&
			regexp.MustCompile(`\d+ experiments?`).Match(body)
	})
}
