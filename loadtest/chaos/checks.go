package chaos

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// finish runs the checks over the whole segment once every slot ended:
// every accepted experiment listed and stored, no duplicate samples
// anywhere, and nothing of a finished run left (topics, SUT processes).
func (c *segCtx) finish(ctx context.Context) {
	add := func(kind, detail string, confirmed bool) {
		c.seg.Suite = append(c.seg.Suite, Violation{Kind: kind, Detail: detail, Confirmed: confirmed})
	}
	// Experiments: in list, in KV and in ClickHouse, read twice.
	missing := c.missingExperiments(ctx)
	if len(missing) > 0 {
		still := confirmed(ctx, 3*time.Second, slices.Collect(maps.Keys(missing)), func() []string {
			return slices.Collect(maps.Keys(c.missingExperiments(ctx)))
		})
		for id, why := range missing {
			add("experiment_lost", fmt.Sprintf("accepted experiment %s: %s", id, why), still[id])
		}
	}
	// Duplicate samples anywhere in the segment's database.
	var dup, dup2 uint64
	if err := c.store.Conn().QueryRow(ctx, `SELECT count() FROM (SELECT node, scope, target_id, zone, ts_ms, count() AS c FROM samples
		GROUP BY node, scope, target_id, zone, ts_ms HAVING c > 1)`).Scan(&dup); err == nil && dup > 0 {
		_ = c.store.Conn().QueryRow(ctx, `SELECT toUInt64(count() - uniqExact(node, scope, target_id, zone, ts_ms)) FROM samples`).Scan(&dup2)
		add("duplicate_samples", fmt.Sprintf("%d (series, ts_ms) keys stored more than once over the whole segment (re-read: %d surplus rows)", dup, dup2), dup2 > 0)
	}
	// Anything of any run left (each slot checked its own; this also
	// catches what appeared later, and processes with the segment's marker).
	for _, v := range c.leftovers(ctx, c.runs(), true, 5*time.Second) {
		v.Detail = "at the end of the segment: " + v.Detail
		c.seg.Suite = append(c.seg.Suite, v)
	}
	if c.kube != nil {
		// Every run namespace, whoever's: nothing GreenFlow created may
		// outlive its run.
		for _, v := range c.namespaceLeftovers(ctx, nil, 90*time.Second) {
			v.Detail = "at the end of the segment: " + v.Detail
			c.seg.Suite = append(c.seg.Suite, v)
		}
		c.seg.Notes = append(c.seg.Notes, fmt.Sprintf("kube-apiserver stops took %s s, starts until serving %s s", fmtSecs(c.kube.StopS), fmtSecs(c.kube.StartS)))
	}
	for _, v := range c.seg.Suite {
		c.logf("segment %s: %s", c.seg.Name, v)
	}
}

func (c *segCtx) missingExperiments(ctx context.Context) map[string]string {
	out := map[string]string{}
	listed := map[string]bool{}
	ids := c.experiments()
	list, err := c.api.List(ctx)
	if err != nil {
		for _, id := range ids {
			out[id] = "the list API did not answer: " + err.Error()
		}
		return out
	}
	for _, e := range list {
		listed[e.ID] = true
	}
	stored := map[string]bool{}
	rows, err := c.store.Conn().Query(ctx, `SELECT DISTINCT experiment_id FROM experiments FINAL WHERE has(?, experiment_id)`, ids)
	if err == nil {
		for rows.Next() {
			var id string
			if rows.Scan(&id) == nil {
				stored[id] = true
			}
		}
		rows.Close()
	}
	for _, id := range ids {
		var why []string
		if !listed[id] {
			why = append(why, "not in `list`")
		}
		if !stored[id] {
			why = append(why, "not in ClickHouse experiments")
		}
		if _, err := c.kv.Experiment(ctx, id); err != nil {
			why = append(why, "not in the scheduler's KV")
		}
		if len(why) > 0 {
			out[id] = strings.Join(why, ", ")
		}
	}
	return out
}

// leftoverTopics lists the run topics of runIDs still on the broker.
func (c *segCtx) leftoverTopics(ctx context.Context, runIDs []string) []string {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.cluster.Brokers...))
	if err != nil {
		return nil
	}
	defer cl.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	td, err := kadm.NewClient(cl).ListTopics(qctx)
	if err != nil {
		c.seg.Notes = append(c.seg.Notes, "could not list topics for the leftover check: "+err.Error())
		return nil
	}
	var out []string
	for _, name := range td.Names() {
		for _, rid := range runIDs {
			if name == "input-"+rid || name == "output-"+rid {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

var runIDEnv = regexp.MustCompile(`GREENFLOW_RUN_ID=([^\x00]+)`)

// leftProc is a live process of a finished run.
type leftProc struct{ run, desc string }

// leftoverProcs finds live processes of runIDs (by GREENFLOW_RUN_ID) and,
// with marker, any process carrying the segment's marker, that are not the
// platform's own processes.
func (c *segCtx) leftoverProcs(runIDs []string, marker bool) map[int]leftProc {
	own := c.cluster.OwnPids()
	out := map[int]leftProc{}
	ents, _ := os.ReadDir("/proc")
	mark := []byte(EnvMarker + "=" + c.cluster.cfg.Marker + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || own[pid] != "" || pid == os.Getpid() || !pidAlive(pid) {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		var run string
		if m := runIDEnv.FindSubmatch(env); m != nil {
			run = string(m[1])
		}
		if !slices.Contains(runIDs, run) && !(marker && bytes.Contains(env, mark)) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out[pid] = leftProc{run: run, desc: truncate(strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "), 160)}
	}
	return out
}

// leftovers waits up to grace for the topics and SUT processes of runIDs
// (and, with marker, any process of the segment) to be gone, and returns a
// violation for each that is not — confirmed when every read over the
// next 2 s still finds it. A
// confirmed leftover process is killed (it is the suite's own descendant),
// so that it does not disturb the runs after it.
func (c *segCtx) leftovers(ctx context.Context, runIDs []string, marker bool, grace time.Duration) []Violation {
	// A leftover is a topic name or "pid N".
	read := func() ([]string, map[int]leftProc, []string) {
		topics, procs := c.leftoverTopics(ctx, runIDs), c.leftoverProcs(runIDs, marker)
		all := slices.Clone(topics)
		for pid := range procs {
			all = append(all, "pid "+strconv.Itoa(pid))
		}
		return topics, procs, all
	}
	var topics []string
	var procs map[int]leftProc
	var left []string
	if poll(ctx, grace, 500*time.Millisecond, func() bool { topics, procs, left = read(); return len(left) == 0 }) {
		return nil
	}
	still := confirmed(ctx, 2*time.Second, left, func() []string { _, _, all := read(); return all })
	var out []Violation
	for _, t := range topics {
		run := strings.TrimPrefix(strings.TrimPrefix(t, "input-"), "output-")
		out = append(out, Violation{RunID: run, Kind: "topic_left", Confirmed: still[t],
			Detail: fmt.Sprintf("topic %s is still on the broker %s after its run ended", t, grace)})
	}
	for pid, p := range procs {
		still := still["pid "+strconv.Itoa(pid)]
		out = append(out, Violation{RunID: p.run, Kind: "process_left", Confirmed: still,
			Detail: fmt.Sprintf("pid %d (%s) is still running %s after its run ended", pid, p.desc, grace)})
		if still {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Detail < out[j].Detail })
	return out
}

func fmtSecs(vs []float64) string {
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("%.1f", v))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
