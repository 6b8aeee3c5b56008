package testenv

import (
	"os"
	"os/exec"
)

// A crash test must kill a real process. The test binary itself serves as
// that process: Child starts it again in a mode an environment variable
// names, and the test binary's TestMain calls RunAsChild first, which runs
// the mode's main instead of the tests.

// RunAsChild, called first in TestMain, runs main and exits 0 when main
// returns if this process is a child that Child started for env; it
// returns at once otherwise.
func RunAsChild(env string, main func()) {
	if os.Getenv(env) != "1" {
		return
	}
	main()
	os.Exit(0)
}

// Child returns a command running this test binary with args in the mode
// env names, with this process's environment plus extraEnv ("K=V").
func Child(env string, args []string, extraEnv ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), env+"=1"), extraEnv...)
	return cmd
}
