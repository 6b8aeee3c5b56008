package natsembed_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
)

func TestUnauthenticatedClientRefused(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	_, err := nats.Connect(s.URL, nats.MaxReconnects(0))
	require.ErrorIs(t, err, nats.ErrAuthorization)
	// A seed the server does not know is refused too.
	stranger := t.TempDir() + "/stranger.nk"
	_, err = bus.NewUserSeed(stranger)
	require.NoError(t, err)
	co, err := bus.Credentials{NKeyFile: stranger, TrustFile: filepath.Join(s.Dir, bus.TrustFileName)}.Options()
	require.NoError(t, err)
	_, err = nats.Connect(s.URL, append(co, nats.MaxReconnects(0))...)
	require.ErrorIs(t, err, nats.ErrAuthorization)
}

// violations collects the permission violations the server reports to a
// connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violations) has(op, subject string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	want := strings.ToLower(fmt.Sprintf("permissions violation for %s to %q", op, subject))
	return slices.ContainsFunc(v.errs, func(e string) bool { return strings.Contains(strings.ToLower(e), want) })
}

// Every service is refused every message it does not produce: the table is
// the events registry, so a new message is covered by itself. The message
// never reaches the lifecycle stream.
func TestServicesMayPublishOnlyWhatTheyProduce(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	admin := s.Bus(t, bus.UserAdmin)
	ctx := context.Background()
	for _, svc := range events.Services {
		v := &violations{}
		nc := s.Conn(t, string(svc), nats.ErrorHandler(v.handler))
		for _, e := range events.Entries() {
			if slices.Contains(e.Producers, svc) {
				continue
			}
			subject := bus.Subject(e.Type)
			t.Run(fmt.Sprintf("%s publishes %s", svc, e.Type), func(t *testing.T) {
				require.NoError(t, nc.Publish(subject, []byte(`{}`)))
				require.NoError(t, nc.Flush())
				testenv.Eventually(t, 5*time.Second, "permission violation for "+subject, func() bool { return v.has("publish", subject) })
			})
		}
	}
	st, err := admin.JetStream().Stream(ctx, bus.StreamLifecycle)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "a refused message reached the lifecycle stream")
}

// Each service may publish what it produces, through JetStream (acked by
// the lifecycle stream), with the bus it runs on.
func TestServicesPublishWhatTheyProduce(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := context.Background()
	for _, svc := range events.Services {
		b := s.Bus(t, string(svc))
		for _, e := range events.Entries() {
			if !slices.Contains(e.Producers, svc) {
				continue
			}
			_, err := b.JetStream().Publish(ctx, bus.Subject(e.Type), []byte(`{}`))
			require.NoError(t, err, "%s publishing %s", svc, e.Type)
		}
	}
}

// The token bucket is read only by the services that verify tokens and
// written only by the scheduler (the token API) and admin.
func TestTokenBucketAccess(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := context.Background()
	cfg := jetstream.KeyValueConfig{Bucket: bus.BucketTokens, History: 1}
	adminKV, err := s.Bus(t, bus.UserAdmin).KVWith(ctx, cfg)
	require.NoError(t, err)
	_, err = adminKV.Put(ctx, "t1", []byte(`{"hash":"x"}`))
	require.NoError(t, err)

	readers := []events.Service{events.ServiceScheduler, events.ServiceAnalyzer, events.ServiceConsole}
	writers := []events.Service{events.ServiceScheduler}
	for _, svc := range events.Services {
		t.Run(string(svc), func(t *testing.T) {
			co, err := s.Creds(string(svc)).Options()
			require.NoError(t, err)
			nc, err := nats.Connect(s.URL, co...)
			require.NoError(t, err)
			defer nc.Close()
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			kv, err := js.KeyValue(rctx, bus.BucketTokens)
			if !slices.Contains(readers, svc) {
				if err == nil {
					_, err = kv.Get(rctx, "t1")
				}
				require.Error(t, err, "%s read the token bucket", svc)
				return
			}
			require.NoError(t, err)
			e, err := kv.Get(rctx, "t1")
			require.NoError(t, err)
			// Sealed by admin, who wrote it (pkg/bus/sign.go).
			require.True(t, strings.HasPrefix(string(e.Value()), "GFS1 ") && strings.HasSuffix(string(e.Value()), "\n"+`{"hash":"x"}`), "%q", e.Value())
			key := "forged-by-" + string(svc)
			_, err = kv.Put(rctx, key, []byte("forged"))
			if slices.Contains(writers, svc) {
				require.NoError(t, err)
				return
			}
			require.Error(t, err, "%s wrote the token bucket", svc)
			_, gerr := adminKV.Get(ctx, key)
			require.True(t, errors.Is(gerr, jetstream.ErrKeyNotFound), "a refused write landed: %v", gerr)
		})
	}
}

