package uc3

import "strconv"

// SensorKeyPrefix starts every sensor id.
const SensorKeyPrefix = "s_"

// AppendSensorKey appends the id of sensor i, "s_<i>", as Theodolite's load
// generator names them. It does not allocate when dst has room.
func AppendSensorKey(dst []byte, i int) []byte {
	dst = append(dst, SensorKeyPrefix...)
	return strconv.AppendInt(dst, int64(i), 10)
}
