// Package testbed is the platform layer below the provisioner: it reserves
// machines on a testbed (Grid'5000 bare metal now; a cloud backend fits the
// same Backend interface), turns them into a k3s cluster, deploys the
// platform through a Deployer (deploy/'s `cluster up`), and releases them —
// at the end, on cancel, on failure, and before the reservation's walltime
// runs out.
//
// A reservation is state, not a variable: it is recorded in a NATS KV
// bucket (bus.BucketTestbed) before the backend is asked, and updated at
// each step, so a GreenFlow that dies mid-way leaves a record that the next
// one finds (Manager.Reconcile) and releases or adopts. The record (job id,
// nodes with their roles and hardware facts) is what an experiment's
// provenance carries.
package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/greenflow/greenflow/pkg/spec"
)

// Roles a node plays. The k3s node label greenflow.dev/pool carries it
// (Pool): deploy/overlays/testbed places Kafka on pool broker, the load
// generator on loadgen, the platform on platform and the system under
// test on sut, as the provisioner's placement selects sut nodes.
const (
	RoleControl  = "control"
	RoleSUT      = "sut"
	RoleBroker   = "broker"
	RoleLoadgen  = "loadgen"
	RolePlatform = "platform"
)

// Roles in the order assigned nodes are given to them.
var Roles = []string{RoleControl, RoleSUT, RoleBroker, RoleLoadgen, RolePlatform}

// RoleLabel is the node label naming a node's pool.
const RoleLabel = "greenflow.dev/pool"

// Pool is the RoleLabel value of a node of role: the role's name, except
// that the control node is in pool platform when no node is asked for the
// platform (it then runs it).
func (s Spec) Pool(role string) string {
	if role == RoleControl && s.Nodes[RolePlatform] == 0 {
		return RolePlatform
	}
	return role
}

// BackendGrid5000 is the only backend built.
const BackendGrid5000 = "grid5000"

// File is a testbed spec file: one `testbed:` section.
type File struct {
	Testbed Spec `yaml:"testbed"`
}

// Spec asks for a testbed.
type Spec struct {
	Backend string `yaml:"backend"` // grid5000
	Name    string `yaml:"name"`    // the reservation's name (job name greenflow-<name>)
	Site    string `yaml:"site"`    // lyon
	Cluster string `yaml:"cluster"` // taurus
	// Nodes per role: control exactly 1; sut, broker and loadgen at least
	// 1 (the testbed overlay places each on its pool); platform 0 or more
	// (0: the control node runs the platform).
	Nodes    map[string]int `yaml:"nodes"`
	Walltime Duration       `yaml:"walltime"`
	Queue    string         `yaml:"queue"`   // default, production, besteffort, …; "" the site's default
	Project  string         `yaml:"project"` // OAR project (production queue)
	Types    []string       `yaml:"types"`   // OAR job types; allow_classic_ssh is added
	// ReleaseMargin: release this long before the walltime runs out, so
	// the release is ours, not OAR's kill mid-run. Default 10m.
	ReleaseMargin Duration `yaml:"releaseMargin"`
	SSH           SSH      `yaml:"ssh"`
	// K3sVersion pins the k3s release the install script fetches ("" the
	// script's stable channel).
	K3sVersion string `yaml:"k3sVersion"`
}

// SSH says how to reach the nodes.
type SSH struct {
	// User on the nodes: a job without the deploy type (the only kind
	// built) gives no root login, so your Grid'5000 login — default
	// GatewayUser, with Sudo sudo-g5k — or, e.g. on nodes of your own
	// deployment, root.
	User string `yaml:"user"`
	Key  string `yaml:"key"` // private key file; default ~/.ssh/id_ed25519
	// Gateway is the access host used as a jump host from outside the
	// testbed (access.grid5000.fr), "" from inside.
	Gateway     string `yaml:"gateway"`
	GatewayUser string `yaml:"gatewayUser"` // the Grid'5000 login
	// KnownHosts file checked for the gateway and the nodes; "" trusts
	// nodes on first use (freshly deployed nodes change keys) — see README.
	KnownHosts string `yaml:"knownHosts"`
	// Sudo prefixes commands that need root when User is not root
	// (Grid'5000's standard environment: sudo-g5k).
	Sudo string `yaml:"sudo"`
}

// Duration is a time.Duration written as "2h", "90m" or OAR's "1:30"
// (hours:minutes[:seconds]).
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the Go form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

