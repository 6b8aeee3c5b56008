package energy

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The meter defaults, declared once: the experiment spec's defaults and the
// collector's are these.
const (
	// DefaultInterval is how often a node is sampled when neither the run
	// nor the collector asks otherwise.
	DefaultInterval = time.Second
	// DefaultIdleWattsPerVCPU and DefaultMaxWattsPerVCPU are Cloud Carbon
	// Footprint's per-vCPU figures (AWS average, 0.74 W at 0 % and 3.5 W at
	// 100 % utilisation).
	DefaultIdleWattsPerVCPU = 0.74
	DefaultMaxWattsPerVCPU  = 3.5
	// DefaultMemoryWattsPerGiB is Cloud Carbon Footprint's memory
	// coefficient (0.392 W per GB), used for a node's platform watts.
	DefaultMemoryWattsPerGiB = 0.392
)

// ModelName names the CPU-utilisation model in results: per-vCPU idle and
// max watts times the node's vCPUs, plus platform watts (memory, and the
// rest of the machine when the run states it), linear in utilisation.
const ModelName = "vcpu-linear"

// NodeFacts are what the power model needs to know of a node.
type NodeFacts struct {
	VCPUs     int     // CPUs online (per-CPU lines of /proc/stat)
	CPUModel  string  // /proc/cpuinfo "model name", "" when unknown
	MemoryGiB float64 // /proc/meminfo MemTotal, 0 when unknown
}

// ReadNodeFacts reads the node's vCPUs, CPU model and memory from procRoot.
// Only the vCPUs are required: a CPU model or memory that cannot be read is
// left empty.
func ReadNodeFacts(procRoot string) (NodeFacts, error) {
	p := ProcFS{Root: procRoot}
	n, err := p.NumCPU()
	if err != nil {
		return NodeFacts{}, fmt.Errorf("read node facts: %w", err)
	}
	f := NodeFacts{VCPUs: n}
	if data, err := os.ReadFile(filepath.Join(procRoot, "cpuinfo")); err == nil {
		for line := range strings.Lines(string(data)) {
			k, v, ok := strings.Cut(line, ":")
			if ok && strings.TrimSpace(k) == "model name" {
				f.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if file, err := os.Open(filepath.Join(procRoot, "meminfo")); err == nil {
		defer file.Close()
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(fields[1], 64); err == nil {
					f.MemoryGiB = kb / (1 << 20)
				}
				break
			}
		}
	}
	return f, nil
}

// ModelProfile is a node's power model with everything a result needs to
// say about it: P = Idle + (Max − Idle) × utilisation, where
// Idle = IdleWattsPerVCPU × VCPUs + PlatformWatts and
// Max = MaxWattsPerVCPU × VCPUs + PlatformWatts, unless NodeIdleWatts and
// NodeMaxWatts (node totals, set when MaxWatts > 0) replace that.
type ModelProfile struct {
	Name             string  `json:"name"`
	VCPUs            int     `json:"vcpus"`
	CPUModel         string  `json:"cpu_model,omitempty"`
	IdleWattsPerVCPU float64 `json:"idle_watts_per_vcpu"`
	MaxWattsPerVCPU  float64 `json:"max_watts_per_vcpu"`
	MemoryGiB        float64 `json:"memory_gib,omitempty"`
	PlatformWatts    float64 `json:"platform_watts"`
	NodeIdleWatts    float64 `json:"node_idle_watts,omitempty"`
	NodeMaxWatts     float64 `json:"node_max_watts,omitempty"`
	// Calibration, when the per-vCPU coefficients were fitted against a
	// hardware meter.
	Calibration *Calibration `json:"calibration,omitempty"`
}

// DefaultProfile is the uncalibrated profile of a node: the default
// per-vCPU coefficients, and platform watts for its memory.
func DefaultProfile(f NodeFacts) ModelProfile {
	return ModelProfile{Name: ModelName, VCPUs: f.VCPUs, CPUModel: f.CPUModel,
		IdleWattsPerVCPU: DefaultIdleWattsPerVCPU, MaxWattsPerVCPU: DefaultMaxWattsPerVCPU,
		MemoryGiB: f.MemoryGiB, PlatformWatts: round3(f.MemoryGiB * DefaultMemoryWattsPerGiB)}
}

// IdleWatts is the node's modelled power at 0 % CPU.
func (p ModelProfile) IdleWatts() float64 {
	if p.NodeMaxWatts > 0 {
		return p.NodeIdleWatts
	}
	return p.IdleWattsPerVCPU*float64(p.VCPUs) + p.PlatformWatts
}

// MaxWatts is the node's modelled power at 100 % CPU.
func (p ModelProfile) MaxWatts() float64 {
	if p.NodeMaxWatts > 0 {
		return p.NodeMaxWatts
	}
	return p.MaxWattsPerVCPU*float64(p.VCPUs) + p.PlatformWatts
}

// Label says how sure the model's figures are: always estimated, and on
// which node's meter it was calibrated, if any.
func (p ModelProfile) Label() string {
	if p.Calibration != nil {
		return "estimated (calibrated on " + p.Calibration.Node + ")"
	}
	return "estimated"
}

// Validate reports coefficients that make no model.
func (p ModelProfile) Validate() error {
	var errs []error
	for name, v := range map[string]float64{"idle_watts_per_vcpu": p.IdleWattsPerVCPU, "max_watts_per_vcpu": p.MaxWattsPerVCPU,
		"platform_watts": p.PlatformWatts, "node_idle_watts": p.NodeIdleWatts, "node_max_watts": p.NodeMaxWatts} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			errs = append(errs, fmt.Errorf("model %s: got %v, expected a finite number >= 0", name, v))
		}
	}
	if p.NodeMaxWatts == 0 && p.VCPUs < 1 {
		errs = append(errs, fmt.Errorf("model vcpus: got %d, expected 1 or more", p.VCPUs))
	}
	if p.IdleWatts() > p.MaxWatts() {
		errs = append(errs, fmt.Errorf("model: idle %g W above max %g W", p.IdleWatts(), p.MaxWatts()))
	}
	return errors.Join(errs...)
}

