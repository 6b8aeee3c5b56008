package loadgen

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		instances []string
		want      []owned
	}{
		{"even", 9, []string{"a", "b", "c"}, []owned{ow("a", 0, 3), ow("b", 3, 6), ow("c", 6, 9)}},
		{"uneven", 10, []string{"a", "b", "c"}, []owned{ow("a", 0, 3), ow("b", 3, 6), ow("c", 6, 10)}},
		{"one", 5, []string{"a"}, []owned{ow("a", 0, 5)}},
		{"fewer sensors than instances", 2, []string{"a", "b", "c"}, []owned{ow("b", 0, 1), ow("c", 1, 2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := split(0, tt.n, tt.instances)
			require.Equal(t, tt.want, got)
			require.NoError(t, checkCover(got, tt.n))
		})
	}
}

func TestReassign(t *testing.T) {
	three := split(0, 9, []string{"a", "b", "c"})
	alive := func(names ...string) func(string) bool {
		return func(s string) bool {
			for _, n := range names {
				if n == s {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name  string
		in    []owned
		alive func(string) bool
		heirs []string
		want  []owned
	}{
		{"nobody died", three, alive("a", "b", "c"), []string{"a", "b", "c"}, nil},
		{"middle died", three, alive("a", "c"), []string{"a", "c"},
			[]owned{ow("a", 0, 3), ho("a", 3, 4), ho("c", 4, 6), ow("c", 6, 9)}},
		{"first died", three, alive("b", "c"), []string{"b", "c"},
			[]owned{ho("b", 0, 1), ho("c", 1, 3), ow("b", 3, 6), ow("c", 6, 9)}},
		{"all but one died", three, alive("b"), []string{"b"}, []owned{ho("b", 0, 3), ow("b", 3, 6), ho("b", 6, 9)}},
		{"all died, a newcomer inherits", three, alive("z"), []string{"z"}, []owned{ho("z", 0, 9)}},
		{"no heirs", three, alive(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reassign(tt.in, tt.alive, tt.heirs, nil)
			require.Equal(t, tt.want, got)
			if got != nil {
				require.NoError(t, checkCover(got, 9))
				for _, o := range got {
					require.True(t, tt.alive(o.Instance), "%s is dead but owns %v", o.Instance, o.Range)
				}
				// Ranges of live instances are kept as they were.
				for _, o := range tt.in {
					if tt.alive(o.Instance) {
						for s := o.Lo; s < o.Hi; s++ {
							require.Equal(t, o.Instance, ownerOf(got, s))
						}
					}
				}
			}
		})
	}
}

func ownerOf(rs []owned, s int) string {
	for _, o := range rs {
		if s >= o.Lo && s < o.Hi {
			return o.Instance
		}
	}
	return ""
}

func TestCheckCover(t *testing.T) {
	tests := []struct {
		name string
		in   []owned
		want string
	}{
		{"ok", []owned{ow("b", 5, 10), ow("a", 0, 5)}, ""},
		{"gap", []owned{ow("a", 0, 4), ow("b", 5, 10)}, "sensors [4, 5) unassigned"},
		{"overlap", []owned{ow("a", 0, 6), ow("b", 5, 10)}, "sensors [5, 6) assigned twice"},
		{"short", []owned{ow("a", 0, 9)}, "sensors [9, 10) unassigned"},
		{"empty", []owned{ow("a", 0, 0), ow("a", 0, 10)}, "empty range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCover(tt.in, 10)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func ow(instance string, lo, hi int) owned { return owned{Instance: instance, Range: Range{lo, hi}} }

// ho is a range handed over to instance.
func ho(instance string, lo, hi int) owned {
	return owned{Instance: instance, Range: Range{lo, hi}, HandedOver: true}
}

// TestReassignFromWatermarks: a dead instance's range is cut where its
// checkpoint's lanes differ, and every heir's piece starts at the dead
// instance's acked watermark for it.
func TestReassignFromWatermarks(t *testing.T) {
	in := []owned{ow("a", 0, 10), {Instance: "b", Range: Range{10, 20}, FromNs: 5}}
	ckptB := []laneCkpt{{Ranges: []Range{{10, 16}}, AckedNs: 700}, {Ranges: []Range{{16, 20}}, AckedNs: 300}}
	got := reassign(in, func(i string) bool { return i == "a" }, []string{"a"}, func(o owned) []piece {
		require.Equal(t, "b", o.Instance)
		return resumeFrom([]piece{{Range: o.Range, From: time.Duration(o.FromNs)}}, ckptB)
	})
	require.Equal(t, []owned{ow("a", 0, 10), {Instance: "a", Range: Range{10, 16}, FromNs: 700, HandedOver: true},
		{Instance: "a", Range: Range{16, 20}, FromNs: 300, HandedOver: true}}, got)
	require.NoError(t, checkCover(got, 20))
}

func TestResumeFrom(t *testing.T) {
	tests := []struct {
		name   string
		pieces []piece
		lanes  []laneCkpt
		want   []piece
	}{
		{"no checkpoint", []piece{{Range{0, 10}, 0, 0, false}}, nil, []piece{{Range{0, 10}, 0, 0, false}}},
		{"one lane covers all", []piece{{Range{0, 10}, 0, 0, false}}, []laneCkpt{{Ranges: []Range{{0, 10}}, AckedNs: 40}}, []piece{{Range{0, 10}, 40, 0, false}}},
		{"partly covered", []piece{{Range{0, 10}, 5, 0, false}}, []laneCkpt{{Ranges: []Range{{3, 6}}, AckedNs: 40}},
			[]piece{{Range{0, 3}, 5, 0, false}, {Range{3, 6}, 40, 0, false}, {Range{6, 10}, 5, 0, false}}},
		{"a watermark before the piece's start does not move it back", []piece{{Range{0, 10}, 50, 0, false}},
			[]laneCkpt{{Ranges: []Range{{0, 10}}, AckedNs: 40}}, []piece{{Range{0, 10}, 50, 0, false}}},
		{"lanes outside the pieces are ignored", []piece{{Range{0, 4}, 0, 0, false}}, []laneCkpt{{Ranges: []Range{{4, 10}}, AckedNs: 40}},
			[]piece{{Range{0, 4}, 0, 0, false}}},
		{"two lanes, merged back where equal", []piece{{Range{0, 10}, 0, 0, false}},
			[]laneCkpt{{Ranges: []Range{{0, 2}, {5, 10}}, AckedNs: 40}, {Ranges: []Range{{2, 5}}, AckedNs: 40}}, []piece{{Range{0, 10}, 40, 0, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, resumeFrom(tt.pieces, tt.lanes))
		})
	}
}

func TestRangeSets(t *testing.T) {
	require.Equal(t, []Range{{2, 4}, {6, 8}}, intersect([]Range{{0, 4}, {6, 10}}, []Range{{2, 8}}))
	require.Empty(t, intersect([]Range{{0, 4}}, []Range{{4, 8}}))
	require.Equal(t, []Range{{0, 2}, {8, 10}}, subtract([]Range{{0, 10}}, []Range{{2, 5}, {5, 8}}))
	require.Empty(t, subtract([]Range{{2, 4}}, []Range{{0, 10}}))
	require.Equal(t, []Range{{0, 6}}, normalize([]Range{{3, 6}, {0, 3}, {4, 4}}))
}

// TestDueCounts: the closed forms agree with the pacer.
func TestDueCounts(t *testing.T) {
	for _, tc := range []struct {
		n      int
		period time.Duration
	}{{1000, time.Second}, {7, 333 * time.Millisecond}, {10_000, 2500 * time.Millisecond}} {
		all := NewPacer([]Range{{0, tc.n}}, tc.n, tc.period, 42)
		part := NewPacer([]Range{{2, tc.n / 2}}, tc.n, tc.period, 42)
		for _, at := range []time.Duration{0, 1, tc.period / 3, tc.period - 1, tc.period, 7*tc.period + 12345} {
			require.Equal(t, all.Due(at), dueAll(tc.n, tc.period, at), "n=%d at %s", tc.n, at)
			for _, from := range []time.Duration{0, tc.period / 2, at} {
				want := part.Due(at) - part.Due(from)
				if from >= at {
					want = 0
				}
				require.Equal(t, want, dueBetween([]piece{{Range: Range{2, tc.n / 2}, From: from}}, tc.n, tc.period, 42, at), "n=%d [%s, %s)", tc.n, from, at)
			}
		}
	}
}

// produced returns sts with each instance's Produced count set to n.
func produced(sts []status, n int64) []status {
	out := slices.Clone(sts)
	for i := range out {
		out[i].Produced = n
	}
	return out
}

func TestSummarize(t *testing.T) {
	cmd := events.LoadStart{ExperimentID: "e", RunID: "r", DurationMs: 2000, Workload: events.Workload{Sensors: 100, RatePerSec: 100}}
	p := &plan{Cmd: cmd, StartMs: 1000, PeriodNs: int64(time.Second), Participants: []string{"a", "b", "c"}}
	ok := []status{{Instance: "a", Sent: 100, EndMs: 3000, Done: true}, {Instance: "b", Sent: 50, Errors: 2, EndMs: 3100, Done: true}}
	tests := []struct {
		name       string
		acc        account
		wantFailed bool
		wantReason string
	}{
		{"all done", account{plan: p, statuses: ok}, false, ""},
		{"one failed", account{plan: p, statuses: append(ok, status{Instance: "c", Failed: true, Reason: "7 of 9 records not delivered: boom"})}, true,
			"c: 7 of 9 records not delivered: boom"},
		{"lost one", account{plan: p, statuses: ok, lost: []string{"c"}}, false, "c died; counted as of their last checkpoint"},
		{"missing one", account{plan: p, statuses: ok, missing: []string{"c"}}, false, "c died without a report"},
		{"timed out", account{plan: p, statuses: produced(ok, 100), timedOut: true}, true, "load generators did not finish in time"},
		// Still producing the schedule at the deadline: permanent.
		{"cannot keep up", account{plan: p, statuses: produced(ok, 40), timedOut: true, unfinished: 30}, true,
			"load generators could not keep up with the offered load: 100 msg/s offered, 55 msg/s produced (110 of 200 records, 55.0%, by the finish deadline), " +
				"75 msg/s delivered (acknowledged by Kafka)"},
		{"stopped", account{plan: &plan{Cmd: p.Cmd, StartMs: 1000, Participants: p.Participants, Stopped: true}, statuses: ok}, false, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fin := summarize(tt.acc)
			require.Equal(t, "e", fin.ExperimentID)
			require.Equal(t, "r", fin.RunID)
			require.Equal(t, "a,b,c", fin.Instance)
			require.Equal(t, int64(150), fin.RecordsSent, "sum of the instances")
			require.Equal(t, int64(150), fin.RecordsDelivered, "without the broker's count, what the instances had acknowledged")
			require.False(t, fin.DeliveredFromBroker)
			require.Equal(t, 75.0, fin.AchievedRate)
			require.Equal(t, int64(1000), fin.StartMs)
			require.Equal(t, int64(3100), fin.EndMs)
			require.Equal(t, tt.wantFailed, fin.Failed)
			require.Equal(t, tt.name == "cannot keep up", fin.Permanent, "only a load the generators could not produce is permanent")
			if tt.wantReason == "" {
				require.Empty(t, fin.Reason)
			} else {
				require.Contains(t, fin.Reason, tt.wantReason)
			}
		})
	}

	// The account of a disturbed load: the instances' counts add up, the
	// broker's count is the delivered one, and what it holds beyond the
	// schedule (less what was missed) is reported as produced twice.
	disturbed := *p
	disturbed.Takeovers = 1
	fin := summarize(account{plan: &disturbed, statuses: []status{
		{Instance: "a", Sent: 120, Missed: 3, Backfilled: 20, Restarts: 1, Done: true},
		{Instance: "b", Sent: 90, Backfilled: 5, Done: true},
	}, lost: []string{"c"}, uncovered: 2, delivered: 200, fromBroker: true})
	require.False(t, fin.Failed)
	require.Equal(t, int64(200), fin.RecordsDelivered)
	require.True(t, fin.DeliveredFromBroker)
	require.Equal(t, int64(5), fin.RecordsMissed, "missed by the instances and left by the dead one")
	require.Equal(t, int64(25), fin.RecordsBackfilled)
	require.Equal(t, 1, fin.Takeovers)
	require.Equal(t, 1, fin.Restarts)
	require.Equal(t, 100.0, fin.AchievedRate, "from the broker's count")
	require.Contains(t, fin.Reason, "5 records more in the topic than the schedule less those counted missed", "200 in the topic, 200 offered less 5 missed")

	// Records neither in the topic nor counted missed by anyone: counted
	// missed all the same, so the load is not taken for complete (the
	// analyzer flags load_missed).
	fin = summarize(account{plan: p, statuses: []status{{Instance: "a", Sent: 100, Done: true}, {Instance: "b", Sent: 100, Missed: 3, Done: true}},
		delivered: 180, fromBroker: true})
	require.False(t, fin.Failed)
	require.Equal(t, int64(180), fin.RecordsDelivered)
	require.Equal(t, int64(20), fin.RecordsMissed, "3 counted, 17 unexplained: the topic holds 180 of 200")
	require.Contains(t, fin.Reason, "20 records due were never produced")
	require.Contains(t, fin.Reason, "17 records neither in the topic nor counted as missed by the instances; counted missed")
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, Default().Validate())
	bad := Default()
	bad.Instance = "lg.example.com"
	bad.Tick = 0
	bad.MaxCatchUp = 1
	bad.ReportLag = 2 * time.Second
	bad.SchemaRegistryURL = "localhost:8081"
	bad.Heartbeat = 500 * time.Millisecond
	bad.CheckpointInterval = 0
	bad.MaxBackfill = -time.Second
	err := bad.Validate()
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, want := range []string{
		`load-generator.instance: got "lg.example.com"`, `(try "lg_example_com")`,
		"load-generator.tick: got 0s", "load-generator.maxCatchUp: got 1, expected a factor above 1",
		"load-generator.reportLag: got 2s", `load-generator.schemaRegistryURL: got "localhost:8081"`,
		"load-generator.heartbeat: got 500ms with memberTTL 750ms, expected at most half of memberTTL",
		"load-generator.checkpointInterval: got 0s", "load-generator.maxBackfill: got -1s",
	} {
		require.Contains(t, err.Error(), want)
	}
	require.Equal(t, 8, strings.Count(err.Error(), "\n")+1, "every problem at once")
}

func TestValidateCommand(t *testing.T) {
	good := events.LoadStart{ExperimentID: "e", RunID: "r", DurationMs: 1000,
		Kafka:    events.Kafka{Brokers: []string{"127.0.0.1:1"}, InputTopic: "input"},
		Workload: events.Workload{Sensors: 10, RatePerSec: 10, Format: "avro"}}
	require.NoError(t, Validate(&good))
	tests := []struct {
		name   string
		change func(*events.LoadStart)
		want   string
	}{
		{"zero rate", func(m *events.LoadStart) { m.Workload.RatePerSec = 0 }, "workload.rate_per_sec: got 0, expected a positive rate"},
		{"negative rate", func(m *events.LoadStart) { m.Workload.RatePerSec = -5 }, "workload.rate_per_sec: got -5"},
		{"absurd rate", func(m *events.LoadStart) { m.Workload.RatePerSec = 1e12 }, "expected at most 1,000,000 per sensor"},
		{"no sensors", func(m *events.LoadStart) { m.Workload.Sensors = 0 }, "workload.sensors: got 0"},
		{"unknown format", func(m *events.LoadStart) { m.Workload.Format = "protobuf" }, `workload.format: unknown record format "protobuf"`},
		{"no duration", func(m *events.LoadStart) { m.DurationMs = 0 }, "duration_ms: got 0"},
		{"no brokers", func(m *events.LoadStart) { m.Kafka.Brokers = nil }, "kafka.brokers: at least one broker"},
		{"no topic", func(m *events.LoadStart) { m.Kafka.InputTopic = "" }, "kafka.input_topic: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.change(&m)
			require.ErrorContains(t, Validate(&m), tt.want)
		})
	}
}
