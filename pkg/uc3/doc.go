// Package uc3 holds the message formats of the Theodolite UC-3 benchmark
// ("aggregation based on time attributes") as GreenFlow speaks them: the
// ActivePowerRecord input in the Confluent Avro wire format (the Kafka load
// generator) and as JSON (the HTTP load generator), the sensor keys s_<i>, and
// the HourOfDayStatistics output of the UC-3 processor.
//
// The schemas in schemas/uc3 are the source of truth; tests check the Go
// types against them. Encoders append to a caller-owned buffer and do not
// allocate when it has room, because the load generator and the processor
// call them once per message.
package uc3
