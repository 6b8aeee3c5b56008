// Package version reports the GreenFlow version and the VCS commit the binary
// was built from, stored with every experiment so results can be traced to
// the code that produced them.
package version

import "runtime/debug"

// Version is set at build time with -ldflags "-X …/pkg/version.Version=…".
var Version = "dev"

// Commit returns the VCS revision recorded by the Go toolchain ("+dirty"
// when the tree had local changes), or "unknown".
func Commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}
