package analyzer

import (
	"strconv"

	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/uc3"
)

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