// Only the CLI (and admin) may call the scheduler's request-reply API,
// which bypasses the HTTP API's tokens.
func TestSchedulerRequestAPIOnlyForCLI(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	sched := s.Conn(t, string(events.ServiceScheduler))
	sub, err := sched.Subscribe(bus.SubjectAPI+"list", func(m *nats.Msg) { _ = m.Respond([]byte(`[]`)) })
	require.NoError(t, err)
	require.NoError(t, sched.Flush())
	defer func() { _ = sub.Unsubscribe() }()

	for _, user := range bus.Users() {
		t.Run(user, func(t *testing.T) {
			v := &violations{}
			nc := s.Conn(t, user, nats.ErrorHandler(v.handler))
			_, err := nc.Request(bus.SubjectAPI+"list", nil, 2*time.Second)
			if user == string(events.ServiceCLI) || user == bus.UserAdmin {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			testenv.Eventually(t, 5*time.Second, "permission violation", func() bool { return v.has("publish", bus.SubjectAPI+"list") })
		})
	}
}

// A permission violation is not a silent hang: the bus logs it and counts
// it by kind.
func TestBusReportsPermissionViolations(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	co, err := s.Creds(string(events.ServiceAnalyzer)).Options()
	require.NoError(t, err)
	core, logs := observer.New(zap.ErrorLevel)
	reg := prometheus.NewRegistry()
	b, err := bus.Connect(context.Background(), s.URL, "analyzer", zap.New(core), reg, co...)
	require.NoError(t, err)
	defer b.Close()
	forged := bus.Subject(events.TypeLoadFinished)
	require.NoError(t, b.Conn().Publish(forged, []byte(`{}`)))
	testenv.Eventually(t, 5*time.Second, "the violation counted", func() bool {
		return natsErrors(t, reg, "permission") == 1
	})
	entries := logs.FilterMessage("nats reported an error").All()
	require.Len(t, entries, 1)
	require.Equal(t, "permission", entries[0].ContextMap()["kind"])
	require.Contains(t, entries[0].ContextMap()["error"], forged)
}

// natsErrors is greenflow_bus_nats_errors_total{kind} in reg.
func natsErrors(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if f.GetName() == "greenflow_bus_nats_errors_total" && m.GetLabel()[0].GetValue() == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// No user but a stream's owner may change its configuration: a stream
// update can re-route any subject into any other (republish into the token
// bucket: an admin API token minted with the CLI's seed; a subject
// transform: the load generator forging run.analyzed — both found by a
// trial). The lifecycle stream is the scheduler's; each bucket's stream its
// service's; every user, the CLI included, is tried.
func TestOnlyTheOwnerMayReconfigureAStream(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := context.Background()
	admin := s.Bus(t, bus.UserAdmin)
	_, err := admin.KVWith(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketTokens, History: 1})
	require.NoError(t, err)
	users := append(slices.Clone(events.Services), events.ServiceCLI)
	for _, st := range []string{bus.StreamLifecycle, "KV_" + bus.BucketTokens} {
		info, err := admin.JetStream().Stream(ctx, st)
		require.NoError(t, err)
		for _, u := range users {
			t.Run(fmt.Sprintf("%s updates %s", u, st), func(t *testing.T) {
				v := &violations{}
				nc := s.Conn(t, string(u), nats.ErrorHandler(v.handler))
				js, err := jetstream.New(nc)
				require.NoError(t, err)
				cfg := info.CachedInfo().Config
				cfg.Description = "changed by " + string(u)
				uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err = js.UpdateStream(uctx, cfg)
				if bus.Declares(string(u), st) {
					require.NoError(t, err, "the owner updates its stream")
					return
				}
				require.Error(t, err)
				testenv.Eventually(t, 5*time.Second, "a permission violation", func() bool {
					return v.has("publish", "$JS.API.STREAM.UPDATE."+st)
				})
			})
		}
		after, err := admin.JetStream().Stream(ctx, st)
		require.NoError(t, err)
		require.NotContains(t, after.CachedInfo().Config.Description, "changed by "+string(events.ServiceCLI))
		require.NotContains(t, after.CachedInfo().Config.Description, "changed by "+string(events.ServiceLoadGenerator))
	}
	require.True(t, bus.Declares(string(events.ServiceScheduler), bus.StreamLifecycle))
	require.False(t, bus.Declares(string(events.ServiceCLI), bus.StreamLifecycle))
	require.False(t, bus.Declares(string(events.ServiceAnalyzer), "KV_"+bus.BucketTokens), "the analyzer only reads tokens")
}

// No user may declare, pull from or acknowledge through another service's
// durable consumer: with the energy-collectors' seed a trial pulled and
// acked a run.torn_down meant for the scheduler (the collectors may use any
// consumer name, one per instance), and the run failed. A pull alone takes
// a message for the ack wait and spends one of its deliveries, so it is
// refused too. Every user is tried against every other service's consumer
// (from bus.ConsumersOf, an instance name for a per-instance one, plus the
// scheduler's trigger consumer), each attempt on the server.
func TestNoUserUsesAnotherServicesConsumer(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	type consumer struct {
		owner        events.Service
		stream, name string
	}
	var all []consumer
	for _, svc := range events.Services {
		for _, c := range bus.ConsumersOf(svc) {
			stream := c.Stream
			if stream == "" {
				stream = bus.StreamLifecycle
			}
			all = append(all, consumer{svc, stream, strings.Replace(c.Durable, "*", "host-a", 1)})
		}
	}
	all = append(all, consumer{events.ServiceScheduler, bus.StreamTriggers, "scheduler-triggers"})
	require.Greater(t, len(all), 6)
	for _, u := range events.Services {
		v := &violations{}
		nc := s.Conn(t, string(u), nats.ErrorHandler(v.handler))
		var want []string
		for _, c := range all {
			if c.owner == u {
				continue
			}
			for _, subj := range []string{
				"$JS.API.CONSUMER.CREATE." + c.stream + "." + c.name,
				"$JS.API.CONSUMER.DURABLE.CREATE." + c.stream + "." + c.name,
				"$JS.API.CONSUMER.MSG.NEXT." + c.stream + "." + c.name,
				"$JS.ACK." + c.stream + "." + c.name + ".1.1.1.1700000000000000000.0",
			} {
				// The attempt itself: a pull request as nats.go sends it, an
				// ack as a message with no reply.
				require.NoError(t, nc.PublishRequest(subj, nc.NewRespInbox(), []byte(`{"batch":1,"expires":100000000}`)))
				want = append(want, subj)
			}
		}
		require.NoError(t, nc.Flush())
		for _, subj := range want {
			testenv.Eventually(t, 5*time.Second, fmt.Sprintf("%s refused %s", u, subj), func() bool {
				return v.has("publish", subj)
			})
		}
	}
}

// A call the server refuses for permissions fails at once with
// bus.ErrRefused naming the user and the subject — not, after the call's
// deadline (5 s by default for JetStream), with a timeout that says nothing
// about why: a forged event, a write to a bucket the user only reads, a
// request the user may not make. The deadline here is 30 s, so an error
// that is not the refusal would come from it.
func TestRefusedCallsFailAtOnce(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := s.Bus(t, bus.UserAdmin)
	_, err := admin.KVWith(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketTokens, History: 1})
	require.NoError(t, err)
	loadgen := s.Bus(t, string(events.ServiceLoadGenerator))
	analyzer := s.Bus(t, string(events.ServiceAnalyzer))
	tokens, err := analyzer.KV(ctx, bus.BucketTokens)
	require.NoError(t, err)
	for _, tc := range []struct {
		name, subject string
		call          func() error
	}{
		{"forged event", bus.Subject(events.TypeRunAnalyzed), func() error {
			return loadgen.Publish(ctx, &events.RunAnalyzed{ExperimentID: "e", RunID: "r"}, "")
		}},
		{"write to a bucket read only", "$KV." + bus.BucketTokens + ".x", func() error {
			_, err := tokens.Put(ctx, "x", []byte("minted"))
			return err
		}},
		{"request not allowed", bus.SubjectAPI + "submit", func() error {
			_, err := analyzer.Request(ctx, bus.SubjectAPI+"submit", []byte(`{}`))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := tc.call()
			require.ErrorIs(t, err, bus.ErrRefused)
			require.ErrorContains(t, err, fmt.Sprintf("may not publish to %q", tc.subject))
			t.Logf("refused after %s: %v", time.Since(start), err)
		})
	}
}
