package cli_test

// The Grid'5000 API is g5ktest's in-process stand-in: the real testbed
// needs an account and holds machines, and CI cannot reach it.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"k8s.io/utils/clock"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/results"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/store"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
	"github.com/greenflow/greenflow/pkg/testbed/g5k/g5ktest"
	"github.com/greenflow/greenflow/pkg/testenv"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli/clitest"
	schedulerapp "github.com/greenflow/greenflow/services/scheduler/app"
)

// plan prints the reservation, its length and every command, from the
// example spec, and needs nothing running.
func TestTestbedPlan(t *testing.T) {
	// The example's key, ~/.ssh/id_ed25519, under a home of the test's.
	home := t.TempDir()
	t.Setenv("HOME", home)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	block, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), pem.EncodeToMemory(block), 0o600))
	pub, err := ssh.NewPublicKey(priv.Public())
	require.NoError(t, err)

	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main([]string{"testbed", "plan", "-f", "../../../../examples/testbed-grid5000.yaml"}, &out, &errOut), errOut.String())
	plan := out.String()
	for _, want := range []string{
		"5 nodes of lyon/taurus for 3h0m0s; released 15m0s before the walltime (usable 2h45m0s)",
		"POST https://api.grid5000.fr/stable/sites/lyon/jobs",
		`"resources": "{cluster='taurus'}/nodes=5,walltime=3:00:00"`,
		`"name": "greenflow-taurus-energy"`,
		"through YOUR_G5K_LOGIN@access.grid5000.fr",
		"Before reserving: read the SSH key and connect to YOUR_G5K_LOGIN@access.grid5000.fr with it (TCP and SSH handshake)",
		"SSH as YOUR_G5K_LOGIN with ~/.ssh/id_ed25519 (ssh-ed25519 " + ssh.FingerprintSHA256(pub) + ")",
		"<control-1>  sudo-g5k modprobe intel_rapl_common",
		"<control-1>  curl -sfL https://get.k3s.io | sudo-g5k INSTALL_K3S_EXEC='server --node-name <control-1> --node-label greenflow.dev/pool=platform",
		"<loadgen-1>  read -r K3S_TOKEN && export K3S_TOKEN && curl -sfL https://get.k3s.io | sudo-g5k K3S_URL=https://<control-1>:6443",
		"(stdin: <k3s token from the control node>)",
		"Cluster API from here: an SSH tunnel 127.0.0.1:<port> -> <control-1>:6443 through access.grid5000.fr",
		"with its server rewritten to https://127.0.0.1:<port>, tls-server-name <control-1>",
		"--tls-san <control-1>",
		"hand the reservation to the platform: ConfigMap greenflow/greenflow-testbed",
		"and each collector its node's sources: ConfigMap greenflow-collector/greenflow-collector-sources (<sut-1>.yaml, <sut-2>.yaml: the local meter and the node's wattmeter from Kwollect on lyon)",
		"Resolve the API on <control-1> (getent ahosts api.grid5000.fr) for the collectors' HTTPS egress to it: NetworkPolicy greenflow-collector/greenflow-collector-kwollect",
		"Release: DELETE https://api.grid5000.fr/stable/sites/lyon/jobs/<uid>",
		// The pool the k3s command labels, not the role; what the overlay
		// runs, scaled to the nodes asked.
		"Nodes (assigned in name order): <control-1> greenflow.dev/pool=platform, <sut-1> greenflow.dev/pool=sut",
		"Kafka: 1 KRaft node(s) on pool broker (1 node(s)), one per node; replication factor 1, min.insync.replicas 1",
		"NATS: 1 server(s) on pool platform (1 node(s)), one per node, not clustered",
		// What a fresh k3s lacks: Strimzi's operator, the images.
		"<control-1>  sudo-g5k k3s kubectl create -n kafka -f 'https://strimzi.io/install/latest?namespace=kafka'",
		"<control-1>  sudo-g5k k3s kubectl -n kafka rollout status deployment/strimzi-cluster-operator --timeout=10m",
		"Images: no directory .cache/images (--images): none copied; the manifests' image references (greenflow/<service>) must be pullable by the nodes",
	} {
		require.Contains(t, plan, want)
	}

	// With make images' tarballs: what is copied where, and how much.
	images := t.TempDir()
	writeImageTar(t, filepath.Join(images, "scheduler.tar"), "greenflow/scheduler:v7", 3<<20)
	out.Reset()
	require.Zero(t, cli.Main([]string{"testbed", "plan", "-f", "../../../../examples/testbed-grid5000.yaml", "--images", images, "--strimzi-installed"}, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "Images: 1 tarball(s) from "+images+", 3 MB, streamed over SSH to each of the 5 nodes (15 MB in all) into: sudo-g5k k3s ctr -n k8s.io images import -")
	require.Contains(t, out.String(), "scheduler.tar  greenflow/scheduler:v7 (3 MB); the manifests use it, imagePullPolicy IfNotPresent")
	require.Contains(t, out.String(), "Strimzi's operator: already installed (--strimzi-installed), not installed")
	require.NotContains(t, out.String(), "kubectl create -n kafka")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("testbed:\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1}\n  walltime: 1h\n"), 0o600))
	out.Reset()
	require.Equal(t, 1, cli.Main([]string{"testbed", "plan", "-f", bad}, &out, &errOut))
	require.Contains(t, errOut.String(), "testbed.nodes.sut: 0: expected at least 1")

	// A key up could not use: the plan says so and fails, as up would
	// before reserving.
	block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("correct horse"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), pem.EncodeToMemory(block), 0o600))
	t.Setenv("SSH_AUTH_SOCK", "")
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, cli.Main([]string{"testbed", "plan", "-f", "../../../../examples/testbed-grid5000.yaml"}, &out, &errOut))
	require.Contains(t, out.String(), "SSH as YOUR_G5K_LOGIN with ~/.ssh/id_ed25519 (UNUSABLE, see below)")
	require.Contains(t, errOut.String(), "up would stop before reserving: testbed.ssh.key ~/.ssh/id_ed25519 is passphrase-protected and GreenFlow asks no passphrase: add it to ssh-agent")
}

