package app

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitList(t *testing.T) {
	require.Equal(t, []string{"a:1", "b:2"}, splitList(" a:1, ,b:2,"))
	require.Empty(t, splitList(""))
}
