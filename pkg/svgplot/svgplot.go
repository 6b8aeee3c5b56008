// Package svgplot draws small, self-contained SVG charts on the server —
// linear axes with round ticks, lines, markers, error bars, shaded x-bands
// (a run's phases) and a legend — for the CLI's HTML report and the web
// console alike: no scripts and no external files, so a chart inlines into
// a page that works offline.
package svgplot

import (
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// palette is colour-blind-friendly (Okabe–Ito) with a few extra shades.
var palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000", "#999999", "#882255"}

// Series is one plotted data set.
type Series struct {
	Name   string
	X, Y   []float64
	Lo, Hi []float64 // error bar ends (optional, same length as Y)
	Labels []string  // text next to each point (optional)
	Color  string    // default: from the palette
	Line   bool      // connect points in order
	Marker bool      // draw a marker per point
	Dash   bool
	Width  float64 // line width; default 1.6
	// NoScale: the Series does not stretch the axes (a reference line far
	// above the data would squash it flat); it is drawn clipped to the
	// Plot, and when it leaves it upwards a note says where it goes,
	// starting with AboveLabel.
	NoScale    bool
	AboveLabel string
	// ClampLo: the quantity cannot be negative — an error bar reaching
	// below zero is drawn to 0 and ends in an arrow marked ‡ there, with
	// a note, instead of stretching the axis below zero unremarked.
	ClampLo bool
	// Shape is the marker: a filled circle by default, or "cross" — a
	// point that is not comparable with the rest (a run that failed its
	// SLO) must not look like one that is.
	Shape string
}

// Band shades [X0, X1] across the Plot, e.g. a run phase.
type Band struct {
	X0, X1 float64
	Label  string
	Fill   string
}

// Plot is one chart.
type Plot struct {
	Title, XLabel, YLabel string
	W, H                  int
	Series                []Series
	Bands                 []Band
	YFromZero             bool
	XPad                  bool // leave room beside the extreme points (scatter plots)
	// Notes are printed under the legend: what a mark on the Plot means.
	Notes []string
	// XCats makes the x axis a category axis: a tick and label at each,
	// no numeric ticks (groups are not quantities).
	XCats []CatTick
}

// CatTick is one category on a category axis.
type CatTick struct {
	X     float64
	Label string
}

const (
	padLeft, padRight, padTop, padBottom = 72.0, 200.0, 34.0, 48.0
)

// niceTicks returns round tick values covering [lo, hi].
func niceTicks(lo, hi float64, want int) []float64 {
	if !(hi > lo) {
		if lo == 0 {
			return []float64{0, 1}
		}
		lo, hi = lo-math.Abs(lo)*0.1, hi+math.Abs(hi)*0.1
	}
	raw := (hi - lo) / float64(want)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	first, last := math.Floor(lo/step+1e-9), math.Ceil(hi/step-1e-9)
	for k := first; k <= last; k++ {
		out = append(out, k*step)
	}
	if len(out) < 2 {
		out = append(out, out[0]+step)
	}
	return out
}

// tickLabel prints a tick without float noise.
func tickLabel(v float64) string {
	if v == 0 {
		return "0"
	}
	a := math.Abs(v)
	switch {
	case a >= 1e6 || a < 1e-3:
		return strconv.FormatFloat(v, 'g', 3, 64)
	default:
		// Ticks are multiples of a step (3 × 0.05 is 0.15000000000000002):
		// twelve significant digits drop the noise and keep every tick.
		r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
		return strconv.FormatFloat(r, 'f', -1, 64)
	}
}

// SVG renders the Plot.
func (p Plot) SVG() string {
	if p.W == 0 {
		p.W = 760
	}
	if p.H == 0 {
		p.H = 320
	}
	// A legend longer than the Plot makes the Plot taller, not cut.
	p.H = max(p.H, int(padTop+p.legendHeight()+8))
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`,
		p.W, p.H, p.W, p.H)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="#fff"/>`, p.W, p.H)
	fmt.Fprintf(&sb, `<text x="%g" y="20" font-size="14" font-weight="bold">%s</text>`, padLeft, html.EscapeString(p.Title))
	f, ok := p.frame()
	if !ok {
		fmt.Fprintf(&sb, `<text x="%g" y="%g" fill="#666">no data</text></svg>`, padLeft, float64(p.H)/2)
		return sb.String()
	}
	p.writeBands(&sb, f)
	p.writeAxes(&sb, f)
	for i, s := range p.Series {
		s.write(&sb, f, i)
	}
	p.writeBandLabels(&sb, f)
	for _, s := range p.Series {
		if s.anyClamped() {
			p.Notes = append(p.Notes, clampedNote)
			break
		}
	}
	for _, s := range p.Series {
		if top := maxY(s); s.NoScale && s.AboveLabel != "" && top > f.yhi {
			p.Notes = append(p.Notes, s.AboveLabel+" "+thousands(top)+" (above the plot)")
		}
	}
	p.writeLegend(&sb, f)
	sb.WriteString(`</svg>`)
	return sb.String()
}

