package events_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/events"
)

// filled returns a realistic instance of every message type: zero values do
// not exercise required fields, patterns and enums.
func filled() []events.Message {
	tgt := []events.Target{{ID: "process/uc3-1", Kind: "process", Node: "host-a", Role: "sut", PID: 4242}}
	kafka := events.Kafka{Brokers: []string{"127.0.0.1:9092"}, InputTopic: "input", OutputTopic: "output", Partitions: 4}
	return []events.Message{
		events.ExperimentSubmit{ExperimentID: "exp-1", Spec: "apiVersion: greenflow.dev/v1\nkind: Experiment\n", SubmittedBy: "cli"},
		events.ExperimentCancel{ExperimentID: "exp-1", Reason: "user"},
		events.ExperimentState{ExperimentID: "exp-1", Name: "demo", State: events.ExperimentStateRunning, RunsTotal: 2, RunsDone: 1, TsMs: 1},
		events.RunProvision{ExperimentID: "exp-1", RunID: "exp-1-r000", SUT: events.SUT{Template: "uc3-go", Backend: "local", Params: map[string]string{"instances": "1"}}, Kafka: kafka},
		events.RunProvision{ExperimentID: "exp-1", RunID: "exp-1-r001", SUT: events.SUT{Template: "uc3-kstreams", Backend: "kubernetes",
			Kubernetes: &events.KubernetesSUT{Image: "ghcr.io/cau-se/theodolite-uc3-kstreams-app:latest", Replicas: 2, CPU: "1", Memory: "4Gi",
				Env: map[string]string{"COMMIT_INTERVAL_MS": "100"}, Placement: events.Placement{Strategy: "consolidate", Nodes: 1,
					NodeSelector: map[string]string{"pool": "sut"}}, ReadyTimeoutMs: 60000}}, Kafka: kafka},
		events.RunProvisioned{ExperimentID: "exp-1", RunID: "exp-1-r000", Backend: "local", Targets: tgt, TsMs: 2},
		events.RunProvisionFailed{ExperimentID: "exp-1", RunID: "exp-1-r000", Reason: "dial tcp: connection refused", Transient: true, TsMs: 2},
		events.RunTeardown{ExperimentID: "exp-1", RunID: "exp-1-r000", Backend: "local", Kafka: &kafka},
		events.RunTornDown{ExperimentID: "exp-1", RunID: "exp-1-r000", TsMs: 3},
		events.RunTornDown{ExperimentID: "exp-1", RunID: "exp-1-r001", Incomplete: true, Reason: "delete namespace: forbidden", TsMs: 3},
		events.RunState{ExperimentID: "exp-1", RunID: "exp-1-r000", State: events.RunStateMeasuring, PhaseEndMs: 9, TsMs: 3},
		events.RunMeasured{ExperimentID: "exp-1", RunID: "exp-1-r000", ConfigHash: "abc", Factors: map[string]string{"rate": "1000"},
			Phases: []events.Phase{{Name: "measuring", StartMs: 1, EndMs: 2}}, MeasureStartMs: 1, MeasureEndMs: 2, Targets: tgt, RecordsSent: 10, OfferedRate: 5,
			RecordsDelivered: 10, DeliveredFromBroker: true, RecordsBackfilled: 2, LoadTakeovers: 1, LoadNote: "lg-2 died", Notes: []string{"provisioner restarted"}},
		events.RunAnalyzed{ExperimentID: "exp-1", RunID: "exp-1-r000", DurationS: 10, EnergyJ: 5, NodeEnergyJ: 50, MeanPowerW: 0.5, Events: 100, MicroJPerEvent: 50000, Estimated: true, Flags: []string{"energy_gap_bridged"}, TsMs: 4},
		events.LoadStart{ExperimentID: "exp-1", RunID: "exp-1-r000", Workload: events.Workload{Sensors: 100, PeriodMs: 1000, RatePerSec: 100, ValueW: 10, Format: "avro", SchemaID: 1}, Kafka: kafka, DurationMs: 1000},
		events.LoadStop{ExperimentID: "exp-1", RunID: "exp-1-r000"},
		events.LoadProgress{ExperimentID: "exp-1", RunID: "exp-1-r000", Instance: "lg-1", TsMs: 5, RecordsSent: 100, RatePerSec: 100},
		events.LoadFinished{ExperimentID: "exp-1", RunID: "exp-1-r000", Instance: "lg-1", StartMs: 1, EndMs: 2, RecordsSent: 100, AchievedRate: 100,
			RecordsDelivered: 100, DeliveredFromBroker: true, RecordsBackfilled: 3, Takeovers: 1, Restarts: 1},
		events.CollectAssign{ExperimentID: "exp-1", RunID: "exp-1-r000", Targets: tgt},
		events.CollectRelease{ExperimentID: "exp-1", RunID: "exp-1-r000"},
	}
}

