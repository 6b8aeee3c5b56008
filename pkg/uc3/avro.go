package uc3

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// confluentMagic is byte 0 of every Confluent-framed message.
const confluentMagic = 0x00

// headerLen is the Confluent frame: the magic byte and a 4-byte schema id.
const headerLen = 5

// Errors returned (wrapped) by DecodeConfluentAvro; test with errors.Is.
var (
	ErrBadMagic        = errors.New("bad magic byte")
	ErrTruncated       = errors.New("truncated input")
	ErrStringLength    = errors.New("invalid string length")
	ErrMalformedVarint = errors.New("malformed varint")
	ErrTrailingBytes   = errors.New("trailing bytes")
)

// AppendConfluentAvro appends r to dst in the Confluent wire format: 0x00, the
// big-endian schema id, then the Avro binary encoding of the record. It does
// not allocate when dst has room for the result.
func AppendConfluentAvro(dst []byte, schemaID uint32, r ActivePowerRecord) []byte {
	dst = append(dst, confluentMagic)
	dst = binary.BigEndian.AppendUint32(dst, schemaID)
	// Avro longs (and string lengths) are zigzag varints, which is exactly
	// what encoding/binary's signed varint is.
	dst = binary.AppendVarint(dst, int64(len(r.Identifier)))
	dst = append(dst, r.Identifier...)
	dst = binary.AppendVarint(dst, r.Timestamp)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.ValueInW))
}

// DecodeConfluentAvro decodes one Confluent-framed ActivePowerRecord written
// with the schema ActivePowerRecordSchema. The schema id is returned, not
// checked: the registry id of the same schema differs between clusters. The
// whole of b must be one record; nothing in b is retained.
func DecodeConfluentAvro(b []byte) (schemaID uint32, r ActivePowerRecord, err error) {
	if len(b) < headerLen {
		return 0, r, fmt.Errorf("decode confluent header: %d of %d bytes: %w", len(b), headerLen, ErrTruncated)
	}
	if b[0] != confluentMagic {
		return 0, r, fmt.Errorf("decode confluent header: magic byte 0x%02x, want 0x00: %w", b[0], ErrBadMagic)
	}
	schemaID = binary.BigEndian.Uint32(b[1:headerLen])
	body := b[headerLen:]

	n, body, err := readLong(body, "identifier length")
	if err != nil {
		return schemaID, r, err
	}
	if n < 0 || n > int64(len(body)) {
		return schemaID, r, fmt.Errorf("decode avro field identifier: length %d with %d bytes left: %w", n, len(body), ErrStringLength)
	}
	r.Identifier = string(body[:n])
	body = body[n:]

	if r.Timestamp, body, err = readLong(body, "timestamp"); err != nil {
		return schemaID, r, err
	}

	if len(body) < 8 {
		return schemaID, r, fmt.Errorf("decode avro field valueInW: %d of 8 bytes: %w", len(body), ErrTruncated)
	}
	r.ValueInW = math.Float64frombits(binary.LittleEndian.Uint64(body))
	if len(body) > 8 {
		return schemaID, r, fmt.Errorf("decode avro record: %d bytes after valueInW: %w", len(body)-8, ErrTrailingBytes)
	}
	return schemaID, r, nil
}

// readLong reads one Avro long (zigzag varint) and returns the rest of b.
func readLong(b []byte, field string) (int64, []byte, error) {
	v, n := binary.Varint(b)
	switch {
	case n == 0:
		return 0, b, fmt.Errorf("decode avro field %s: %w", field, ErrTruncated)
	case n < 0:
		return 0, b, fmt.Errorf("decode avro field %s: longer than 64 bits: %w", field, ErrMalformedVarint)
	}
	return v, b[n:], nil
}
