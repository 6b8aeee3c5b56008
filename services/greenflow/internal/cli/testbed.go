package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/cluster"
	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/pkg/testbed"
	"github.com/greenflow/greenflow/pkg/testbed/clusterdeploy"
	"github.com/greenflow/greenflow/pkg/testbed/g5k"
)

const testbedUsage = `greenflow testbed — reserve a testbed, make it a k3s cluster, deploy the platform, release it

Usage:
  greenflow testbed plan   -f TESTBED.yaml [--images DIR] [--strimzi-installed]   what would be reserved, for how long, and every command; touches nothing
  greenflow testbed up     -f TESTBED.yaml [--kubeconfig-out FILE] [--api-server URL | --no-tunnel | --tunnel-listen ADDR] [--detach] [--no-deploy]
                           [--images DIR] [--strimzi-installed]
  greenflow testbed status                                  reservations recorded, and what the testbed says of each
  greenflow testbed down   NAME                             release a reservation

up, status and down keep reservations in NATS (--nats-url, --nats-nkey-file, else the dev stack's)
and talk to the Grid'5000 API with --g5k-user and --g5k-password-file (a file, never a flag value;
neither from inside the testbed). up holds the reservation until Ctrl-C or its release margin
before the walltime, then releases it; with --detach it leaves it recorded for 'down'.
With ssh.gateway set (outside Grid'5000), up reaches the cluster's API through an SSH tunnel of
the gateway (127.0.0.1:PORT, the kubeconfig verifying the control node's name); the tunnel
lives as long as up runs, and status says whether it is up.
Before deploying, up installs Strimzi's operator on the control node (unless --strimzi-installed)
and streams the images of --images (make images' tarballs, default .cache/images) into every
node's k3s containerd; without that directory the image references must be pullable.
`

func runTestbed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, testbedUsage)
		return errors.New("a subcommand is required: plan, up, status or down")
	}
	switch args[0] {
	case "plan":
		return runTestbedPlan(args[1:], stdout, stderr)
	case "up":
		return runTestbedUp(ctx, args[1:], stdout, stderr)
	case "status":
		return runTestbedStatus(ctx, args[1:], stdout, stderr)
	case "down":
		return runTestbedDown(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, testbedUsage)
		return nil
	}
	return fmt.Errorf("unknown subcommand %q: expected plan, up, status or down", args[0])
}

