package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// RequireOutcome checks one case of a table test of a func returning
// (T, error): with wantErr set, err must contain it (got is not looked
// at); without, err must be nil and got equal want.
func RequireOutcome[T any](tb testing.TB, got T, err error, want T, wantErr string) {
	tb.Helper()
	if wantErr != "" {
		require.ErrorContains(tb, err, wantErr)
		return
	}
	require.NoError(tb, err)
	require.Equal(tb, want, got)
}
