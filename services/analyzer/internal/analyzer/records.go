package analyzer

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/uc3"
)

// runConfig reads the run's stored configuration; ok is false when the run
// row is missing or has none.
func (a *Analyzer) runConfig(ctx context.Context, m *events.RunMeasured) (spec.RunConfig, bool, error) {
	rows, err := a.store.Conn().Query(ctx, `SELECT config FROM runs FINAL WHERE experiment_id = ? AND run_id = ?`, m.ExperimentID, m.RunID)
	if err != nil {
		return spec.RunConfig{}, false, fmt.Errorf("query config of run %s: %w", m.RunID, err)
	}
	defer rows.Close()
	var cfg string
	for rows.Next() {
		if err := rows.Scan(&cfg); err != nil {
			return spec.RunConfig{}, false, fmt.Errorf("scan config of run %s: %w", m.RunID, err)
		}
	}
	if err := rows.Err(); err != nil {
		return spec.RunConfig{}, false, fmt.Errorf("read config of run %s: %w", m.RunID, err)
	}
	if cfg == "" {
		return spec.RunConfig{}, false, nil
	}
	var rc spec.RunConfig
	if err := json.Unmarshal([]byte(cfg), &rc); err != nil {
		// An unreadable config only costs the per-MB figures.
		a.logger.Warn("run config unreadable", zap.String("run_id", m.RunID), zap.Error(err))
		return spec.RunConfig{}, false, nil
	}
	return rc, true, nil
}

// MeanRecordBytes is the mean Kafka payload (key plus value) of the UC-3
// records a workload produces, encoded as the load generator does: sensor
// ids s_0 … s_{N-1} are equally frequent, so ids are grouped by digit count
// and one record of each length is encoded. tsMs is a representative
// timestamp (Avro encodes it as a varint). ok is false for an unknown format.
func MeanRecordBytes(w spec.Workload, tsMs int64) (float64, bool) {
	format, err := uc3.ParseFormat(w.Format)
	if err != nil {
		return 0, false
	}
	n := w.Sensors
	if n <= 0 {
		n = 1
	}
	var total float64
	var buf []byte
	for lo, hi := 0, 9; lo < n; lo, hi = hi+1, hi*10+9 {
		count := min(hi, n-1) - lo + 1
		id := "s_" + strconv.Itoa(lo)
		rec := uc3.ActivePowerRecord{Identifier: id, Timestamp: tsMs, ValueInW: w.Value}
		switch format {
		case uc3.FormatAvro:
			buf = uc3.AppendConfluentAvro(buf[:0], w.SchemaID, rec)
		case uc3.FormatJSON:
			buf = uc3.AppendJSON(buf[:0], rec)
		}
		total += float64(count) * float64(len(id)+len(buf))
	}
	return total / float64(n), true
}
