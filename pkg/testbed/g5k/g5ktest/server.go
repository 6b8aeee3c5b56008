// Package g5ktest is an in-process stand-in for the Grid'5000 REST API.
//
// Grid'5000 cannot be reached from CI or a developer's machine (it needs an
// account, and a reservation holds real machines), so the testbed layer is
// tested against this httptest server instead. It follows the documented
// API, not GreenFlow's client: basic auth; POST /sites/{site}/jobs answering
// 201 with a Location; GET of a job with OAR's states — waiting (with
// scheduled_at), launching, running, hold, error, terminated, and raw ones
// when asked — assigned_nodes as FQDNs, started_at and walltime, the job
// ending by itself when its walltime runs out; DELETE answering 202;
// Kwollect's /sites/{site}/metrics items with gaps (null values, missing
// seconds) and late data (nothing newer than now − Lag); the reference
// API's node descriptions; and throttling (429/503 with Retry-After). Time
// is the injected clock's, so tests step through hours of walltime.
package g5ktest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Request is one request the stand-in answered.
type Request struct {
	Method, Path string
	Query        string
	Body         []byte
	Status       int
}

// Script is how one submitted job goes: Waiting polls in waiting (with a
// predicted start), then Launching polls in launching, then running — or,
// with Fail, error instead of running; with Hold, it stays held. RawStates
// reports OAR's raw spellings (Waiting, toLaunch, …).
type Script struct {
	Waiting, Launching int
	Fail               string // OAR's message of a job in error
	Hold               bool
	RawStates          bool
}

// Server is the stand-in. Its zero value is not usable; call New.
type Server struct {
	*httptest.Server
	User, Password string
	Clock          clock.PassiveClock
	// Lag: Kwollect has no value newer than now − Lag (its data arrives
	// late).
	Lag time.Duration

	mu       sync.Mutex
	nextUID  int64
	jobs     map[int64]*job
	scripts  []Script
	nodes    map[string][]string // cluster → free node FQDNs
	requests []Request
	throttle []throttle
	power    map[string]func(time.Time) float64 // node short name → W
	bmc      map[string]func(time.Time) float64 // node short name → W, every 5 s
	gaps     map[string][][2]time.Time          // node short name → [from, to)
	nulls    map[string][]time.Time
	refs     map[string]map[string]any
	corrupt  bool
}

type throttle struct {
	status int
	after  string
}

type job struct {
	Job    map[string]any
	site   string
	script Script
	polls  int
	state  string
	start  time.Time
	wall   time.Duration
	nodes  []string
	msg    string
}

