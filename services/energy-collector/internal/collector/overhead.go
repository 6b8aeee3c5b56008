package collector

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/store"
)

// MetricCollectorCPU is the run metric holding a collector's cumulative CPU
// seconds (the analyzer reports the growth over a run's window as the
// measurement overhead).
const MetricCollectorCPU = "collector_cpu_seconds"

// recordOverhead writes, every interval while runs are being measured, this
// process's cumulative CPU time as the run metric collector_cpu_seconds of
// every active run, labelled with the instance. The analyzer takes its
// growth over a run's window as that run's measurement overhead; with
// several instances it sums them. In `greenflow dev` the process hosts every
// service, so the figure is an upper bound there.
func (c *Collector) recordOverhead(ctx context.Context) error {
	t := c.clock.NewTicker(c.cfg.Interval)
	defer t.Stop()
	labels, _ := json.Marshal(map[string]string{"instance": c.cfg.Instance})
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C():
			runs := c.assign.active()
			if len(runs) == 0 {
				continue
			}
			cpu, err := processCPUSeconds()
			if err != nil {
				c.logger.Warn("read own cpu time failed", zap.Error(err))
				continue
			}
			pts := make([]store.RunMetric, len(runs))
			for i, r := range runs {
				pts[i] = store.RunMetric{ExperimentID: r.ExperimentID, RunID: r.RunID, TsMs: now.UnixMilli(),
					Name: MetricCollectorCPU, Labels: string(labels), Value: cpu}
			}
			c.writer.AddMetrics(pts)
		}
	}
}

// processCPUSeconds is this process's user plus system CPU time.
func processCPUSeconds() (float64, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), nil
}
