package collector

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/store"
)

func sampleRows() []store.Sample {
	var out []store.Sample
	for i := range 3 {
		ts := int64(1_760_000_000_000 + 1000*i)
		base := store.Sample{TsMs: ts, Node: "n1", Source: "kepler", IntervalMs: 1000, Collector: "c1", Estimated: i == 2}
		for j, s := range [][3]string{{"node", "node/n1", ""}, {"zone", "node/n1", "package"}, {"pod", "pod/n1/sut", ""}, {"unattributed", "node/n1", ""}} {
			r := base
			r.Scope, r.TargetID, r.Zone = s[0], s[1], s[2]
			r.DeltaJ = 1.0/3 + float64(i*j) + math.SmallestNonzeroFloat64
			r.EnergyJ, r.PowerW = 1e300/float64(j+1), 0.1+0.2
			out = append(out, r)
		}
	}
	return out
}

// A committed row comes back identical, bit for bit: a row rewritten by a
// new owner must equal the one its predecessor may have stored.
func TestCommittedRowsRoundTripExactly(t *testing.T) {
	rows := sampleRows()
	b, err := encodeRows(rows)
	require.NoError(t, err)
	got, err := decodeRows(b)
	require.NoError(t, err)
	require.Equal(t, rows, got)
	t.Logf("%d rows in %d bytes", len(rows), len(b))

	none, err := encodeRows(nil)
	require.NoError(t, err)
	require.Nil(t, none)
	got, err = decodeRows(nil)
	require.NoError(t, err)
	require.Empty(t, got)

	bad := rows[0]
	bad.DeltaJ = math.NaN()
	_, err = encodeRows([]store.Sample{bad})
	require.ErrorContains(t, err, "NaN")
	for _, in := range []string{`{`, `{"v":2}`, `{"v":1,"series":[],"readings":[{"rows":[[0,1,1,1]]}]}`, `{"v":1,"series":[["a","b","c"]],"readings":[{"rows":[[0.5,1,1,1]]}]}`} {
		_, err := decodeRows([]byte(in))
		require.Error(t, err, in)
	}
}

// FuzzDecodeRows: a claim's rows come from KV, which anything with access
// can write; decoding them never panics, and what decodes re-encodes to
// rows that decode the same.
func FuzzDecodeRows(f *testing.F) {
	b, _ := encodeRows(sampleRows())
	f.Add(b)
	f.Add([]byte(`{"v":1,"series":[["node","node/n","" ]],"readings":[{"ts":1,"iv":1,"rows":[[0,1,2,3]]}]}`))
	f.Add([]byte(`{"v":1,"series":[],"readings":[{"rows":[[-1,0,0,0]]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := decodeRows(data)
		if err != nil {
			return
		}
		again, err := encodeRows(rows)
		if err != nil {
			return
		}
		back, err := decodeRows(again)
		require.NoError(t, err)
		require.Equal(t, len(rows), len(back))
	})
}
