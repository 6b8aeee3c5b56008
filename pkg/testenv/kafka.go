package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka starts an in-process one-broker Kafka (kfake), closed at cleanup,
// with topics of partitions partitions each already created (none when no
// topic is named: a provisioner creates a run's topics itself).
func Kafka(tb testing.TB, partitions int32, topics ...string) *kfake.Cluster {
	tb.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	require.NoError(tb, err)
	tb.Cleanup(c.Close)
	return c
}
