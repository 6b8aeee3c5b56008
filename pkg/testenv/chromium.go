package testenv

import (
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Chromium is the path of the headless browser the report tests render in
// (installed by `make test`, scripts/ensure-chromium.sh: only a browser
// shows whether a report renders).
func Chromium(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		bin, err = exec.LookPath("chromium-browser")
	}
	require.NoError(tb, err, "this test needs Chromium: make test installs it (scripts/ensure-chromium.sh), or apt-get install chromium")
	return bin
}

// chromiumArgs are the flags every headless run takes.
func chromiumArgs(tb testing.TB, width, height int) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=" + tb.TempDir(),
		"--window-size=" + strconv.Itoa(width) + "," + strconv.Itoa(height)}
}

// Screenshot renders the HTML page (a file) in headless Chromium at
// width × height into a PNG named name in the artifacts directory —
// GREENFLOW_TEST_ARTIFACTS, else greenflow-test-artifacts in the temp dir,
// kept after the test for a person to look at — and returns its path and
// the decoded image.
func Screenshot(tb testing.TB, page, name string, width, height int) (string, image.Image) {
	tb.Helper()
	bin := Chromium(tb)
	out, err := filepath.Abs(filepath.Join(ArtifactsDir(tb), name))
	require.NoError(tb, err)
	abs, err := filepath.Abs(page)
	require.NoError(tb, err)
	_ = os.Remove(out)
	b, err := exec.Command(bin, append(chromiumArgs(tb, width, height), "--screenshot="+out, "file://"+abs)...).CombinedOutput()
	require.NoError(tb, err, "chromium: %s", b)
	f, err := os.Open(out)
	require.NoError(tb, err, "chromium wrote no screenshot: %s", b)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(tb, err)
	return out, img
}

// ArtifactsDir is where tests keep what a person should look at after
// them (screenshots): GREENFLOW_TEST_ARTIFACTS, else
// greenflow-test-artifacts in the temp dir; created when missing.
func ArtifactsDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("GREENFLOW_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "greenflow-test-artifacts")
	}
	require.NoError(tb, os.MkdirAll(dir, 0o755))
	return dir
}

// DumpDOM loads the HTML page (a file) in headless Chromium at width ×
// height, runs its scripts and returns the resulting DOM.
func DumpDOM(tb testing.TB, page string, width, height int) []byte {
	tb.Helper()
	abs, err := filepath.Abs(page)
	require.NoError(tb, err)
	out, err := exec.Command(Chromium(tb), append(chromiumArgs(tb, width, height), "--dump-dom", "file://"+abs)...).Output()
	require.NoError(tb, err)
	return out
}
