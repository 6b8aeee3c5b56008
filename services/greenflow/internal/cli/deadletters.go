// Reading the dead-letter stream: what no consumer could process, and why.

package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/events"
)

// deadLetterFlags are dead-letters' own flags besides the connection's.
type deadLetterFlags struct {
	connFlags
	experiment, consumer, since, format string
}

func (f *deadLetterFlags) register(fs *flag.FlagSet) {
	f.connFlags.register(fs)
	fs.StringVar(&f.experiment, "experiment", "", "only the dead letters of this experiment")
	fs.StringVar(&f.consumer, "consumer", "", "only those this durable consumer gave up (scheduler, provisioner, load-generator, analyzer, …)")
	fs.StringVar(&f.since, "since", "", "only those dead-lettered in the last DURATION (24h) or since a time (RFC 3339: 2026-11-30T08:00:00Z)")
	fs.StringVar(&f.format, "format", "table", "table, json or csv")
}

// runDeadLetters lists dead letters, shows one ("show SEQ") or publishes
// one again on its subject ("replay SEQ", as admin: see bus.Replay). It
// reads with the stream's direct and message gets (bus.DeadLetters):
// listing and showing consume nothing, so they can run as often as wanted
// beside the services.
func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newFlagSet[deadLetterFlags]("dead-letters", stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	sub := "list"
	if len(pos) > 0 && slices.Contains([]string{"list", "show", "replay"}, pos[0]) {
		sub, pos = pos[0], pos[1:]
	}
	if err := f.validate(sub, pos); err != nil {
		return err
	}
	since, err := parseSince(f.since, time.Now())
	if err != nil {
		return err
	}
	if err := f.resolve(true); err != nil {
		return err
	}
	// Replaying publishes on the subject of the service that produced the
	// message, which only admin's user may (the CLI's reads). Either way
	// the bus only looks the streams up (it is not named admin: see
	// bus.Declares), whichever seed --nats-nkey-file gives.
	user := string(events.ServiceCLI)
	if sub == "replay" {
		user = bus.UserAdmin
	}
	opts, err := f.natsOptions(user)
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, f.natsURL, "greenflow-cli", zap.NewNop(), nil, opts...)
	if err != nil {
		return err
	}
	defer b.Close()
	if sub != "list" {
		seq, _ := strconv.ParseUint(pos[0], 10, 64)
		return showOrReplay(ctx, b, sub == "replay", seq, f.format, stdout)
	}
	var list []bus.DeadLetter
	err = b.DeadLetters(ctx, since, func(d bus.DeadLetter) error {
		if (f.experiment == "" || d.ExperimentID == f.experiment) && (f.consumer == "" || d.Consumer == f.consumer) {
			list = append(list, d)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeDeadLetters(stdout, f.format, list)
}

// showOrReplay shows dead letter seq, or replays it.
func showOrReplay(ctx context.Context, b *bus.Bus, replay bool, seq uint64, format string, stdout io.Writer) error {
	d, err := b.DeadLetterAt(ctx, seq)
	if errors.Is(err, bus.ErrNoDeadLetter) {
		return fmt.Errorf("no dead letter %d in %s (never written, or older than the stream keeps): 'greenflow dead-letters' lists those there are", seq, bus.StreamDeadLetter)
	}
	if err != nil {
		return err
	}
	if !replay {
		return writeDeadLetter(stdout, format, d)
	}
	at, err := b.Replay(ctx, d)
	if errors.Is(err, bus.ErrRefused) {
		return fmt.Errorf("%w; replaying publishes on the subject of the service that produced the message, which takes admin's NATS user: "+
			"give admin's seed with --nats-nkey-file", err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "replayed dead letter %d (%s for %s) on %s as stream sequence %d: its consumers get it again\n",
		d.Seq, d.Type, d.RunID, d.Subject, at)
	return err
}

// validate checks the arguments and flags before anything connects.
func (f *deadLetterFlags) validate(sub string, pos []string) error {
	var errs []error
	if !slices.Contains([]string{"table", "json", "csv"}, f.format) {
		errs = append(errs, fmt.Errorf("--format %q: expected table, json or csv", f.format))
	}
	switch {
	case sub != "list" && len(pos) != 1:
		errs = append(errs, fmt.Errorf("%s: expected one SEQ (the SEQ column of 'greenflow dead-letters'), got %d arguments", sub, len(pos)))
	case sub != "list":
		if seq, err := strconv.ParseUint(pos[0], 10, 64); err != nil || seq == 0 {
			errs = append(errs, fmt.Errorf("%s %q: expected a dead letter's sequence number, a whole number from 1 (the SEQ column)", sub, pos[0]))
		}
		if sub == "show" && f.format == "csv" {
			errs = append(errs, errors.New("show --format csv: expected table or json (one message with its headers and body)"))
		}
	case len(pos) != 0:
		errs = append(errs, fmt.Errorf("unexpected arguments %q: filter with --experiment, --consumer and --since; show one with 'show SEQ'", pos))
	}
	return errors.Join(errs...)
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--since %s: expected a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: expected a duration (24h, 90m) or an RFC 3339 time (2026-11-30T08:00:00Z)", s)
	}
	return t, nil
}

// deadLetterTime is how times are written: UTC to the millisecond.
const deadLetterTime = "2006-01-02T15:04:05.000Z07:00"

var deadLetterColumns = []string{"seq", "time", "consumer", "subject", "type", "kind", "deliveries", "experiment_id", "run_id", "stream_seq", "signed_by", "reason"}

func deadLetterRow(d bus.DeadLetter) []string {
	return []string{strconv.FormatUint(d.Seq, 10), d.Time.Format(deadLetterTime), d.Consumer, d.Subject, d.Type, d.Kind,
		strconv.FormatUint(d.Deliveries, 10), d.ExperimentID, d.RunID, strconv.FormatUint(d.StreamSeq, 10), signedBy(d), d.Reason}
}

// signedBy says who vouches for a dead letter: the service whose
// signature holds, "UNVERIFIED" (show and json say why), or "" when
// nothing was checked (a NATS without users).
func signedBy(d bus.DeadLetter) string {
	if d.Unverified != "" {
		return "UNVERIFIED"
	}
	return d.SignedBy
}

func writeDeadLetters(w io.Writer, format string, list []bus.DeadLetter) error {
	switch format {
	case "json":
		out := make([]deadLetterJSON, len(list))
		for i, d := range list {
			out[i] = newDeadLetterJSON(d)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(deadLetterColumns)
		for _, d := range list {
			_ = cw.Write(deadLetterRow(d))
		}
		cw.Flush()
		return cw.Error()
	}
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(deadLetterColumns, "\t")))
	for _, d := range list {
		row := deadLetterRow(d)
		for i, v := range row {
			if v == "" {
				row[i] = "-"
			}
		}
		row[len(row)-1] = strings.ReplaceAll(d.Reason, "\n", " ")
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// deadLetterJSON is a dead letter as json writes it: its body as JSON
// when it is, else as text.
type deadLetterJSON struct {
	bus.DeadLetter
	Body json.RawMessage `json:"body"`
}

func newDeadLetterJSON(d bus.DeadLetter) deadLetterJSON {
	body := json.RawMessage(d.Data)
	if !json.Valid(d.Data) {
		body, _ = json.Marshal(string(d.Data))
	}
	return deadLetterJSON{DeadLetter: d, Body: body}
}

// writeDeadLetter shows one dead letter: what it says, every header, and
// its body (indented when it is JSON).
func writeDeadLetter(w io.Writer, format string, d bus.DeadLetter) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(newDeadLetterJSON(d))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "dead letter %d\t%s\n", d.Seq, d.Time.Format(deadLetterTime))
	row := deadLetterRow(d)
	for i, col := range deadLetterColumns[2:] {
		fmt.Fprintf(tw, "  %s:\t%s\n", col, row[i+2])
	}
	if d.Unverified != "" {
		fmt.Fprintf(tw, "  unverified:\t%s (any service's seed may write a dead letter: this one is not proven)\n", d.Unverified)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "headers:")
	keys := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range d.Headers[k] {
			fmt.Fprintf(w, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintf(w, "body (%d bytes):\n", len(d.Data))
	var pretty bytes.Buffer
	if json.Indent(&pretty, d.Data, "", "  ") == nil {
		pretty.WriteByte('\n')
		_, err := pretty.WriteTo(w)
		return err
	}
	_, err := fmt.Fprintf(w, "%q\n", d.Data)
	return err
}
