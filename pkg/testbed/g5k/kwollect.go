package g5k

import (
	"context"
	"time"

	"github.com/greenflow/greenflow/pkg/energy"
)

// KwollectSeries is one Grid'5000 node's power from Kwollect, an
// energy.PowerSeries for energy.WattmeterSource: the wattmeter
// (wattmetre_power_watt, 1 Hz averages, at the wall) where the node has
// one, else its BMC (bmc_node_power_watt, instantaneous, about every 5 s).
// Which one is fixed per node (from the reference API's facts), not
// chosen per reading: a lagging wattmeter is not a missing one.
type KwollectSeries struct {
	C          *Client
	Site, Node string
	BMC        bool // the node has no wattmeter
}

var _ energy.PowerSeries = KwollectSeries{}

// Power implements energy.PowerSeries.
func (k KwollectSeries) Power(ctx context.Context, from, to time.Time) (energy.PowerSamples, error) {
	metric, ps := MetricWattmeter, energy.PowerSamples{Period: time.Second, Averaged: true, Zone: energy.ZoneWall}
	if k.BMC {
		metric, ps = MetricBMC, energy.PowerSamples{Period: 5 * time.Second, Zone: energy.ZoneBMC}
	}
	pts, err := k.C.Metrics(ctx, k.Site, MetricsQuery{Nodes: []string{k.Node}, Metrics: []string{metric}, Start: from, End: to})
	if err != nil {
		return energy.PowerSamples{}, err
	}
	for _, p := range pts {
		if p.Metric == metric && p.Device == ShortName(k.Node) {
			ps.Samples = append(ps.Samples, energy.PowerSample{Time: p.Time, Watts: p.Value})
		}
	}
	return ps, nil
}
