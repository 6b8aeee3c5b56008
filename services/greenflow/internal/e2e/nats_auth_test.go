package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack/devstacktest"
)

// The dev stack runs with NATS authentication and per-service permissions
// on: an experiment submitted and watched with the CLI (its own NATS user)
// runs to done, no connection of any service was refused a subject (a
// permission the contract forgot would show here, counted by the bus), and
// no credential — an nkey seed, the admin token, the ClickHouse password —
// appears in the logs
// (debug level), in any JetStream stream or bucket, in the CLI's output, in
// export or in the report.
func TestPipelineWithNATSPermissionsLeaksNoCredential(t *testing.T) {
	t.Setenv("GREENFLOW_TOKEN", "")
	core, observed := observer.New(zap.DebugLevel)
	o := devstacktest.Options(t)
	o.HTTPAddr = "127.0.0.1:0"
	o.UC3Command = []string{filepath.Join(binaries(t), "uc3-processor")}
	o.Logger = zap.New(core)
	st := devstacktest.New(t, o)
	devstacktest.Run(t, st)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	_, err := st.APIURL(ctx)
	require.NoError(t, err)

	var out, errOut bytes.Buffer
	run := func(args ...string) int {
		t.Helper()
		return cli.Main(append(args, "--state-dir", o.StateDir), &out, &errOut)
	}
	testenv.Eventually(t, 60*time.Second, "the scheduler answers", func() bool { return run("list") == 0 })
	out.Reset()
	errOut.Reset()
	example := filepath.Join(repoRoot(), "examples", "uc3-local.yaml")
	args := []string{"submit", "-f", example, "--watch", "--yes"}
	for _, s := range phases("1s", "1s", "3s") {
		args = append(args, "--set", s)
	}
	require.Zero(t, run(args...), "submit --watch: %s\n%s", errOut.String(), out.String())
	id := regexp.MustCompile(`submitted experiment (\S+)`).FindStringSubmatch(out.String())
	require.NotNil(t, id, out.String())
	require.Contains(t, out.String(), "done", "the CLI watched the experiment to its end over NATS")
	dir := t.TempDir()
	require.Zero(t, run("export", id[1], "--dir", dir), errOut.String())
	require.Zero(t, run("report", id[1], "-o", filepath.Join(dir, "report.html")), errOut.String())

	var logs strings.Builder
	for _, e := range observed.All() {
		fmt.Fprintln(&logs, e.Level, e.LoggerName, e.Message, e.ContextMap())
	}
	families, err := st.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != "greenflow_bus_nats_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			require.Zero(t, m.GetCounter().GetValue(), "nats errors %s — logs:\n%s", labels(m), grepLines(logs.String(), "nats reported an error"))
		}
	}

	secrets := credentials(t, o.StateDir, st.AdminToken())
	chURL, err := url.Parse(st.Endpoints.ClickHouseDSN)
	require.NoError(t, err)
	chPassword, ok := chURL.User.Password()
	require.True(t, ok && chPassword != "", "the stack's ClickHouse DSN has a password")
	secrets["clickhouse password"] = chPassword
	endpoints, err := os.ReadFile(filepath.Join(o.StateDir, devstack.EndpointsFile))
	require.NoError(t, err)
	haystacks := map[string]string{"logs": logs.String(), "cli output": out.String() + errOut.String(), "endpoints.json": string(endpoints)}
	files, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		require.NoError(t, err)
		haystacks["export/"+f.Name()] = string(data)
	}
	for name, data := range streamContents(ctx, t, devstacktest.AdminBus(t, st).JetStream()) {
		haystacks["stream "+name] = data
	}
	require.Contains(t, haystacks, "stream KV_greenflow_scheduler", "the stored experiment (and its spec) is scanned")
	for where, text := range haystacks {
		for what, secret := range secrets {
			require.NotContains(t, text, secret, "%s found in %s", what, where)
		}
	}
}

// credentials are the stack's secrets by name: every NATS seed, the admin
// token (and its secret part alone).
func credentials(t *testing.T, stateDir, adminToken string) map[string]string {
	t.Helper()
	out := map[string]string{"admin token": adminToken, "admin token secret": adminToken[strings.LastIndex(adminToken, "_")+1:]}
	for _, user := range bus.Users() {
		seed, err := os.ReadFile(devstack.NATSCreds(stateDir, user).NKeyFile)
		require.NoError(t, err)
		out["nkey seed of "+user] = strings.TrimSpace(string(seed))
	}
	return out
}

// streamContents is every message of every stream (subject, headers, body).
func streamContents(ctx context.Context, t *testing.T, js jetstream.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		var b strings.Builder
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			require.NoError(t, err)
			b.WriteString(m.Subject)
			for k, v := range m.Header {
				b.WriteString(k + ":" + strings.Join(v, ",") + "\n")
			}
			b.Write(m.Data)
			b.WriteByte('\n')
		}
		out[name] = b.String()
	}
	require.NoError(t, names.Err())
	return out
}

func labels(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

func grepLines(text, what string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, what) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
