package collector

import (
	"fmt"
	"net/http"

	"github.com/greenflow/greenflow/pkg/energy"
)

// openSource builds the energy.Source for s. Local kinds read sysfs and
// /proc once to choose and check their meter; exporters do no I/O. The
// string says what was chosen and why, for the log.
func openSource(s SourceConfig, client *http.Client) (energy.Source, string, error) {
	switch s.Kind {
	case KindModel:
		m := energy.NewModelMeter(s.ProcRoot, s.IdleWatts, s.MaxWatts)
		if err := m.Validate(); err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		return energy.NewLocalSource(m, s.ProcRoot), "model requested", nil
	case KindRAPL:
		m, err := energy.NewRAPLMeter(s.PowercapRoot, s.ProcRoot)
		if err != nil {
			return nil, "", fmt.Errorf("open source %s (rapl): %w", s.ID, err)
		}
		return energy.NewLocalSource(m, s.ProcRoot), "rapl requested", nil
	case KindAuto:
		m, why, err := energy.NewAutoMeter(s.PowercapRoot, s.ProcRoot, s.IdleWatts, s.MaxWatts)
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		return energy.NewLocalSource(m, s.ProcRoot), why, nil
	case KindKepler:
		return energy.NewKeplerSource(energy.KeplerOptions{URL: s.URL, Client: client, NodeName: s.NodeLabel, MaxPowerW: s.MaxPowerW}),
			"kepler exporter " + s.URL, nil
	case KindScaphandre:
		return energy.NewScaphandreSource(energy.ScaphandreOptions{URL: s.URL, Client: client, MaxPowerW: s.MaxPowerW}),
			"scaphandre exporter " + s.URL, nil
	case KindPromQL:
		p, err := energy.NewPromQLSource(energy.PromQLOptions{URL: s.URL, Client: client, NodeQuery: s.NodeQuery,
			WorkloadQuery: s.WorkloadQuery, MaxPowerW: s.MaxPowerW, Estimated: s.Estimated})
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		return p, "prometheus " + s.URL, nil
	}
	return nil, "", fmt.Errorf("open source %s: unknown kind %q", s.ID, s.Kind)
}
