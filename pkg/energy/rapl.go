package energy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNoRAPLZones means a powercap tree exists but holds no RAPL zone that
// measures the node (a package, dram or psys zone).
var ErrNoRAPLZones = errors.New("no RAPL package or psys zones")

// RAPLMeter reads the RAPL energy counters the Linux powercap driver exposes
// (Intel, and AMD Zen through the same driver).
//
// Zones overlap: core and uncore are parts of their package, and psys covers
// the whole platform. The node total is therefore psys when the platform has
// it, otherwise the sum of the packages and their dram sub-zones (dram is
// outside the package counter). core and uncore are reported per zone but
// never added to the total.
type RAPLMeter struct {
	zones  []raplZone
	proc   ProcFS
	last   lastReading
	totalJ float64
	psys   bool
	buf    []byte
	// maxPowerW bounds the zones without a power constraint; 0 means
	// DefaultMaxPowerW.
	maxPowerW float64
}

// SetMaxPowerW sets the plausible power of zones whose powercap tree
// states no constraint (0: DefaultMaxPowerW).
func (m *RAPLMeter) SetMaxPowerW(w float64) { m.maxPowerW = w }

// PlausiblePowerW is the bound a zone's counter increase is checked
// against (MaxPlausibleJ), by zone label.
func (m *RAPLMeter) PlausiblePowerW() map[string]float64 {
	out := make(map[string]float64, len(m.zones))
	for _, z := range m.zones {
		out[z.label] = m.zoneBoundW(&z)
	}
	return out
}

func (m *RAPLMeter) zoneBoundW(z *raplZone) float64 {
	if z.maxPowerW > 0 {
		return z.maxPowerW
	}
	if m.maxPowerW > 0 {
		return m.maxPowerW
	}
	return DefaultMaxPowerW
}

var _ NodeMeter = (*RAPLMeter)(nil)

type raplZone struct {
	id         zoneID
	name       string // the zone's own name file: "package-0", "dram", "psys"
	label      string // unique in the meter: "package-0", "package-0/dram", "psys"
	energyPath string
	maxRangeUJ uint64
	inTotal    bool
	counter    Counter
	// maxPowerW is the zone's plausible power: plausibleMargin × the
	// largest constraint_*_max_power_uw of the zone, 0 when it has none
	// (the meter's bound applies).
	maxPowerW float64
}

// plausibleMargin scales a zone's largest power constraint into the most
// it may plausibly average over an interval: turbo bursts above the long
// term limit, and the few milliseconds between the counter's update and
// our clock's reading on short intervals.
const plausibleMargin = 2

// zoneID is the numeric part of a directory name: intel-rapl:N is {N, -1},
// intel-rapl:N:M is {N, M}.
type zoneID struct{ parent, sub int }

