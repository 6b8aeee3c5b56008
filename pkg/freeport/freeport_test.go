package freeport_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/freeport"
)

// The ports are distinct and free: a server can bind every one of them.
func TestGetReturnsDistinctBindablePorts(t *testing.T) {
	ports, err := freeport.Get(5)
	require.NoError(t, err)
	require.Len(t, ports, 5)
	seen := map[int]bool{}
	for _, p := range ports {
		require.False(t, seen[p], "port %d twice in %v", p, ports)
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		require.NoError(t, err, "port %d is free", p)
		require.NoError(t, l.Close())
	}
}