// New starts a stand-in answering user/password (no user: the API as seen
// from inside the testbed, without authentication); clusters maps a cluster
// name to its nodes' FQDNs (taurus → taurus-1.lyon.grid5000.fr, …).
func New(user, password string, clk clock.PassiveClock, clusters map[string][]string) *Server {
	s := &Server{User: user, Password: password, Clock: clk, nextUID: 1900000, jobs: map[int64]*job{}, nodes: map[string][]string{},
		power: map[string]func(time.Time) float64{}, bmc: map[string]func(time.Time) float64{}, gaps: map[string][][2]time.Time{}, nulls: map[string][]time.Time{}, refs: map[string]map[string]any{}}
	for c, ns := range clusters {
		s.nodes[c] = slices.Clone(ns)
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Script sets how the next submitted jobs go, in order; jobs beyond the
// scripts start at the first poll.
func (s *Server) Script(sc ...Script) {
	s.mu.Lock()
	s.scripts = append(s.scripts, sc...)
	s.mu.Unlock()
}

// Throttle makes the next n requests answer status (429 or 503) with
// Retry-After retryAfter.
func (s *Server) Throttle(n, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.throttle = append(s.throttle, throttle{status, retryAfter})
	}
}

// Power sets a node's wattmeter power as a function of time (1 Hz values
// on whole seconds).
func (s *Server) Power(node string, w func(time.Time) float64) {
	s.mu.Lock()
	s.power[shortName(node)] = w
	s.mu.Unlock()
}

// BMC sets a node's BMC power (bmc_node_power_watt, instantaneous, every
// 5 s on multiples of 5 s).
func (s *Server) BMC(node string, w func(time.Time) float64) {
	s.mu.Lock()
	s.bmc[shortName(node)] = w
	s.mu.Unlock()
}

// Gap removes a node's values in [from, to); Null reports them null.
func (s *Server) Gap(node string, from, to time.Time) {
	s.mu.Lock()
	s.gaps[shortName(node)] = append(s.gaps[shortName(node)], [2]time.Time{from, to})
	s.mu.Unlock()
}

// Null makes the node's value at t null (Kwollect could not read it).
func (s *Server) Null(node string, t time.Time) {
	s.mu.Lock()
	s.nulls[shortName(node)] = append(s.nulls[shortName(node)], t)
	s.mu.Unlock()
}

// Corrupt makes Kwollect's answers malformed (a timestamp that is not
// ISO 8601) until called with false.
func (s *Server) Corrupt(on bool) {
	s.mu.Lock()
	s.corrupt = on
	s.mu.Unlock()
}

// Reference sets the reference API's description of a node.
func (s *Server) Reference(node string, desc map[string]any) {
	s.mu.Lock()
	s.refs[shortName(node)] = desc
	s.mu.Unlock()
}

// Requests returns every request answered so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Deletes returns the uids DELETE was asked for, in order.
func (s *Server) Deletes() []int64 {
	var out []int64
	for _, r := range s.Requests() {
		if r.Method == http.MethodDelete && r.Status == http.StatusAccepted {
			id, _ := strconv.ParseInt(r.Path[strings.LastIndexByte(r.Path, '/')+1:], 10, 64)
			out = append(out, id)
		}
	}
	return out
}

// JobState returns a job's state as the API would report it now.
func (s *Server) JobState(uid int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[uid]
	if !ok {
		return ""
	}
	s.expire(j)
	return j.state
}

// Running returns the uids of jobs holding nodes (running, not expired).
func (s *Server) Running() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for id, j := range s.jobs {
		s.expire(j)
		if j.state == "running" {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body := make([]byte, 0)
	if r.Body != nil {
		var err error
		if body, err = readAll(r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	s.handle(rec, r, body)
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body, Status: rec.status})
	s.mu.Unlock()
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request, body []byte) {
	s.mu.Lock()
	if len(s.throttle) > 0 {
		t := s.throttle[0]
		s.throttle = s.throttle[1:]
		s.mu.Unlock()
		w.Header().Set("Retry-After", t.after)
		writeJSON(w, t.status, map[string]any{"code": t.status, "message": "Too many requests, slow down"})
		return
	}
	s.mu.Unlock()
	// With no user the stand-in is the API as seen from inside the
	// testbed (a frontend or a node): no authentication.
	if u, p, ok := r.BasicAuth(); s.User != "" && (!ok || u != s.User || p != s.Password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Grid'5000"`)
		writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 401, "message": "Authentication required"})
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// Paths are relative to the API root: the stand-in serves /stable/… too.
	if len(parts) > 0 && parts[0] == "stable" {
		parts = parts[1:]
	}
	switch {
	case len(parts) == 3 && parts[0] == "sites" && parts[2] == "jobs" && r.Method == http.MethodPost:
		s.submit(w, parts[1], body)
	case len(parts) == 3 && parts[0] == "sites" && parts[2] == "jobs" && r.Method == http.MethodGet:
		s.list(w, parts[1], r.URL.Query())
	case len(parts) == 4 && parts[0] == "sites" && parts[2] == "jobs":
		uid, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Not found"})
			return
		}
		s.job(w, r.Method, parts[1], uid)
	case len(parts) == 3 && parts[0] == "sites" && parts[2] == "metrics" && r.Method == http.MethodGet:
		s.metrics(w, r)
	case len(parts) == 6 && parts[0] == "sites" && parts[2] == "clusters" && parts[4] == "nodes" && r.Method == http.MethodGet:
		s.mu.Lock()
		ref, ok := s.refs[parts[5]]
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Node " + parts[5] + " not found"})
			return
		}
		writeJSON(w, http.StatusOK, ref)
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Not found: " + r.URL.Path})
	}
}

