package uc3

// ActivePowerRecord is one measurement of a sensor: the UC-3 input value.
type ActivePowerRecord struct {
	// Identifier is the sensor id, equal to the Kafka key (s_0 … s_{N-1}).
	Identifier string `json:"identifier"`
	// Timestamp is the event time in epoch milliseconds.
	Timestamp int64 `json:"timestamp"`
	// ValueInW is the active power in watts.
	ValueInW float64 `json:"valueInW"`
}

// ActivePowerRecordSchema is the Avro schema of ActivePowerRecord, identical
// to schemas/uc3/ActivePowerRecord.avsc; it is what a producer registers under
// the subject "<topic>-value".
const ActivePowerRecordSchema = `{"type":"record","name":"ActivePowerRecord","namespace":"rocks.theodolite.benchmarks.commons.model.records","fields":[{"name":"identifier","type":"string"},{"name":"timestamp","type":"long"},{"name":"valueInW","type":"double"}]}`

// HourOfDayStatistics is the UC-3 output value (the output key is the sensor
// id): statistics of one sensor's valueInW over the records of one hour of
// the day that fall into one sliding event-time window. Its JSON form is
// described by schemas/uc3/HourOfDayStatistics.schema.json.
type HourOfDayStatistics struct {
	Identifier string `json:"identifier"`
	// HourOfDay is 0–23 in the processor's time zone.
	HourOfDay int `json:"hourOfDay"`
	// WindowStartMs (inclusive) and WindowEndMs (exclusive) bound the
	// window in epoch milliseconds.
	WindowStartMs      int64   `json:"windowStartMs"`
	WindowEndMs        int64   `json:"windowEndMs"`
	Count              int64   `json:"count"`
	Mean               float64 `json:"mean"`
	PopulationVariance float64 `json:"populationVariance"`
	Min                float64 `json:"min"`
	Max                float64 `json:"max"`
}
