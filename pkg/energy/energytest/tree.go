// Package energytest holds what tests of energy sources share outside
// pkg/energy: copies of the fake sysfs and procfs trees they read.
package energytest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// CopyTree copies the fake tree at src into a fresh temporary directory
// and returns its path, so a test may rewrite its files between reads.
// Directory names starting with "intel-rapl" get their '_' turned back
// into ':': a ':' in a file name makes the Go module zip invalid, so the
// checked-in powercap trees spell it '_' (pkg/energy/testdata/powercap/README.md).
func CopyTree(tb testing.TB, src string) string {
	tb.Helper()
	dst := tb.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		parts := strings.Split(rel, string(filepath.Separator))
		for i, p := range parts {
			if strings.HasPrefix(p, "intel-rapl") {
				parts[i] = strings.ReplaceAll(p, "_", ":")
			}
		}
		target := filepath.Join(dst, filepath.Join(parts...))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	require.NoError(tb, err, "copy %s", src)
	return dst
}
