package report

import (
	"context"
	"encoding/csv"
)

// metersCSV writes the effective meter configuration of every run, as the
// collectors recorded it (table run_meters): one row per run, node, source
// and change — the interval asked and sampled at, the meter, whether its
// figures are estimated and how (label), the model profile (JSON: name,
// vCPUs, coefficients, calibration) and a note when a rule between
// concurrent runs applied.
func (x exporter) metersCSV(ctx context.Context, w *csv.Writer) error {
	rows, err := x.st.RunMeters(ctx, x.id)
	if err != nil {
		return err
	}
	_ = w.Write([]string{"run_id", "config_hash", "node", "source_id", "since_ms", "asked_interval_ms", "interval_ms", "asked_source", "meter",
		"estimated", "label", "model", "note", "collector"})
	for _, r := range rows {
		_ = w.Write([]string{r.RunID, x.hashOf[r.RunID], r.Node, r.SourceID, csvInt(r.TsMs), csvInt(r.AskedIntervalMs), csvInt(r.IntervalMs),
			r.AskedSource, r.Meter, CSVBool(r.Estimated), r.Label, r.Model, r.Note, r.Collector})
	}
	return nil
}