// NewRAPLMeter discovers the RAPL zones under powercapRoot (normally
// /sys/class/powercap; in a container, the host's /sys mounted somewhere)
// and checks that every energy counter and procRoot/stat can be read.
//
// It accepts both the flat layout of /sys/class/powercap, where every zone
// is a symlink in the root, and the nested layout of
// /sys/devices/virtual/powercap/intel-rapl, where sub-zones live inside
// their package's directory. The meter reads nothing until the first Read,
// which establishes the baseline.
func NewRAPLMeter(powercapRoot string, procRoot string) (*RAPLMeter, error) {
	info, err := os.Stat(powercapRoot)
	if err != nil {
		return nil, fmt.Errorf("open powercap root: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("open powercap root %s: not a directory", powercapRoot)
	}
	dirs, err := findZoneDirs(powercapRoot)
	if err != nil {
		return nil, err
	}

	m := &RAPLMeter{proc: ProcFS{Root: procRoot}}
	names := make(map[int]string) // package number → its zone name
	for id, dir := range dirs {
		if id.sub < 0 {
			name, err := readZoneName(dir)
			if err != nil {
				return nil, err
			}
			names[id.parent] = name
		}
	}
	ids := slices.SortedFunc(maps.Keys(dirs), func(a, b zoneID) int {
		return cmp.Or(cmp.Compare(a.parent, b.parent), cmp.Compare(a.sub, b.sub))
	})
	labels := make(map[string]bool)
	for _, id := range ids {
		z, err := newRAPLZone(id, dirs[id], names)
		if err != nil {
			return nil, err
		}
		if labels[z.label] { // two zones with the same name: keep both apart
			z.label += "@" + filepath.Base(dirs[id])
		}
		labels[z.label] = true
		m.psys = m.psys || z.isPsys()
		m.zones = append(m.zones, z)
	}
	for i := range m.zones {
		z := &m.zones[i]
		if m.psys {
			z.inTotal = z.isPsys()
		} else {
			z.inTotal = strings.HasPrefix(z.name, "package-") || z.name == "dram"
		}
	}
	if !slices.ContainsFunc(m.zones, func(z raplZone) bool { return z.inTotal }) {
		return nil, fmt.Errorf("discover RAPL zones under %s: %w", powercapRoot, ErrNoRAPLZones)
	}

	for i := range m.zones {
		if _, err := m.readUJ(&m.zones[i]); err != nil {
			return nil, err
		}
	}
	if _, err := m.proc.NodeCPU(); err != nil {
		return nil, fmt.Errorf("rapl meter: %w", err)
	}
	return m, nil
}

// findZoneDirs maps each RAPL zone to one directory, looking in root and one
// level down. In the real /sys/class/powercap the same sub-zone appears both
// ways; the first directory found wins. Other control types
// (intel-rapl-mmio duplicates the package counter) are ignored.
func findZoneDirs(root string) (map[zoneID]string, error) {
	dirs := make(map[zoneID]string)
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("discover RAPL zones: %w", err)
		}
		for _, e := range entries {
			id, ok := parseZoneID(e.Name())
			if !ok {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if info, err := os.Stat(path); err != nil || !info.IsDir() {
				continue // zones are directories, or symlinks to them
			}
			if _, dup := dirs[id]; !dup {
				dirs[id] = path
			}
			if id.sub < 0 && depth == 0 {
				if err := walk(path, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, 0); err != nil {
		return nil, err
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("discover RAPL zones under %s: %w", root, ErrNoRAPLZones)
	}
	return dirs, nil
}

// parseZoneID parses "intel-rapl:N" and "intel-rapl:N:M".
func parseZoneID(name string) (zoneID, bool) {
	rest, ok := strings.CutPrefix(name, "intel-rapl:")
	if !ok {
		return zoneID{}, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 2 {
		return zoneID{}, false
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return zoneID{}, false
		}
		nums[i] = n
	}
	if len(nums) == 1 {
		return zoneID{parent: nums[0], sub: -1}, true
	}
	return zoneID{parent: nums[0], sub: nums[1]}, true
}

func readZoneName(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "name"))
	if err != nil {
		return "", fmt.Errorf("read RAPL zone name: %w", err)
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", fmt.Errorf("read RAPL zone name: %s is empty", filepath.Join(dir, "name"))
	}
	return name, nil
}

func newRAPLZone(id zoneID, dir string, parentNames map[int]string) (raplZone, error) {
	name, err := readZoneName(dir)
	if err != nil {
		return raplZone{}, err
	}
	label := name
	if id.sub >= 0 {
		parent, ok := parentNames[id.parent]
		if !ok {
			parent = fmt.Sprintf("intel-rapl:%d", id.parent)
		}
		label = parent + "/" + name
	}
	maxPath := filepath.Join(dir, "max_energy_range_uj")
	b, err := os.ReadFile(maxPath)
	if err != nil {
		return raplZone{}, fmt.Errorf("read wrap range of RAPL zone %s: %w", label, err)
	}
	maxRange, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return raplZone{}, fmt.Errorf("parse wrap range of RAPL zone %s in %s: %w", label, maxPath, err)
	}
	return raplZone{
		id:         id,
		name:       name,
		label:      label,
		energyPath: filepath.Join(dir, "energy_uj"),
		maxRangeUJ: maxRange,
		maxPowerW:  plausibleMargin * maxConstraintW(dir),
	}, nil
}

