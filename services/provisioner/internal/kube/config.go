package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config configures the backend.
type Config struct {
	// Kubeconfig and Context choose the cluster; empty Kubeconfig means
	// $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
	Kubeconfig string `yaml:"kubeconfig"`
	Context    string `yaml:"context"`
	// FieldManager names this provisioner in server-side apply.
	FieldManager string `yaml:"fieldManager"`
	// NamespacePrefix starts every run namespace's name.
	NamespacePrefix string `yaml:"namespacePrefix"`
	// ReadyTimeout bounds the wait for readiness (a run's
	// sut.kubernetes.readyTimeout overrides it).
	ReadyTimeout time.Duration `yaml:"readyTimeout"`
	// UnschedulableGrace is how long a pod may stay unschedulable before the
	// provision fails (a cluster autoscaler may add a node meanwhile).
	UnschedulableGrace time.Duration `yaml:"unschedulableGrace"`
	// TeardownTimeout bounds the wait for a deleted namespace to go.
	TeardownTimeout time.Duration `yaml:"teardownTimeout"`
	// PollInterval is how often readiness and deletion are checked.
	PollInterval time.Duration `yaml:"pollInterval"`
	// StrimziKafka, as namespace/name, is the Strimzi Kafka cluster whose
	// topic operator creates the run's topics from KafkaTopic resources;
	// empty: the provisioner creates topics with the Kafka admin API.
	StrimziKafka string `yaml:"strimziKafka"`
	// TopicReplicas is each KafkaTopic's replication factor (0: the
	// brokers' default).
	TopicReplicas int `yaml:"topicReplicas"`
	// CrashPoll is how often a deployed run's pods are checked for
	// restarts and failures.
	CrashPoll time.Duration `yaml:"crashPoll"`
	// RetryBase is the first back-off after a transient API error (doubling
	// up to 5 s, within the phase's deadline).
	RetryBase time.Duration `yaml:"retryBase"`
	// RequestTimeout bounds one API request.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
}

func (c *Config) defaults() {
	if c.FieldManager == "" {
		c.FieldManager = "greenflow-provisioner"
	}
	if c.NamespacePrefix == "" {
		c.NamespacePrefix = "gf-"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 5 * time.Minute
	}
	if c.UnschedulableGrace == 0 {
		c.UnschedulableGrace = 30 * time.Second
	}
	if c.TeardownTimeout == 0 {
		c.TeardownTimeout = 2 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.CrashPoll == 0 {
		c.CrashPoll = 5 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = 200 * time.Millisecond
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
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
