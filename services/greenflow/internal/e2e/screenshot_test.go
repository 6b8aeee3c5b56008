package e2e

import (
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// screenshot renders the HTML file page with headless Chromium (installed by
// `make test`, scripts/ensure-chromium.sh: a report is read in a browser,
// and only a browser shows whether it renders) into a PNG named name in the
// artifacts directory — GREENFLOW_TEST_ARTIFACTS, else greenflow-test-artifacts
// in the temp dir — and checks that it holds a page: the full width, a
// long page, and more than a blank screen's colours. It returns the PNG's path.
func screenshot(t *testing.T, page, name string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		bin, err = exec.LookPath("chromium-browser")
	}
	require.NoError(t, err, "the report test needs Chromium: make test installs it (scripts/ensure-chromium.sh), or apt-get install chromium")
	dir := os.Getenv("GREENFLOW_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "greenflow-test-artifacts")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	out, err := filepath.Abs(filepath.Join(dir, name))
	require.NoError(t, err)
	abs, err := filepath.Abs(page)
	require.NoError(t, err)
	_ = os.Remove(out)
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir="+t.TempDir(),
		"--window-size=1100,9000", "--screenshot="+out, "file://"+abs)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "chromium: %s", b)
	f, err := os.Open(out)
	require.NoError(t, err, "chromium wrote no screenshot: %s", b)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	bounds := img.Bounds()
	require.Equal(t, image.Rect(0, 0, 1100, 9000), bounds)
	colours := map[[3]uint32]bool{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 7 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	require.Greater(t, len(colours), 20, "the page shows text and plots, not a blank screen")
	return out
}
