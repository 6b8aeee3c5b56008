package testbed

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/greenflow/greenflow/pkg/testbed/g5k"
)

// Grid5000 is the Backend of Grid'5000 bare metal (OAR jobs).
type Grid5000 struct {
	C       *g5k.Client
	User    string // whose jobs Find lists
	Backoff g5k.Backoff
}

var _ Backend = (*Grid5000)(nil)

// JobRequest is the OAR submission for s: every node of the cluster in one
// job, a command that outlives the walltime, and allow_classic_ssh so the
// nodes take plain SSH.
func JobRequest(s Spec) g5k.JobRequest {
	types := slices.Clone(s.Types)
	if !slices.Contains(types, "allow_classic_ssh") {
		types = append(types, "allow_classic_ssh")
	}
	return g5k.JobRequest{
		Resources: fmt.Sprintf("{cluster='%s'}/nodes=%d,walltime=%s", s.Cluster, s.Total(), OAR(time.Duration(s.Walltime))),
		Command:   "sleep infinity", Types: types, Name: s.JobName(), Queue: s.Queue, Project: s.Project,
	}
}

// Plan implements Backend.
func (g *Grid5000) Plan(s Spec) (Request, error) {
	url := g5k.DefaultURL
	return Request{Method: http.MethodPost, URL: url + "/sites/" + s.Site + "/jobs", Body: JobRequest(s)}, nil
}

// Submit implements Backend.
func (g *Grid5000) Submit(ctx context.Context, s Spec) (string, error) {
	j, err := g.C.Submit(ctx, s.Site, JobRequest(s))
	if err != nil {
		return "", err
	}
	return jobID(s.Site, j.UID), nil
}

// Find implements Backend: the user's live jobs on the site named s's job.
func (g *Grid5000) Find(ctx context.Context, s Spec) (string, bool, error) {
	jobs, err := g.C.Jobs(ctx, s.Site, g.User)
	if err != nil {
		return "", false, err
	}
	for _, j := range jobs {
		if j.Name == s.JobName() && !j.State().Final() {
			return jobID(s.Site, j.UID), true, nil
		}
	}
	return "", false, nil
}

// Wait implements Backend.
func (g *Grid5000) Wait(ctx context.Context, s Spec, id string, progress func(string)) (Allocation, error) {
	site, uid, err := parseJobID(id)
	if err != nil {
		return Allocation{}, err
	}
	j, err := g.C.WaitRunning(ctx, site, uid, g.Backoff, func(_ g5k.Job, why string) {
		if progress != nil {
			progress(why)
		}
	})
	if err != nil {
		return Allocation{}, err
	}
	hosts := slices.Clone(j.AssignedNodes)
	slices.Sort(hosts)
	return Allocation{Hosts: hosts, StartedAt: time.Unix(j.StartedAt, 0).UTC(), EndsAt: j.Ends().UTC()}, nil
}

// Status implements Backend.
func (g *Grid5000) Status(ctx context.Context, s Spec, id string) (Status, error) {
	site, uid, err := parseJobID(id)
	if err != nil {
		return Status{}, err
	}
	j, err := g.C.Job(ctx, site, uid)
	if g5k.IsNotFound(err) {
		return Status{State: "unknown to the API"}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return Status{Active: !j.State().Final(), State: j.RawState, EndsAt: j.Ends().UTC()}, nil
}

// Release implements Backend.
func (g *Grid5000) Release(ctx context.Context, s Spec, id string) error {
	site, uid, err := parseJobID(id)
	if err != nil {
		return err
	}
	return g.C.Release(ctx, site, uid)
}

// Facts implements Backend from the reference API.
func (g *Grid5000) Facts(ctx context.Context, s Spec, host string) (HostFacts, error) {
	f, err := g.C.NodeFacts(ctx, s.Site, s.Cluster, host)
	if err != nil {
		return HostFacts{}, err
	}
	return HostFacts{CPUModel: f.CPUModel, Cores: f.Cores, MemoryBytes: f.MemoryBytes, Wattmeter: f.Wattmeter, Source: "grid5000 reference api " + f.ReferenceURL}, nil
}

func jobID(site string, uid int64) string { return site + "/" + strconv.FormatInt(uid, 10) }

func parseJobID(id string) (string, int64, error) {
	site, u, ok := strings.Cut(id, "/")
	uid, err := strconv.ParseInt(u, 10, 64)
	if !ok || err != nil || site == "" {
		return "", 0, fmt.Errorf("grid5000 reservation id %q: expected site/uid such as lyon/1900000", id)
	}
	return site, uid, nil
}