// submit parses the resources as OAR does for the forms GreenFlow sends:
// {cluster='X'}/nodes=N,walltime=H:MM[:SS].
func (s *Server) submit(w http.ResponseWriter, site string, body []byte) {
	var req struct {
		Resources string   `json:"resources"`
		Command   string   `json:"command"`
		Types     []string `json:"types"`
		Name      string   `json:"name"`
		Queue     string   `json:"queue"`
		Project   string   `json:"project"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "Invalid JSON: " + err.Error()})
		return
	}
	cluster, n, wall, err := parseResources(req.Resources)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "Bad resources: " + err.Error()})
		return
	}
	if req.Command == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "You must give a command or a reservation"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.nodes[cluster]) < n {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": fmt.Sprintf("There are not enough resources for your request: %d nodes of %s asked, %d exist", n, cluster, len(s.nodes[cluster]))})
		return
	}
	uid := s.nextUID
	s.nextUID++
	sc := Script{}
	if len(s.scripts) > 0 {
		sc, s.scripts = s.scripts[0], s.scripts[1:]
	}
	j := &job{site: site, script: sc, state: "waiting", wall: wall, nodes: slices.Clone(s.nodes[cluster][:n])}
	j.Job = map[string]any{"uid": uid, "name": req.Name, "queue": orDefault(req.Queue, "default"), "types": req.Types, "project": req.Project,
		"command": req.Command, "submitted_at": s.Clock.Now().Unix(), "user": s.User}
	s.jobs[uid] = j
	w.Header().Set("Location", fmt.Sprintf("/stable/sites/%s/jobs/%d", site, uid))
	writeJSON(w, http.StatusCreated, s.view(uid, j))
}

// list answers GET /sites/{site}/jobs?user=…&state=a,b: a page of items.
func (s *Server) list(w http.ResponseWriter, site string, q map[string][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	states := map[string]bool{}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			states[st] = true
		}
	}
	items := []map[string]any{}
	ids := make([]int64, 0, len(s.jobs))
	for id := range s.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		j := s.jobs[id]
		s.expire(j)
		if j.site != site || (len(states) > 0 && !states[j.state]) {
			continue
		}
		if u := q["user"]; len(u) > 0 && u[0] != j.Job["user"] {
			continue
		}
		items = append(items, s.view(id, j))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "total": len(items), "offset": 0})
}

// job answers a GET or DELETE of job uid on site: 404 as the API does
// when it is not there.
func (s *Server) job(w http.ResponseWriter, method, site string, uid int64) {
	if method != http.MethodGet && method != http.MethodDelete {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": 405, "message": "Method not allowed"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[uid]
	if !ok || j.site != site {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": fmt.Sprintf("Couldn't find job with uid %d", uid)})
		return
	}
	if method == http.MethodGet {
		s.get(w, uid, j)
	} else {
		s.del(w, uid, j)
	}
}

// get answers GET of job j; the caller holds s.mu.
func (s *Server) get(w http.ResponseWriter, uid int64, j *job) {
	s.advance(j)
	writeJSON(w, http.StatusOK, s.view(uid, j))
}

// advance moves a job along its script, one step per poll.
func (s *Server) advance(j *job) {
	s.expire(j)
	if j.state == "terminated" || j.state == "error" || j.state == "hold" {
		return
	}
	j.polls++
	sc := j.script
	switch {
	case sc.Hold:
		j.state = "hold"
	case j.polls <= sc.Waiting:
		j.state = "waiting"
	case j.polls <= sc.Waiting+sc.Launching:
		j.state = "launching"
	case sc.Fail != "":
		j.state, j.msg = "error", sc.Fail
	case j.state != "running":
		j.state, j.start = "running", s.Clock.Now()
	}
}

// expire ends a running job whose walltime ran out, as OAR does.
func (s *Server) expire(j *job) {
	if j.state == "running" && !s.Clock.Now().Before(j.start.Add(j.wall)) {
		j.state, j.msg = "terminated", "walltime reached"
	}
}

var rawStates = map[string]string{"waiting": "Waiting", "launching": "toLaunch", "running": "Running", "hold": "Hold", "error": "toError", "terminated": "Finishing"}

func (s *Server) view(uid int64, j *job) map[string]any {
	v := map[string]any{}
	for k, x := range j.Job {
		v[k] = x
	}
	st := j.state
	if j.script.RawStates {
		st = rawStates[st]
	}
	v["state"] = st
	v["walltime"] = int64(j.wall / time.Second)
	v["links"] = []map[string]string{{"rel": "self", "href": fmt.Sprintf("/stable/sites/%s/jobs/%d", j.site, uid)}}
	if j.msg != "" {
		v["message"] = j.msg
	}
	switch j.state {
	case "waiting":
		v["scheduled_at"] = s.Clock.Now().Add(time.Duration(j.script.Waiting-j.polls+1) * time.Minute).Unix()
		v["assigned_nodes"] = []string{}
	case "running", "terminated":
		if !j.start.IsZero() {
			v["started_at"] = j.start.Unix()
			v["assigned_nodes"] = j.nodes
		}
	default:
		v["assigned_nodes"] = []string{}
	}
	return v
}

// del answers DELETE of job j; the caller holds s.mu.
func (s *Server) del(w http.ResponseWriter, uid int64, j *job) {
	s.expire(j)
	if j.state != "error" {
		j.state, j.msg = "terminated", "deleted by the user"
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"uid": uid, "status": "Delete request registered", "oardel_output": fmt.Sprintf("Deleting the job = %d ...REGISTERED.", uid)})
}

// metrics answers Kwollect queries: 1 Hz values of the nodes' power
// functions within [start_time, end_time] and not newer than now − Lag.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	start, err1 := time.Parse(time.RFC3339, q.Get("start_time"))
	end, err2 := time.Parse(time.RFC3339, q.Get("end_time"))
	if err1 != nil || err2 != nil || q.Get("nodes") == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": 400, "message": "nodes, start_time and end_time are required (ISO 8601)"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if avail := s.Clock.Now().Add(-s.Lag); end.After(avail) {
		end = avail
	}
	items := []map[string]any{}
	for _, metric := range strings.Split(q.Get("metrics"), ",") {
		series, step := s.power, time.Second
		switch metric {
		case "wattmetre_power_watt":
		case "bmc_node_power_watt":
			series, step = s.bmc, 5*time.Second
		default:
			continue
		}
		for _, node := range strings.Split(q.Get("nodes"), ",") {
			pw, ok := series[node]
			if !ok {
				continue
			}
			for t := start.Truncate(step); !t.After(end); t = t.Add(step) {
				if t.Before(start) || s.inGap(node, t) {
					continue
				}
				var v any = math.Round(pw(t)*100) / 100
				if slices.ContainsFunc(s.nulls[node], t.Equal) {
					v = nil
				}
				ts := t.Format("2006-01-02T15:04:05-07:00")
				if s.corrupt {
					ts = t.Format(time.ANSIC)
				}
				items = append(items, map[string]any{"timestamp": ts, "device_id": node, "metric_id": metric,
					"value": v, "labels": map[string]string{"_device_orig": "wattmetre1-port" + node[strings.LastIndexByte(node, '-')+1:]}})
			}
		}
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Server) inGap(node string, t time.Time) bool {
	for _, g := range s.gaps[node] {
		if !t.Before(g[0]) && t.Before(g[1]) {
			return true
		}
	}
	return false
}

// parseResources reads {cluster='X'}/nodes=N,walltime=H:MM[:SS].
func parseResources(res string) (cluster string, nodes int, wall time.Duration, err error) {
	i := strings.Index(res, "cluster='")
	if i < 0 {
		return "", 0, 0, fmt.Errorf("%q: no {cluster='…'}", res)
	}
	rest := res[i+len("cluster='"):]
	j := strings.IndexByte(rest, '\'')
	if j < 0 {
		return "", 0, 0, fmt.Errorf("%q: unterminated cluster name", res)
	}
	cluster = rest[:j]
	for _, kv := range strings.Split(rest[strings.IndexByte(rest, '/')+1:], ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "nodes":
			if nodes, err = strconv.Atoi(v); err != nil || nodes < 1 {
				return "", 0, 0, fmt.Errorf("%q: nodes=%s", res, v)
			}
		case "walltime":
			f := strings.Split(v, ":")
			var hms [3]int
			for n, x := range f {
				if n > 2 {
					return "", 0, 0, fmt.Errorf("%q: walltime %s", res, v)
				}
				if hms[n], err = strconv.Atoi(x); err != nil {
					return "", 0, 0, fmt.Errorf("%q: walltime %s", res, v)
				}
			}
			wall = time.Duration(hms[0])*time.Hour + time.Duration(hms[1])*time.Minute + time.Duration(hms[2])*time.Second
		}
	}
	if nodes == 0 || wall == 0 {
		return "", 0, 0, fmt.Errorf("%q: nodes and walltime required", res)
	}
	return cluster, nodes, wall, nil
}

func shortName(n string) string {
	if i := strings.IndexByte(n, '.'); i > 0 {
		return n[:i]
	}
	return n
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) { r.status = code; r.ResponseWriter.WriteHeader(code) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func readAll(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	return io.ReadAll(io.LimitReader(r.Body, 1<<20))
}