func TestEveryTypeValidatesAgainstItsSchema(t *testing.T) {
	msgs := filled()
	seen := map[events.Type]bool{}
	for _, m := range msgs {
		seen[m.MessageType()] = true
		b, err := json.Marshal(m)
		require.NoError(t, err)
		require.NoError(t, events.Validate(m.MessageType(), events.Version(m.MessageType()), b), "%s: %s", m.MessageType(), b)
		back, err := events.Decode(m.MessageType(), events.Version(m.MessageType()), b)
		require.NoError(t, err)
		rb, err := json.Marshal(back)
		require.NoError(t, err)
		require.JSONEq(t, string(b), string(rb), "round trip of %s", m.MessageType())
	}
	for _, m := range events.Samples() {
		require.True(t, seen[m.MessageType()], "filled() lacks %s", m.MessageType())
	}
	require.Len(t, seen, len(events.Samples()), "filled() must cover every registered type")
}

// Messages of an older version already in the stream are still read: each
// version only added fields, which decode as their zero values.
func TestOlderVersionsStillDecode(t *testing.T) {
	v1 := map[events.Type]string{
		events.TypeRunProvisionFailed: `{"experiment_id":"e","run_id":"r","reason":"image pull","ts_ms":1}`,
		events.TypeRunTornDown:        `{"experiment_id":"e","run_id":"r","crashed":true,"reason":"exit status 2","ts_ms":1}`,
		events.TypeRunMeasured: `{"experiment_id":"e","run_id":"r","config_hash":"h","factors":null,"repetition":0,"phases":null,` +
			`"measure_start_ms":1,"measure_end_ms":2,"baseline_start_ms":0,"baseline_end_ms":0,"targets":null,"records_sent":5,"offered_rate":5}`,
		events.TypeRunAnalyzed: `{"experiment_id":"e","run_id":"r","duration_s":1,"energy_j":1,"node_energy_j":2,"mean_power_w":1,"events":5,` +
			`"uj_per_event":1,"estimated":true,"ts_ms":1}`,
		events.TypeLoadFinished: `{"experiment_id":"e","run_id":"r","instance":"lg","start_ms":1,"end_ms":2,"records_sent":5,"errors":0,` +
			`"achieved_rate":5,"failed":false}`,
		events.TypeRunState: `{"experiment_id":"e","run_id":"r","index":0,"state":"cancelled","ts_ms":1}`,
	}
	for typ, body := range v1 {
		m, err := events.Decode(typ, 1, []byte(body))
		require.NoError(t, err, typ)
		require.Equal(t, typ, m.MessageType())
		require.Greater(t, events.Version(typ), 1, "%s is published in a newer version", typ)
		// The newer schema rejects the old body (its new fields are
		// required), so the version header is what selects the schema.
		require.Error(t, events.Validate(typ, events.Version(typ), []byte(body)), typ)
	}
}

func TestUnknownTypeOrVersionIsRejected(t *testing.T) {
	_, err := events.Decode("run.exploded", 1, []byte(`{}`))
	require.ErrorIs(t, err, events.ErrUnknownType)
	require.Contains(t, err.Error(), `"run.exploded"`)
	_, err = events.Decode(events.TypeRunProvision, 9, []byte(`{}`))
	require.ErrorIs(t, err, events.ErrUnknownType)
	require.Contains(t, err.Error(), "version 9")
}

func TestInvalidBodiesNameTheField(t *testing.T) {
	cases := []struct {
		name string
		typ  events.Type
		body string
		want string
	}{
		{"not json", events.TypeRunProvision, `{"experiment_id":`, "not JSON"},
		{"missing field", events.TypeRunProvision, `{"experiment_id":"e","run_id":"r","kafka":{"brokers":[],"input_topic":"i","output_topic":"o","partitions":1}}`, "sut"},
		{"unknown field", events.TypeLoadStop, `{"experiment_id":"e","run_id":"r","colour":"red"}`, "colour"},
		{"wrong type", events.TypeLoadStart, `{"experiment_id":"e","run_id":"r","duration_ms":"ten","workload":{"sensors":1,"period_ms":1,"rate_per_sec":1,"value_w":1,"format":"avro","schema_id":1},"kafka":{"brokers":[],"input_topic":"i","output_topic":"o","partitions":1}}`, "duration_ms"},
		{"bad enum", events.TypeRunTeardown, `{"experiment_id":"e","run_id":"r","backend":"mainframe"}`, "backend"},
		{"bad id", events.TypeLoadStop, `{"experiment_id":"e/../x","run_id":"r"}`, "experiment_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.Decode(tc.typ, 1, []byte(tc.body))
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tc.want), "error %q should mention %q", err, tc.want)
		})
	}
}