// frame maps data to the Plot area: its ranges (rounded to nice ticks) and
// size in pixels.
type frame struct {
	xlo, xhi, ylo, yhi float64
	xt, yt             []float64 // ticks
	pw, ph             float64   // Plot area
}

func (f frame) sx(x float64) float64 { return padLeft + (x-f.xlo)/(f.xhi-f.xlo)*f.pw }
func (f frame) sy(y float64) float64 { return padTop + f.ph - (y-f.ylo)/(f.yhi-f.ylo)*f.ph }

// frame fits the frame to the data; ok is false when there is none.
func (p Plot) frame() (frame, bool) {
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	see := func(x, y float64) {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			xlo, xhi = math.Min(xlo, x), math.Max(xhi, x)
		}
		if !math.IsNaN(y) && !math.IsInf(y, 0) {
			ylo, yhi = math.Min(ylo, y), math.Max(yhi, y)
		}
	}
	for _, s := range p.Series {
		if s.NoScale {
			continue
		}
		for i := range s.X {
			see(s.X[i], s.Y[i])
			if i < len(s.Lo) {
				lo := s.Lo[i]
				if s.ClampLo && lo < 0 {
					lo = 0
				}
				see(s.X[i], lo)
				see(s.X[i], s.Hi[i])
			}
		}
	}
	// A reference line not far above the data (half its top again) is
	// worth the room; one far above is cut and noted instead.
	for _, s := range p.Series {
		if s.NoScale && yhi > 0 && maxY(s) <= yhi*1.5 {
			for i := range s.X {
				see(s.X[i], s.Y[i])
			}
		}
	}
	for _, b := range p.Bands {
		see(b.X0, math.NaN())
		see(b.X1, math.NaN())
	}
	if math.IsInf(xlo, 1) || math.IsInf(ylo, 1) {
		return frame{}, false
	}
	if p.YFromZero && ylo > 0 {
		ylo = 0
	}
	if p.XPad {
		pad := (xhi - xlo) * 0.08
		if pad == 0 {
			pad = math.Max(math.Abs(xlo)*0.1, 1)
		}
		if xlo >= 0 {
			xlo = math.Max(0, xlo-pad) // keep non-negative quantities non-negative
		} else {
			xlo -= pad
		}
		xhi += pad
	}
	f := frame{xt: niceTicks(xlo, xhi, 6), yt: niceTicks(ylo, yhi, 5)}
	f.xlo, f.xhi, f.ylo, f.yhi = f.xt[0], f.xt[len(f.xt)-1], f.yt[0], f.yt[len(f.yt)-1]
	if len(p.XCats) > 0 {
		f.xt = nil
		f.xlo, f.xhi = math.Min(xlo, p.XCats[0].X)-0.6, math.Max(xhi, p.XCats[len(p.XCats)-1].X)+0.6
	}
	if f.xhi == f.xlo {
		f.xhi = f.xlo + 1
	}
	if f.yhi == f.ylo {
		f.yhi = f.ylo + 1
	}
	f.pw, f.ph = float64(p.W)-padLeft-padRight, float64(p.H)-padTop-padBottom
	return f, true
}

