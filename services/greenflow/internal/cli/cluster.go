package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/greenflow/greenflow/pkg/cluster"
)

// runCluster is `greenflow cluster up|status|down`: the whole platform on
// a Kubernetes cluster from a kubeconfig (pkg/cluster).
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "status" && args[0] != "down") {
		return errors.New("expected up, status or down: greenflow cluster up|status|down [--kubeconfig FILE] [--overlay single-node|testbed|DIR]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("cluster "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG, then ~/.kube/config)")
	kubeContext := fs.String("context", "", "kubeconfig context (default: the current one)")
	overlay := fs.String("overlay", "single-node", "single-node, testbed, or a kustomization directory of your own")
	secretsDir := fs.String("secrets-dir", "", "where the credentials are made and kept (default: ~/.config/greenflow/cluster-<context>)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long up waits for readiness once applied, and down for the namespaces to go")
	var cidrs []string
	fs.Func("api-server-cidr", "the Kubernetes API server's addresses as a CIDR, for the provisioner's egress (repeatable; default: read from the cluster)",
		func(v string) error { cidrs = append(cidrs, v); return nil })
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout %s: expected a positive duration, e.g. 10m", *timeout)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: *kubeContext})
	rc, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return fmt.Errorf("no kubeconfig: give --kubeconfig FILE, or set $KUBECONFIG, or write ~/.kube/config")
	}
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	// The API server's warnings (Pod Security's "would violate" for the
	// collector's host paths) as lines of the command's output, once each.
	rc.WarningHandler = rest.NewWarningWriter(stderr, rest.WarningWriterOptions{Deduplicate: true})
	if *secretsDir == "" {
		raw, err := cc.RawConfig()
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		name := raw.CurrentContext
		if *kubeContext != "" {
			name = *kubeContext
		}
		dir, err := os.UserConfigDir()
		if err != nil {
			return fmt.Errorf("--secrets-dir: %w", err)
		}
		*secretsDir = filepath.Join(dir, "greenflow", "cluster-"+strings.NewReplacer("/", "_", ":", "_").Replace(name))
	}
	c, err := cluster.New(rc, cluster.Options{Overlay: *overlay, SecretsDir: *secretsDir, APIServerCIDRs: cidrs, Timeout: *timeout,
		Progress: func(s string) { fmt.Fprintln(stderr, s) }})
	if err != nil {
		return err
	}
	switch verb {
	case "up":
		comps, err := c.Up(ctx)
		if err != nil {
			return err
		}
		printComponents(stdout, comps)
		printReach(stdout, *overlay, *secretsDir, "kubectl")
		return nil
	case "status":
		comps, err := c.Status(ctx)
		if err != nil {
			return err
		}
		printComponents(stdout, comps)
		for _, comp := range comps {
			if !comp.Ready {
				return errors.New("not every component is ready")
			}
		}
		return nil
	default:
		if err := c.Down(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "GreenFlow is down; the credentials stay in %s\n", *secretsDir)
		return nil
	}
}

func printComponents(w io.Writer, comps []cluster.Component) {
	for _, c := range comps {
		mark := "ready"
		if !c.Ready {
			mark = "NOT READY: " + c.Reason
		}
		fmt.Fprintf(w, "  %-12s %-40s %s\n", strings.ToLower(c.Kind), c.Namespace+"/"+c.Name, mark)
	}
}

// printReach says where the credentials are and how to reach the API, the
// console and the dashboards of a platform cluster up deployed; kubectl is
// the command as the user runs it (with --kubeconfig for a testbed's).
func printReach(w io.Writer, overlay, secretsDir, kubectl string) {
	ca := cluster.CAFile(secretsDir)
	fmt.Fprintf(w, `GreenFlow is up (%s overlay). Credentials are in %s (keep them: up reuses them).
  API:        %s -n greenflow port-forward deploy/scheduler 9464:9464, then (HTTPS, signed by the cluster's CA)
              GREENFLOW_TOKEN="$(cat %s)" greenflow list --api-url https://127.0.0.1:9464 --api-ca-file %s
  console:    %s -n greenflow port-forward svc/console 8080:8080, then https://127.0.0.1:8080 (sign in with an API token;
              the browser warns about its certificate until it trusts the cluster's CA, %s)
  dashboards: Grafana (README "Grafana", deploy/components/grafana) reads clickhouse.greenflow.svc:9000 as
              greenflow_reader, password in %s
`, overlay, secretsDir, kubectl, cluster.AdminTokenFile(secretsDir), ca, kubectl, ca, cluster.ReaderPasswordFile(secretsDir))
}