// Calibration is a least-squares fit of a node's measured power on its CPU
// utilisation, P = InterceptW + SlopeW × u, over Samples pairs.
type Calibration struct {
	Node       string  `json:"node"`
	Source     string  `json:"source"` // the meter: rapl
	Samples    int     `json:"samples"`
	InterceptW float64 `json:"intercept_w"` // fitted power at 0 % CPU
	SlopeW     float64 `json:"slope_w"`     // fitted extra power at 100 % CPU
	R2         float64 `json:"r2"`
	ResidualW  float64 `json:"residual_w"` // root mean square of the residuals
	VCPUs      int     `json:"vcpus"`      // of the calibrated node
	CPUModel   string  `json:"cpu_model,omitempty"`
	TsMs       int64   `json:"ts_ms"` // when it was fitted
	// UtilSpread is the fitted utilisations' max − min.
	UtilSpread float64 `json:"util_spread"`
	// CoversMemory says the meter's node total included the memory (a
	// RAPL dram zone, or psys, which covers the whole platform): the fit
	// already holds the memory's power.
	CoversMemory bool `json:"covers_memory"`
}

// The quality rule a fit must pass before it is published or used: a fit
// of a meter that does not follow utilisation (a constant reading, a
// meter of something else) has a low R² or a flat or negative slope, and
// modelling other nodes with it turns them into a constant.
const (
	CalibrationMinSamples = 20  // readings in the fit
	CalibrationMinSpread  = 0.2 // max − min utilisation of the readings
	CalibrationMinR2      = 0.8 // coefficient of determination
)

// ErrUntrustworthyFit means a fit failed the quality rule.
var ErrUntrustworthyFit = errors.New("calibration fit not trustworthy")

