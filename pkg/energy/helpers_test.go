package energy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// t0 is the time of every test's first reading.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// writeFile replaces root/rel with content.
func writeFile(tb testing.TB, root, rel, content string) {
	tb.Helper()
	path := filepath.Join(root, rel)
	require.NoError(tb, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(tb, os.WriteFile(path, []byte(content), 0o644))
}

// setUJ sets the energy counter of the zone at root/zoneDir to uj.
func setUJ(tb testing.TB, root, zoneDir string, uj uint64) {
	tb.Helper()
	writeFile(tb, root, filepath.Join(zoneDir, "energy_uj"), strconv.FormatUint(uj, 10)+"\n")
}

// setCPU writes a stat file under procRoot whose aggregate cpu line has the
// given busy (all in "user") and idle ticks.
func setCPU(tb testing.TB, procRoot string, busyTicks, idleTicks uint64) {
	tb.Helper()
	writeFile(tb, procRoot, "stat", fmt.Sprintf(
		"cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\nctxt 1\n",
		busyTicks, idleTicks, busyTicks, idleTicks))
}

// requireErrorMentions fails unless err is non-nil and mentions every part.
func requireErrorMentions(tb testing.TB, err error, parts ...string) {
	tb.Helper()
	require.Error(tb, err)
	for _, p := range parts {
		require.ErrorContains(tb, err, p)
	}
}
