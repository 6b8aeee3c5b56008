package uc3_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// TestActivePowerRecordMatchesSchema checks the Go type and the schema
// constant against schemas/uc3, the source of truth.
func TestActivePowerRecordMatchesSchema(t *testing.T) {
	raw, err := os.ReadFile("../../schemas/uc3/ActivePowerRecord.avsc")
	require.NoError(t, err)
	require.JSONEq(t, string(raw), uc3.ActivePowerRecordSchema, "ActivePowerRecordSchema differs from the .avsc file")

	var schema struct {
		Type      string `json:"type"`
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		Fields    []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"fields"`
	}
	require.NoError(t, json.Unmarshal(raw, &schema))
	require.Equal(t, "record", schema.Type)
	require.Equal(t, "ActivePowerRecord", schema.Name)
	require.Equal(t, "rocks.theodolite.benchmarks.commons.model.records", schema.Namespace)

	avroKind := map[string]reflect.Kind{"string": reflect.String, "long": reflect.Int64, "double": reflect.Float64}
	typ := reflect.TypeFor[uc3.ActivePowerRecord]()
	require.Equal(t, len(schema.Fields), typ.NumField(), "field count")
	for i, f := range schema.Fields {
		// Avro binary is positional: the Go fields must be in schema order.
		sf := typ.Field(i)
		require.Equal(t, f.Name, sf.Tag.Get("json"), "field %d", i)
		require.Equal(t, avroKind[f.Type], sf.Type.Kind(), "field %s", f.Name)
	}
}

func TestHourOfDayStatisticsMatchesSchema(t *testing.T) {
	raw, err := os.ReadFile("../../schemas/uc3/HourOfDayStatistics.schema.json")
	require.NoError(t, err)
	var schema struct {
		Required   []string                   `json:"required"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(raw, &schema))

	typ := reflect.TypeFor[uc3.HourOfDayStatistics]()
	var tags []string
	for i := range typ.NumField() {
		tags = append(tags, strings.Split(typ.Field(i).Tag.Get("json"), ",")[0])
	}
	require.ElementsMatch(t, schema.Required, tags)
	require.Len(t, schema.Properties, len(tags))

	var encoded map[string]any
	require.NoError(t, json.Unmarshal(uc3.AppendStatisticsJSON(nil, uc3.HourOfDayStatistics{}), &encoded))
	var keys []string
	for k := range encoded {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, tags, keys, "AppendStatisticsJSON writes exactly the schema's fields")
}
