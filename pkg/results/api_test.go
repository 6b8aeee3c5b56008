package results_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
)

// An undefined statistic (NaN; an infinity) is null in the results
// document, and null reads back as undefined; a number reads back as
// itself. The analyzer writes the document and the console reads it.
func TestFloatIsNullWhenUndefined(t *testing.T) {
	for _, c := range []struct {
		in      float64
		json    string
		defined bool
	}{
		{12.5, "12.5", true}, {-0.25, "-0.25", true}, {0, "0", true},
		{math.NaN(), "null", false}, {math.Inf(1), "null", false}, {math.Inf(-1), "null", false},
	} {
		b, err := json.Marshal(results.Float(c.in))
		require.NoError(t, err)
		require.Equal(t, c.json, string(b), "%v", c.in)
		var back results.Float
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, c.defined, back.Defined(), "%v", c.in)
		if c.defined {
			require.Equal(t, c.in, float64(back))
		}
	}
	var m results.MetricStats
	require.NoError(t, json.Unmarshal([]byte(`{"mean": 3, "ci_low": null, "ci_high": null}`), &m))
	require.True(t, m.Mean.Defined())
	require.False(t, m.CILow.Defined(), "one repetition: no interval")
	require.Error(t, json.Unmarshal([]byte(`{"mean": "x"}`), &m))
}
