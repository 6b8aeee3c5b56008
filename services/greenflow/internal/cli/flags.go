// Flags and arguments the commands share: where to find the dev stack, the
// spec to read, and experiment ids before, between or after the flags.

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/greenflow/greenflow/pkg/bus"
	"github.com/greenflow/greenflow/pkg/service"
	"github.com/greenflow/greenflow/pkg/spec"
	"github.com/greenflow/greenflow/pkg/svcmain"
	"github.com/greenflow/greenflow/services/greenflow/internal/devstack"
)

type connFlags struct {
	stateDir, natsURL, clickhouseDSN string
	clickhouseDSNFile                string
	natsNKeyFile                     string
	natsTrustFile                    string
	apiURL, token                    string
	apiCAFile                        string
	// writer: the command writes ClickHouse (prune), so it takes the dev
	// stack's writer DSN; every other command takes the read-only one.
	writer bool
	// dsnFromDev: clickhouseDSN is the running dev stack's, read from its
	// state dir (currentDSN reads it again).
	dsnFromDev bool
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "state dir of a running 'greenflow dev'")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS URL (default: from the dev state dir)")
	fs.StringVar(&c.natsNKeyFile, "nats-nkey-file", "", "file holding the NATS nkey seed to connect with (default: the dev stack's, in the state dir)")
	fs.StringVar(&c.natsTrustFile, "nats-trust-file", "", "file listing the NATS users' public keys, to check who signed what the command reads (default: "+bus.TrustFileName+" beside the seed)")
	fs.StringVar(&c.clickhouseDSN, "clickhouse-dsn", "", "ClickHouse DSN (default: from the dev state dir); it holds a password, which a command line shows to every user: prefer --clickhouse-dsn-file")
	fs.StringVar(&c.clickhouseDSNFile, "clickhouse-dsn-file", "", "file holding the ClickHouse DSN with its password; overrides --clickhouse-dsn (default: the dev stack's reader DSN, in the state dir)")
	fs.StringVar(&c.apiURL, "api-url", "", "the scheduler's HTTP API, e.g. http://127.0.0.1:9464 (default: from the dev state dir)")
	fs.StringVar(&c.token, "token", "", "API token (default: $GREENFLOW_TOKEN, else the dev stack's admin token in the state dir)")
	fs.StringVar(&c.apiCAFile, "api-ca-file", "", "PEM file of the CA that signed an https --api-url's certificate (default: $"+apiCAEnv+", else the system's CAs)")
}

// flagGroup is a group of flags that commands share (connFlags,
// testbedFlags, platformFlags), registered on a command's flag set.
type flagGroup[F any] interface {
	*F
	register(fs *flag.FlagSet)
}

// newFlagSet is a command's flag set with the flags of F registered, saying
// its parse errors and usage on stderr.
func newFlagSet[F any, PF flagGroup[F]](name string, stderr io.Writer) (*flag.FlagSet, PF) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := PF(new(F))
	f.register(fs)
	return fs, f
}

// subcommand splits a command's arguments into its subcommand and the
// rest; subs lists the subcommands for the error when there is none.
func subcommand(args []string, subs string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, fmt.Errorf("expected a subcommand: %s", subs)
	}
	return args[0], args[1:], nil
}

// tokenEnv names the environment variable holding the API token.
const tokenEnv = "GREENFLOW_TOKEN"

// apiCAEnv names the environment variable holding --api-ca-file.
const apiCAEnv = "GREENFLOW_API_CA_FILE"

// httpClient is the API's client: it trusts --api-ca-file's CA (else
// $GREENFLOW_API_CA_FILE's, else the system's) for an https API.
func (c *connFlags) httpClient() (*http.Client, error) {
	path := c.apiCAFile
	if path == "" {
		path = os.Getenv(apiCAEnv)
	}
	hc, err := service.HTTPClientTrusting(path, 0)
	if err != nil {
		return nil, fmt.Errorf("the API's CA (--api-ca-file or $%s): %w", apiCAEnv, err)
	}
	return hc, nil
}

