// Package version reports the GreenFlow version and the commit the binary
// was built from, stored with every experiment so results can be traced to
// the code that produced them.
//
// The commit is found, in order: passed in at build time (the Makefile's
// -ldflags "-X github.com/greenflow/greenflow/pkg/version.commit=…"), from
// the Go toolchain's VCS stamp, or — for a binary built with
// -buildvcs=false and without the flag, e.g. `go run` on some machines — read
// from the .git of the checkout the process runs in. Without any of them it
// is "unknown", and CommitSource says why.
package version

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
)

// Version is set at build time with -ldflags "-X …/pkg/version.Version=…".
var Version = "dev"

// commit is set at build time with -ldflags "-X …/pkg/version.commit=…"
// (the Makefile passes git rev-parse HEAD, "+dirty" with local changes).
var commit string

// Unknown is the commit of a binary that cannot tell.
const Unknown = "unknown"

// Where a commit came from (CommitSource).
const (
	SourceBuildFlag = "build flag"
	SourceVCSStamp  = "Go VCS stamp"
	// SourceCheckout: read at run time from the checkout the process runs
	// in, which may have moved on since the binary was built.
	SourceCheckout = "checkout at run time"
	SourceNone     = "none: built without -ldflags commit and without VCS stamping (-buildvcs=false), and not run inside a git checkout"
)

var resolved = sync.OnceValues(func() (string, string) {
	wd, _ := os.Getwd()
	return resolve(commit, buildStamp(), wd)
})

// Commit returns the commit the binary was built from ("+dirty" when the
// tree had local changes and the build said so), or Unknown.
func Commit() string {
	c, _ := resolved()
	return c
}

// CommitSource says where Commit came from (one of the Source constants).
func CommitSource() string {
	_, s := resolved()
	return s
}

// resolve picks the commit from the build flag, the VCS stamp (rev; "" when
// none) or the git checkout containing dir.
func resolve(flag, stamp, dir string) (commit, source string) {
	switch {
	case flag != "":
		return flag, SourceBuildFlag
	case stamp != "":
		return stamp, SourceVCSStamp
	}
	if c := checkoutHead(dir); c != "" {
		return c, SourceCheckout
	}
	return Unknown, SourceNone
}

// buildStamp is the toolchain's vcs.revision ("+dirty" with vcs.modified),
// "" when the build had none.
func buildStamp() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}

// checkoutHead returns the commit HEAD names in the git checkout containing
// dir (a plain repository or a worktree, whose .git is a file naming its
// git dir), "" when there is none or it cannot be read.
func checkoutHead(dir string) string {
	if dir == "" {
		return ""
	}
	gitDir := ""
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(d, ".git")
		if fi, err := os.Stat(p); err == nil {
			if fi.IsDir() {
				gitDir = p
			} else if b, err := os.ReadFile(p); err == nil {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir:"); ok {
					gitDir = strings.TrimSpace(rest)
					if !filepath.IsAbs(gitDir) {
						gitDir = filepath.Join(d, gitDir)
					}
				}
			}
			break
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
	if gitDir == "" {
		return ""
	}
	head, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return ""
	}
	ref, ok := strings.CutPrefix(strings.TrimSpace(string(head)), "ref:")
	if !ok {
		return hexOrEmpty(strings.TrimSpace(string(head))) // detached HEAD
	}
	ref = strings.TrimSpace(ref)
	// A worktree's branches live in the common dir.
	dirs := []string{gitDir}
	if b, err := os.ReadFile(filepath.Join(gitDir, "commondir")); err == nil {
		common := strings.TrimSpace(string(b))
		if !filepath.IsAbs(common) {
			common = filepath.Join(gitDir, common)
		}
		dirs = append(dirs, common)
	}
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, filepath.FromSlash(ref))); err == nil {
			return hexOrEmpty(strings.TrimSpace(string(b)))
		}
	}
	for _, d := range dirs {
		if c := packedRef(filepath.Join(d, "packed-refs"), ref); c != "" {
			return c
		}
	}
	return ""
}

// packedRef looks ref up in a packed-refs file.
func packedRef(path, ref string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if hash, name, ok := strings.Cut(sc.Text(), " "); ok && name == ref {
			return hexOrEmpty(hash)
		}
	}
	return ""
}

// hexOrEmpty returns s when it looks like an object name.
func hexOrEmpty(s string) string {
	if len(s) < 40 {
		return ""
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return ""
		}
	}
	return s
}
