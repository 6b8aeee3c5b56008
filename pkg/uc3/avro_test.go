package uc3_test

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/uc3"
)

// TestAppendConfluentAvroVector checks one record against bytes worked out by
// hand from the Avro specification.
func TestAppendConfluentAvroVector(t *testing.T) {
	r := uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: 1_700_000_000_000, ValueInW: 10}
	want := []byte{
		0x00,                   // Confluent magic byte
		0x00, 0x00, 0x00, 0x2a, // schema id 42, big-endian
		0x06,          // identifier length 3, zigzag → 6
		's', '_', '1', // identifier bytes
		0x80, 0xa0, 0xab, // timestamp 1700000000000, zigzag → 3400000000000 = 0x3179fcad000,
		0xfe, 0xf9, 0x62, // as 7-bit groups, least significant first
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x40, // 10.0 = 0x4024000000000000, little-endian
	}
	got := uc3.AppendConfluentAvro(nil, 42, r)
	require.Equal(t, want, got)

	id, back, err := uc3.DecodeConfluentAvro(want)
	require.NoError(t, err)
	require.Equal(t, uint32(42), id)
	require.Equal(t, r, back)
}

func TestConfluentAvroRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		schemaID uint32
		rec      uc3.ActivePowerRecord
	}{
		{"zero", 0, uc3.ActivePowerRecord{}},
		{"theodolite default", 1, uc3.ActivePowerRecord{Identifier: "s_0", Timestamp: 1_717_236_000_000, ValueInW: 10}},
		{"negative values", 7, uc3.ActivePowerRecord{Identifier: "s_99", Timestamp: -1, ValueInW: -1.5}},
		{"extremes", math.MaxUint32, uc3.ActivePowerRecord{Identifier: "x", Timestamp: math.MinInt64, ValueInW: math.MaxFloat64}},
		{"max timestamp", 3, uc3.ActivePowerRecord{Identifier: "x", Timestamp: math.MaxInt64, ValueInW: math.SmallestNonzeroFloat64}},
		{"infinity", 3, uc3.ActivePowerRecord{Identifier: "inf", ValueInW: math.Inf(-1)}},
		{"unicode id", 3, uc3.ActivePowerRecord{Identifier: "Zähler-⚡", Timestamp: 5, ValueInW: 0.1}},
		{"long id", 3, uc3.ActivePowerRecord{Identifier: strings.Repeat("s", 300), Timestamp: 5, ValueInW: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			b := uc3.AppendConfluentAvro(prefix, tt.schemaID, tt.rec)
			require.True(t, bytes.HasPrefix(b, []byte("prefix")), "appends to dst")
			id, got, err := uc3.DecodeConfluentAvro(b[len(prefix):])
			require.NoError(t, err)
			require.Equal(t, tt.schemaID, id)
			require.Equal(t, tt.rec, got)
		})
	}
}

func TestConfluentAvroNaNRoundTrip(t *testing.T) {
	b := uc3.AppendConfluentAvro(nil, 1, uc3.ActivePowerRecord{Identifier: "s_0", ValueInW: math.NaN()})
	_, got, err := uc3.DecodeConfluentAvro(b)
	require.NoError(t, err)
	require.True(t, math.IsNaN(got.ValueInW))
}

