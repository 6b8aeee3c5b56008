package energy

import (
	"fmt"
	"strings"
)

// NewAutoMeter returns a RAPLMeter when the powercap counters under
// powercapRoot are readable and otherwise a ModelMeter with idleW and maxW.
// The string says which source was chosen and, for the model, why RAPL was
// not used, so the caller can log it once at start-up.
//
// The model's parameters are validated even when RAPL is used, so a bad
// configuration fails on every node alike rather than only on those without
// RAPL. It fails when neither source can read procRoot.
func NewAutoMeter(powercapRoot, procRoot string, idleW, maxW float64) (NodeMeter, string, error) {
	model := NewModelMeter(procRoot, idleW, maxW)
	if err := model.Validate(); err != nil {
		return nil, "", fmt.Errorf("choose energy meter: %w", err)
	}
	rapl, raplErr := NewRAPLMeter(powercapRoot, procRoot)
	if raplErr == nil {
		reason := fmt.Sprintf("rapl: counters under %s readable; node total = %s",
			powercapRoot, strings.Join(rapl.TotalZones(), " + "))
		return rapl, reason, nil
	}
	if _, err := model.proc.NodeCPU(); err != nil {
		return nil, "", fmt.Errorf("choose energy meter: rapl unavailable (%v); model unavailable: %w", raplErr, err)
	}
	reason := fmt.Sprintf("model (estimated): rapl unavailable: %v; using P = %g W + (%g W − %g W) × cpu utilisation",
		raplErr, idleW, maxW, idleW)
	return model, reason, nil
}
