package bus

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
)

// What every NATS user may do is derived here, once, from the events
// registry (who produces and who consumes each message), the durable
// consumers above (serviceConsumers) and the resources below (buckets,
// streams), so a new event, consumer or bucket
// changes the permissions of exactly the services it concerns. The dev
// stack's embedded server (pkg/natsembed) and `greenflow nats-config` (a
// real deployment's nats-server users) both use Permissions.

// Buckets and streams besides the lifecycle stream, named here so that
// the services that use them, the permissions that allow them and the
// declarer (DeclareTopology, which knows their configuration) name the
// same thing.
const (
	BucketScheduler   = "greenflow_scheduler"
	BucketTokens      = "greenflow_tokens"
	BucketProvisioner = "gf_provisioner"
	BucketLoadMembers = "GF_LOADGEN_MEMBERS"
	BucketLoadRuns    = "GF_LOADGEN_RUNS"
	BucketCollectors  = "gf_energy_collectors"
	StreamTriggers    = "GF_TRIGGERS"
	// BucketTestbed holds testbed reservations (pkg/testbed), written by
	// the greenflow command that reserves and releases them.
	BucketTestbed = "gf_testbed_reservations"
)

// Users that are not services: the greenflow command (ServiceCLI) and an
// operator's admin, who may do anything (stream maintenance with the nats
// CLI, the first admin token of a deployment).
const UserAdmin = "admin"

// UserTrigger publishes the events that fire armed triggers — a CI
// pipeline's "image built" — on any subject but GreenFlow's own (gf.),
// NATS's ($…) and the plain inboxes, and reads nothing. Its events are not
// signed: a trigger event is input to a template an operator armed (its
// values are bound into the spec and checked like any spec), not a fact
// about a run. Before it, only admin's seed could fire a trigger.
const UserTrigger = "trigger"

// triggerDeny are the subjects the trigger user may not publish on.
// (every $-subject NATS gives a meaning, and the plain inboxes; the other
// users' own inboxes are added where their keys are known: natsembed).
var triggerDeny = []string{"gf.>", "$JS.>", "$JSC.>", "$KV.>", "$O.>", "$SYS.>", "$NRG.>", "$G.>", "$SRV.>", "$MQTT.>", "$LDS.>", "_INBOX.>"}

// Users lists every NATS user: each service, the CLI, admin.
func Users() []string {
	out := make([]string, 0, len(events.Services)+1)
	for _, s := range events.Services {
		out = append(out, string(s))
	}
	return append(out, UserTrigger, UserAdmin)
}

// resources are what a user touches besides lifecycle messages.
type resources struct {
	buckets     []string // KV buckets it reads and writes
	readBuckets []string // KV buckets it only reads
	streams     []string // other streams it consumes with durables
	watches     bool     // replays the lifecycle stream with ephemeral consumers (Bus.Watch)
	// readsDeadLetters: gets dead letters (Bus.DeadLetters) with the
	// stream's direct and message gets — no consumer, so it reads and
	// cannot take anything.
	readsDeadLetters bool
}

// userResources: the token bucket is read by the services that verify
// tokens (scheduler, analyzer, console) and written only by the scheduler
// (its token API) and admin. Nobody but admin calls or answers requests:
// the scheduler's API is its HTTP API, behind tokens.
var userResources = map[string]resources{
	string(events.ServiceScheduler):       {buckets: []string{BucketScheduler, BucketTokens}, streams: []string{StreamTriggers}},
	string(events.ServiceProvisioner):     {buckets: []string{BucketProvisioner}},
	string(events.ServiceLoadGenerator):   {buckets: []string{BucketLoadMembers, BucketLoadRuns}},
	string(events.ServiceEnergyCollector): {buckets: []string{BucketCollectors}},
	string(events.ServiceAnalyzer):        {readBuckets: []string{BucketTokens}},
	string(events.ServiceCLI):             {buckets: []string{BucketTestbed}, watches: true, readsDeadLetters: true},
	// The console reads the lifecycle (watches, no acks) and verifies
	// sign-in tokens; it publishes nothing and calls no NATS API: its
	// actions are the signed-in user's, through the scheduler's HTTP API.
	string(events.ServiceConsole): {readBuckets: []string{BucketTokens}, watches: true},
}

// Permissions are the subjects one user may publish to and subscribe to;
// Responds lets it answer requests (reply subjects it is not allowed
// otherwise, once each). Inbox is the user's own inbox prefix: it
// subscribes to nothing else for replies, so no user reads another's.
type Permissions struct {
	Publish     []string
	PublishDeny []string // taken out of Publish (the trigger user's ">")
	Subscribe   []string
	Responds    bool
}

// InboxPrefix is the reply-subject prefix of the user with nkey public
// key pub: derived from the key, so a client knows it from its seed alone
// (Credentials.Options) and the server from the public key.
func InboxPrefix(pub string) string { return "_INBOX_" + pub }