func TestDecodeConfluentAvroErrors(t *testing.T) {
	valid := uc3.AppendConfluentAvro(nil, 1, uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: 1000, ValueInW: 10})
	header := []byte{0, 0, 0, 0, 1}
	with := func(body ...byte) []byte { return append(append([]byte(nil), header...), body...) }

	tests := []struct {
		name    string
		in      []byte
		wantErr error
		wantMsg string
	}{
		{"empty", nil, uc3.ErrTruncated, "0 of 5 bytes"},
		{"short header", []byte{0, 0, 1}, uc3.ErrTruncated, "3 of 5 bytes"},
		{"bad magic", append([]byte{1}, valid[1:]...), uc3.ErrBadMagic, "magic byte 0x01"},
		{"json instead of avro", []byte(`{"identifier":"s_1"}`), uc3.ErrBadMagic, "magic byte 0x7b"},
		{"header only", header, uc3.ErrTruncated, "identifier length"},
		{"unterminated length varint", with(0x80), uc3.ErrTruncated, "identifier length"},
		{"negative string length", with(0x01, 's'), uc3.ErrStringLength, "length -1"},
		{"string longer than input", with(0x0a, 's', '_'), uc3.ErrStringLength, "length 5 with 2 bytes left"},
		{"huge string length", with(0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), uc3.ErrStringLength, "length 9223372036854775807"},
		{"varint over 64 bits", with(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), uc3.ErrMalformedVarint, "identifier length"},
		{"missing timestamp", with(0x02, 's'), uc3.ErrTruncated, "timestamp"},
		{"missing value", valid[:len(valid)-8], uc3.ErrTruncated, "valueInW: 0 of 8"},
		{"partial value", valid[:len(valid)-3], uc3.ErrTruncated, "valueInW: 5 of 8"},
		{"trailing bytes", append(append([]byte(nil), valid...), 0, 0), uc3.ErrTrailingBytes, "2 bytes after valueInW"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := uc3.DecodeConfluentAvro(tt.in)
			require.ErrorIs(t, err, tt.wantErr)
			require.ErrorContains(t, err, tt.wantMsg)
		})
	}
}

func TestAppendConfluentAvroDoesNotAllocate(t *testing.T) {
	r := uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() { buf = uc3.AppendConfluentAvro(buf[:0], 1, r) })
	require.Zero(t, allocs)
}

// FuzzDecodeConfluentAvro checks that decoding never panics and that whatever
// decodes re-encodes to bytes that decode to the same record.
func FuzzDecodeConfluentAvro(f *testing.F) {
	f.Add(uc3.AppendConfluentAvro(nil, 1, uc3.ActivePowerRecord{Identifier: "s_1", Timestamp: 1_700_000_000_000, ValueInW: 10}))
	f.Add(uc3.AppendConfluentAvro(nil, 0, uc3.ActivePowerRecord{}))
	f.Add(uc3.AppendConfluentAvro(nil, math.MaxUint32, uc3.ActivePowerRecord{Identifier: "Zähler", Timestamp: math.MinInt64, ValueInW: math.NaN()}))
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{1, 0, 0, 0, 1, 2, 's'})
	f.Add([]byte{0, 0, 0, 0, 1, 0x01})
	f.Add([]byte{0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte(`{"identifier":"s_1","timestamp":1,"valueInW":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, r, err := uc3.DecodeConfluentAvro(b)
		if err != nil {
			return
		}
		again := uc3.AppendConfluentAvro(nil, id, r)
		id2, r2, err := uc3.DecodeConfluentAvro(again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if id2 != id || r2.Identifier != r.Identifier || r2.Timestamp != r.Timestamp ||
			math.Float64bits(r2.ValueInW) != math.Float64bits(r.ValueInW) {
			t.Fatalf("round trip changed the record: %+v (id %d) became %+v (id %d)", r, id, r2, id2)
		}
		if len(again) > len(b) {
			t.Fatalf("canonical encoding (%d bytes) is longer than the input (%d bytes)", len(again), len(b))
		}
	})
}

func BenchmarkAppendConfluentAvro(b *testing.B) {
	r := uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = uc3.AppendConfluentAvro(buf[:0], 1, r)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeConfluentAvro(b *testing.B) {
	in := uc3.AppendConfluentAvro(nil, 1, uc3.ActivePowerRecord{Identifier: "s_123456", Timestamp: 1_717_236_000_000, ValueInW: 10})
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, _, err := uc3.DecodeConfluentAvro(in); err != nil {
			b.Fatal(err)
		}
	}
}
