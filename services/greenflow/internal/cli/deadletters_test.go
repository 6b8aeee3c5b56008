package cli_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
)

// deadLetterOut is what `dead-letters --format json` writes of one.
type deadLetterOut struct {
	bus.DeadLetter
	Body json.RawMessage `json:"body"`
}

// An operator lists what the load-generator's consumer dead-lettered for
// real — a load.stop its handler rejected (experiment named only in the
// body), one nobody signed, one whose body its schema refuses — with the
// CLI's own NATS user on a server with every user's permissions: each
// with its consumer, subject, kind and reason, deliveries and experiment,
// in every format; the filters narrow the list; show prints one with its
// headers and body. Listing consumes nothing: the same output twice, no
// consumer on the dead-letter stream, and the load-generator goes on
// handling. A service's user is refused with an error saying who may read.
func TestDeadLettersListsWhatConsumersGaveUp(t *testing.T) {
	t.Parallel()
	s := testenv.NATSWithAuth(t)
	sched := s.Bus(t, string(events.ServiceScheduler))
	lg := s.Bus(t, string(events.ServiceLoadGenerator))
	var mu sync.Mutex
	handled := map[string]bool{}
	reject := true // until the operator fixes what r-rejected lacked
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	testenv.Go(t, ctx, func(ctx context.Context) error {
		return lg.Consume(ctx, bus.ConsumerLoadGenerator, func(_ context.Context, d bus.Delivery) error {
			m, ok := d.Msg.(*events.LoadStop)
			if !ok {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			if m.RunID == "r-rejected" && reject {
				return bus.Permanent(errors.New("no such run here"))
			}
			handled[m.RunID] = true
			return nil
		})
	})
	publish := func(msg *nats.Msg, sign bool) {
		t.Helper()
		if sign {
			require.NoError(t, sched.PublishMsg(t.Context(), msg))
			return
		}
		_, err := sched.JetStream().PublishMsg(t.Context(), msg)
		require.NoError(t, err)
	}
	loadStop := func(msgID, experiment, run, body string) *nats.Msg {
		m := nats.NewMsg(bus.Subject(events.TypeLoadStop))
		m.Header.Set(bus.HeaderType, string(events.TypeLoadStop))
		m.Header.Set(bus.HeaderVersion, "1")
		m.Header.Set(nats.MsgIdHdr, msgID)
		if experiment != "" {
			m.Header.Set(bus.HeaderExperiment, experiment)
		}
		m.Header.Set(bus.HeaderRun, run)
		m.Header.Set(bus.HeaderProducer, string(events.ServiceScheduler))
		m.Data = []byte(body)
		return m
	}
	start := time.Now()
	// The experiment is in the body only: the listing finds it there.
	publish(loadStop("m1", "", "r-rejected", `{"experiment_id":"exp-a","run_id":"r-rejected"}`), true)
	publish(loadStop("m2", "exp-b", "r-unsigned", `{"experiment_id":"exp-b","run_id":"r-unsigned"}`), false)
	publish(loadStop("m3", "exp-b", "r-bad", `{"experiment_id":"exp-b","run":42}`), true)

	base := []string{"--state-dir", t.TempDir(), "--nats-url", s.URL, "--nats-nkey-file", s.Creds(string(events.ServiceCLI)).NKeyFile}
	list := func(args ...string) []deadLetterOut {
		t.Helper()
		var out []deadLetterOut
		require.NoError(t, json.Unmarshal([]byte(clitest.MustRun(t, append(append([]string{"dead-letters", "--format", "json"}, base...), args...)...)), &out))
		return out
	}
	var all []deadLetterOut
	testenv.Eventually(t, 30*time.Second, "three dead letters", func() bool { all = list(); return len(all) == 3 })
	byRun := map[string]deadLetterOut{}
	for _, d := range all {
		byRun[d.RunID] = d
		require.Equal(t, bus.ConsumerLoadGenerator.Durable, d.Consumer)
		require.Equal(t, bus.Subject(events.TypeLoadStop), d.Subject)
		require.Equal(t, string(events.TypeLoadStop), d.Type)
		require.EqualValues(t, 1, d.Deliveries, "dead-lettered at its first delivery")
		require.NotZero(t, d.StreamSeq)
		require.WithinRange(t, d.Time, start.Add(-time.Second), time.Now().Add(time.Second))
	}
	require.Equal(t, "rejected", byRun["r-rejected"].Kind)
	require.Equal(t, "rejected: no such run here", byRun["r-rejected"].Reason)
	require.Equal(t, "exp-a", byRun["r-rejected"].ExperimentID, "read from the body")
	require.Equal(t, "unverified", byRun["r-unsigned"].Kind)
	require.Contains(t, byRun["r-unsigned"].Reason, "unsigned")
	require.Equal(t, "exp-b", byRun["r-unsigned"].ExperimentID)
	require.Equal(t, "undecodable", byRun["r-bad"].Kind)
	require.Contains(t, byRun["r-bad"].Reason, "undecodable: ")
	require.JSONEq(t, `{"experiment_id":"exp-b","run":42}`, string(byRun["r-bad"].Body))

	// Filters.
	require.Len(t, list("--experiment", "exp-b"), 2)
	require.Equal(t, "r-rejected", list("--experiment", "exp-a")[0].RunID)
	require.Equal(t, "no dead letters\n", clitest.MustRun(t, append([]string{"dead-letters", "--experiment", "exp-none"}, base...)...))
	require.Len(t, list("--consumer", bus.ConsumerLoadGenerator.Durable), 3)
	require.Empty(t, list("--consumer", bus.ConsumerScheduler.Durable))
	require.Len(t, list("--since", "1h"), 3)
	require.Empty(t, list("--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	require.Len(t, list("--since", all[1].Time.Format(time.RFC3339Nano)), 2, "from the second on")

	// Table and CSV say the same; twice the same: nothing was consumed.
	table := clitest.MustRun(t, append([]string{"dead-letters"}, base...)...)
	require.Equal(t, table, clitest.MustRun(t, append([]string{"dead-letters"}, base...)...))
	lines := strings.Split(strings.TrimSpace(table), "\n")
	require.Len(t, lines, 4, table)
	require.Regexp(t, `^SEQ\s+TIME\s+CONSUMER\s+SUBJECT\s+TYPE\s+KIND\s+DELIVERIES\s+EXPERIMENT_ID\s+RUN_ID\s+STREAM_SEQ\s+SIGNED_BY\s+REASON$`, lines[0])
	require.Regexp(t, `(?m)load-generator\s+gf\.cmd\.load\.stop\s+load\.stop\s+rejected\s+1\s+exp-a\s+r-rejected\s+\d+\s+load-generator\s+rejected: no such run here$`, table)
	rows, err := csv.NewReader(strings.NewReader(clitest.MustRun(t, append([]string{"dead-letters", "--format", "csv", "--experiment", "exp-b"}, base...)...))).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Equal(t, []string{"seq", "time", "consumer", "subject", "type", "kind", "deliveries", "experiment_id", "run_id", "stream_seq", "signed_by", "reason"}, rows[0])
	require.Equal(t, []string{"load-generator", "gf.cmd.load.stop", "load.stop", "unverified", "1", "exp-b", "r-unsigned"}, rows[1][2:9])

	// One, with its headers and body.
	seq := byRun["r-bad"].Seq
	shown := clitest.MustRun(t, append([]string{"dead-letters", "show", strconv.FormatUint(seq, 10)}, base...)...)
	require.Regexp(t, `\n  kind:\s+undecodable\n`, shown)
	require.Contains(t, shown, "  "+bus.HeaderDLQReason+": undecodable: ")
	require.Contains(t, shown, "  "+bus.HeaderDLQConsume+": load-generator\n")
	require.Contains(t, shown, "  "+bus.HeaderDLQMsgID+": m3\n")
	require.Contains(t, shown, "{\n  \"experiment_id\": \"exp-b\",\n  \"run\": 42\n}\n")
	code, _, errOut := clitest.Run(append([]string{"dead-letters", "show", "999"}, base...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no dead letter 999 in GF_DEADLETTER")

	// No consumer was made on the dead-letter stream, and the consumer
	// that dead-lettered goes on.
	st, err := sched.JetStream().Stream(t.Context(), bus.StreamDeadLetter)
	require.NoError(t, err)
	require.Zero(t, st.CachedInfo().State.Consumers)
	publish(loadStop("m4", "exp-c", "r-good", `{"experiment_id":"exp-c","run_id":"r-good"}`), true)
	testenv.Eventually(t, 30*time.Second, "the load-generator handles the next load.stop", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["r-good"]
	})
	require.Len(t, list(), 3)

	// A service's user may not read them, and is told who may.
	code, out, errOut := clitest.Run([]string{"dead-letters", "--state-dir", t.TempDir(), "--nats-url", s.URL,
		"--nats-nkey-file", s.Creds(string(events.ServiceScheduler)).NKeyFile}...)
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, `may not publish to "$JS.API.DIRECT.GET.GF_DEADLETTER"`)
	require.Contains(t, errOut, "reading it takes the greenflow command's NATS user (or admin)")

	// Replay: as admin, once the cause is fixed, the rejected one is
	// handled; a second replay within the de-duplication window is not
	// published; the unsigned one is refused, not re-signed into a message
	// the consumers would believe; the CLI's user may not publish it.
	mu.Lock()
	reject = false
	mu.Unlock()
	asAdmin := []string{"--state-dir", t.TempDir(), "--nats-url", s.URL, "--nats-nkey-file", s.Creds(bus.UserAdmin).NKeyFile}
	rejected := strconv.FormatUint(byRun["r-rejected"].Seq, 10)
	code, out, errOut = clitest.Run(append([]string{"dead-letters", "replay", rejected}, base...)...)
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, `may not publish to "gf.cmd.load.stop"`)
	require.Contains(t, errOut, "takes admin's NATS user")
	out = clitest.MustRun(t, append([]string{"dead-letters", "replay", rejected}, asAdmin...)...)
	require.Regexp(t, `^replayed dead letter `+rejected+` \(load.stop for r-rejected\) on gf.cmd.load.stop as stream sequence \d+`, out)
	testenv.Eventually(t, 30*time.Second, "the load-generator handles the replayed load.stop", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["r-rejected"]
	})
	code, out, errOut = clitest.Run(append([]string{"dead-letters", "replay", rejected}, asAdmin...)...)
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "cannot be replayed again yet: it was replayed within the stream's de-duplication window")
	code, out, errOut = clitest.Run(append([]string{"dead-letters", "replay", strconv.FormatUint(byRun["r-unsigned"].Seq, 10)}, asAdmin...)...)
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "cannot be replayed: load.stop on gf.cmd.load.stop: unsigned")
	require.Len(t, list(), 3, "the replayed one was handled, not dead-lettered again")

	// Any service's seed may write a dead letter: one the load generator
	// did not sign is listed as unverified, and says why.
	forged := nats.NewMsg(bus.SubjectDLQ + bus.Subject(events.TypeLoadStop))
	forged.Header.Set(bus.HeaderDLQConsume, bus.ConsumerLoadGenerator.Durable)
	forged.Header.Set(bus.HeaderDLQReason, "rejected: forged")
	forged.Data = []byte(`{}`)
	_, err = s.Bus(t, string(events.ServiceEnergyCollector)).JetStream().PublishMsg(t.Context(), forged)
	require.NoError(t, err)
	all = list()
	require.Len(t, all, 4)
	for _, d := range all[:3] {
		require.Equal(t, bus.ConsumerLoadGenerator.Durable, d.SignedBy, d.Seq)
		require.Empty(t, d.Unverified)
	}
	require.Empty(t, all[3].SignedBy)
	require.Contains(t, all[3].Unverified, "unsigned")
	require.Regexp(t, `(?m)\s+UNVERIFIED\s+rejected: forged$`, clitest.MustRun(t, append([]string{"dead-letters"}, base...)...))
}

// Bad arguments are refused before anything connects, each named.
func TestDeadLettersRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "xml"}, `--format "xml": expected table, json or csv`},
		{[]string{"--since", "yesterday"}, `--since "yesterday": expected a duration (24h, 90m) or an RFC 3339 time`},
		{[]string{"--since", "-1h"}, `--since -1h: expected a positive duration`},
		{[]string{"show"}, "show: expected one SEQ"},
		{[]string{"show", "x1"}, `show "x1": expected a dead letter's sequence number`},
		{[]string{"show", "1", "--format", "csv"}, "show --format csv: expected table or json"},
		{[]string{"replay", "1", "2"}, "replay: expected one SEQ"},
		{[]string{"exp-1"}, `unexpected arguments ["exp-1"]: filter with --experiment`},
	} {
		code, _, errOut := clitest.Run(append([]string{"dead-letters", "--state-dir", t.TempDir()}, tc.args...)...)
		require.Equal(t, 1, code, tc.args)
		require.Contains(t, errOut, tc.want, tc.args)
	}
}
