package local

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFileNameKeepsRunIDsApart(t *testing.T) {
	require.Equal(t, "exp-1_r0001", fileName("exp-1_r0001"))
	require.Equal(t, "a%2Fb", fileName("a/b"))
	require.Equal(t, "%2E..", fileName(".."))
	require.NotEqual(t, fileName("a/b"), fileName("a%2Fb"))
}
