package cli

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/results"
)

// TestProvenanceShowsOnlyWhatTheSpecSet: a spec that set no model is not
// shown as a model of 0 W; one that set some fields shows those.
func TestProvenanceShowsOnlyWhatTheSpecSet(t *testing.T) {
	meters := func(requested string) string {
		rows := provenanceRows(results.Provenance{Meters: []results.MeterProvenance{{ConfigHash: "c1",
			Requested: json.RawMessage(requested), EffectiveNote: "not recorded by this collector"}}})
		for _, r := range rows {
			if r[0] == "meters of config c1" {
				return r[1]
			}
		}
		t.Fatalf("no meters row in %v", rows)
		return ""
	}
	require.Equal(t, "requested "+notSetNote+"; effective not recorded by this collector",
		meters(`{"source":"","model":{"idleWatts":0,"maxWatts":0}}`))
	require.Equal(t, `requested {"model":{"maxWatts":95},"source":"model"}; effective not recorded by this collector`,
		meters(`{"source":"model","model":{"idleWatts":0,"maxWatts":95},"extra":[]}`))
	require.Equal(t, "requested not recorded; effective not recorded by this collector", meters(``))
}
