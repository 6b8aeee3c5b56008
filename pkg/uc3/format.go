package uc3

import (
	"fmt"
	"strings"
)

// Format is the encoding of ActivePowerRecord values on the wire.
type Format string

const (
	// FormatAvro is the Confluent Avro wire format (Theodolite's Kafka target).
	FormatAvro Format = "avro"
	// FormatJSON is the JSON object of Theodolite's HTTP target.
	FormatJSON Format = "json"
)

// ParseFormat parses a format name, ignoring case and surrounding space.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case FormatAvro, FormatJSON:
		return f, nil
	default:
		return "", fmt.Errorf("unknown record format %q: expected %q or %q", s, FormatAvro, FormatJSON)
	}
}

// Decode decodes one record value in the given format. For Avro the schema
// id is not checked (see DecodeConfluentAvro).
func Decode(format Format, b []byte) (ActivePowerRecord, error) {
	switch format {
	case FormatAvro:
		_, r, err := DecodeConfluentAvro(b)
		return r, err
	case FormatJSON:
		return DecodeJSON(b)
	default:
		return ActivePowerRecord{}, fmt.Errorf("decode record: unknown format %q: expected %q or %q", format, FormatAvro, FormatJSON)
	}
}