var oarTime = regexp.MustCompile(`^(\d+):([0-5]?\d)(?::([0-5]?\d))?$`)

// ParseDuration reads "2h30m" or "2:30[:00]".
func ParseDuration(s string) (time.Duration, error) {
	if m := oarTime.FindStringSubmatch(s); m != nil {
		var h, mi, se int
		fmt.Sscan(m[1], &h)
		fmt.Sscan(m[2], &mi)
		if m[3] != "" {
			fmt.Sscan(m[3], &se)
		}
		return time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(se)*time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: expected e.g. 2h, 90m or hours:minutes (2:00)", s)
	}
	return d, nil
}

// OAR writes d as OAR's walltime, hours:minutes:seconds.
func OAR(d time.Duration) string {
	s := int64(d / time.Second)
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}

// ParseSpec reads a testbed spec file, refusing unknown fields, applies
// defaults and validates it. Errors name the line and the field by its
// path in the file (testbed.walltime), never a Go type.
func ParseSpec(data []byte) (Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return Spec{}, errors.New("testbed spec: empty: expected a testbed: section (see examples/testbed-grid5000.yaml)")
	} else if err != nil {
		return Spec{}, fmt.Errorf("testbed spec: %w", err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return Spec{}, fmt.Errorf("testbed spec: line %d: a second YAML document: expected one testbed: section", more.Line)
	} else if !errors.Is(err, io.EOF) {
		return Spec{}, fmt.Errorf("testbed spec: %w", err)
	}
	if errs := checkNode(&doc, reflect.TypeOf(File{}), ""); len(errs) > 0 {
		return Spec{}, errors.Join(errs...)
	}
	var f File
	if err := doc.Decode(&f); err != nil {
		return Spec{}, fmt.Errorf("testbed spec: %w", err)
	}
	s := f.Testbed.WithDefaults()
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// WithDefaults fills what a spec may leave out.
func (s Spec) WithDefaults() Spec {
	if s.Backend == "" {
		s.Backend = BackendGrid5000
	}
	if s.ReleaseMargin == 0 {
		s.ReleaseMargin = Duration(10 * time.Minute)
	}
	if s.SSH.User == "" && s.SSH.GatewayUser != "" {
		s.SSH.User = s.SSH.GatewayUser
		if s.SSH.Sudo == "" {
			s.SSH.Sudo = "sudo-g5k"
		}
	}
	if s.SSH.Key == "" {
		s.SSH.Key = "~/.ssh/id_ed25519"
	}
	if s.Name == "" {
		s.Name = "greenflow"
	}
	return s
}

var durationType = reflect.TypeOf(Duration(0))

// checkNode compares the YAML under n with what type t reads, by the
// fields' yaml tags: an unknown field (with the known one it is closest
// to), a value of the wrong kind, a duration that does not parse — each
// with its line and its path from the file's top.
func checkNode(n *yaml.Node, t reflect.Type, path string) []error {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return checkNode(n.Content[0], t, path)
	}
	if n.Kind == yaml.AliasNode {
		return checkNode(n.Alias, t, path)
	}
	bad := func(want string) []error {
		v := n.Value
		if n.Kind != yaml.ScalarNode {
			v = map[yaml.Kind]string{yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}[n.Kind]
		}
		return []error{fmt.Errorf("testbed spec: line %d: %s: %q: expected %s", n.Line, path, v, want)}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // left out
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("a duration such as 2h, 90m or hours:minutes (2:00)")
		}
		if _, err := ParseDuration(n.Value); err != nil {
			return bad("a duration such as 2h, 90m or hours:minutes (2:00)")
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("a string")
		}
	case t.Kind() == reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return bad("a whole number")
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("a list, such as [a, b]")
		}
		var errs []error
		for i, c := range n.Content {
			errs = append(errs, checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkNode(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value)...)
		}
		return errs
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
				fields[name] = t.Field(i).Type
				names = append(names, name)
			}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("testbed spec: line %d: %s: %s", k.Line, sub, spec.UnknownName(k.Value, names)))
				continue
			}
			errs = append(errs, checkNode(n.Content[i+1], ft, sub)...)
		}
		return errs
	}
	return nil
}