func readTestbedSpec(path string) (testbed.Spec, error) {
	if path == "" {
		return testbed.Spec{}, errors.New("-f: a testbed spec file is required")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return testbed.Spec{}, err
	}
	s, err := testbed.ParseSpec(data)
	if err != nil {
		return testbed.Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func runTestbedPlan(args []string, stdout, stderr io.Writer) error {
	fs, pf := newFlagSet[platformFlags]("testbed plan", stderr)
	s, err := pf.parse(fs, args)
	if err != nil {
		return err
	}
	images, imagesErr := pf.images()
	if err := writePlan(stdout, s, *pf, images, imagesErr); err != nil {
		return err
	}
	return imagesErr
}

// platformFlags are plan's and up's: the testbed spec, and what up puts on
// a fresh k3s before deploying.
type platformFlags struct {
	file             string
	imagesDir        string
	strimziInstalled bool
}

func (f *platformFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.file, "f", "", "testbed spec (YAML, a testbed: section)")
	fs.StringVar(&f.imagesDir, "images", ".cache/images", "directory of `make images`' OCI tarballs, imported on every node; "+
		"absent: the manifests' image references must be pullable by the nodes")
	fs.BoolVar(&f.strimziInstalled, "strimzi-installed", false, "the cluster already has Strimzi's operator: do not install it")
}

// parse parses the command line and reads the testbed spec of -f.
func (f *platformFlags) parse(fs *flag.FlagSet, args []string) (testbed.Spec, error) {
	if err := fs.Parse(args); err != nil {
		return testbed.Spec{}, err
	}
	return readTestbedSpec(f.file)
}

// images reads the images directory: none (nil, nil) when it does not
// exist.
func (f *platformFlags) images() ([]testbed.Image, error) {
	if _, err := os.Stat(f.imagesDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	imgs, err := testbed.ReadImages(f.imagesDir)
	if err != nil {
		return nil, fmt.Errorf("--images: %w", err)
	}
	return imgs, nil
}

// writePlan prints what up would do, with placeholder host names (the
// testbed assigns the nodes) and the token as what it is, never a value.
func writePlan(w io.Writer, s testbed.Spec, pf platformFlags, images []testbed.Image, imagesErr error) error {
	if err := planReservation(w, s); err != nil {
		return err
	}
	nodes := plannedNodes(s)
	fmt.Fprintf(w, "\nNodes (assigned in name order): ")
	for i, n := range nodes {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %s=%s", n.Host, testbed.RoleLabel, s.Pool(n.Role))
	}
	// The key is checked here as up checks it before reserving: a key
	// that cannot be used costs no reservation.
	_, key, keyErr := testbed.LoadKey(s.SSH.Key)
	if keyErr == nil {
		key = s.SSH.Key + " (" + key + ")"
	} else {
		key = s.SSH.Key + " (UNUSABLE, see below)"
	}
	if err := planBootstrap(w, s, pf, nodes, key); err != nil {
		return err
	}
	planImages(w, s, pf, images, imagesErr, len(nodes))
	planHandOver(w, s, nodes)
	fmt.Fprintf(w, "Release: DELETE %s/sites/%s/jobs/<uid> at the end, on failure, on Ctrl-C, and at the release margin\n", g5k.DefaultURL, s.Site)
	if keyErr != nil {
		return fmt.Errorf("up would stop before reserving: %w", keyErr)
	}
	return nil
}

// planReservation prints the checks before reserving and the reservation
// request.
func planReservation(w io.Writer, s testbed.Spec) error {
	req, err := (&testbed.Grid5000{}).Plan(s)
	if err != nil {
		return err
	}
	body, err := json.MarshalIndent(req.Body, "  ", "  ")
	if err != nil {
		return err
	}
	wall, margin := time.Duration(s.Walltime), time.Duration(s.ReleaseMargin)
	if s.SSH.Gateway != "" {
		fmt.Fprintf(w, "Before reserving: read the SSH key and connect to %s@%s with it (TCP and SSH handshake)\n", s.SSH.GatewayUser, s.SSH.Gateway)
	} else {
		fmt.Fprintln(w, "Before reserving: read the SSH key")
	}
	fmt.Fprintf(w, "Reserve on %s (%s): %d nodes of %s/%s for %s; released %s before the walltime (usable %s)\n",
		s.Backend, s.Name, s.Total(), s.Site, s.Cluster, wall, margin, wall-margin)
	fmt.Fprintf(w, "\n%s %s\n  %s\n", req.Method, req.URL, body)
	fmt.Fprintf(w, "\nthen poll GET %s/sites/%s/jobs/<uid> (back-off %s up to %s) until running; record it in NATS KV %s\n",
		g5k.DefaultURL, s.Site, g5k.DefaultBackoff.First, g5k.DefaultBackoff.Max, bus.BucketTestbed)
	return nil
}

// plannedNodes are the spec's nodes with placeholder host names
// (<role-N>), in the order the testbed's nodes are assigned.
func plannedNodes(s testbed.Spec) []testbed.Node {
	nodes := make([]testbed.Node, 0, s.Total())
	for _, r := range testbed.Roles {
		for i := range s.Nodes[r] {
			nodes = append(nodes, testbed.Node{Host: fmt.Sprintf("<%s-%d>", r, i+1), Role: r})
		}
	}
	return nodes
}

// planBootstrap prints the SSH steps that make the nodes a cluster, then
// Strimzi's install.
func planBootstrap(w io.Writer, s testbed.Spec, pf platformFlags, nodes []testbed.Node, key string) error {
	via := "directly"
	if s.SSH.Gateway != "" {
		via = fmt.Sprintf("through %s@%s", s.SSH.GatewayUser, s.SSH.Gateway)
	}
	fmt.Fprintf(w, "\n\nSSH as %s with %s, %s:\n", s.SSH.User, key, via)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, st := range testbed.BootstrapPlan(s, nodes, "<k3s token from the control node>") {
		line := st.Cmd
		if st.Stdin != "" {
			line += "    (stdin: " + st.Stdin + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", st.Host, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if pf.strimziInstalled {
		fmt.Fprintln(w, "\nStrimzi's operator: already installed (--strimzi-installed), not installed")
		return nil
	}
	fmt.Fprintf(w, "\nThen Strimzi's operator (%s) on the control node:\n", testbed.StrimziInstallURL)
	for _, st := range testbed.StrimziPlan(s, nodes[0].Host) {
		line := st.Cmd
		if st.Stdin != "" {
			line += "    (stdin: " + strings.ReplaceAll(strings.TrimSpace(st.Stdin), "\n", "; ") + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", st.Host, line)
	}
	return tw.Flush()
}

// planImages prints which image tarballs would be copied to the nodes.
func planImages(w io.Writer, s testbed.Spec, pf platformFlags, images []testbed.Image, imagesErr error, nodes int) {
	switch {
	case imagesErr != nil:
		fmt.Fprintf(w, "\nImages: UNUSABLE (%v)\n", imagesErr)
	case len(images) == 0:
		fmt.Fprintf(w, "\nImages: no directory %s (--images): none copied; the manifests' image references (greenflow/<service>) must be pullable by the nodes\n", pf.imagesDir)
	default:
		var total int64
		for _, img := range images {
			total += img.Size
		}
		fmt.Fprintf(w, "\nImages: %d tarball(s) from %s, %d MB, streamed over SSH to each of the %d nodes (%d MB in all) into: %s\n",
			len(images), pf.imagesDir, total>>20, nodes, (total*int64(nodes))>>20, testbed.ImportCommand(s))
		for _, img := range images {
			fmt.Fprintf(w, "  %s  %s (%d MB); the manifests use it, imagePullPolicy IfNotPresent\n", filepath.Base(img.File), img.Ref, img.Size>>20)
		}
	}
}

// planHandOver prints how the cluster is reached and what the platform is
// handed before it is deployed.
func planHandOver(w io.Writer, s testbed.Spec, nodes []testbed.Node) {
	if s.SSH.Gateway != "" {
		fmt.Fprintf(w, "\nCluster API from here: an SSH tunnel 127.0.0.1:<port> -> %s:%d through %s (as ssh -N -L <port>:%s:%d %s@%s), open while up runs\n",
			nodes[0].Host, testbed.K3sAPIPort, s.SSH.Gateway, nodes[0].Host, testbed.K3sAPIPort, s.SSH.GatewayUser, s.SSH.Gateway)
		fmt.Fprintf(w, "Kubeconfig: %s with its server rewritten to https://127.0.0.1:<port>, tls-server-name %s\n", testbed.K3sKubeconfigPath, nodes[0].Host)
	} else {
		fmt.Fprintf(w, "\nKubeconfig: %s with its server rewritten to https://%s:6443\n", testbed.K3sKubeconfigPath, nodes[0].Host)
	}
	fmt.Fprintf(w, "Once the nodes are Ready and before deploying, hand the reservation to the platform: ConfigMap %s/%s (%s), recorded by the scheduler in each experiment's provenance\n",
		testbed.ProvenanceNamespace, testbed.ProvenanceConfigMap, testbed.ProvenanceKey)
	var sources []string
	for _, n := range nodes {
		if n.Role == testbed.RoleSUT {
			sources = append(sources, testbed.SourcesKey(n.Host))
		}
	}
	fmt.Fprintf(w, "and each collector its node's sources: ConfigMap %s/%s (%s: the local meter and the node's wattmeter from Kwollect on %s)\n",
		testbed.CollectorNamespace, testbed.SourcesConfigMap, strings.Join(sources, ", "), s.Site)
	fmt.Fprintf(w, "Resolve the API on %s (%s) for the collectors' HTTPS egress to it: NetworkPolicy %s/%s\n",
		nodes[0].Host, testbed.ResolveCommand("api.grid5000.fr"), testbed.CollectorNamespace, testbed.KwollectPolicy)
	fmt.Fprintf(w, "Wait until every node is Ready with its %s label, then deploy: greenflow cluster up --kubeconfig FILE --overlay testbed, scaled to the nodes:\n", testbed.RoleLabel)
	for _, l := range s.Placement() {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

// testbedFlags are what up, status and down need besides the spec.
type testbedFlags struct {
	conn         connFlags
	apiURL       string
	user, pwFile string
}

func (f *testbedFlags) register(fs *flag.FlagSet) {
	f.conn.register(fs)
	fs.StringVar(&f.apiURL, "g5k-api", g5k.DefaultURL, "Grid'5000 API root")
	fs.StringVar(&f.user, "g5k-user", os.Getenv("USER"), "Grid'5000 login (basic auth from outside the testbed)")
	fs.StringVar(&f.pwFile, "g5k-password-file", "", "file holding the Grid'5000 password (none from inside the testbed)")
}

func (f *testbedFlags) manager(ctx context.Context, logger *zap.Logger) (*testbed.Manager, *testbed.Grid5000, func(), error) {
	if err := f.conn.resolve(true); err != nil {
		return nil, nil, nil, err
	}
	pw := ""
	if f.pwFile != "" {
		b, err := os.ReadFile(f.pwFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--g5k-password-file: %w", err)
		}
		pw = strings.TrimSpace(string(b))
	}
	user := f.user
	if pw == "" {
		user = "" // inside the testbed: no auth
	}
	c, err := g5k.New(g5k.Config{URL: f.apiURL, User: user, Password: pw}, g5k.Deps{})
	if err != nil {
		return nil, nil, nil, err
	}
	opts, err := f.conn.natsOptions(string(events.ServiceCLI))
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := bus.Connect(ctx, f.conn.natsURL, string(events.ServiceCLI), logger, nil, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	kv, err := b.KV(ctx, bus.BucketTestbed)
	if err != nil {
		b.Close()
		return nil, nil, nil, err
	}
	be := &testbed.Grid5000{C: c, User: f.user}
	m := testbed.NewManager(testbed.Config{Holder: holderPrefix() + strconv.Itoa(os.Getpid())}, testbed.Deps{KV: kv, Backend: be, Logger: logger})
	return m, be, b.Close, nil
}

// holderPrefix names this machine's greenflow processes as holders:
// greenflow@<host>/<pid>.
func holderPrefix() string {
	host, _ := os.Hostname()
	return "greenflow@" + host + "/"
}

// deadHolderHere selects reservations held by a greenflow process of this
// machine that is no longer running.
func deadHolderHere(r testbed.Reservation) bool {
	pid, err := strconv.Atoi(strings.TrimPrefix(r.Holder, holderPrefix()))
	if err != nil || !strings.HasPrefix(r.Holder, holderPrefix()) || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

func runTestbedUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newFlagSet[testbedFlags]("testbed up", stderr)
	out := fs.String("kubeconfig-out", "kubeconfig-testbed.yaml", "where the cluster's kubeconfig is written (mode 0600)")
	detach := fs.Bool("detach", false, "leave the reservation running when up is done (release it with 'greenflow testbed down')")
	noDeploy := fs.Bool("no-deploy", false, "stop after k3s: do not deploy the platform")
	apiServer := fs.String("api-server", "", "the cluster's API as this machine reaches it, with no tunnel (default: with ssh.gateway set, "+
		"a tunnel through it; else https://<control node>:6443, reachable inside Grid'5000)")
	noTunnel := fs.Bool("no-tunnel", false, "with ssh.gateway set, reach the API at https://<control node>:6443 instead of through a tunnel (e.g. over the Grid'5000 VPN)")
	tunnelListen := fs.String("tunnel-listen", "127.0.0.1:0", "the tunnel's local address (port 0: any free port)")
	var pf platformFlags
	pf.register(fs)
	s, err := pf.parse(fs, args)
	if err != nil {
		return err
	}
	images, err := pf.images()
	if err != nil {
		return err
	}
	if len(images) == 0 && !*noDeploy {
		fmt.Fprintf(stdout, "no images directory %s (--images): the manifests' image references (greenflow/<service>) must be pullable by the nodes\n", pf.imagesDir)
	}
	logger, err := zap.NewProduction()
	if err != nil {
		return err
	}
	m, _, closeBus, err := f.manager(ctx, logger)
	if err != nil {
		return err
	}
	defer closeBus()
	// What a dead 'up' on this machine left behind is released before
	// asking again; other holders' reservations are theirs ('status' shows
	// them, 'down' releases one).
	if _, err := m.ReconcileOnly(ctx, deadHolderHere, nil); err != nil {
		return fmt.Errorf("reconcile earlier reservations: %w", err)
	}
	// The collectors read the wattmeters from the same API root, from
	// inside the testbed (no credentials).
	p := &testbed.Platform{Manager: m, Waiter: testbed.KubeNodeWaiter{}, Logger: logger, KwollectURL: f.apiURL,
		Runner: func(s testbed.Spec) (testbed.Runner, error) {
			return testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Logger: logger})
		}}
	if !*noDeploy {
		p.Strimzi, p.Images = !pf.strimziInstalled, images
		p.Deployer = clusterUp{kubeconfig: *out, images: images, stdout: stdout, stderr: stderr}
	}
	if *apiServer != "" {
		p.APIServer = func(string) string { return *apiServer }
	}
	// From outside the testbed the control node's API is reachable only
	// through the gateway: a tunnel, open as long as this command runs.
	var tunnel *testbed.GatewayTunnel
	if s.SSH.Gateway != "" && *apiServer == "" && !*noTunnel {
		tunnel = &testbed.GatewayTunnel{Manager: m, Listen: *tunnelListen, Logger: logger,
			Runner: func(s testbed.Spec) (*testbed.SSHRunner, error) {
				return testbed.NewSSHRunner(s.SSH, testbed.SSHDeps{Logger: logger})
			}}
		p.Connect = tunnel.Connect
		defer tunnel.Close()
	}
	progress := func(why string) { fmt.Fprintln(stdout, why) }
	r, kc, err := p.Up(ctx, s, progress)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, kc, 0o600); err != nil {
		return errors.Join(err, m.Release(ctx, r.Name, "could not write the kubeconfig"))
	}
	fmt.Fprintf(stdout, "testbed %s up: %s, %d nodes until %s (released at %s); kubeconfig %s\n", r.Name, r.ID, len(r.Nodes),
		r.EndsAt.Format(time.RFC3339), r.ReleaseBy.Format(time.RFC3339), *out)
	if tunnel != nil {
		control := r.Hosts(testbed.RoleControl)[0]
		_, port, _ := strings.Cut(tunnel.Addr(), ":")
		fmt.Fprintf(stdout, "cluster API: https://%s through an SSH tunnel to %s:%d via %s, open while this command runs\n",
			tunnel.Addr(), control, testbed.K3sAPIPort, s.SSH.Gateway)
		if *detach {
			fmt.Fprintf(stdout, "the tunnel closes now; to use the kubeconfig, open it again: ssh -N -L %s:%s:%d %s@%s\n", port, control,
				testbed.K3sAPIPort, s.SSH.GatewayUser, s.SSH.Gateway)
		}
	}
	if *detach {
		return nil
	}
	fmt.Fprintln(stdout, "holding it: Ctrl-C releases it")
	err = m.Hold(ctx, r, func(ctx context.Context, _ testbed.Reservation) error { <-ctx.Done(); return nil })
	// Ctrl-C and the release margin are how up ends: what matters is that
	// the reservation was released.
	if got, gerr := m.Get(context.WithoutCancel(ctx), r.Name); gerr == nil && got.Phase == testbed.PhaseReleased {
		fmt.Fprintf(stdout, "testbed %s released (%s)\n", r.Name, got.Released)
		return nil
	}
	return err
}

// clusterUp deploys the platform as 'greenflow cluster up --overlay
// testbed' does (pkg/cluster, in process) on the kubeconfig the bootstrap
// made; the credentials are kept per reservation.
type clusterUp struct {
	kubeconfig     string
	images         []testbed.Image // imported on the nodes: the manifests use them
	stdout, stderr io.Writer
}

func (c clusterUp) Up(ctx context.Context, kubeconfig []byte, r testbed.Reservation) error {
	if err := os.WriteFile(c.kubeconfig, kubeconfig, 0o600); err != nil {
		return err
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	secrets := filepath.Join(dir, "greenflow", "cluster-testbed-"+r.Name)
	var comps []cluster.Component
	err = clusterdeploy.Deployer{SecretsDir: secrets, Images: c.images,
		Progress: func(s string) { fmt.Fprintln(c.stderr, s) },
		Deployed: func(cs []cluster.Component) { comps = cs }}.Up(ctx, kubeconfig, r)
	if err != nil {
		return err
	}
	printComponents(c.stdout, comps)
	printReach(c.stdout, "testbed", secrets, "kubectl --kubeconfig "+c.kubeconfig)
	return nil
}

func runTestbedStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newFlagSet[testbedFlags]("testbed status", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, be, closeBus, err := f.manager(ctx, zap.NewNop())
	if err != nil {
		return err
	}
	defer closeBus()
	all, err := m.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tPHASE\tTESTBED SAYS\tNODES\tRELEASE BY\tHOLDER\tAPI TUNNEL")
	// What the testbed could not say makes the exit status non-zero: a
	// script reading it must not take a refused password for "all fine".
	var apiErrs []error
	for _, r := range all {
		says := "-"
		if r.ID != "" && r.Phase != testbed.PhaseReleased {
			if st, err := be.Status(ctx, r.Spec, r.ID); err != nil {
				says = "error: " + err.Error()
				apiErrs = append(apiErrs, fmt.Errorf("%s: %w", r.Name, err))
			} else {
				says = st.State
			}
		}
		rel := "-"
		if !r.ReleaseBy.IsZero() {
			rel = r.ReleaseBy.Format(time.RFC3339)
		}
		tun := "-"
		if r.Tunnel != "" && r.Phase != testbed.PhaseReleased {
			// Recorded by the holder's up; up if something accepts there.
			if err := testbed.TunnelUp(r.Tunnel, time.Second); err != nil {
				tun = "down (" + r.Tunnel + ": " + err.Error() + ")"
			} else {
				tun = "up at " + r.Tunnel
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Name, r.ID, r.Phase, says, len(r.Nodes), rel, r.Holder, tun)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(apiErrs) > 0 {
		why := ""
		var ae *g5k.APIError
		if errors.As(apiErrs[0], &ae) && (ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
			why = " (the API refused the credentials: check --g5k-user and --g5k-password-file)"
		}
		return fmt.Errorf("the testbed's API could not say the state of %d reservation(s)%s: %w", len(apiErrs), why, errors.Join(apiErrs...))
	}
	return nil
}

func runTestbedDown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newFlagSet[testbedFlags]("testbed down", stderr)
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("down takes the reservation's name (see 'greenflow testbed status')")
	}
	m, _, closeBus, err := f.manager(ctx, zap.NewNop())
	if err != nil {
		return err
	}
	defer closeBus()
	if err := m.Release(ctx, rest[0], "greenflow testbed down"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "testbed %s released\n", rest[0])
	return nil
}
