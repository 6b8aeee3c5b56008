package uc3

import (
	"math"
	"strconv"
)

// SensorKeyPrefix starts every sensor id.
const SensorKeyPrefix = "s_"

// AppendSensorKey appends the id of sensor i, "s_<i>", as Theodolite's load
// generator names them. It does not allocate when dst has room.
func AppendSensorKey(dst []byte, i int) []byte {
	dst = append(dst, SensorKeyPrefix...)
	return strconv.AppendInt(dst, int64(i), 10)
}

// KeyOffset is where sensor i's key starts in the concatenation of the keys
// of sensors 0, 1, 2, …: the prefix of each smaller index plus its digits,
// computed in closed form per digit count. A key table therefore needs no
// offsets array — the former []int32 offsets overflowed near 2×10⁸ sensors —
// and a size can be known without building anything. i ≥ 0.
func KeyOffset(i int) int {
	off, _ := keySpan(i)
	return off
}

// keySpan is KeyOffset(i) and the length of sensor i's key, in one pass.
func keySpan(i int) (off, n int) {
	off = len(SensorKeyPrefix) * i
	lo, digits := 0, 1
	for p := 10; ; p, digits = p*10, digits+1 {
		// Indices [lo, p) have `digits` digits.
		if i < p || p > math.MaxInt/10 {
			return off + digits*(i-lo), len(SensorKeyPrefix) + digits
		}
		off += digits * (p - lo)
		lo = p
	}
}

// KeyTable holds the keys of sensors [0, n) as bytes (Kafka keys) and as a
// string (record identifiers) in two flat buffers, so that neither
// allocates per record.
type KeyTable struct {
	buf []byte
	str string
}

// NewKeyTable builds the keys of n sensors: 2 × KeyOffset(n) bytes.
func NewKeyTable(n int) KeyTable {
	buf := make([]byte, 0, KeyOffset(n))
	for i := range n {
		buf = AppendSensorKey(buf, i)
	}
	return KeyTable{buf: buf, str: string(buf)}
}

// Key returns sensor s's key and identifier, sharing the table's memory.
// The key's capacity ends with it: appending to it cannot touch the next.
func (k *KeyTable) Key(s int) ([]byte, string) {
	a, n := keySpan(s)
	b := a + n
	return k.buf[a:b:b], k.str[a:b]
}
