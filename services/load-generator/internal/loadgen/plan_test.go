package loadgen

import (
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
		{"even", 9, []string{"a", "b", "c"}, []owned{{"a", Range{0, 3}}, {"b", Range{3, 6}}, {"c", Range{6, 9}}}},
		{"uneven", 10, []string{"a", "b", "c"}, []owned{{"a", Range{0, 3}}, {"b", Range{3, 6}}, {"c", Range{6, 10}}}},
		{"one", 5, []string{"a"}, []owned{{"a", Range{0, 5}}}},
		{"fewer sensors than instances", 2, []string{"a", "b", "c"}, []owned{{"b", Range{0, 1}}, {"c", Range{1, 2}}}},
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
			[]owned{{"a", Range{0, 4}}, {"c", Range{4, 9}}}},
		{"first died", three, alive("b", "c"), []string{"b", "c"},
			[]owned{{"b", Range{0, 1}}, {"c", Range{1, 3}}, {"b", Range{3, 6}}, {"c", Range{6, 9}}}},
		{"all but one died", three, alive("b"), []string{"b"}, []owned{{"b", Range{0, 9}}}},
		{"all died, a newcomer inherits", three, alive("z"), []string{"z"}, []owned{{"z", Range{0, 9}}}},
		{"no heirs", three, alive(), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reassign(tt.in, tt.alive, tt.heirs)
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
		{"ok", []owned{{"b", Range{5, 10}}, {"a", Range{0, 5}}}, ""},
		{"gap", []owned{{"a", Range{0, 4}}, {"b", Range{5, 10}}}, "sensors [4, 5) unassigned"},
		{"overlap", []owned{{"a", Range{0, 6}}, {"b", Range{5, 10}}}, "sensors [5, 6) assigned twice"},
		{"short", []owned{{"a", Range{0, 9}}}, "sensors [9, 10) unassigned"},
		{"empty", []owned{{"a", Range{0, 0}}, {"a", Range{0, 10}}}, "empty range"},
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

func TestSummarize(t *testing.T) {
	p := &plan{Cmd: events.LoadStart{ExperimentID: "e", RunID: "r", DurationMs: 2000}, StartMs: 1000, Participants: []string{"a", "b", "c"}}
	ok := []status{{Instance: "a", Sent: 100, EndMs: 3000, Done: true}, {Instance: "b", Sent: 50, Errors: 2, EndMs: 3100, Done: true}}
	tests := []struct {
		name       string
		plan       *plan
		sts        []status
		missing    []string
		lost       []string
		timedOut   bool
		wantFailed bool
		wantReason string
	}{
		{"all done", p, ok, nil, nil, false, false, ""},
		{"one failed", p, append(ok, status{Instance: "c", Failed: true, Reason: "7 of 9 records not delivered: boom"}), nil, nil, false, true,
			"c: 7 of 9 records not delivered: boom"},
		{"lost one", p, ok, nil, []string{"c"}, false, false, "c died; counted as of their last report"},
		{"missing one", p, ok, []string{"c"}, nil, false, false, "c died without a report"},
		{"timed out", p, ok, nil, nil, true, true, "did not finish in time"},
		{"stopped", &plan{Cmd: p.Cmd, StartMs: 1000, Participants: p.Participants, Stopped: true}, ok, nil, nil, false, false, "stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fin := summarize(tt.plan, tt.sts, tt.missing, tt.lost, tt.timedOut)
			require.Equal(t, "e", fin.ExperimentID)
			require.Equal(t, "r", fin.RunID)
			require.Equal(t, "a,b,c", fin.Instance)
			require.Equal(t, int64(150), fin.RecordsSent, "sum of the instances")
			require.Equal(t, 75.0, fin.AchievedRate)
			require.Equal(t, int64(1000), fin.StartMs)
			require.Equal(t, int64(3100), fin.EndMs)
			require.Equal(t, tt.wantFailed, fin.Failed)
			if tt.wantReason == "" {
				require.Empty(t, fin.Reason)
			} else {
				require.Contains(t, fin.Reason, tt.wantReason)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	require.NoError(t, Default().Validate())
	bad := Default()
	bad.Instance = "lg.example.com"
	bad.Tick = 0
	bad.MaxCatchUp = 1
	bad.ReportLag = 2 * time.Second
	bad.SchemaRegistryURL = "localhost:8081"
	err := bad.Validate()
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, want := range []string{
		`load-generator.instance: got "lg.example.com"`, `(try "lg_example_com")`,
		"load-generator.tick: got 0s", "load-generator.maxCatchUp: got 1, expected a factor above 1",
		"load-generator.reportLag: got 2s", `load-generator.schemaRegistryURL: got "localhost:8081"`,
	} {
		require.Contains(t, err.Error(), want)
	}
	require.Equal(t, 5, strings.Count(err.Error(), "\n")+1, "every problem at once")
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
