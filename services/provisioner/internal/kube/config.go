package kube

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config configures the backend.
type Config struct {
	// Kubeconfig and Context choose the cluster; empty Kubeconfig means
	// $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
	Kubeconfig string `yaml:"kubeconfig" flag:"kubeconfig" help:"kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config, then in-cluster)"`
	Context    string `yaml:"context" flag:"kube-context" help:"kubeconfig context (default: the current one)"`
	// FieldManager names this provisioner in server-side apply.
	FieldManager string `yaml:"fieldManager"`
	// NamespacePrefix starts every run namespace's name.
	NamespacePrefix string `yaml:"namespacePrefix" flag:"kube-namespace-prefix" help:"prefix of each run's namespace"`
	// ReadyTimeout bounds the wait for readiness (a run's
	// sut.kubernetes.readyTimeout overrides it).
	ReadyTimeout time.Duration `yaml:"readyTimeout" flag:"kube-ready-timeout" help:"how long a run may take to become ready"`
	// UnschedulableGrace is how long a pod may stay unschedulable before the
	// provision fails (a cluster autoscaler may add a node meanwhile).
	UnschedulableGrace time.Duration `yaml:"unschedulableGrace" flag:"kube-unschedulable-grace" help:"how long a pod may stay unschedulable"`
	// TeardownTimeout bounds the wait for a deleted namespace to go.
	TeardownTimeout time.Duration `yaml:"teardownTimeout" flag:"kube-teardown-timeout" help:"bound on waiting for a run's namespace to go"`
	// PollInterval is how often readiness and deletion are checked.
	PollInterval time.Duration `yaml:"pollInterval"`
	// StrimziKafka, as namespace/name, is the Strimzi Kafka cluster whose
	// topic operator creates the run's topics from KafkaTopic resources;
	// empty: the provisioner creates topics with the Kafka admin API.
	StrimziKafka string `yaml:"strimziKafka" flag:"strimzi-kafka" help:"namespace/name of a Strimzi Kafka cluster: create run topics as KafkaTopic resources there (default: the Kafka admin API)"`
	// TopicReplicas is each KafkaTopic's replication factor (0: the
	// brokers' default).
	TopicReplicas int `yaml:"topicReplicas" flag:"topic-replicas" help:"replication factor of KafkaTopic resources (0: the brokers' default)"`
	// CrashPoll is how often a deployed run's pods are checked for
	// restarts and failures.
	CrashPoll time.Duration `yaml:"crashPoll"`
	// RetryBase is the first back-off after a transient API error (doubling
	// up to 5 s, within the phase's deadline).
	RetryBase time.Duration `yaml:"retryBase"`
	// RequestTimeout bounds one API request.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
}

// Default returns the defaults.
func Default() Config {
	return Config{FieldManager: "greenflow-provisioner", NamespacePrefix: "gf-",
		ReadyTimeout: 5 * time.Minute, UnschedulableGrace: 30 * time.Second, TeardownTimeout: 2 * time.Minute,
		PollInterval: time.Second, CrashPoll: 5 * time.Second, RetryBase: 200 * time.Millisecond, RequestTimeout: 30 * time.Second}
}

// Validate reports every problem with the configuration, by field.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"readyTimeout", c.ReadyTimeout}, {"unschedulableGrace", c.UnschedulableGrace}, {"teardownTimeout", c.TeardownTimeout},
		{"pollInterval", c.PollInterval}, {"crashPoll", c.CrashPoll}, {"retryBase", c.RetryBase}, {"requestTimeout", c.RequestTimeout}} {
		if f.d <= 0 {
			errs = append(errs, fmt.Errorf("kubernetes.%s: got %s, expected a positive duration", f.name, f.d))
		}
	}
	if c.FieldManager == "" {
		errs = append(errs, errors.New("kubernetes.fieldManager: required (it names the provisioner in server-side apply)"))
	}
	if c.NamespacePrefix == "" {
		errs = append(errs, errors.New("kubernetes.namespacePrefix: required (run namespaces are found by it)"))
	}
	if c.StrimziKafka != "" {
		if ns, name, ok := strings.Cut(c.StrimziKafka, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("kubernetes.strimziKafka: %q: expected namespace/name of the Kafka resource", c.StrimziKafka))
		}
	}
	if c.TopicReplicas < 0 {
		errs = append(errs, fmt.Errorf("kubernetes.topicReplicas: got %d, expected 0 (the brokers' default) or more", c.TopicReplicas))
	}
	return errors.Join(errs...)
}

// RESTConfig loads the cluster's client configuration: an explicit
// kubeconfig, else $KUBECONFIG or ~/.kube/config, else in-cluster.
func RESTConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("kubernetes backend: kubeconfig %s: %w", kubeconfig, err)
		}
		rules.ExplicitPath = kubeconfig
	}
	found := kubeconfig != ""
	for _, p := range rules.Precedence {
		if _, err := os.Stat(p); err == nil {
			found = true
		}
	}
	if !found {
		if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			rc, err := rest.InClusterConfig()
			if err != nil {
				return nil, fmt.Errorf("kubernetes backend: in-cluster config: %w", err)
			}
			return rc, nil
		}
		home, _ := os.UserHomeDir()
		return nil, fmt.Errorf("kubernetes backend: no kubeconfig: --kubeconfig is not set, $KUBECONFIG is %q, %s does not exist, "+
			"and this is not a pod in a cluster (KUBERNETES_SERVICE_HOST is unset)", os.Getenv("KUBECONFIG"), filepath.Join(home, ".kube", "config"))
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: load kubeconfig: %w", err)
	}
	return rc, nil
}
