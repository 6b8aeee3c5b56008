package cli

import (
	"context"
	"io"
)

// command is one CLI subcommand.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// analysisCommand returns the analysis subcommands (compare, export, report);
// nil for an unknown name.
func analysisCommand(name string) command {
	switch name {
	}
	return nil
}
