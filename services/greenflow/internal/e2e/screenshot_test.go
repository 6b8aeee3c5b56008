package e2e

import (
	"image"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testenv"
)

// screenshot renders the HTML file page with headless Chromium into a PNG
// named name among the test artifacts (testenv.Screenshot) and checks that
// it holds a page: the full width, a long page, and more than a blank
// screen's colours. It returns the PNG's path.
func screenshot(t *testing.T, page, name string) string {
	t.Helper()
	out, img := testenv.Screenshot(t, page, name, 1100, 9000)
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
