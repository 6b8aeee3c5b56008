// Package freeport finds free TCP ports on the loopback interface for the
// servers GreenFlow starts itself (ClickHouse for tests and the demo, the
// chaos suite's processes).
package freeport

import (
	"fmt"
	"net"
)

// Get returns n distinct free TCP ports on 127.0.0.1. Each is held until
// all are found, so two of them are never the same port; between the
// return and the server's bind another process could still take one.
func Get(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