// reserveOnStandIn reserves four taurus nodes for walltime on the
// Grid'5000 stand-in, recorded in KV on a NATS of the test's own; it
// returns the stand-in, that NATS, the manager and the reservation.
func reserveOnStandIn(t *testing.T, name, walltime string) (*g5ktest.Server, string, *testbed.Manager, testbed.Reservation) {
	t.Helper()
	api := g5ktest.New("alice", "s3cret", clock.RealClock{}, map[string][]string{"taurus": {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr",
		"taurus-3.lyon.grid5000.fr", "taurus-4.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	natsURL := testenv.NATS(t)
	kv, err := testenv.Bus(t, natsURL, "greenflow").KV(context.Background(), bus.BucketTestbed)
	require.NoError(t, err)
	c, err := g5k.New(g5k.Config{URL: api.URL + "/stable", User: "alice", Password: "s3cret"}, g5k.Deps{})
	require.NoError(t, err)
	m := testbed.NewManager(testbed.Config{Holder: "test"}, testbed.Deps{KV: kv, Backend: &testbed.Grid5000{C: c, User: "alice",
		Backoff: g5k.Backoff{First: time.Millisecond, Max: time.Millisecond}}})
	s, err := testbed.ParseSpec([]byte(fmt.Sprintf("testbed:\n  name: %s\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1, sut: 1, broker: 1, loadgen: 1}\n  walltime: %s\n  ssh: {user: alice, sudo: sudo-g5k}\n", name, walltime)))
	require.NoError(t, err)
	r, err := m.Reserve(context.Background(), s, nil)
	require.NoError(t, err)
	return api, natsURL, m, r
}

// status lists what KV records and what the testbed says of it; down
// releases it (the stand-in sees the DELETE).
func TestTestbedStatusAndDown(t *testing.T) {
	api, natsURL, m, r := reserveOnStandIn(t, "small", "1h")

	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	flags := []string{"--state-dir", t.TempDir(), "--nats-url", natsURL, "--g5k-api", api.URL + "/stable", "--g5k-user", "alice", "--g5k-password-file", pw}
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.Regexp(t, `small\s+`+r.ID+`\s+running\s+running\s+4\s+.*\s-\n`, out.String(), "no tunnel recorded")

	// A wrong password: the table says what the API answered, and the exit
	// status is not 0.
	badPW := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(badPW, []byte("wrong\n"), 0o600))
	out.Reset()
	errOut.Reset()
	require.Equal(t, 1, cli.Main(append([]string{"testbed", "status"}, append(flags[:len(flags)-1:len(flags)-1], badPW)...), &out, &errOut))
	require.Contains(t, out.String(), "error: ")
	require.Contains(t, errOut.String(), "the testbed's API could not say the state of 1 reservation(s) (the API refused the credentials: check --g5k-user and --g5k-password-file)")

	// A name nothing recorded.
	errOut.Reset()
	require.Equal(t, 1, cli.Main(append([]string{"testbed", "down", "nosuch"}, flags...), &out, &errOut))
	require.Contains(t, errOut.String(), "no reservation named nosuch (greenflow testbed status lists them)")

	// The API tunnel of the up holding it (testbed up from outside
	// Grid'5000 records its local address): up while something listens
	// there, down once that up is gone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, m.SetTunnel(context.Background(), "small", ln.Addr().String()))
	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "up at "+ln.Addr().String())
	require.NoError(t, ln.Close())
	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "down ("+ln.Addr().String()+": ")

	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "down", "small"}, flags...), &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "testbed small released")
	require.Len(t, api.Deletes(), 1)

	out.Reset()
	require.Zero(t, cli.Main(append([]string{"testbed", "status"}, flags...), &out, &errOut), errOut.String())
	require.True(t, strings.Contains(out.String(), "released"), out.String())
}