// writeBands shades the bands (phases) behind the data.
func (p Plot) writeBands(sb *strings.Builder, f frame) {
	for i, b := range p.Bands {
		fill := b.Fill
		if fill == "" {
			fill = []string{"#f2f2f2", "#e3eef8", "#fbeee0", "#e8f5e9", "#f3e5f5"}[i%5]
		}
		x0, x1 := f.sx(math.Max(b.X0, f.xlo)), f.sx(math.Min(b.X1, f.xhi))
		fmt.Fprintf(sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`, x0, padTop, math.Max(0, x1-x0), f.ph, fill)
	}
}

// writeBandLabels names the bands over everything else — gridlines and
// data — each on a white halo, so no line strikes a label through.
func (p Plot) writeBandLabels(sb *strings.Builder, f frame) {
	for _, b := range p.Bands {
		x0, x1 := f.sx(math.Max(b.X0, f.xlo)), f.sx(math.Min(b.X1, f.xhi))
		if x1-x0 > 24 {
			fmt.Fprintf(sb, `<text class="band-label" x="%.1f" y="%.1f" font-size="10" fill="#555" text-anchor="middle" stroke="#fff" `+
				`stroke-width="3" stroke-linejoin="round" paint-order="stroke">%s</text>`, (x0+x1)/2, padTop+11, html.EscapeString(b.Label))
		}
	}
}

// writeAxes draws the grid, the ticks, the frame and the axis labels.
func (p Plot) writeAxes(sb *strings.Builder, f frame) {
	for _, v := range f.yt {
		y := f.sy(v)
		fmt.Fprintf(sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padLeft, padLeft+f.pw, y, y)
		fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#333">%s</text>`, padLeft-6, y+4, tickLabel(v))
	}
	for _, v := range f.xt {
		if v < f.xlo || v > f.xhi {
			continue
		}
		x := f.sx(v)
		fmt.Fprintf(sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#eee"/>`, x, x, padTop, padTop+f.ph)
		fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`, x, padTop+f.ph+16, tickLabel(v))
	}
	for _, c := range p.XCats {
		x := f.sx(c.X)
		fmt.Fprintf(sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#444"/>`, x, x, padTop+f.ph, padTop+f.ph+4)
		fmt.Fprintf(sb, `<text class="category" x="%.1f" y="%.1f" text-anchor="middle" fill="#333">%s</text>`, x, padTop+f.ph+16,
			html.EscapeString(c.Label))
	}
	fmt.Fprintf(sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`, padLeft, padTop, f.pw, f.ph)
	fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, padLeft+f.pw/2, float64(p.H)-8, html.EscapeString(p.XLabel))
	fmt.Fprintf(sb, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, padTop+f.ph/2, html.EscapeString(p.YLabel))
}

// write draws the i-th series: its line, error bars, markers, point labels
// and legend entry.
func (s Series) write(sb *strings.Builder, f frame, i int) {
	color := seriesColor(s, i)
	width := s.Width
	if width == 0 {
		width = 1.6
	}
	dash := ""
	if s.Dash {
		dash = ` stroke-dasharray="5 3"`
	}
	if s.NoScale {
		s.writeClipped(sb, f, color, width, dash)
		return
	}
	if s.Line && len(s.X) > 1 {
		var pts []string
		for j := range s.X {
			if math.IsNaN(s.Y[j]) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", f.sx(s.X[j]), f.sy(s.Y[j])))
		}
		fmt.Fprintf(sb, `<polyline fill="none" stroke="%s" stroke-width="%g"%s points="%s"/>`, color, width, dash, strings.Join(pts, " "))
	}
	for j := range s.X {
		if math.IsNaN(s.Y[j]) {
			continue
		}
		x, y := f.sx(s.X[j]), f.sy(s.Y[j])
		if j < len(s.Lo) && !math.IsNaN(s.Lo[j]) && !math.IsNaN(s.Hi[j]) {
			y0, y1 := f.sy(s.Lo[j]), f.sy(s.Hi[j])
			if s.clamped(j) {
				y0 = f.sy(0)
				fmt.Fprintf(sb, `<path class="ci-clamped" d="M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fL%.1f %.1fL%.1f %.1f" stroke="%s" `+
					`stroke-width="1.2" fill="none"/><text x="%.1f" y="%.1f" font-size="11" fill="%s">‡</text>`,
					x, y0, y1, x-4, y1, x+4, x-4, y0-6, x, y0, x+4, y0-6, color, x+5, y0-3, color)
			} else {
				fmt.Fprintf(sb, `<path d="M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f" stroke="%s" stroke-width="1.2" fill="none"/>`,
					x, y0, y1, x-4, y0, x+4, x-4, y1, x+4, color)
			}
		}
		if s.Marker {
			writeMarker(sb, s.Shape, x, y, color)
		}
		if j < len(s.Labels) && s.Labels[j] != "" {
			fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" font-size="10" fill="#333">%s</text>`, x+6, y-6, html.EscapeString(s.Labels[j]))
		}
	}
}

