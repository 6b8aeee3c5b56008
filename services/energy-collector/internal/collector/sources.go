package collector

import (
	"fmt"
	"net/http"
	"time"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
)

// openSource builds the energy.Source for s. Local kinds read sysfs and
// /proc once to choose and check their meter; exporters do no I/O. The
// string says what was chosen and why, for the log.
func openSource(s SourceConfig, client *http.Client) (energy.Source, string, error) {
	switch s.Kind {
	case KindModel:
		p, err := localProfile(s)
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		m := energy.NewModelMeter(s.ProcRoot, p.IdleWatts(), p.MaxWatts())
		if err := m.Validate(); err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		return energy.NewLocalSource(m, s.ProcRoot), fmt.Sprintf("model requested (%s: %g–%g W)", p.Label(), p.IdleWatts(), p.MaxWatts()), nil
	case KindRAPL:
		m, err := energy.NewRAPLMeter(s.PowercapRoot, s.ProcRoot)
		if err != nil {
			return nil, "", fmt.Errorf("open source %s (rapl): %w", s.ID, err)
		}
		m.SetMaxPowerW(s.MaxPowerW)
		return energy.NewLocalSource(m, s.ProcRoot), "rapl requested", nil
	case KindAuto:
		p, err := localProfile(s)
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		m, why, err := energy.NewAutoMeter(s.PowercapRoot, s.ProcRoot, p.IdleWatts(), p.MaxWatts())
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		if r, ok := m.(*energy.RAPLMeter); ok {
			r.SetMaxPowerW(s.MaxPowerW)
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
	case KindKwollect:
		c, err := g5k.New(g5k.Config{URL: s.URL}, g5k.Deps{HTTP: client})
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		delay := s.Delay
		if delay == 0 {
			delay = time.Minute
		}
		w, err := energy.NewWattmeterSource(energy.WattmeterOptions{Series: g5k.KwollectSeries{C: c, Site: s.Site, Node: s.Node, BMC: s.BMC},
			Delay: delay, MaxPowerW: s.MaxPowerW})
		if err != nil {
			return nil, "", fmt.Errorf("open source %s: %w", s.ID, err)
		}
		meter := g5k.MetricWattmeter
		if s.BMC {
			meter = g5k.MetricBMC
		}
		return w, fmt.Sprintf("kwollect %s of %s on %s, %s behind", meter, s.Node, s.Site, delay), nil
	}
	return nil, "", fmt.Errorf("open source %s: unknown kind %q", s.ID, s.Kind)
}

// localProfile is the model profile of a local source's node: from its
// facts (vCPUs, CPU model, memory), with the configured node totals when
// set.
func localProfile(s SourceConfig) (energy.ModelProfile, error) {
	f, err := energy.ReadNodeFacts(s.ProcRoot)
	if err != nil {
		return energy.ModelProfile{}, err
	}
	p := energy.DefaultProfile(f)
	if s.MaxWatts > 0 {
		p.NodeIdleWatts, p.NodeMaxWatts = s.IdleWatts, s.MaxWatts
	}
	return p, p.Validate()
}