// api returns a client of the scheduler's HTTP API: its address from
// --api-url or the running dev stack; its token from --token, then
// $GREENFLOW_TOKEN, then the dev stack's admin token file.
func (c *connFlags) api() (*apiClient, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	a := &apiClient{base: strings.TrimRight(c.apiURL, "/"), token: c.token, tokenFrom: "--token", hc: hc,
		tokenFile: filepath.Join(c.stateDir, devstack.TokenFile)}
	if a.base == "" {
		ep, err := devstack.ReadEndpoints(c.stateDir)
		if errors.Is(err, devstack.ErrNotRunning) {
			return nil, fmt.Errorf("no running 'greenflow dev' in %s (%v); start it again, or give --api-url", c.stateDir, err)
		}
		if err != nil || ep.HTTPAddr == "" {
			return nil, fmt.Errorf("no running 'greenflow dev' with an HTTP API found in %s and no --api-url given", c.stateDir)
		}
		a.base = "http://" + ep.HTTPAddr
	}
	if a.token == "" {
		a.token, a.tokenFrom = os.Getenv(tokenEnv), "$"+tokenEnv
	}
	if a.token == "" {
		tok, err := devstack.ReadToken(c.stateDir)
		if err != nil {
			return nil, fmt.Errorf("no API token: pass --token, set %s, or run 'greenflow dev' (it writes %s): %w",
				tokenEnv, filepath.Join(c.stateDir, devstack.TokenFile), err)
		}
		a.token, a.tokenFrom = tok, filepath.Join(c.stateDir, devstack.TokenFile)
	}
	return a, nil
}

// call sends one request to the scheduler's API the flags name (see
// connFlags.api and apiClient.do).
func (c *connFlags) call(ctx context.Context, method, path, ctype string, body []byte, out any) error {
	api, err := c.api()
	if err != nil {
		return err
	}
	return api.do(ctx, method, path, ctype, body, out)
}

// natsOptions are the NATS credentials to connect with: --nats-nkey-file,
// else the dev stack's seed of user (the CLI's own, or admin to write the
// token bucket) when there is one; else none.
func (c *connFlags) natsOptions(user string) ([]nats.Option, error) {
	return c.natsCreds(user).Options()
}

func (c *connFlags) natsCreds(user string) bus.Credentials {
	creds := bus.Credentials{NKeyFile: c.natsNKeyFile, TrustFile: c.natsTrustFile}
	if creds.NKeyFile == "" {
		dev := devstack.NATSCreds(c.stateDir, user)
		if _, err := os.Stat(dev.NKeyFile); err == nil {
			creds.NKeyFile = dev.NKeyFile
		}
	}
	return creds
}

// trustFileOf is the trust file creds check what they read against (as
// bus.Credentials.Options finds it); "" when they read unchecked (no nkey).
func trustFileOf(creds bus.Credentials) string {
	switch {
	case creds.NKeyFile == "":
		return ""
	case creds.TrustFile != "":
		return creds.TrustFile
	}
	return bus.DefaultTrustFile(creds.NKeyFile)
}

// resolve fills missing addresses from --clickhouse-dsn-file and a running
// dev stack.
func (c *connFlags) resolve(needNATS bool) error {
	if c.clickhouseDSNFile != "" {
		dsn, err := svcmain.ReadDSNFile(c.clickhouseDSNFile)
		if err != nil {
			return err
		}
		c.clickhouseDSN, c.clickhouseDSNFile = dsn, ""
	}
	if c.natsURL != "" && c.clickhouseDSN != "" {
		return nil
	}
	ep, err := devstack.ReadEndpoints(c.stateDir)
	if err != nil {
		if c.natsURL == "" && needNATS {
			return fmt.Errorf("no running 'greenflow dev' found in %s and no --nats-url given", c.stateDir)
		}
		return nil
	}
	if c.natsURL == "" {
		c.natsURL = ep.NATSURL
	}
	if c.clickhouseDSN == "" {
		c.clickhouseDSN, c.dsnFromDev = devDSN(ep, c.writer), true
	}
	return nil
}