// PermissionsFor computes user's permissions from the contract; inbox is
// its inbox prefix (InboxPrefix). Admin may do anything.
func PermissionsFor(user, inbox string) (Permissions, error) {
	if user == UserAdmin {
		return Permissions{Publish: []string{">"}, Subscribe: []string{">"}, Responds: true}, nil
	}
	if user == UserTrigger {
		return Permissions{Publish: []string{">"}, PublishDeny: slices.Clone(triggerDeny), Subscribe: []string{inbox + ".>"}}, nil
	}
	res, ok := userResources[user]
	if !ok {
		return Permissions{}, fmt.Errorf("nats user %q: expected one of %v", user, Users())
	}
	svc := events.Service(user)
	pub := set{}
	sub := set{}
	sub.add(inbox + ".>")
	pub.add("$JS.API.INFO")
	// The lifecycle, dead-letter, collectors' and watchers' streams: every
	// bus looks them up; only admin (Declares) creates and updates them.
	for _, st := range []string{StreamLifecycle, StreamDeadLetter, StreamCollectors, StreamWatch} {
		pub.add(streamAccess(user, st)...)
	}
	for _, e := range events.Entries() {
		if slices.Contains(e.Producers, svc) {
			pub.add(Subject(e.Type))
		}
	}
	// Durable consumers: declared, pulled, acked by name; a failed message
	// is copied to the dead-letter stream. A name with an instance suffix
	// becomes "any name", which a subject cannot narrow to a prefix: such
	// a consumer must read a stream of its own (StreamCollectors), where
	// "any" reaches its own kind's consumers only (TestConsumerCheck).
	for _, c := range serviceConsumers[svc] {
		name, ok := strings.CutSuffix(c.Durable, "*")
		if ok {
			name = "*"
		}
		pub.add(consumerUse(c.stream(), name)...)
		pub.add(SubjectDLQ + ">")
	}
	if res.watches {
		// Any name, on the watchers' stream only; ordered consumers
		// acknowledge nothing, so no $JS.ACK either.
		pub.add(slices.DeleteFunc(consumerUse(StreamWatch, "*"), func(s string) bool { return strings.HasPrefix(s, "$JS.ACK.") })...)
	}
	if res.readsDeadLetters {
		pub.add("$JS.API.STREAM.MSG.GET."+StreamDeadLetter, "$JS.API.DIRECT.GET."+StreamDeadLetter)
	}
	for _, st := range res.streams {
		pub.add(streamAccess(user, st)...)
		pub.add(consumerUse(st, "*")...)
		pub.add(SubjectDLQ + ">")
	}
	for _, b := range res.buckets {
		// Put, Create, Update, Delete and Purge of a key are all plain
		// publishes to the key's subject (a delete or purge is a marker
		// with a header; Purge's rollup is the bucket's own setting), so a
		// writer needs no JetStream API beyond reading: not the bucket's
		// STREAM.PURGE (PurgeDeletes) nor STREAM.DELETE, which only admin
		// has (TestServicesMayNotDeclare).
		pub.add(bucketRead(user, b)...)
		pub.add("$KV." + b + ".>")
	}
	for _, b := range res.readBuckets {
		pub.add(bucketRead(user, b)...)
	}
	return Permissions{Publish: pub.sorted(), Subscribe: sub.sorted()}, nil
}

// streamAccess looks stream st up, and creates and updates it when user
// declares it (Declares: admin only). Updating a stream's configuration
// can re-route any subject into any other (republish, subject transforms,
// sources): with it, a service could mint API tokens into the token
// bucket or forge another service's events — a trial did both with the
// CLI's and the energy collector's seeds, on their own buckets — so no
// service may create, update, delete or purge any stream, its buckets'
// included.
func streamAccess(user, st string) []string {
	out := []string{"$JS.API.STREAM.INFO." + st}
	if Declares(user, st) {
		out = append(out, "$JS.API.STREAM.CREATE."+st, "$JS.API.STREAM.UPDATE."+st)
	}
	return out
}

// Declares reports whether user creates and updates stream st (a bucket's
// is "KV_" + its name) when NATS authenticates its users: admin only, which
// declares them all (DeclareTopology: `greenflow nats declare`, the dev
// stack, a cluster's nats-topology Deployment). Every service looks them up
// and waits for them (Bus.DeclareStream, Bus.KV).
func Declares(user, _ string) bool { return user == UserAdmin }

// consumerUse declares, reads, pulls from and acks consumer name of st
// ("*": any name). A consumer's filter subjects are not in every create
// subject (not with several), so what a consumer reads is bounded by its
// name, not its filter.
func consumerUse(st, name string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + st + "." + name, "$JS.API.CONSUMER.CREATE." + st + "." + name + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + st + "." + name,
		"$JS.API.CONSUMER.INFO." + st + "." + name, "$JS.API.CONSUMER.MSG.NEXT." + st + "." + name,
		"$JS.ACK." + st + "." + name + ".>",
	}
}

// bucketRead looks bucket b up, gets keys and watches them (ordered push
// consumers with flow control).
func bucketRead(user, b string) []string {
	st := "KV_" + b
	return append(streamAccess(user, st),
		"$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>", "$JS.API.STREAM.MSG.GET."+st,
		"$JS.API.CONSUMER.CREATE."+st, "$JS.API.CONSUMER.CREATE."+st+".>",
		"$JS.API.CONSUMER.INFO."+st+".*", "$JS.API.CONSUMER.DELETE."+st+".*",
		"$JS.FC."+st+".>")
}

type set map[string]bool

func (s set) add(subjects ...string) {
	for _, x := range subjects {
		s[x] = true
	}
}

func (s set) sorted() []string {
	out := make([]string, 0, len(s))
	for x := range s {
		out = append(out, x)
	}
	sort.Strings(out)
	return out
}