// Check applies the quality rule: at least CalibrationMinSamples readings,
// a utilisation spread of at least CalibrationMinSpread, R² of at least
// CalibrationMinR2, a slope above 0 and an intercept of 0 or more. The
// error names every reason the fit fails.
func (c Calibration) Check() error {
	var why []string
	if c.Samples < CalibrationMinSamples {
		why = append(why, fmt.Sprintf("%d readings, expected %d or more", c.Samples, CalibrationMinSamples))
	}
	if !(c.UtilSpread >= CalibrationMinSpread) {
		why = append(why, fmt.Sprintf("utilisation spread %.3f, expected %.2g or more", c.UtilSpread, CalibrationMinSpread))
	}
	if !(c.R2 >= CalibrationMinR2) {
		why = append(why, fmt.Sprintf("R² %.3f, expected %.2g or more", c.R2, CalibrationMinR2))
	}
	if !(c.SlopeW > 0) {
		why = append(why, fmt.Sprintf("slope %.3g W, expected above 0", c.SlopeW))
	}
	if !(c.InterceptW >= 0) {
		why = append(why, fmt.Sprintf("intercept %.3g W, expected 0 or more", c.InterceptW))
	}
	if c.VCPUs < 1 {
		why = append(why, fmt.Sprintf("%d vCPUs, expected 1 or more", c.VCPUs))
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("fit of %s: %s: %w", c.Node, strings.Join(why, "; "), ErrUntrustworthyFit)
}

// CheckReason is a short label of the first rule c fails, for a metric;
// "" when it passes.
func CheckReason(c Calibration) string {
	switch {
	case c.Samples < CalibrationMinSamples:
		return "samples"
	case !(c.UtilSpread >= CalibrationMinSpread):
		return "spread"
	case !(c.R2 >= CalibrationMinR2):
		return "r2"
	case !(c.SlopeW > 0):
		return "slope"
	case !(c.InterceptW >= 0):
		return "intercept"
	case c.VCPUs < 1:
		return "vcpus"
	}
	return ""
}

// ErrTooFewPoints means a fit has too few pairs, or too little spread in
// utilisation, to say anything.
var ErrTooFewPoints = errors.New("too few distinct utilisation points to fit")

// FitLinear fits y = a + b·x by least squares and returns a, b, the
// coefficient of determination R² and the root-mean-square residual. It
// needs at least three points and some spread in x.
func FitLinear(x, y []float64) (a, b, r2, rms float64, err error) {
	n := len(x)
	if n != len(y) {
		return 0, 0, 0, 0, fmt.Errorf("fit: %d x values against %d y values", n, len(y))
	}
	if n < 3 {
		return 0, 0, 0, 0, fmt.Errorf("fit %d points: %w", n, ErrTooFewPoints)
	}
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(n)
	my /= float64(n)
	var sxx, sxy, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx < 1e-6*float64(n) {
		return 0, 0, 0, 0, fmt.Errorf("fit %d points with utilisation spread %.2g: %w", n, math.Sqrt(sxx/float64(n)), ErrTooFewPoints)
	}
	b = sxy / sxx
	a = my - b*mx
	var ss float64
	for i := range x {
		r := y[i] - (a + b*x[i])
		ss += r * r
	}
	r2 = 1.0
	if syy > 0 {
		r2 = 1 - ss/syy
	}
	return a, b, r2, math.Sqrt(ss / float64(n)), nil
}

// Calibrate fits a node's measured power on its utilisation. It does not
// judge the fit: Check does.
func Calibrate(node, source string, facts NodeFacts, util, powerW []float64, now time.Time) (Calibration, error) {
	a, b, r2, rms, err := FitLinear(util, powerW)
	if err != nil {
		return Calibration{}, fmt.Errorf("calibrate the model on %s: %w", node, err)
	}
	return Calibration{Node: node, Source: source, Samples: len(util), InterceptW: a, SlopeW: b, R2: r2, ResidualW: rms,
		VCPUs: facts.VCPUs, CPUModel: facts.CPUModel, TsMs: now.UnixMilli(), UtilSpread: slices.Max(util) - slices.Min(util)}, nil
}

// ZonesCoverMemory says whether a RAPL reading's node total includes the
// memory: it has a dram zone, or is psys (the whole platform).
func ZonesCoverMemory(zones []ZoneEnergy) bool {
	for _, z := range zones {
		if z.Zone == "psys" || z.Zone == "dram" || strings.HasSuffix(z.Zone, "/dram") {
			return true
		}
	}
	return false
}

// Calibrated returns p with per-vCPU coefficients from c: the calibrated
// node's fitted idle and max power divided by its vCPUs. A RAPL fit covers
// the CPU packages, plus the memory when the meter had a dram zone (or
// psys, the whole platform): then the memory is in the per-vCPU figures
// and p's platform watts (its memory) are not added again; without one,
// they stay. A fit with a negative intercept or slope is clamped at 0
// (Check refuses such fits before they get here).
func (p ModelProfile) Calibrated(c Calibration) ModelProfile {
	if c.VCPUs < 1 {
		return p
	}
	idle := max(c.InterceptW, 0)
	peak := max(c.InterceptW+c.SlopeW, idle)
	p.IdleWattsPerVCPU = idle / float64(c.VCPUs)
	p.MaxWattsPerVCPU = peak / float64(c.VCPUs)
	p.NodeIdleWatts, p.NodeMaxWatts = 0, 0
	if c.CoversMemory {
		p.PlatformWatts = 0
	}
	p.Calibration = &c
	return p
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
