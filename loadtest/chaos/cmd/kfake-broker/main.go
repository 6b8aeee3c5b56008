// Command kfake-broker runs franz-go's kfake Kafka cluster (one broker) as a
// process of its own on 127.0.0.1, so the chaos suite can kill -9 the broker
// and start it again on the same port. With --data-dir the broker keeps its
// topics and records on disk across restarts, as a real broker does;
// without it everything is in memory and gone after a restart.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kfake-broker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kfake-broker", flag.ContinueOnError)
	port := fs.Int("port", 0, "port on 127.0.0.1 to listen on (required: restarts keep the address)")
	partitions := fs.Int("partitions", 4, "partitions of topics created without a count")
	dataDir := fs.String("data-dir", "", "keep topics and records in this directory across restarts (empty: in memory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *port <= 0 || *port > 65535 {
		return fmt.Errorf("--port: got %d, expected a port between 1 and 65535", *port)
	}
	if *partitions < 1 {
		return fmt.Errorf("--partitions: got %d, expected 1 or more", *partitions)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(*port), kfake.DefaultNumPartitions(*partitions)}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start kfake on port %d: %w", *port, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return errors.New("kfake started without a listen address")
	}
	fmt.Printf("kfake-broker listening on %s (data dir %q)\n", addrs[0], *dataDir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Close()
	return nil
}
