package collector

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/energy"
	"github.com/greenflow/greenflow/pkg/store"
)

// Calibration of the power model (issue 14, point 2). A local source
// whose node has a hardware meter (RAPL) keeps the (CPU utilisation, node
// power) pair of each interval; once it holds calibrateMin pairs, and every
// calibrateEvery pairs after that, it fits power on utilisation by least
// squares over the last calibrateWindow pairs. The fit (with R² and the
// residual) is judged by energy.Calibration.Check (enough readings and
// spread of utilisation, R² ≥ 0.8, slope > 0, intercept ≥ 0): a fit that
// fails is logged with its reasons and counted
// (greenflow_energy_collector_calibrations_rejected_total{source,reason}),
// neither stored nor shared nor used. A fit that passes goes to ClickHouse (power_calibrations) and to the collectors'
// KV bucket (calibration.<node>), from which every collector takes the
// newest fit — of a node with the same CPU model when there is one — for
// its nodes without a meter: their model becomes the fitted watts per vCPU
// times their vCPUs, plus their platform watts, labelled
// "estimated (calibrated on <node>)". A node's configured node totals
// (idleWatts/maxWatts) and a run's own model take precedence.
const (
	calibrateMin    = 20
	calibrateEvery  = 20
	calibrateWindow = 600
	keyCalibration  = "calibration."
)

// calibrator collects a metered node's pairs and fits them.
type calibrator struct {
	facts       energy.NodeFacts
	util, power []float64
	sinceFit    int
}

// observe keeps a reading's pair; it reports whether a fit is due.
func (k *calibrator) observe(m energy.Measurement) bool {
	if m.Interval <= 0 || m.Estimated || m.Source != energy.SourceRAPL || m.CPU.TotalSeconds <= 0 || m.Resets > 0 {
		return false
	}
	k.util = append(k.util, min(max(m.CPU.BusySeconds/m.CPU.TotalSeconds, 0), 1))
	k.power = append(k.power, m.TotalPowerW)
	if over := len(k.util) - calibrateWindow; over > 0 {
		k.util, k.power = k.util[over:], k.power[over:]
	}
	k.sinceFit++
	return len(k.util) >= calibrateMin && k.sinceFit >= calibrateEvery
}

// calibrate fits the runner's node when due and publishes the fit.
func (r *runner) calibrate(ctx context.Context, m energy.Measurement) {
	if !isLocal(r.sc.Kind) {
		return
	}
	if r.cal == nil {
		f, err := energy.ReadNodeFacts(r.sc.ProcRoot)
		if err != nil {
			return
		}
		r.cal = &calibrator{facts: f}
	}
	if !r.cal.observe(m) {
		return
	}
	r.cal.sinceFit = 0
	fit, err := energy.Calibrate(r.sc.Node, m.Source, r.cal.facts, r.cal.util, r.cal.power, m.Time)
	if err != nil {
		if !errors.Is(err, energy.ErrTooFewPoints) {
			r.logger.Warn("power model calibration failed", zap.Error(err))
		}
		return // idle throughout: no spread in utilisation yet
	}
	fit.CoversMemory = energy.ZonesCoverMemory(m.Zones)
	if err := fit.Check(); err != nil {
		r.c.m.calRejected.WithLabelValues(r.sc.ID, energy.CheckReason(fit)).Inc()
		r.logger.Warn("power model calibration rejected: not used", zap.Error(err), zap.Int("samples", fit.Samples),
			zap.Float64("intercept_w", fit.InterceptW), zap.Float64("slope_w", fit.SlopeW), zap.Float64("r2", fit.R2),
			zap.Float64("util_spread", fit.UtilSpread))
		return
	}
	r.logger.Info("power model calibrated", zap.Int("samples", fit.Samples), zap.Float64("intercept_w", fit.InterceptW),
		zap.Float64("slope_w", fit.SlopeW), zap.Float64("r2", fit.R2), zap.Float64("residual_w", fit.ResidualW))
	r.c.records.addFit(store.PowerCalibration{Node: fit.Node, Source: fit.Source, TsMs: fit.TsMs, Samples: uint32(fit.Samples),
		InterceptW: fit.InterceptW, SlopeW: fit.SlopeW, R2: fit.R2, ResidualW: fit.ResidualW, VCPUs: uint32(fit.VCPUs), CPUModel: fit.CPUModel,
		Collector: r.c.cfg.Instance})
	r.c.addCalibration(fit)
	if b, err := json.Marshal(fit); err == nil {
		kctx, cancel := context.WithTimeout(ctx, r.c.cfg.SourceTimeout)
		defer cancel()
		if _, err := r.c.kv.Put(kctx, keyCalibration+kvKey(fit.Node), b); err != nil {
			r.logger.Warn("power model calibration not shared", zap.Error(err))
		}
	}
}

// addCalibration makes fit known to this collector's model sources, when
// it passes the quality rule (a fit shared by an older collector may not).
func (c *Collector) addCalibration(fit energy.Calibration) {
	if fit.Check() != nil {
		return
	}
	c.calMu.Lock()
	defer c.calMu.Unlock()
	if cur, ok := c.calibrations[fit.Node]; ok && cur.TsMs >= fit.TsMs {
		return
	}
	c.calibrations[fit.Node] = fit
}

// calibrationFor picks the fit for a node of cpuModel: the newest of a node
// with the same CPU model, otherwise the newest.
func (c *Collector) calibrationFor(cpuModel string) *energy.Calibration {
	c.calMu.Lock()
	defer c.calMu.Unlock()
	var best *energy.Calibration
	for _, f := range c.calibrations {
		same := cpuModel != "" && f.CPUModel == cpuModel
		if best == nil {
			best = &f
			continue
		}
		bestSame := cpuModel != "" && best.CPUModel == cpuModel
		if (same && !bestSame) || (same == bestSame && f.TsMs > best.TsMs) {
			best = &f
		}
	}
	if best == nil {
		return nil
	}
	cp := *best
	return &cp
}

// syncCalibrations reads the fits other collectors shared, every
// CommitInterval until ctx ends.
func (c *Collector) syncCalibrations(ctx context.Context) error {
	t := c.clock.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		c.readCalibrations(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

func (c *Collector) readCalibrations(ctx context.Context) {
	kctx, cancel := context.WithTimeout(ctx, c.cfg.SourceTimeout)
	defer cancel()
	lister, err := c.kv.ListKeysFiltered(kctx, keyCalibration+">")
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) && ctx.Err() == nil {
			c.logger.Debug("calibrations unreadable", zap.Error(err))
		}
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, keyCalibration) {
			continue
		}
		e, err := c.kv.Get(kctx, k)
		if err != nil {
			continue
		}
		var fit energy.Calibration
		if json.Unmarshal(e.Value(), &fit) == nil && fit.Node != "" && fit.VCPUs > 0 {
			c.addCalibration(fit)
		}
	}
}