// A platform that `greenflow testbed up` deployed records the reservation
// in every experiment it accepts, and a user finds it where they look:
// `greenflow status`, `greenflow export` (provenance.json, testbed.csv per
// run and node), the report, and ClickHouse's experiment record. The
// reservation is made against the Grid'5000 stand-in (g5ktest); the
// scheduler reads what testbed up hands over as the testbed overlay mounts
// it (the ConfigMap's reservation.json as a file: the envtest test
// TestWholeExperimentOnStandInTestbed reads the same ConfigMap back from
// the API server). Nothing answers the scheduler's provision commands:
// the runs wait, and the test cancels them.
func TestTestbedReservationInEveryExperimentsProvenance(t *testing.T) {
	t.Parallel()
	_, natsURL, _, r := reserveOnStandIn(t, "prov", "2h")
	jobID := strings.TrimPrefix(r.ID, "lyon/")

	dir := t.TempDir()
	handed := filepath.Join(dir, testbed.ProvenanceKey)
	data, err := testbed.ProvenanceJSON(r)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(handed, data, 0o644))

	cfg := schedulerapp.Service.Default()
	cfg.Brokers = []string{"127.0.0.1:9"}
	cfg.TestbedReservationFile = handed
	dsn := testenv.ClickHouseDSN(t)
	st := testenv.StoreOn(t, dsn)
	apiURL := serveScheduler(t, natsURL, cfg, st)

	specFile := waitingSpec(t, dir, "on-testbed")
	conn := []string{"--api-url", apiURL, "--state-dir", dir}
	conn = append(conn, "--token", adminToken(t, natsURL, conn))
	run := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := cli.Main(args, &out, &errOut)
		return out.String() + errOut.String(), code
	}
	testenv.Eventually(t, 30*time.Second, "the scheduler answers", func() bool { _, code := run(append([]string{"list"}, conn...)...); return code == 0 })
	submit := func() string {
		out, code := run(append([]string{"submit", "-f", specFile}, conn...)...)
		require.Zero(t, code, out)
		id := regexp.MustCompile(`submitted experiment (\S+)`).FindStringSubmatch(out)
		require.NotNil(t, id, out)
		testenv.Eventually(t, 30*time.Second, "experiment "+id[1]+" accepted", func() bool {
			out, code := run(append([]string{"status", id[1]}, conn...)...)
			return code == 0 && strings.Contains(out, "0/2 runs done") && !strings.Contains(out, ": submitted,")
		})
		return id[1]
	}
	id := submit()

	// greenflow status: the job, its time and each pool's nodes.
	out, code := run(append([]string{"status", id}, conn...)...)
	require.Zero(t, code, out)
	require.Contains(t, out, "testbed: grid5000 reservation prov, job "+jobID+" (lyon/"+jobID+") on lyon/taurus")
	require.Contains(t, out, "released by "+r.ReleaseBy.UTC().Format(time.RFC3339))
	require.Contains(t, out, "testbed pool sut: taurus-2.lyon.grid5000.fr")
	require.Contains(t, out, "testbed pool loadgen: taurus-4.lyon.grid5000.fr")

	// ClickHouse: the experiment record carries it (where Grafana and SQL
	// users read provenance).
	rec, err := st.GetExperiment(context.Background(), id)
	require.NoError(t, err)
	require.Contains(t, rec.Environment, `"job_id":"`+jobID+`"`)

	// greenflow export: provenance.json, and testbed.csv for each run.
	exp := filepath.Join(dir, "export")
	out, code = run("export", "--clickhouse-dsn", dsn, "--state-dir", dir, "--dir", exp, "--no-samples", id)
	require.Zero(t, code, out)
	raw, err := os.ReadFile(filepath.Join(exp, "provenance.json"))
	require.NoError(t, err)
	var prov results.Provenance
	require.NoError(t, json.Unmarshal(raw, &prov))
	require.NotNil(t, prov.Testbed, string(raw))
	require.Equal(t, r.ID, prov.Testbed.ID)
	require.Equal(t, jobID, prov.Testbed.JobID)
	require.Equal(t, "2h0m0s", prov.Testbed.Walltime)
	require.True(t, r.EndsAt.Equal(prov.Testbed.EndsAt))
	require.NotContains(t, string(prov.Machine), "testbed", "the reservation is not the scheduler's machine")
	// The stand-in has no reference entries: every node's facts lookup
	// failed — the wattmeter is unknown (null), not false, and missing
	// says which node and why.
	for _, n := range prov.Testbed.Nodes {
		require.Nil(t, n.Wattmeter, n.Host)
		require.NotEmpty(t, n.FactsMissing, n.Host)
	}
	require.Contains(t, string(raw), `"wattmeter": null`)
	require.Len(t, prov.Missing, 4, "one per node: %v", prov.Missing)
	require.Contains(t, prov.Missing[0], "the hardware facts of testbed node taurus-1.lyon.grid5000.fr (wattmeter, CPU, memory: unknown; the lookup failed: ")
	f, err := os.Open(filepath.Join(exp, "testbed.csv"))
	require.NoError(t, err)
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.Len(t, rows, 1+2*4, "a row per run and reserved node")
	require.Equal(t, []string{"run_id", "backend", "reservation", "reservation_id", "site", "cluster", "job_id", "walltime", "started_at", "ends_at",
		"release_by", "host", "role", "wattmeter", "run_targets"}, rows[0])
	runs := map[string]int{}
	for _, row := range rows[1:] {
		runs[row[0]]++
		require.Equal(t, []string{"grid5000", "prov", r.ID, "lyon", "taurus", jobID}, row[1:7])
		require.Equal(t, "unknown", row[13], "wattmeter of %s", row[11])
	}
	require.Len(t, runs, 2)

	// The report's provenance table.
	page := filepath.Join(dir, "report.html")
	out, code = run("report", "--clickhouse-dsn", dsn, "--state-dir", dir, "-o", page, id)
	require.Zero(t, code, out)
	html, err := os.ReadFile(page)
	require.NoError(t, err)
	require.Contains(t, string(html), "testbed pool sut")
	require.Contains(t, string(html), "taurus-2.lyon.grid5000.fr (wattmeter unknown)")

	// A hand-over that cannot be read: the experiment is accepted, and its
	// provenance names what is missing instead of leaving it out silently.
	require.NoError(t, os.Remove(handed))
	id2 := submit()
	out, code = run(append([]string{"status", id2}, conn...)...)
	require.Zero(t, code, out)
	require.NotContains(t, out, "testbed:")
	p2, err := st.Provenance(context.Background(), id2)
	require.NoError(t, err)
	require.Nil(t, p2.Testbed)
	require.Len(t, p2.Missing, 1)
	require.Contains(t, p2.Missing[0], results.TestbedUnreadableNote+"open "+handed)

	for _, e := range []string{id, id2} {
		out, code = run(append([]string{"cancel", e}, conn...)...)
		require.Zero(t, code, out)
	}
}

