package collector_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/energy-collector/internal/collector"
)

// A crash test must kill a real process: an in-process "crash" (closing the
// NATS connection) still lets the writer flush its memory buffer, which
// hides exactly the loss those tests look for. So the test binary re-executes
// itself as a collector process (TestMain hands it to children.Run) and
// the test kills it with SIGKILL.
var children = testenv.SpecChild[childSpec]{Env: "GF_TEST_COLLECTOR_CHILD"}

// childSpec is what a child collector process runs.
type childSpec struct {
	NATS   string           `json:"nats"`
	DSN    string           `json:"dsn"`
	Config collector.Config `json:"config"`
}

// runChild is the child process's main: one collector until SIGTERM.
func runChild(ctx context.Context, spec childSpec) int {
	logger, err := service.NewLogger("info", false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger = logger.With(zap.Int("pid", os.Getpid()))
	err = func() error {
		st, err := store.Open(ctx, spec.DSN, logger)
		if err != nil {
			return err
		}
		defer st.Close()
		b, err := bus.Connect(ctx, spec.NATS, "energy-collector", logger, nil)
		if err != nil {
			return err
		}
		defer b.Close()
		c, err := collector.New(spec.Config, collector.Deps{Bus: b, Store: st, Logger: logger, Registry: prometheus.NewRegistry()})
		if err != nil {
			return err
		}
		return c.Run(ctx)
	}()
	_ = logger.Sync()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "collector:", err)
		return 1
	}
	return 0
}

// child is a collector running in a process of its own.
type child struct{ *testenv.ChildProc }

// startChild starts a collector process; it is killed at cleanup if still
// running. Its log goes to a file the test prints on failure.
func startChild(tb testing.TB, spec childSpec) *child {
	tb.Helper()
	return &child{children.Start(tb, spec.Config.Instance, spec)}
}

// stop sends SIGTERM and waits for a clean exit.
func (c *child) stop(tb testing.TB) {
	tb.Helper()
	c.Stop(tb, 60*time.Second)
}

// TestMain runs a child collector (runChild) instead of the tests when the
// test binary was re-executed as one.
func TestMain(m *testing.M) {
	children.Run(runChild)
	testenv.Main(m)
}
