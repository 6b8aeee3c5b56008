package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// PowerCalibration is a fit of a node's measured power on its CPU
// utilisation (table power_calibrations): P = InterceptW + SlopeW × u.
type PowerCalibration struct {
	Node, Source       string
	TsMs               int64
	Samples            uint32
	InterceptW, SlopeW float64
	R2, ResidualW      float64
	VCPUs              uint32
	CPUModel           string
	Collector          string
}

// InsertPowerCalibrations records fits.
func (s *Store) InsertPowerCalibrations(ctx context.Context, fits []PowerCalibration) error {
	return insertRows(ctx, s.conn, fmt.Sprintf("insert %d power calibrations", len(fits)),
		"INSERT INTO power_calibrations (node, source, ts_ms, samples, intercept_w, slope_w, r2, residual_w, vcpus, cpu_model, collector)",
		len(fits), func(i int) []any {
			f := fits[i]
			return []any{f.Node, f.Source, f.TsMs, f.Samples, f.InterceptW, f.SlopeW, f.R2, f.ResidualW, f.VCPUs, f.CPUModel, f.Collector}
		})
}

// PowerCalibrations returns the fits of node (every node when empty),
// newest first.
func (s *Store) PowerCalibrations(ctx context.Context, node string) ([]PowerCalibration, error) {
	q := "SELECT node, source, ts_ms, samples, intercept_w, slope_w, r2, residual_w, vcpus, cpu_model, collector FROM power_calibrations FINAL"
	var args []any
	if node != "" {
		q += " WHERE node = ?"
		args = append(args, node)
	}
	q += " ORDER BY ts_ms DESC, node"
	return queryAll(ctx, s.conn, "read power calibrations", q, args, func(rows driver.Rows, f *PowerCalibration) error {
		return rows.Scan(&f.Node, &f.Source, &f.TsMs, &f.Samples, &f.InterceptW, &f.SlopeW, &f.R2, &f.ResidualW, &f.VCPUs, &f.CPUModel, &f.Collector)
	})
}
