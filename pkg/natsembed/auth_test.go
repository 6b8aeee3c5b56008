package natsembed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
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

// refused runs call on a new connection as user and requires that it
// fail because the server refused it: a refused request gets no answer, so
// the call's context ends with the violation the server reports (and only
// after 10 s without one).
func refused(t *testing.T, s testenv.SecureNATS, user string, call func(context.Context, *nats.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	nc := s.Conn(t, user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			cancel(err)
		}
	}))
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	require.Error(t, call(tctx, nc))
	require.ErrorContains(t, context.Cause(ctx), "Permissions Violation", "refused by the server")
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
	adminKV, err := s.Bus(t, bus.UserAdmin).KV(ctx, bus.BucketTokens)
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

// Nobody but admin calls or answers requests on the scheduler's old
// request-reply subjects: that API bypassed the HTTP API's tokens and is
// gone, and no service may stand in for it.
func TestNoServiceUsesTheOldRequestAPI(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	const subject = "gf.api.experiments.submit"
	for _, svc := range events.Services {
		t.Run(string(svc), func(t *testing.T) {
			refused(t, s, string(svc), func(ctx context.Context, nc *nats.Conn) error {
				_, err := nc.RequestWithContext(ctx, subject, []byte(`{}`))
				return err
			})
			v := &violations{}
			nc := s.Conn(t, string(svc), nats.ErrorHandler(v.handler))
			_, err := nc.Subscribe(subject, func(*nats.Msg) {})
			require.NoError(t, err) // refused asynchronously
			require.NoError(t, nc.Flush())
			testenv.Eventually(t, 5*time.Second, "a permission violation", func() bool { return v.has("subscription", subject) })
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

// No service may create, update, delete or purge any stream — its own
// buckets' included; only admin declares (bus.DeclareTopology). A stream
// update can re-route any subject into any other: a trial republished a
// message of the collectors' own bucket onto gf.evt.run.analyzed with the
// energy collector's seed, and minted an admin API token into the token
// bucket with the CLI's. Every service user tries, against every stream and
// bucket, the very requests nats.go sends — a create and an update that
// republish onto gf.evt.run.analyzed and onto the token bucket, a delete,
// a purge — each refused by the server; the exploit itself, through
// jetstream.UpdateStream on the user's own bucket, fails; and afterwards
// every stream is there, unchanged.
func TestServicesMayNotDeclare(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := context.Background()
	admin := s.Bus(t, bus.UserAdmin)
	require.NoError(t, admin.DeclareStream(ctx, bus.TriggerStreamConfig([]string{"ci.images.built"})))
	streams := []string{bus.StreamLifecycle, bus.StreamDeadLetter, bus.StreamCollectors, bus.StreamWatch, bus.StreamTriggers}
	for _, b := range bus.Buckets() {
		streams = append(streams, "KV_"+b)
	}
	before := map[string]jetstream.StreamConfig{}
	for _, st := range streams {
		info, err := admin.JetStream().Stream(ctx, st)
		require.NoError(t, err, "the declarer declared %s", st)
		before[st] = info.CachedInfo().Config
	}
	targets := []string{bus.Subject(events.TypeRunAnalyzed), "$KV." + bus.BucketTokens + ".minted"}
	// A bucket each user may write (or read), for the exploit through the
	// client library.
	own := map[events.Service]string{
		events.ServiceScheduler: bus.BucketScheduler, events.ServiceProvisioner: bus.BucketProvisioner,
		events.ServiceLoadGenerator: bus.BucketLoadRuns, events.ServiceEnergyCollector: bus.BucketCollectors,
		events.ServiceAnalyzer: bus.BucketTokens, events.ServiceCLI: bus.BucketTestbed, events.ServiceConsole: bus.BucketTokens,
	}
	require.Len(t, own, len(events.Services))
	for _, u := range events.Services {
		require.False(t, bus.Declares(string(u), bus.StreamLifecycle))
		t.Run(string(u), func(t *testing.T) {
			v := &violations{}
			nc := s.Conn(t, string(u), nats.ErrorHandler(v.handler))
			var want []string
			for _, st := range streams {
				for _, target := range targets {
					cfg := before[st]
					cfg.RePublish = &jetstream.RePublish{Source: ">", Destination: target}
					body, err := json.Marshal(cfg)
					require.NoError(t, err)
					for _, op := range []string{"CREATE", "UPDATE"} {
						subj := "$JS.API.STREAM." + op + "." + st
						require.NoError(t, nc.PublishRequest(subj, nc.NewRespInbox(), body))
						want = append(want, subj)
					}
				}
				for _, op := range []string{"DELETE", "PURGE"} {
					subj := "$JS.API.STREAM." + op + "." + st
					require.NoError(t, nc.PublishRequest(subj, nc.NewRespInbox(), nil))
					want = append(want, subj)
				}
			}
			require.NoError(t, nc.Flush())
			for _, subj := range want {
				testenv.Eventually(t, 5*time.Second, fmt.Sprintf("%s refused %s", u, subj), func() bool {
					return v.has("publish", subj)
				})
			}

			// The trial's exploit, as the client library makes it.
			st := "KV_" + own[u]
			for _, target := range targets {
				cfg := before[st]
				cfg.RePublish = &jetstream.RePublish{Source: ">", Destination: target}
				refused(t, s, string(u), func(ctx context.Context, nc *nats.Conn) error {
					js, err := jetstream.New(nc)
					require.NoError(t, err)
					_, err = js.UpdateStream(ctx, cfg)
					return err
				})
			}
		})
	}
	for _, st := range streams {
		info, err := admin.JetStream().Stream(ctx, st)
		require.NoError(t, err, "%s is still there", st)
		require.Nil(t, info.CachedInfo().Config.RePublish, "%s republishes", st)
		require.Equal(t, before[st].Subjects, info.CachedInfo().Config.Subjects, st)
	}
}

// A service writes its buckets with the key operations alone — Put,
// Create, Update, Delete and Purge of a key are publishes to the key's
// subject — now that no service has a stream API beyond looking up:
// every writer, every bucket it writes, on the bus it runs on.
func TestWritersUseTheirBucketsWithoutStreamRights(t *testing.T) {
	s := testenv.NATSWithAuth(t)
	ctx := context.Background()
	writes := map[events.Service][]string{
		events.ServiceScheduler:       {bus.BucketScheduler, bus.BucketTokens},
		events.ServiceProvisioner:     {bus.BucketProvisioner},
		events.ServiceLoadGenerator:   {bus.BucketLoadMembers, bus.BucketLoadRuns},
		events.ServiceEnergyCollector: {bus.BucketCollectors},
		events.ServiceCLI:             {bus.BucketTestbed},
	}
	for svc, buckets := range writes {
		b := s.Bus(t, string(svc))
		for _, name := range buckets {
			t.Run(string(svc)+" "+name, func(t *testing.T) {
				kv, err := b.KV(ctx, name)
				require.NoError(t, err)
				rev, err := kv.Create(ctx, "k", []byte("1"))
				require.NoError(t, err)
				_, err = kv.Update(ctx, "k", []byte("2"), rev)
				require.NoError(t, err)
				_, err = kv.Put(ctx, "k", []byte("3"))
				require.NoError(t, err)
				require.NoError(t, kv.Delete(ctx, "k"))
				_, err = kv.Put(ctx, "p", []byte("x"))
				require.NoError(t, err)
				require.NoError(t, kv.Purge(ctx, "p"))
				_, err = kv.Get(ctx, "p")
				require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
			})
		}
	}
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
		{"request not allowed", "gf.api.experiments.submit", func() error {
			_, err := analyzer.Request(ctx, "gf.api.experiments.submit", []byte(`{}`))
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
