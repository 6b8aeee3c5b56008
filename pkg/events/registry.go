package events

import (
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Kind says how a message is addressed.
type Kind int

const (
	// Command asks one service to do something: it is published on
	// gf.cmd.<type> and exactly one service consumes it.
	Command Kind = iota + 1
	// Event reports what happened, on gf.evt.<type>, to whoever listens.
	Event
)

func (k Kind) String() string {
	switch k {
	case Command:
		return "command"
	case Event:
		return "event"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Service names a GreenFlow service as a producer or consumer of messages:
// the name it runs under (its producer header, its /healthz, its metrics).
type Service string

// The services that publish or consume lifecycle messages.
const (
	ServiceScheduler       Service = "scheduler"
	ServiceProvisioner     Service = "provisioner"
	ServiceLoadGenerator   Service = "load-generator"
	ServiceEnergyCollector Service = "energy-collector"
	ServiceAnalyzer        Service = "analyzer"
	// ServiceCLI is the greenflow command: it watches runs and keeps testbed
	// reservations; it submits and cancels through the scheduler's HTTP API
	// (with a token and its role), never on NATS.
	ServiceCLI Service = "greenflow"
	// ServiceConsole is the web console: it watches lifecycle events and
	// publishes none (its actions go through the scheduler's HTTP API as
	// the signed-in user).
	ServiceConsole Service = "console"
)

// Services lists every Service.
var Services = []Service{ServiceScheduler, ServiceProvisioner, ServiceLoadGenerator, ServiceEnergyCollector, ServiceAnalyzer, ServiceCLI, ServiceConsole}

// Entry declares one message type, once. Everything else about the type is
// derived from it or checked against it (Check, and pkg/bus's
// CheckConsumers): the decoder of every version (New, Decode), the schema
// of every version (schemas/events/<type>.v<N>.json, see SchemaName), the
// subject (commands on gf.cmd.>, events on gf.evt.>), and the durable
// consumers pkg/bus declares for it. Adding a message means one entry, one
// schema file and its Go type (with MessageType and IDs).
type Entry struct {
	Type Type
	Kind Kind
	// Versions are the schema versions still read, oldest first; the last
	// is the one published. Every version decodes into the Go type: a new
	// version only adds fields, which older bodies leave at zero.
	Versions []int
	// New returns a pointer to a zero value of the Go type.
	New func() Message
	// Producers publish the message; Consumers run a durable consumer of
	// it (watchers, such as the CLI's progress, are not consumers).
	Producers []Service
	Consumers []Service
}

// Newest is the version published.
func (e Entry) Newest() int { return e.Versions[len(e.Versions)-1] }

// zero is an Entry's New for Go type T.
func zero[T any, PT interface {
	*T
	Message
}]() Message {
	return PT(new(T))
}

func from(s ...Service) []Service { return s }

// entries is the registry: every message type GreenFlow services exchange,
// roughly in the order of a run. The order is that of ConsumedBy, and so of
// a durable consumer's subject filters: keep it.
var entries = []Entry{
	{Type: TypeExperimentSubmit, Kind: Command, Versions: []int{1}, New: zero[ExperimentSubmit],
		Producers: from(ServiceScheduler), Consumers: from(ServiceScheduler)},
	{Type: TypeExperimentCancel, Kind: Command, Versions: []int{1}, New: zero[ExperimentCancel],
		Producers: from(ServiceScheduler), Consumers: from(ServiceScheduler)},
	{Type: TypeExperimentState, Kind: Event, Versions: []int{1}, New: zero[ExperimentState],
		Producers: from(ServiceScheduler)},
	{Type: TypeRunProvision, Kind: Command, Versions: []int{1}, New: zero[RunProvision],
		Producers: from(ServiceScheduler), Consumers: from(ServiceProvisioner)},
	{Type: TypeRunProvisioned, Kind: Event, Versions: []int{1}, New: zero[RunProvisioned],
		Producers: from(ServiceProvisioner), Consumers: from(ServiceScheduler)},
	{Type: TypeRunProvisionFailed, Kind: Event, Versions: []int{1, 2}, New: zero[RunProvisionFailed],
		Producers: from(ServiceProvisioner), Consumers: from(ServiceScheduler)},
	{Type: TypeRunTeardown, Kind: Command, Versions: []int{1}, New: zero[RunTeardown],
		Producers: from(ServiceScheduler), Consumers: from(ServiceProvisioner)},
	{Type: TypeRunTornDown, Kind: Event, Versions: []int{1, 2}, New: zero[RunTornDown],
		Producers: from(ServiceProvisioner), Consumers: from(ServiceScheduler)},
	{Type: TypeRunState, Kind: Event, Versions: []int{1, 2}, New: zero[RunState],
		Producers: from(ServiceScheduler), Consumers: from(ServiceProvisioner)},
	{Type: TypeRunMeasured, Kind: Event, Versions: []int{1, 2}, New: zero[RunMeasured],
		Producers: from(ServiceScheduler), Consumers: from(ServiceAnalyzer)},
	{Type: TypeLoadStart, Kind: Command, Versions: []int{1}, New: zero[LoadStart],
		Producers: from(ServiceScheduler), Consumers: from(ServiceLoadGenerator)},
	{Type: TypeLoadStop, Kind: Command, Versions: []int{1}, New: zero[LoadStop],
		Producers: from(ServiceScheduler), Consumers: from(ServiceLoadGenerator)},
	{Type: TypeLoadProgress, Kind: Event, Versions: []int{1}, New: zero[LoadProgress],
		Producers: from(ServiceLoadGenerator), Consumers: from(ServiceAnalyzer)},
	{Type: TypeLoadFinished, Kind: Event, Versions: []int{1, 2, 3}, New: zero[LoadFinished],
		Producers: from(ServiceLoadGenerator), Consumers: from(ServiceScheduler)},
	{Type: TypeRunAnalyzed, Kind: Event, Versions: []int{1, 2}, New: zero[RunAnalyzed],
		Producers: from(ServiceAnalyzer), Consumers: from(ServiceScheduler)},
	{Type: TypeCollectAssign, Kind: Command, Versions: []int{1, 2}, New: zero[CollectAssign],
		Producers: from(ServiceScheduler), Consumers: from(ServiceEnergyCollector)},
	{Type: TypeCollectRelease, Kind: Command, Versions: []int{1}, New: zero[CollectRelease],
		Producers: from(ServiceScheduler), Consumers: from(ServiceEnergyCollector)},
}

// byType indexes entries; the registry is fixed at build time.
var byType = func() map[Type]Entry {
	m := make(map[Type]Entry, len(entries))
	for _, e := range entries {
		m[e.Type] = e
	}
	return m
}()

// Entries returns a copy of the registry, in declaration order.
func Entries() []Entry {
	out := make([]Entry, len(entries))
	for i, e := range entries {
		e.Versions, e.Producers, e.Consumers = slices.Clone(e.Versions), slices.Clone(e.Producers), slices.Clone(e.Consumers)
		out[i] = e
	}
	return out
}

// Lookup returns the registry entry of t.
func Lookup(t Type) (Entry, bool) {
	e, ok := byType[t]
	return e, ok
}

// Version is the version of t that is published (0 for an unknown type).
func Version(t Type) int {
	if e, ok := byType[t]; ok {
		return e.Newest()
	}
	return 0
}

// ConsumedBy lists the types service s consumes, in declaration order;
// with kinds, only those of these kinds.
func ConsumedBy(s Service, kinds ...Kind) []Type {
	var out []Type
	for _, e := range entries {
		if slices.Contains(e.Consumers, s) && (len(kinds) == 0 || slices.Contains(kinds, e.Kind)) {
			out = append(out, e.Type)
		}
	}
	return out
}

// sharedSchemas are files under schemas/events that hold definitions the
// message schemas refer to, not a message's schema.
var sharedSchemas = map[string]bool{"common.v1.json": true}

// Check verifies a registry against the schema files (the contents of
// schemas/events) and reports every problem at once: a type declared
// twice or without kind, versions that are not ascending, a Go type that
// is missing, reports another type or serves two entries, a command
// without exactly one consuming service, a message nobody produces, a
// version without its schema file or whose schema does not compile, and a
// schema file no entry declares.
func Check(reg []Entry, schemaFiles fs.FS) error {
	var errs []error
	bad := func(t Type, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", t, fmt.Sprintf(format, args...)))
	}
	seen := map[Type]bool{}
	goTypes := map[reflect.Type]Type{}
	files := map[string]bool{}
	for _, e := range reg {
		if e.Type == "" {
			errs = append(errs, errors.New("an entry without a type"))
			continue
		}
		if seen[e.Type] {
			bad(e.Type, "declared twice")
		}
		seen[e.Type] = true
		if e.Kind != Command && e.Kind != Event {
			bad(e.Type, "kind %v: expected Command or Event", e.Kind)
		}
		if len(e.Versions) == 0 {
			bad(e.Type, "no versions")
		}
		for i, v := range e.Versions {
			if v < 1 || i > 0 && v <= e.Versions[i-1] {
				bad(e.Type, "versions %v: expected ascending versions from 1", e.Versions)
				break
			}
		}
		for _, v := range e.Versions {
			files[SchemaName(e.Type, v)] = true
			if _, err := fs.Stat(schemaFiles, SchemaName(e.Type, v)); err != nil {
				bad(e.Type, "version %d has no schema file %s", v, SchemaName(e.Type, v))
			}
		}
		switch m := newOf(e); {
		case m == nil:
			bad(e.Type, "no Go type: New must return a pointer to a zero value")
		case m.MessageType() != e.Type:
			bad(e.Type, "Go type %T reports type %s", m, m.MessageType())
		default:
			gt := reflect.TypeOf(m)
			if other, ok := goTypes[gt]; ok {
				bad(e.Type, "Go type %s already serves %s", gt, other)
			}
			goTypes[gt] = e.Type
		}
		if e.Kind == Command && len(e.Consumers) != 1 {
			bad(e.Type, "a command is consumed by exactly one service, not %v", e.Consumers)
		}
		if len(e.Producers) == 0 {
			bad(e.Type, "no producer")
		}
		for _, s := range append(slices.Clone(e.Producers), e.Consumers...) {
			if !slices.Contains(Services, s) {
				bad(e.Type, "unknown service %q", s)
			}
		}
	}
	names, err := fs.Glob(schemaFiles, "*.json")
	if err != nil {
		errs = append(errs, fmt.Errorf("list schema files: %w", err))
	}
	for _, n := range names {
		if !files[n] && !sharedSchemas[n] {
			errs = append(errs, fmt.Errorf("schema file %s: no registry entry declares it", n))
		}
	}
	if len(errs) == 0 {
		if _, err := compile(schemaFiles, keysOf(reg)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newOf calls e.New, reporting nil for a missing or non-pointer result
// (json.Unmarshal needs a pointer).
func newOf(e Entry) (m Message) {
	if e.New == nil {
		return nil
	}
	m = e.New()
	if v := reflect.ValueOf(m); !v.IsValid() || v.Kind() != reflect.Pointer || v.IsNil() {
		return nil
	}
	return m
}

// key names one version of one type.
type key struct {
	t Type
	v int
}

func keysOf(reg []Entry) []key {
	var out []key
	for _, e := range reg {
		for _, v := range e.Versions {
			out = append(out, key{e.Type, v})
		}
	}
	return out
}

// Known lists every registered (type, version) as "type/vN", sorted.
func Known() []string {
	var out []string
	for _, k := range keysOf(entries) {
		out = append(out, fmt.Sprintf("%s/v%d", k.t, k.v))
	}
	sort.Strings(out)
	return out
}

// Samples returns one zero value of every message type, sorted by type,
// for tests and tooling that must cover every type.
func Samples() []Message {
	out := make([]Message, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.New())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MessageType() < out[j].MessageType() })
	return out
}

// ErrUnknownType is returned for a type or version this build does not know.
var ErrUnknownType = errors.New("unknown message type or version")

// SchemaName is the file name (under schemas/events) of a type's schema.
func SchemaName(t Type, version int) string {
	return fmt.Sprintf("%s.v%d.json", strings.ReplaceAll(string(t), "_", "-"), version)
}

// New returns a pointer to a zero value of the given type and version.
func New(t Type, version int) (Message, error) {
	e, ok := byType[t]
	if !ok || !slices.Contains(e.Versions, version) {
		return nil, fmt.Errorf("%w: %q version %d (known: %s)", ErrUnknownType, t, version, strings.Join(Known(), ", "))
	}
	return e.New(), nil
}