// devDSN is the dev stack's reader DSN, or its writer DSN for a command
// that writes (or when it has no reader).
func devDSN(ep devstack.Endpoints, writer bool) string {
	if writer || ep.ClickHouseReaderDSN == "" {
		return ep.ClickHouseDSN
	}
	return ep.ClickHouseReaderDSN
}

// currentDSN is the ClickHouse DSN to connect with now: the dev stack's as
// its state dir says now when it came from there — a dev stack restarted
// meanwhile (during a long watch) serves ClickHouse on a new port — else
// the one given.
func (c *connFlags) currentDSN() string {
	if c.dsnFromDev {
		if ep, err := devstack.ReadEndpoints(c.stateDir); err == nil {
			return devDSN(ep, c.writer)
		}
	}
	return c.clickhouseDSN
}

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// specFlags are the -f and --set flags of the commands that read a spec.
type specFlags struct {
	file string
	sets stringList
}

func (f *specFlags) register(fs *flag.FlagSet, defaultFile string) {
	fs.StringVar(&f.file, "f", defaultFile, "experiment spec file (YAML or JSON; - for standard input)")
	fs.Var(&f.sets, "set", "override a spec field: path=value (repeatable)")
}

// prepare reads and validates the spec (see spec.Prepare).
func (f *specFlags) prepare(yes bool) (spec.Prepared, error) {
	data, err := f.read()
	if err != nil {
		return spec.Prepared{}, err
	}
	return spec.Prepare(data, f.sets, yes)
}

// read reads the spec file (or standard input).
func (f *specFlags) read() ([]byte, error) {
	if f.file == "" {
		return nil, errors.New("-f: a spec file is required")
	}
	r := io.Reader(os.Stdin)
	if f.file != "-" {
		file, err := os.Open(f.file)
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		defer file.Close()
		r = file
	}
	// One byte past the limit is enough for spec.Parse to refuse it; a
	// larger file is not read whole, and its size comes from the file.
	data, err := io.ReadAll(io.LimitReader(r, spec.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read spec %s: %w", f.file, err)
	}
	if len(data) > spec.MaxBytes {
		size := 0
		if st, err := os.Stat(f.file); f.file != "-" && err == nil {
			size = int(st.Size())
		}
		return nil, fmt.Errorf("%s: %w", f.file, &spec.TooLargeError{What: "the spec", Size: size})
	}
	return data, nil
}

// parseExperimentArgs parses a command taking one EXPERIMENT id (before,
// between or after the flags) and the connection flags; extra registers its own flags.
func parseExperimentArgs(name string, args []string, extra func(*flag.FlagSet)) (connFlags, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c connFlags
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return c, "", err
	}
	if len(pos) != 1 {
		return c, "", errors.New("expected one EXPERIMENT id")
	}
	return c, pos[0], nil
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// analysisUsage lists the analysis commands; each prints it on -h.
const analysisUsage = `Analysis commands:
  greenflow compare  A B [C …] [--experiment EXP] [--level 0.95] [--format table|csv|json] [--plot FILE.svg]
                                                             Welch t-test per headline metric between experiments (EXP),
                                                             configurations (EXP:HASH-PREFIX, or HASH-PREFIX with --experiment);
                                                             like configurations matched across them, each against the first
                                                             argument that ran it, Holm-adjusted
  greenflow export   EXPERIMENT --dir DIR                    tidy CSV: runs, phases, targets, results, samples, summary
  greenflow report   EXPERIMENT [-o FILE] [--max-runs N]     self-contained HTML report with SVG plots
  greenflow prune    [--older-than 720h] [--dry-run]         drop whole days of samples that belong to no run

They find ClickHouse like 'greenflow results': a running 'greenflow dev' through
its state dir, --clickhouse-dsn, or the dev state's ClickHouse data.
`

// newAnalysisFlags returns a flag set that prints the analysis usage on -h.
func newAnalysisFlags(name string, stderr io.Writer) (*flag.FlagSet, *connFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints a parse error before the usage; the command's
	// caller prints it too: it is said once, after the usage.
	fs.SetOutput(io.Discard)
	var c connFlags
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, analysisUsage)
		fmt.Fprintf(stderr, "\nFlags of %s:\n", name)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs, &c
}
