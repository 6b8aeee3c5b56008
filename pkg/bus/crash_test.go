package bus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// crashChildren is the test binary running one load-generator consumer
// instead of the tests, until it is signalled — or until a poison message
// kills it: the crash test needs a process that really dies, with nothing
// flushed after the handler began.
var crashChildren = testenv.SpecChild[crashChild]{Env: "GF_BUS_TEST_CRASH_CHILD"}

type crashChild struct {
	NATSURL  string `json:"nats_url"`
	NKeyFile string `json:"nkey_file"`
	// HookFile gets one line per reason the dead-letter hook is told.
	HookFile string `json:"hook_file"`
}

func TestMain(m *testing.M) {
	crashChildren.Run(runCrashChild)
	testenv.Main(m)
}

// runCrashChild consumes load.start as the load generator until SIGTERM;
// a load.start of run "poison" makes its handler SIGKILL the process.
func runCrashChild(ctx context.Context, cc crashChild) int {
	logger, err := zap.NewDevelopment()
	if err != nil {
		return 2
	}
	co, err := bus.Credentials{NKeyFile: cc.NKeyFile}.Options()
	if err != nil {
		logger.Error("credentials", zap.Error(err))
		return 1
	}
	b, err := bus.Connect(ctx, cc.NATSURL, string(events.ServiceLoadGenerator), logger, nil, co...)
	if err != nil {
		logger.Error("connect", zap.Error(err))
		return 1
	}
	defer b.Close()
	err = b.Consume(ctx, dyingSpec(), func(_ context.Context, d bus.Delivery) error {
		if d.Msg.(*events.LoadStart).RunID == "poison" {
			logger.Info("poison message: killing the process", zap.Uint64("delivery", d.NumDelivered))
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // dies here
		}
		return nil
	}, bus.OnDeadLetter(func(_ context.Context, _ nats.Header, reason string) {
		f, err := os.OpenFile(cc.HookFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			_, _ = fmt.Fprintln(f, reason)
			_ = f.Close()
		}
	}))
	if err != nil {
		logger.Error("consume", zap.Error(err))
		return 1
	}
	return 0
}

// A poison message that kills its process outright (SIGKILL from the
// handler: no recover, no nak, nothing flushed) takes down MaxDeliver
// processes, then the next one dead-letters it as out of deliveries, its
// hook told once, and goes on serving.
func TestAMessageThatKillsItsProcessIsDeadLetteredByTheNextOne(t *testing.T) {
	t.Parallel()
	s := testenv.NATSWithAuth(t)
	spec := dyingSpec()
	hookFile := filepath.Join(t.TempDir(), "hook")
	cfg := crashChild{NATSURL: s.URL, NKeyFile: s.Creds(string(events.ServiceLoadGenerator)).NKeyFile, HookFile: hookFile}
	start := func(i int) *testenv.ChildProc {
		return crashChildren.Start(t, fmt.Sprintf("load-generator-%d", i), cfg)
	}
	publishLoadStart(t, s, "poison")
	for i := 1; i <= spec.MaxDeliver; i++ {
		c := start(i)
		testenv.Eventually(t, 30*time.Second, fmt.Sprintf("process %d killed by the poison message", i), func() bool {
			return syscall.Kill(c.Pid(), 0) == syscall.ESRCH // gone and reaped
		})
	}
	last := start(spec.MaxDeliver + 1)
	admin := s.Bus(t, bus.UserAdmin)
	dead := dlq(t, admin, 1)[0]
	reason := dead.Headers().Get(bus.HeaderDLQReason)
	require.Contains(t, reason, "out of deliveries")
	require.Equal(t, "poison", dead.Headers().Get(bus.HeaderRun))
	testenv.Eventually(t, 10*time.Second, "the hook told", func() bool {
		b, err := os.ReadFile(hookFile)
		return err == nil && len(b) > 0
	})
	// The last process is alive and serving: a good message is handled
	// (acked, so nothing is pending) and nothing else is dead-lettered.
	publishLoadStart(t, s, "good")
	cons, err := admin.JetStream().Consumer(t.Context(), bus.StreamLifecycle, spec.Durable)
	require.NoError(t, err)
	testenv.Eventually(t, 20*time.Second, "the next message handled", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.AckFloor.Stream == info.Delivered.Stream && info.NumPending == 0 && info.NumAckPending == 0
	})
	last.Stop(t, 20*time.Second)
	b, err := os.ReadFile(hookFile)
	require.NoError(t, err)
	require.Equal(t, []string{reason}, strings.Split(strings.TrimSpace(string(b)), "\n"), "the hook told once, with the dead letter's reason")
	st, err := admin.JetStream().Stream(t.Context(), bus.StreamDeadLetter)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "only the poison message dead-lettered")
}