// serveScheduler runs a scheduler with cfg on the NATS at natsURL and st
// until the test ends, and returns its HTTP API's URL.
func serveScheduler(t *testing.T, natsURL string, cfg schedulerapp.Config, st *store.Store) string {
	t.Helper()
	mux := http.NewServeMux()
	comp, err := schedulerapp.Service.Unit(cfg).Build(svcmain.Deps{Name: "scheduler", Bus: testenv.Bus(t, natsURL, "scheduler"), Store: st,
		Logger: testenv.Logger(t), Registry: prometheus.NewRegistry(), Mux: mux})
	require.NoError(t, err)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	var g service.Group
	g.Add("scheduler", comp)
	testenv.Go(t, context.Background(), g.Run)
	return srv.URL
}

// waitingSpec writes, in dir, an experiment of two runs whose measured
// window is an hour: with no provisioner they wait, until cancelled.
func waitingSpec(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, "exp.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`apiVersion: greenflow.dev/v1alpha1
kind: Experiment
metadata: {name: `+name+`}
spec:
  workload: {sensors: 10, periodMs: 1000, format: avro}
  factors:
    - name: workload.sensors
      values: ["10", "20"]
  repetitions: 1
  phases: {baseline: 1s, warmup: 1s, measure: 1h, cooldown: 1s}
`), 0o644))
	return path
}

// adminToken writes a deployment's first admin token over NATS, as
// `greenflow token create --nats` does, and returns it.
func adminToken(t *testing.T, natsURL string, conn []string) string {
	t.Helper()
	code, out, errOut := clitest.Run(append([]string{"token", "create", "--nats", "--nats-url", natsURL, "--name", "root", "--role", "admin"}, conn...)...)
	require.Zero(t, code, errOut)
	require.NotContains(t, errOut, strings.TrimSpace(out), "the description on stderr does not repeat the token")
	return strings.TrimSpace(out)
}

// writeImageTar writes an OCI layout tarball as make images does: its
// index.json names ref; a blob of size bytes.
func writeImageTar(t *testing.T, path, ref string, size int) {
	f, err := os.Create(path)
	require.NoError(t, err)
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"blobs/sha256/0000", make([]byte, size)},
		{"index.json", []byte(`{"schemaVersion":2,"manifests":[{"annotations":{"io.containerd.image.name":"` + ref + `"}}]}`)},
	} {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data))}))
		_, err := tw.Write(e.data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	require.NoError(t, f.Close())
}

// testbed up with a key that cannot be used stops before asking the
// testbed for anything: no job, no record (the trial's job ran, then up
// found the key missing).
func TestTestbedUpConfigErrorCostsNoJob(t *testing.T) {
	api := g5ktest.New("alice", "s3cret", clock.RealClock{}, map[string][]string{"taurus": {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr",
		"taurus-3.lyon.grid5000.fr", "taurus-4.lyon.grid5000.fr"}})
	t.Cleanup(api.Close)
	natsURL := testenv.NATS(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	specFile := filepath.Join(dir, "tb.yaml")
	key := filepath.Join(dir, "id_nosuch")
	require.NoError(t, os.WriteFile(specFile, []byte("testbed:\n  name: nokey\n  site: lyon\n  cluster: taurus\n  nodes: {control: 1, sut: 1, broker: 1, loadgen: 1}\n"+
		"  walltime: 1h\n  ssh: {user: alice, sudo: sudo-g5k, key: "+key+"}\n"), 0o600))
	var out, errOut bytes.Buffer
	require.Equal(t, 1, cli.Main([]string{"testbed", "up", "-f", specFile, "--state-dir", dir, "--nats-url", natsURL, "--g5k-api", api.URL + "/stable",
		"--g5k-user", "alice", "--g5k-password-file", pw, "--kubeconfig-out", filepath.Join(dir, "kc.yaml"), "--images", filepath.Join(dir, "none")}, &out, &errOut))
	require.Contains(t, errOut.String(), "before reserving nokey: testbed.ssh.key "+key+": open "+key+": no such file or directory")
	for _, r := range api.Requests() {
		require.NotEqual(t, http.MethodPost, r.Method, "no job submitted: %s %s", r.Method, r.Path)
	}
	out.Reset()
	require.Zero(t, cli.Main([]string{"testbed", "status", "--state-dir", dir, "--nats-url", natsURL, "--g5k-api", api.URL + "/stable"}, &out, &errOut), errOut.String())
	require.NotContains(t, out.String(), "nokey", "nothing recorded")
}