// maxConstraintW is the largest constraint_*_max_power_uw of a zone in
// watts, 0 when there is none (dram zones often have none; some platforms
// report 0).
func maxConstraintW(dir string) float64 {
	paths, _ := filepath.Glob(filepath.Join(dir, "constraint_*_max_power_uw"))
	var best uint64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			best = max(best, v)
		}
	}
	return float64(best) / 1e6
}

func (z *raplZone) isPsys() bool { return z.id.sub < 0 && z.name == "psys" }

// readUJ reads a zone's energy counter.
func (m *RAPLMeter) readUJ(z *raplZone) (uint64, error) {
	var err error
	m.buf, err = readInto(m.buf[:0], z.energyPath)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return 0, fmt.Errorf("read energy of RAPL zone %s: %w (energy_uj is root-only on current kernels)", z.label, err)
		}
		return 0, fmt.Errorf("read energy of RAPL zone %s: %w", z.label, err)
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(m.buf)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse energy of RAPL zone %s in %s: %w", z.label, z.energyPath, err)
	}
	return v, nil
}

// Zones lists the zone labels in the order readings report them.
func (m *RAPLMeter) Zones() []string {
	out := make([]string, len(m.zones))
	for i, z := range m.zones {
		out[i] = z.label
	}
	return out
}

// TotalZones lists the zones whose sum is the node total.
func (m *RAPLMeter) TotalZones() []string {
	var out []string
	for _, z := range m.zones {
		if z.inTotal {
			out = append(out, z.label)
		}
	}
	return out
}

// Read implements NodeMeter. All counters are read before any state changes,
// so a failed Read leaves the meter as it was.
func (m *RAPLMeter) Read(now time.Time) (NodeReading, error) {
	raw := make([]uint64, len(m.zones))
	for i := range m.zones {
		v, err := m.readUJ(&m.zones[i])
		if err != nil {
			return NodeReading{}, err
		}
		raw[i] = v
	}
	iv, err := m.last.next(m.proc, now)
	if err != nil {
		return NodeReading{}, fmt.Errorf("rapl meter: %w", err)
	}

	r := NodeReading{
		Time:      now,
		Interval:  iv.interval,
		Zones:     make([]ZoneEnergy, len(m.zones)),
		CPU:       iv.used,
		Estimated: false,
		Source:    SourceRAPL,
	}
	for i := range m.zones {
		z := &m.zones[i]
		resets := z.counter.Resets()
		var bound float64 // no bound on the baseline
		if iv.interval > 0 {
			bound = MaxPlausibleJ(m.zoneBoundW(z), iv.interval)
		}
		d, _, jump := z.counter.UpdateBounded(raw[i], z.maxRangeUJ, bound) // a baseline or reset adds 0
		r.Resets += z.counter.Resets() - resets
		if jump > 0 {
			r.Implausible = append(r.Implausible, implausible(z.label, jump, iv.interval, m.zoneBoundW(z)))
		}
		r.Zones[i] = ZoneEnergy{
			Zone:        z.label,
			DeltaJ:      d,
			PowerW:      power(d, iv.interval),
			CumulativeJ: z.counter.TotalJ(),
		}
		if z.inTotal {
			r.TotalDeltaJ += d
		}
	}
	m.totalJ += r.TotalDeltaJ
	r.TotalCumulativeJ = m.totalJ
	r.TotalPowerW = power(r.TotalDeltaJ, iv.interval)
	m.last.advance(iv)
	return r, nil
}
