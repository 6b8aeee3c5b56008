package loadtest

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// activePowerRecord mirrors schemas/uc3/ActivePowerRecord.avsc for hamba/avro.
type activePowerRecord struct {
	Identifier string  `avro:"identifier"`
	Timestamp  int64   `avro:"timestamp"`
	ValueInW   float64 `avro:"valueInW"`
}

// TestRecordsDecodeWithAnotherAvroImplementation reads what the generator
// wrote to Kafka and decodes every value with hamba/avro against the schema
// file, the way a Java or Python consumer with a registry would: Confluent
// header (magic 0, schema id), then the Avro body.
func TestRecordsDecodeWithAnotherAvroImplementation(t *testing.T) {
	raw, err := os.ReadFile("../schemas/uc3/ActivePowerRecord.avsc")
	require.NoError(t, err)
	schema, err := avro.Parse(string(raw))
	require.NoError(t, err)
	require.Equal(t, "rocks.theodolite.benchmarks.commons.model.records.ActivePowerRecord", schema.(*avro.RecordSchema).FullName())

	h := newHarness(t, 4)
	begin := time.Now()
	f := h.load(t, "avro-cross", events.Workload{Sensors: 300, RatePerSec: 600, ValueW: 12.5, SchemaID: 9}, time.Second)
	require.False(t, f.Failed, f.Reason)
	require.Positive(t, f.RecordsSent)

	cl, err := kgo.NewClient(kgo.SeedBrokers(h.kafka.ListenAddrs()...), kgo.ConsumeTopics("input"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := map[string]int{}
	var n int64
	for n < f.RecordsSent {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		fs.EachRecord(func(r *kgo.Record) {
			n++
			v := r.Value
			require.GreaterOrEqual(t, len(v), 5)
			require.Equal(t, byte(0), v[0], "Confluent magic byte")
			require.Equal(t, uint32(9), binary.BigEndian.Uint32(v[1:5]), "schema id")
			var rec activePowerRecord
			require.NoError(t, avro.Unmarshal(schema, v[5:], &rec))
			require.Equal(t, string(r.Key), rec.Identifier)
			require.Equal(t, 12.5, rec.ValueInW)
			require.GreaterOrEqual(t, rec.Timestamp, begin.UnixMilli())
			require.Less(t, rec.Timestamp, f.EndMs)
			require.Equal(t, r.Timestamp.UnixMilli(), rec.Timestamp, "Kafka timestamp = event time")
			// And the body is exactly what hamba/avro writes for the record.
			again, err := avro.Marshal(schema, rec)
			require.NoError(t, err)
			require.Equal(t, v[5:], again)
			_, mine, err := uc3.DecodeConfluentAvro(v)
			require.NoError(t, err)
			require.Equal(t, uc3.ActivePowerRecord(rec), mine)
			seen[rec.Identifier]++
		})
	}
	require.Equal(t, f.RecordsSent, n)
	require.Len(t, seen, 300, "every sensor")
	for id, c := range seen {
		require.InDelta(t, 2, c, 1, "%s: once per 500 ms period over 1 s", id)
	}
}
