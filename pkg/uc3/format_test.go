package uc3_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/pkg/uc3"
)

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		want    uc3.Format
		wantErr string
	}{
		{"avro", uc3.FormatAvro, ""},
		{"json", uc3.FormatJSON, ""},
		{" JSON ", uc3.FormatJSON, ""},
		{"Avro", uc3.FormatAvro, ""},
		{"", "", `unknown record format "": expected "avro" or "json"`},
		{"protobuf", "", `unknown record format "protobuf": expected "avro" or "json"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := uc3.ParseFormat(tt.in)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeDispatchesOnFormat(t *testing.T) {
	r := uc3.ActivePowerRecord{Identifier: "s_3", Timestamp: 1_700_000_000_000, ValueInW: 10}
	tests := []struct {
		name    string
		format  uc3.Format
		in      []byte
		wantErr string
	}{
		{"avro", uc3.FormatAvro, uc3.AppendConfluentAvro(nil, 9, r), ""},
		{"json", uc3.FormatJSON, uc3.AppendJSON(nil, r), ""},
		{"json read as avro", uc3.FormatAvro, uc3.AppendJSON(nil, r), "magic byte"},
		{"avro read as json", uc3.FormatJSON, uc3.AppendConfluentAvro(nil, 9, r), "decode json record"},
		{"unknown format", uc3.Format("xml"), uc3.AppendJSON(nil, r), `unknown format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := uc3.Decode(tt.format, tt.in)
			testenv.RequireOutcome(t, got, err, r, tt.wantErr)
		})
	}
}

func TestAppendSensorKey(t *testing.T) {
	for _, tt := range []struct {
		i    int
		want string
	}{{0, "s_0"}, {7, "s_7"}, {149_999, "s_149999"}} {
		require.Equal(t, tt.want, string(uc3.AppendSensorKey(nil, tt.i)))
	}
	require.Equal(t, "k=s_12", string(uc3.AppendSensorKey([]byte("k="), 12)))

	buf := make([]byte, 0, 32)
	require.Zero(t, testing.AllocsPerRun(100, func() { buf = uc3.AppendSensorKey(buf[:0], 123_456) }))
}

func BenchmarkAppendSensorKey(b *testing.B) {
	buf := make([]byte, 0, 32)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		buf = uc3.AppendSensorKey(buf[:0], i)
		i++
	}
}
