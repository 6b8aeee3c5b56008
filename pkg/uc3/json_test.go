package uc3_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/pkg/uc3"
)

func TestAppendJSON(t *testing.T) {
	tests := []struct {
		name string
		rec  uc3.ActivePowerRecord
		want string
	}{
		{"theodolite", uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: 1_700_000_000_000, ValueInW: 10},
			`{"identifier":"s_1","timestamp":1700000000000,"valueInW":10}`},
		{"fraction", uc3.ActivePowerRecord{Identifier: "s_2", Timestamp: -5, ValueInW: -0.25},
			`{"identifier":"s_2","timestamp":-5,"valueInW":-0.25}`},
		{"small exponent", uc3.ActivePowerRecord{Identifier: "a", ValueInW: 1e-9},
			`{"identifier":"a","timestamp":0,"valueInW":1e-9}`},
		{"large exponent", uc3.ActivePowerRecord{Identifier: "a", ValueInW: 1.5e300},
			`{"identifier":"a","timestamp":0,"valueInW":1.5e+300}`},
		{"escapes", uc3.ActivePowerRecord{Identifier: "q\"b\\n\n\t\x01<é>"},
			`{"identifier":"q\"b\\n\n\t\u0001<é>","timestamp":0,"valueInW":0}`},
		{"invalid utf-8", uc3.ActivePowerRecord{Identifier: "a\xffb"},
			`{"identifier":"a\ufffdb","timestamp":0,"valueInW":0}`},
		{"nan", uc3.ActivePowerRecord{Identifier: "a", ValueInW: math.NaN()},
			`{"identifier":"a","timestamp":0,"valueInW":"NaN"}`},
		{"infinity", uc3.ActivePowerRecord{Identifier: "a", ValueInW: math.Inf(-1)},
			`{"identifier":"a","timestamp":0,"valueInW":"-Infinity"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := uc3.AppendJSON(nil, tt.rec)
			require.Equal(t, tt.want, string(got))
			require.True(t, json.Valid(got))
		})
	}
}

// TestAppendJSONMatchesEncodingJSON pins the encoder to encoding/json for
// finite values, so any consumer can parse what the load generator posts.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for _, r := range []uc3.ActivePowerRecord{
		{Identifier: "s_0", Timestamp: 1, ValueInW: 10},
		{Identifier: "x y", Timestamp: math.MaxInt64, ValueInW: math.MaxFloat64},
		{Identifier: "", Timestamp: math.MinInt64, ValueInW: math.SmallestNonzeroFloat64},
		{Identifier: "ctl\x1f\"\\", Timestamp: 0, ValueInW: 123456.789e-3},
		{Identifier: "s", ValueInW: 1e21},
		{Identifier: "s", ValueInW: 999999999999999999999},
		{Identifier: "s", ValueInW: 0.000001},
		{Identifier: "s", ValueInW: 0.0000001},
	} {
		want, err := json.Marshal(r)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(uc3.AppendJSON(nil, r)), "record %+v", r)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, r := range []uc3.ActivePowerRecord{
		{},
		{Identifier: "s_0", Timestamp: 1_717_236_000_000, ValueInW: 10},
		{Identifier: "Zähler \"⚡\"", Timestamp: math.MinInt64, ValueInW: -math.MaxFloat64},
		{Identifier: "inf", Timestamp: math.MaxInt64, ValueInW: math.Inf(1)},
	} {
		got, err := uc3.DecodeJSON(uc3.AppendJSON(nil, r))
		require.NoError(t, err)
		require.Equal(t, r, got)
	}
	got, err := uc3.DecodeJSON(uc3.AppendJSON(nil, uc3.ActivePowerRecord{ValueInW: math.NaN()}))
	require.NoError(t, err)
	require.True(t, math.IsNaN(got.ValueInW))
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uc3.ActivePowerRecord
		wantErr string
	}{
		{"theodolite", `{"identifier":"s_1","timestamp":1700000000000,"valueInW":10.0}`,
			uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: 1_700_000_000_000, ValueInW: 10}, ""},
		{"field order and unknown fields", ` {"valueInW":1e2,"extra":[1],"timestamp":3,"identifier":"s"} `,
			uc3.ActivePowerRecord{Identifier: "s", Timestamp: 3, ValueInW: 100}, ""},
		{"infinity string", `{"identifier":"s","timestamp":3,"valueInW":"Infinity"}`,
			uc3.ActivePowerRecord{Identifier: "s", Timestamp: 3, ValueInW: math.Inf(1)}, ""},
		{"missing identifier", `{"timestamp":3,"valueInW":1}`, uc3.ActivePowerRecord{}, `missing field "identifier"`},
		{"null timestamp", `{"identifier":"s","timestamp":null,"valueInW":1}`, uc3.ActivePowerRecord{}, `missing field "timestamp"`},
		{"missing value", `{"identifier":"s","timestamp":3}`, uc3.ActivePowerRecord{}, `missing field "valueInW"`},
		{"fractional timestamp", `{"identifier":"s","timestamp":3.5,"valueInW":1}`, uc3.ActivePowerRecord{}, "timestamp"},
		{"string value", `{"identifier":"s","timestamp":3,"valueInW":"ten"}`, uc3.ActivePowerRecord{}, `double "ten"`},
		{"value out of range", `{"identifier":"s","timestamp":3,"valueInW":1e999}`, uc3.ActivePowerRecord{}, "out of range"},
		{"not an object", `[1,2]`, uc3.ActivePowerRecord{}, "decode json record"},
		{"trailing data", `{"identifier":"s","timestamp":3,"valueInW":1}x`, uc3.ActivePowerRecord{}, "decode json record"},
		{"avro bytes", "\x00\x00\x00\x00\x01\x02s", uc3.ActivePowerRecord{}, "decode json record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := uc3.DecodeJSON([]byte(tt.in))
			testenv.RequireOutcome(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestStatisticsJSONRoundTrip(t *testing.T) {
	s := uc3.HourOfDayStatistics{
		Identifier: "s_7", HourOfDay: 23, WindowStartMs: 1_716_336_000_000, WindowEndMs: 1_718_928_000_000,
		Count: 3, Mean: 10.5, PopulationVariance: 0.25, Min: 10, Max: 11,
	}
	b := uc3.AppendStatisticsJSON(nil, s)
	require.JSONEq(t, `{"identifier":"s_7","hourOfDay":23,"windowStartMs":1716336000000,"windowEndMs":1718928000000,
		"count":3,"mean":10.5,"populationVariance":0.25,"min":10,"max":11}`, string(b))
	got, err := uc3.DecodeStatisticsJSON(b)
	require.NoError(t, err)
	require.Equal(t, s, got)

	nan := uc3.AppendStatisticsJSON(nil, uc3.HourOfDayStatistics{Mean: math.NaN(), Max: math.Inf(1)})
	require.True(t, json.Valid(nan))
	got, err = uc3.DecodeStatisticsJSON(nan)
	require.NoError(t, err)
	require.True(t, math.IsNaN(got.Mean))
	require.True(t, math.IsInf(got.Max, 1))

	_, err = uc3.DecodeStatisticsJSON([]byte(`{"identifier":"s","hourOfDay":1,"windowStartMs":0,"windowEndMs":1,"count":1,"mean":1,"min":1,"max":1}`))
	require.ErrorIs(t, err, uc3.ErrMissingField)
	require.ErrorContains(t, err, `"populationVariance"`)
}

func TestJSONEncodersDoNotAllocate(t *testing.T) {
	r := uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10.25}
	s := uc3.HourOfDayStatistics{Identifier: "s_1", HourOfDay: 5, WindowStartMs: 1, WindowEndMs: 2, Count: 3, Mean: 1.5, PopulationVariance: 0.1, Min: 1, Max: 2}
	buf := make([]byte, 0, 256)
	require.Zero(t, testing.AllocsPerRun(100, func() { buf = uc3.AppendJSON(buf[:0], r) }))
	require.Zero(t, testing.AllocsPerRun(100, func() { buf = uc3.AppendStatisticsJSON(buf[:0], s) }))
}

// FuzzDecodeJSON checks that decoding never panics and that a decoded record
// survives a round trip through AppendJSON.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"identifier":"s_1","timestamp":1700000000000,"valueInW":10}`))
	f.Add([]byte(`{"identifier":"\u00e9\ud800","timestamp":-1,"valueInW":"NaN"}`))
	f.Add([]byte(`{"identifier":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := uc3.DecodeJSON(b)
		if err != nil {
			return
		}
		enc := uc3.AppendJSON(nil, r)
		if !json.Valid(enc) {
			t.Fatalf("AppendJSON wrote invalid JSON %q", enc)
		}
		r2, err := uc3.DecodeJSON(enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		// encoding/json already replaced invalid UTF-8, so nothing may change.
		if r2.Identifier != r.Identifier || r2.Timestamp != r.Timestamp ||
			math.Float64bits(r2.ValueInW) != math.Float64bits(r.ValueInW) && !(math.IsNaN(r.ValueInW) && math.IsNaN(r2.ValueInW)) {
			t.Fatalf("round trip changed the record: %+v became %+v", r, r2)
		}
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	r := uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = uc3.AppendJSON(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeJSON(b *testing.B) {
	in := uc3.AppendJSON(nil, uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10})
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := uc3.DecodeJSON(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendStatisticsJSON(b *testing.B) {
	s := uc3.HourOfDayStatistics{Identifier: "s_123456", HourOfDay: 13, WindowStartMs: 1_716_336_000_000,
		WindowEndMs: 1_718_928_000_000, Count: 3600, Mean: 10, PopulationVariance: 0, Min: 10, Max: 10}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = uc3.AppendStatisticsJSON(buf[:0], s)
	}
	b.SetBytes(int64(len(buf)))
}
