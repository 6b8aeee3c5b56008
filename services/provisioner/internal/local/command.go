package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/greenflow/greenflow/pkg/events"
	"github.com/greenflow/greenflow/services/provisioner/internal/uc3cmd"
)

// Environment markers on every process of a run (inherited by everything
// it starts): they find a run's processes again after the provisioner
// restarted, even when its record was lost.
const (
	EnvRunID        = "GREENFLOW_RUN_ID"
	EnvExperimentID = "GREENFLOW_EXPERIMENT_ID"
	// EnvPlatform names the installation (the provisioner's KV bucket):
	// two installations on one machine never touch each other's processes.
	EnvPlatform = "GREENFLOW_PLATFORM"
	// EnvNode is the node name of the provisioner that started it: two
	// node names on one machine (a misconfiguration) never touch each
	// other's processes.
	EnvNode = "GREENFLOW_NODE"
	// EnvKafka holds the run's brokers and topics (JSON), so the topics of
	// a leftover process can be deleted too.
	EnvKafka = "GREENFLOW_KAFKA"
	// EnvKafkaSASLFile names the Kafka credentials file (Config.KafkaSASLFile).
	EnvKafkaSASLFile = "GREENFLOW_KAFKA_SASL_FILE"
)

// Command builds the command line of run p: the configured UC-3
// processor's for template uc3-go, the spec's own for template command.
func (c Config) Command(p events.RunProvision) ([]string, error) {
	switch p.SUT.Template {
	case "uc3-go":
		if len(c.UC3Command) == 0 {
			return nil, errors.New("template uc3-go: no UC-3 processor command configured (--uc3-command)")
		}
		flags, err := uc3cmd.Flags(p, strings.Join(p.Kafka.Brokers, ","), "")
		if err != nil {
			return nil, err
		}
		if c.KafkaSASLFile != "" {
			flags = append(flags, "--kafka-sasl-file", c.KafkaSASLFile)
		}
		return append(append([]string{}, c.UC3Command...), flags...), nil
	case "command":
		if len(p.SUT.Command) == 0 {
			return nil, errors.New("template command: sut.command is empty")
		}
		return p.SUT.Command, nil
	default:
		return nil, fmt.Errorf("template %q cannot run on the local backend (expected uc3-go or command)", p.SUT.Template)
	}
}

// env is the SUT's environment: ours plus the run's markers.
func env(p events.RunProvision, platform, node, kafkaSASLFile string) []string {
	k, _ := json.Marshal(p.Kafka)
	out := append(os.Environ(), EnvRunID+"="+p.RunID, EnvExperimentID+"="+p.ExperimentID, EnvPlatform+"="+platform, EnvNode+"="+node,
		EnvKafka+"="+string(k))
	if kafkaSASLFile != "" {
		out = append(out, EnvKafkaSASLFile+"="+kafkaSASLFile)
	}
	return out
}
