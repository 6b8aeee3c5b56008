package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/state"
)

// Remove stops every process of the run: its process group (when the
// record names one, on this boot) and every process carrying its markers.
// crashed reports a running SUT found already exited on its own, with its
// exit status and last output. e is nil for a run with no record.
func (b *Backend) Remove(ctx context.Context, runID string, e *state.Entry) (crashed bool, reason string, err error) {
	platform := b.store.Platform()
	pgid := 0
	if e != nil && e.Rec.Process != nil {
		pr := e.Rec.Process
		sameBoot := pr.BootID == b.proc.BootID()
		alive := sameBoot && b.proc.Alive(pr.ShimPID, pr.ShimStartTicks)
		if sameBoot {
			pgid = pr.PGID
		}
		switch {
		case !alive && (!pr.Signalled || pr.StoppedAtShutdown):
			crashed = true
			reason = exitInfo(filesOf(pr))
			if pr.StoppedAtShutdown {
				reason = "stopped when its provisioner shut down; " + reason
			}
			if !sameBoot {
				reason = "the machine restarted since the run started; last output: " + tail(pr.Log, 5)
			}
		case alive && !pr.Signalled:
			// Say it first, so whoever sees it end knows it was stopped.
			if _, _, err := b.store.Mutate(ctx, e.Key, func(r *state.Record) (bool, error) {
				if r.Process == nil {
					return false, nil
				}
				r.Process.Signalled = true
				return true, nil
			}); err != nil {
				return false, "", fmt.Errorf("record that run %s is being stopped: %w", runID, err)
			}
		}
	}
	b.Unwatch(runID)
	if err := b.proc.stop(ctx, platform, runID, pgid, b.cfg.StopTimeout, 50*time.Millisecond); err != nil {
		return crashed, reason, err
	}
	return crashed, reason, nil
}

// Leftovers lists the runs whose marked processes run on this node.
func (b *Backend) Leftovers(context.Context) ([]state.Leftover, error) {
	platform := b.store.Platform()
	var out []state.Leftover
	for runID, procs := range b.proc.scan(platform, "") {
		l := state.Leftover{RunID: runID, Platform: platform, Kind: "process"}
		var pids []string
		var oldest uint64
		for _, m := range procs {
			pids = append(pids, strconv.Itoa(m.stat.PID))
			if oldest == 0 || m.stat.StartTicks < oldest {
				oldest = m.stat.StartTicks
			}
			l.ExperimentID = m.env[EnvExperimentID]
			if l.Kafka == nil && m.env[EnvKafka] != "" {
				var k events.Kafka
				if json.Unmarshal([]byte(m.env[EnvKafka]), &k) == nil {
					l.Kafka = &k
				}
			}
		}
		l.Since = b.proc.StartedAt(oldest)
		l.What = "processes " + strings.Join(pids, ", ") + " on " + b.cfg.Node
		out = append(out, l)
	}
	return out, nil
}

// Forget removes a torn-down run's files.
func (b *Backend) Forget(rec state.Record) {
	if rec.Process == nil || rec.Node != b.cfg.Node || rec.Process.Status == "" {
		return
	}
	dir := filepath.Dir(rec.Process.Status)
	if filepath.Base(filepath.Dir(dir)) != "runs" {
		return // not a run directory of ours
	}
	if err := os.RemoveAll(dir); err != nil {
		b.logger.Warn("remove run files failed", zap.String("run_id", rec.RunID), zap.String("dir", dir), zap.Error(err))
	}
}