// writeClipped draws a NoScale series' line within the plot's y range:
// each segment cut where it leaves the range.
func (s Series) writeClipped(sb *strings.Builder, f frame, color string, width float64, dash string) {
	var d strings.Builder
	for j := 1; j < len(s.X); j++ {
		x0, y0, x1, y1 := s.X[j-1], s.Y[j-1], s.X[j], s.Y[j]
		if math.IsNaN(y0) || math.IsNaN(y1) {
			continue
		}
		if y0 > y1 {
			x0, y0, x1, y1 = x1, y1, x0, y0
		}
		if y1 < f.ylo || y0 > f.yhi {
			continue // wholly outside
		}
		at := func(y float64) float64 { return x0 + (x1-x0)*(y-y0)/(y1-y0) }
		if y1 > f.yhi {
			x1, y1 = at(f.yhi), f.yhi
		}
		if y0 < f.ylo {
			x0, y0 = at(f.ylo), f.ylo
		}
		fmt.Fprintf(&d, "M%.1f %.1fL%.1f %.1f", f.sx(x0), f.sy(y0), f.sx(x1), f.sy(y1))
	}
	if d.Len() > 0 {
		fmt.Fprintf(sb, `<path fill="none" stroke="%s" stroke-width="%g"%s d="%s"/>`, color, width, dash, d.String())
	}
}

// clampedNote explains an error bar cut at 0 (the tables' ‡).
const clampedNote = "‡ arrow at 0: the interval reaches below zero for a quantity that cannot be negative — drawn to 0; the repetitions " +
	"are too few or too spread to bound it away from zero"

// clamped reports whether point j's error bar is cut at 0.
func (s Series) clamped(j int) bool {
	return s.ClampLo && j < len(s.Lo) && s.Lo[j] < 0
}

func (s Series) anyClamped() bool {
	for j := range s.Lo {
		if s.clamped(j) && !math.IsNaN(s.Hi[j]) {
			return true
		}
	}
	return false
}

// maxY is the largest y of a Series (-Inf without any).
func maxY(s Series) float64 {
	top := math.Inf(-1)
	for _, y := range s.Y {
		if !math.IsNaN(y) {
			top = math.Max(top, y)
		}
	}
	return top
}

// thousands prints v rounded to a whole number with thousands separated
// by commas: 25,000.
func thousands(v float64) string {
	s := strconv.FormatFloat(math.Abs(math.Round(v)), 'f', 0, 64)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if math.Round(v) < 0 {
		s = "-" + s
	}
	return s
}

// seriesColor is the i-th series' colour: its own, else the palette's.
func seriesColor(s Series, i int) string {
	if s.Color != "" {
		return s.Color
	}
	return palette[i%len(palette)]
}

