package svcmain_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/freeport"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// The child mode of this test binary: a service whose consumer cannot
// start (its stream does not exist), run through svcmain.Main as a real
// binary would be.
const envChild = "GREENFLOW_SVCMAIN_TEST_CHILD"

func TestMain(m *testing.M) {
	testenv.RunAsChild(envChild, func() {
		os.Args = []string{"broken-service", "--nats-url", os.Getenv("GREENFLOW_SVCMAIN_TEST_NATS"), "--metrics-addr", "", "--log-level", "error"}
		svcmain.Service[struct{}]{Name: "broken-service", New: func(_ struct{}, d svcmain.Deps) (service.Component, error) {
			c := d.Bus.NewRawConsumer("NO_SUCH_STREAM", bus.ConsumerSpec{Durable: "broken"}, []string{"nowhere.>"},
				func(context.Context, jetstream.Msg, *jetstream.MsgMetadata) error { return nil })
			return service.Func(c.Run), nil
		}}.Main()
		// Main returned: it should have exited non-zero; RunAsChild exits 0.
	})
	testenv.Main(m)
}

// A service whose consumer fails to start exits non-zero with the reason,
// as a separate process: it never runs half-alive.
func TestServiceWhoseConsumerCannotStartExitsNonZero(t *testing.T) {
	cmd := testenv.Child(envChild, []string{"-test.run=^$"}, "GREENFLOW_SVCMAIN_TEST_NATS="+testenv.NATS(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		require.True(t, errors.As(err, &exit), "exited with %v; stderr: %s", err, stderr.String())
		require.Equal(t, 1, exit.ExitCode())
		require.Contains(t, stderr.String(), "broken-service: broken-service: declare consumer broken")
		require.Contains(t, stderr.String(), "stream not found")
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the service kept running with a dead consumer; stderr: %s", stderr.String())
	}
}

// component is a service with one consumer, built in its constructor, and
// an Init that waits to be released (as a KV view waits to sync).
type component struct {
	c       *bus.Consumer
	release testenv.Gate
	mu      sync.Mutex
	got     []string
}

func (c *component) Init(ctx context.Context) error { return c.release.Wait(ctx) }

func (c *component) Run(ctx context.Context) error { return c.c.Run(ctx) }

func (c *component) has(run string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.got {
		if r == run {
			return true
		}
	}
	return false
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ports, err := freeport.Get(1)
	require.NoError(t, err)
	return "127.0.0.1:" + strconv.Itoa(ports[0])
}

func healthz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A service's /healthz: 503 with the reasons until its component has
// started (Init done) and its consumer consumes; 200 then; 503 while NATS
// is down; 200 again once NATS is back — here with an empty store — and
// the consumer receives what is published after.
func TestServiceHealthzFollowsStartupAndNATSRestarts(t *testing.T) {
	srv := testenv.NewRestartableNATS(t)
	addr := freeAddr(t)
	comp := &component{release: testenv.NewGate()}
	built := make(chan *bus.Bus, 1)
	ctx := t.Context()
	svc := testenv.Go(t, ctx, func(ctx context.Context) error {
		return svcmain.Run(ctx, "probe", svcmain.Common{NATSURL: srv.URL(), MetricsAddr: addr, LogLevel: "error"}, svcmain.Needs{},
			func(d svcmain.Deps) (service.Component, error) {
				comp.c = d.Bus.NewConsumer(bus.ConsumerSpec{Durable: "probe", Types: []events.Type{events.TypeLoadStop}},
					func(_ context.Context, dl bus.Delivery) error {
						comp.mu.Lock()
						defer comp.mu.Unlock()
						comp.got = append(comp.got, dl.Msg.(*events.LoadStop).RunID)
						return nil
					})
				built <- d.Bus
				return comp, nil
			})
	})
	b := <-built
	var code int
	var body string
	testenv.Eventually(t, 10*time.Second, "healthz answering", func() bool {
		code, body = healthz(addr)
		return code != 0
	})
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "- probe: starting")
	require.Contains(t, body, "- nats: consumer probe: not started")

	comp.release.Open()
	testenv.Eventually(t, 10*time.Second, "ready", func() bool { code, body = healthz(addr); return code == http.StatusOK })
	require.NoError(t, b.Publish(ctx, events.LoadStop{ExperimentID: "e", RunID: "before"}, ""))
	testenv.Eventually(t, 10*time.Second, "message before the restart", func() bool { return comp.has("before") })

	srv.Stop()
	testenv.Eventually(t, 10*time.Second, "not ready during the outage", func() bool {
		code, body = healthz(addr)
		return code == http.StatusServiceUnavailable
	})
	require.Contains(t, body, "nats connection")
	down := time.Now()
	srv.StartEmpty()
	testenv.Eventually(t, 30*time.Second, "ready after the restart", func() bool { code, body = healthz(addr); return code == http.StatusOK })
	t.Logf("ready %s after the server came back", time.Since(down).Round(time.Millisecond))
	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	require.NoError(t, b.Publish(pctx, events.LoadStop{ExperimentID: "e", RunID: "after"}, ""))
	pcancel()
	testenv.Eventually(t, 20*time.Second, "message published after the restart", func() bool { return comp.has("after") })

	require.NoError(t, svc.Stop(30*time.Second, "the service"))
}

func TestSplitList(t *testing.T) {
	require.Equal(t, []string{"a:1", "b:2"}, svcmain.SplitList(" a:1, ,b:2,"))
	require.Empty(t, svcmain.SplitList(""))
}

// A standalone binary (no NATS, no store) takes only the HTTP and logging
// flags, gets no bus, and runs its component like any service.
func TestStandaloneBinaryHasNoInfrastructure(t *testing.T) {
	sut := svcmain.Service[struct{}]{Name: "sut", Needs: svcmain.Needs{Standalone: true, MetricsAddr: "127.0.0.1:0"},
		New: func(_ struct{}, d svcmain.Deps) (service.Component, error) {
			if d.Bus != nil || d.Store != nil {
				return nil, errors.New("a standalone binary got infrastructure")
			}
			return service.Func(func(context.Context) error { return nil }), nil // a one-shot job
		}}
	var usage bytes.Buffer
	require.NoError(t, sut.Command(context.Background(), []string{"-h"}, &usage))
	require.Contains(t, usage.String(), "-metrics-addr string")
	require.Contains(t, usage.String(), `(default "127.0.0.1:0")`)
	require.NotContains(t, usage.String(), "nats-url")
	require.NotContains(t, usage.String(), "clickhouse-dsn")

	err := sut.Command(context.Background(), []string{"--nats-url", "nats://x"}, io.Discard)
	require.ErrorContains(t, err, "flag provided but not defined: -nats-url")
	require.NoError(t, sut.Command(context.Background(), []string{"--log-level", "error"}, io.Discard))

	err = svcmain.Run(context.Background(), "sut", svcmain.Common{LogLevel: "error"}, svcmain.Needs{Standalone: true, Store: true}, sut.Unit(struct{}{}).Build)
	require.ErrorContains(t, err, "a standalone binary has no ClickHouse store")
}
