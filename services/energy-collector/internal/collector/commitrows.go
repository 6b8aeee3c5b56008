package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/greenflow/greenflow/pkg/store"
)

// rowsBlob is the rows a commit carries, compactly: the rows of one
// reading share their time, node, source and collector, and a series' name
// is written once per commit. Floats survive the JSON round trip exactly,
// so a row rewritten from a commit is identical to the one written before.
type rowsBlob struct {
	Version  int           `json:"v"`
	Series   [][3]string   `json:"series"` // scope, target id, zone
	Readings []readingBlob `json:"readings"`
}

type readingBlob struct {
	TsMs       int64  `json:"ts"`
	IntervalMs uint32 `json:"iv"`
	Node       string `json:"node"`
	Source     string `json:"src"`
	Collector  string `json:"by"`
	Estimated  bool   `json:"est,omitempty"`
	// Rows: series index, delta_j, energy_j, power_w.
	Rows [][4]float64 `json:"rows"`
}

const rowsBlobVersion = 1

// encodeRows encodes rows for a commit; nil for none.
func encodeRows(rows []store.Sample) ([]byte, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	b := rowsBlob{Version: rowsBlobVersion}
	index := map[[3]string]int{}
	var cur *readingBlob
	for _, r := range rows {
		for _, v := range []float64{r.DeltaJ, r.EnergyJ, r.PowerW} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("encode row %s/%s at %d: value %v", r.Scope, r.TargetID, r.TsMs, v)
			}
		}
		if cur == nil || cur.TsMs != r.TsMs || cur.IntervalMs != r.IntervalMs || cur.Node != r.Node || cur.Source != r.Source ||
			cur.Collector != r.Collector || cur.Estimated != r.Estimated {
			b.Readings = append(b.Readings, readingBlob{TsMs: r.TsMs, IntervalMs: r.IntervalMs, Node: r.Node, Source: r.Source,
				Collector: r.Collector, Estimated: r.Estimated})
			cur = &b.Readings[len(b.Readings)-1]
		}
		k := [3]string{r.Scope, r.TargetID, r.Zone}
		i, ok := index[k]
		if !ok {
			i = len(b.Series)
			index[k] = i
			b.Series = append(b.Series, k)
		}
		cur.Rows = append(cur.Rows, [4]float64{float64(i), r.DeltaJ, r.EnergyJ, r.PowerW})
	}
	return json.Marshal(b)
}

// decodeRows decodes a commit's rows.
func decodeRows(data []byte) ([]store.Sample, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var b rowsBlob
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode committed rows: %w", err)
	}
	if b.Version != rowsBlobVersion {
		return nil, fmt.Errorf("decode committed rows: version %d, expected %d", b.Version, rowsBlobVersion)
	}
	var out []store.Sample
	for _, rd := range b.Readings {
		for _, x := range rd.Rows {
			i := int(x[0])
			if float64(i) != x[0] || i < 0 || i >= len(b.Series) {
				return nil, errors.New("decode committed rows: series index out of range")
			}
			s := b.Series[i]
			out = append(out, store.Sample{TsMs: rd.TsMs, Node: rd.Node, Scope: s[0], TargetID: s[1], Zone: s[2], Source: rd.Source,
				PowerW: x[3], EnergyJ: x[2], DeltaJ: x[1], IntervalMs: rd.IntervalMs, Estimated: rd.Estimated, Collector: rd.Collector})
		}
	}
	return out, nil
}