// writeMarker draws one marker of shape at (x, y).
func writeMarker(sb *strings.Builder, shape string, x, y float64, color string) {
	switch shape {
	case "cross":
		fmt.Fprintf(sb, `<path d="M%.1f %.1fl8 8m0 -8l-8 8" stroke="%s" stroke-width="2.2" fill="none"/>`, x-4, y-4, color)
	default:
		fmt.Fprintf(sb, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`, x, y, color)
	}
}

// legendChars is how many characters fit on a legend line.
const legendChars = 28

// writeLegend lists the Series right of the Plot — a line for lines, the
// marker for markers only — each name wrapped whole over as many lines as
// it needs (a cut name can make two entries look alike), then the notes.
func (p Plot) writeLegend(sb *strings.Builder, f frame) {
	lx := padLeft + f.pw + 14
	ly := padTop + 8
	sb.WriteString(`<g class="legend">`)
	defer sb.WriteString(`</g>`)
	for i, s := range p.Series {
		if s.Name == "" {
			continue
		}
		color := seriesColor(s, i)
		switch {
		case s.Line || !s.Marker:
			dash := ""
			if s.Dash {
				dash = ` stroke-dasharray="5 3"`
			}
			fmt.Fprintf(sb, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="3"%s/>`, lx, lx+18, ly, ly, color, dash)
		default:
			writeMarker(sb, s.Shape, lx+9, ly, color)
		}
		for j, line := range wrapWords(NoNegZero(s.Name), legendChars) {
			if j > 0 {
				ly += 14
			}
			fmt.Fprintf(sb, `<text x="%.1f" y="%.1f">%s</text>`, lx+24, ly+4, html.EscapeString(line))
		}
		ly += 18
	}
	for _, n := range p.Notes {
		for _, line := range wrapWords(n, legendChars+3) {
			fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" font-size="10" fill="#555">%s</text>`, lx, ly+4, html.EscapeString(line))
			ly += 12
		}
		ly += 6
	}
}

// legendHeight is the height writeLegend takes.
func (p Plot) legendHeight() float64 {
	h := 8.0
	for _, s := range p.Series {
		if s.Name != "" {
			h += 18 + 14*float64(len(wrapWords(NoNegZero(s.Name), legendChars))-1)
		}
	}
	for _, n := range p.notesFor() {
		h += 6 + 12*float64(len(wrapWords(n, legendChars+3)))
	}
	return h
}

// notesFor is the notes the legend may end with: the plot's own, the
// clamped intervals' and, at most, one per reference line above the Plot.
func (p Plot) notesFor() []string {
	notes := append([]string(nil), p.Notes...)
	for _, s := range p.Series {
		if s.anyClamped() {
			notes = append(notes, clampedNote)
			break
		}
	}
	for _, s := range p.Series {
		if s.NoScale && s.AboveLabel != "" {
			notes = append(notes, s.AboveLabel+" 000,000,000 (above the plot)")
		}
	}
	return notes
}

// wrapWords breaks s into lines of at most n characters at spaces (a word
// longer than n goes on a line of its own, whole).
func wrapWords(s string, n int) []string {
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		switch {
		case cur == "":
			cur = w
		case len([]rune(cur))+1+len([]rune(w)) <= n:
			cur += " " + w
		default:
			lines = append(lines, cur)
			cur = w
		}
	}
	if cur != "" || len(lines) == 0 {
		lines = append(lines, cur)
	}
	return lines
}

// negZero matches a number that prints as negative zero ("-0", "-0.0000").
// The sign must start a token (after a space, "(", "=", ":" …) so that an
// id such as "run-0" is left alone.
var negZero = regexp.MustCompile(`(^|[\s(\[±=:,;/])-(0(?:\.0+)?)($|[^0-9.e])`)

// NoNegZero drops the sign of every negative zero in s: a value that
// rounds to zero is zero, whichever side it came from.
func NoNegZero(s string) string {
	for {
		t := negZero.ReplaceAllString(s, "${1}${2}${3}")
		if t == s {
			return s
		}
		s = t
	}
}

// YRange is the y axis the plot draws (rounded to its ticks); ok is false
// when there is no data.
func (p Plot) YRange() (lo, hi float64, ok bool) {
	f, ok := p.frame()
	return f.ylo, f.yhi, ok
}

// WellFormed reports whether svg parses as XML (a page inlining a broken
// chart breaks around it).
func WellFormed(svg string) error {
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("svg: %w", err)
		}
	}
}
