package analyzer

import "testing"

func TestThinKeepsTheEndsAndAtMostTheLimit(t *testing.T) {
	xs := make([]float64, 3601)
	ys := make([]float64, 3601)
	for i := range xs {
		xs[i], ys[i] = float64(i), 2*float64(i)
	}
	tx, ty := thin(xs, ys, lagFitMaxPoints)
	if len(tx) > lagFitMaxPoints || len(tx) < lagFitMaxPoints/2 {
		t.Fatalf("thinned to %d points, want at most %d and not far fewer", len(tx), lagFitMaxPoints)
	}
	if tx[0] != 0 || tx[len(tx)-1] != 3600 || ty[len(ty)-1] != 7200 {
		t.Fatalf("ends not kept: %v … %v", tx[0], tx[len(tx)-1])
	}
	if sx, _ := thin(xs[:100], ys[:100], lagFitMaxPoints); len(sx) != 100 {
		t.Fatalf("a short series is kept whole, got %d", len(sx))
	}
}
