package uc3

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// JSON cannot express NaN or ±Inf. Like Jackson's default, the encoders
// write them as the strings "NaN", "Infinity" and "-Infinity", and the
// decoders accept those strings wherever a double is expected.
const (
	jsonNaN    = "NaN"
	jsonPosInf = "Infinity"
	jsonNegInf = "-Infinity"
)

// ErrMissingField is returned (wrapped) when a JSON object lacks a field or
// has it set to null.
var ErrMissingField = errors.New("missing field")

// AppendJSON appends r as the JSON object Theodolite's HTTP target posts,
// {"identifier":…,"timestamp":…,"valueInW":…}. It does not allocate when dst
// has room.
func AppendJSON(dst []byte, r ActivePowerRecord) []byte {
	dst = append(dst, `{"identifier":`...)
	dst = appendJSONString(dst, r.Identifier)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, r.Timestamp, 10)
	dst = append(dst, `,"valueInW":`...)
	dst = appendJSONDouble(dst, r.ValueInW)
	return append(dst, '}')
}

// DecodeJSON decodes one JSON ActivePowerRecord. All three fields are
// required; unknown fields are ignored.
func DecodeJSON(b []byte) (ActivePowerRecord, error) {
	var v struct {
		Identifier *string     `json:"identifier"`
		Timestamp  *int64      `json:"timestamp"`
		ValueInW   *jsonDouble `json:"valueInW"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return ActivePowerRecord{}, fmt.Errorf("decode json record: %w", err)
	}
	if err := missingField("record",
		field{"identifier", v.Identifier == nil},
		field{"timestamp", v.Timestamp == nil},
		field{"valueInW", v.ValueInW == nil},
	); err != nil {
		return ActivePowerRecord{}, err
	}
	return ActivePowerRecord{Identifier: *v.Identifier, Timestamp: *v.Timestamp, ValueInW: float64(*v.ValueInW)}, nil
}

// AppendStatisticsJSON appends s as the JSON object of
// schemas/uc3/HourOfDayStatistics.schema.json. It does not allocate when dst
// has room.
func AppendStatisticsJSON(dst []byte, s HourOfDayStatistics) []byte {
	dst = append(dst, `{"identifier":`...)
	dst = appendJSONString(dst, s.Identifier)
	dst = append(dst, `,"hourOfDay":`...)
	dst = strconv.AppendInt(dst, int64(s.HourOfDay), 10)
	dst = append(dst, `,"windowStartMs":`...)
	dst = strconv.AppendInt(dst, s.WindowStartMs, 10)
	dst = append(dst, `,"windowEndMs":`...)
	dst = strconv.AppendInt(dst, s.WindowEndMs, 10)
	dst = append(dst, `,"count":`...)
	dst = strconv.AppendInt(dst, s.Count, 10)
	dst = append(dst, `,"mean":`...)
	dst = appendJSONDouble(dst, s.Mean)
	dst = append(dst, `,"populationVariance":`...)
	dst = appendJSONDouble(dst, s.PopulationVariance)
	dst = append(dst, `,"min":`...)
	dst = appendJSONDouble(dst, s.Min)
	dst = append(dst, `,"max":`...)
	dst = appendJSONDouble(dst, s.Max)
	return append(dst, '}')
}

// DecodeStatisticsJSON decodes one HourOfDayStatistics JSON object. All
// fields are required; unknown fields are ignored.
func DecodeStatisticsJSON(b []byte) (HourOfDayStatistics, error) {
	var v struct {
		Identifier         *string     `json:"identifier"`
		HourOfDay          *int        `json:"hourOfDay"`
		WindowStartMs      *int64      `json:"windowStartMs"`
		WindowEndMs        *int64      `json:"windowEndMs"`
		Count              *int64      `json:"count"`
		Mean               *jsonDouble `json:"mean"`
		PopulationVariance *jsonDouble `json:"populationVariance"`
		Min                *jsonDouble `json:"min"`
		Max                *jsonDouble `json:"max"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return HourOfDayStatistics{}, fmt.Errorf("decode json statistics: %w", err)
	}
	if err := missingField("statistics",
		field{"identifier", v.Identifier == nil},
		field{"hourOfDay", v.HourOfDay == nil},
		field{"windowStartMs", v.WindowStartMs == nil},
		field{"windowEndMs", v.WindowEndMs == nil},
		field{"count", v.Count == nil},
		field{"mean", v.Mean == nil},
		field{"populationVariance", v.PopulationVariance == nil},
		field{"min", v.Min == nil},
		field{"max", v.Max == nil},
	); err != nil {
		return HourOfDayStatistics{}, err
	}
	return HourOfDayStatistics{
		Identifier:         *v.Identifier,
		HourOfDay:          *v.HourOfDay,
		WindowStartMs:      *v.WindowStartMs,
		WindowEndMs:        *v.WindowEndMs,
		Count:              *v.Count,
		Mean:               float64(*v.Mean),
		PopulationVariance: float64(*v.PopulationVariance),
		Min:                float64(*v.Min),
		Max:                float64(*v.Max),
	}, nil
}

// field is a required field of a JSON object, by name, and whether the
// object lacked it (absent or null).
type field struct {
	name    string
	missing bool
}

// missingField returns ErrMissingField naming the first field missing from
// a decoded what, or nil when none is.
func missingField(what string, fields ...field) error {
	for _, f := range fields {
		if f.missing {
			return fmt.Errorf("decode json %s: %w %q", what, ErrMissingField, f.name)
		}
	}
	return nil
}

// jsonDouble is a float64 that also accepts the non-finite spellings.
type jsonDouble float64

// UnmarshalJSON implements json.Unmarshaler.
func (d *jsonDouble) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case jsonNaN:
			*d = jsonDouble(math.NaN())
		case jsonPosInf:
			*d = jsonDouble(math.Inf(1))
		case jsonNegInf:
			*d = jsonDouble(math.Inf(-1))
		default:
			return fmt.Errorf("double %q: expected a number, %q, %q or %q", s, jsonNaN, jsonPosInf, jsonNegInf)
		}
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("double %s: %w", b, err)
	}
	*d = jsonDouble(f)
	return nil
}

// appendJSONDouble writes f as encoding/json does (shortest round-tripping
// form, exponent only for very small or large magnitudes), and non-finite
// values as strings.
func appendJSONDouble(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"`+jsonNaN+`"`...)
	case math.IsInf(f, 1):
		return append(dst, `"`+jsonPosInf+`"`...)
	case math.IsInf(f, -1):
		return append(dst, `"`+jsonNegInf+`"`...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Shorten e-09 to e-9, as encoding/json does.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as with encoding/json, so the output is always valid JSON.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