// Sites are Grid'5000's sites; a spec naming another is refused before
// anything is asked of the API.
var Sites = []string{"grenoble", "lille", "louvain", "luxembourg", "lyon", "nancy", "nantes", "rennes", "sophia", "strasbourg", "toulouse"}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)
	wordRE    = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	oarTypeRE = regexp.MustCompile(`^[a-z_]+(=[A-Za-z0-9_.,=-]+)?$`)
)

// Validate reports every problem, each naming its field, the value and
// what was expected.
func (s Spec) Validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("testbed.%s: %v: expected %s", field, v, want))
	}
	if s.Backend != BackendGrid5000 {
		bad("backend", quote(s.Backend), `"grid5000" (the only backend built)`)
	}
	if !nameRE.MatchString(s.Name) {
		bad("name", quote(s.Name), "lower-case letters, digits and dashes, at most 41")
	}
	if !slices.Contains(Sites, s.Site) {
		bad("site", quote(s.Site), "a Grid'5000 site: "+strings.Join(Sites, ", "))
	}
	if !wordRE.MatchString(s.Cluster) {
		bad("cluster", quote(s.Cluster), "a cluster of the site such as taurus (lyon), gros (nancy)")
	}
	for role, n := range s.Nodes {
		if !isRole(role) {
			bad("nodes."+role, n, fmt.Sprintf("a role among %v", Roles))
		} else if n < 0 {
			bad("nodes."+role, n, "0 or more")
		}
	}
	if n := s.Nodes[RoleControl]; n != 1 {
		bad("nodes.control", n, "exactly 1 (the k3s server)")
	}
	for _, r := range []string{RoleSUT, RoleBroker, RoleLoadgen} {
		if n := s.Nodes[r]; n < 1 {
			bad("nodes."+r, n, fmt.Sprintf("at least 1 (deploy/overlays/testbed places pods on pool %s)", r))
		}
	}
	w, m := time.Duration(s.Walltime), time.Duration(s.ReleaseMargin)
	switch {
	case w <= 0:
		bad("walltime", quote(w.String()), "a positive duration such as 2h or 2:00")
	case w%time.Second != 0:
		bad("walltime", quote(w.String()), "whole seconds")
	case w > 7*24*time.Hour:
		bad("walltime", quote(w.String()), "at most 168h (longer jobs are advance reservations, not built)")
	}
	if m <= 0 || (w > 0 && m >= w) {
		bad("releaseMargin", quote(m.String()), fmt.Sprintf("positive and shorter than the walltime (%s)", w))
	}
	if s.Queue != "" && !wordRE.MatchString(s.Queue) {
		bad("queue", quote(s.Queue), "an OAR queue name such as default, production, besteffort")
	}
	if s.Queue == "production" && s.Project == "" {
		bad("project", `""`, "the OAR project the production queue bills (it requires one)")
	}
	for i, t := range s.Types {
		if !oarTypeRE.MatchString(t) {
			bad(fmt.Sprintf("types[%d]", i), quote(t), "an OAR job type such as allow_classic_ssh, exotic, monitor=wattmetre_power_watt")
		}
		if t == "deploy" {
			bad(fmt.Sprintf("types[%d]", i), quote(t), "not deploy: k3s goes onto the standard environment (kadeploy is not built)")
		}
	}
	if s.SSH.Gateway != "" && s.SSH.GatewayUser == "" {
		bad("ssh.gatewayUser", `""`, "your Grid'5000 login, to pass the gateway "+s.SSH.Gateway)
	}
	if s.SSH.User == "" {
		bad("ssh.user", `""`, "your Grid'5000 login (nodes of a job without the deploy type take no root login; "+
			"k3s then installs through ssh.sudo, sudo-g5k); from outside Grid'5000, ssh.gatewayUser gives it")
	} else if s.SSH.User != "root" && s.SSH.Sudo == "" {
		bad("ssh.sudo", `""`, fmt.Sprintf("a command giving root to %s (sudo-g5k on Grid'5000): k3s installs as root", s.SSH.User))
	}
	return errors.Join(errs...)
}

// Total is the number of nodes asked for.
func (s Spec) Total() int {
	n := 0
	for _, r := range Roles {
		n += s.Nodes[r]
	}
	return n
}

// JobName is the OAR job's name, by which a restart finds a job it
// submitted but did not get to record.
func (s Spec) JobName() string { return "greenflow-" + s.Name }

func isRole(r string) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

func quote(s string) string { return fmt.Sprintf("%q", s) }
