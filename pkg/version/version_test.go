package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	hashA = "1111111111111111111111111111111111111111"
	hashB = "2222222222222222222222222222222222222222"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
}

// TestResolveOrder: the build flag wins over the VCS stamp, the stamp over
// the checkout; with none of them the commit is "unknown" and the source
// says why.
func TestResolveOrder(t *testing.T) {
	repo := t.TempDir()
	write(t, filepath.Join(repo, ".git", "HEAD"), "ref: refs/heads/main\n")
	write(t, filepath.Join(repo, ".git", "refs", "heads", "main"), hashA+"\n")
	sub := filepath.Join(repo, "services", "x")
	require.NoError(t, os.MkdirAll(sub, 0o755))

	c, s := resolve("abc123", "def456", sub)
	require.Equal(t, []string{"abc123", SourceBuildFlag}, []string{c, s})
	c, s = resolve("", "def456+dirty", sub)
	require.Equal(t, []string{"def456+dirty", SourceVCSStamp}, []string{c, s})
	c, s = resolve("", "", sub)
	require.Equal(t, []string{hashA, SourceCheckout}, []string{c, s}, "found from a subdirectory of the checkout")
	c, s = resolve("", "", t.TempDir())
	require.Equal(t, []string{Unknown, SourceNone}, []string{c, s})
}

// TestCheckoutHead reads HEAD the ways git stores it: a loose branch ref, a
// packed one, a detached HEAD, and a worktree whose .git is a file naming
// its git dir, whose branches live in the common dir.
func TestCheckoutHead(t *testing.T) {
	packed := t.TempDir()
	write(t, filepath.Join(packed, ".git", "HEAD"), "ref: refs/heads/dev\n")
	write(t, filepath.Join(packed, ".git", "packed-refs"), "# pack-refs with: peeled fully-peeled sorted\n"+hashA+" refs/heads/main\n"+hashB+" refs/heads/dev\n")
	require.Equal(t, hashB, checkoutHead(packed))

	detached := t.TempDir()
	write(t, filepath.Join(detached, ".git", "HEAD"), hashA+"\n")
	require.Equal(t, hashA, checkoutHead(detached))

	main := t.TempDir()
	write(t, filepath.Join(main, ".git", "refs", "heads", "wt-x"), hashB+"\n")
	wt := t.TempDir()
	gitDir := filepath.Join(main, ".git", "worktrees", "x")
	write(t, filepath.Join(gitDir, "HEAD"), "ref: refs/heads/wt-x\n")
	write(t, filepath.Join(gitDir, "commondir"), "../..\n")
	write(t, filepath.Join(wt, ".git"), "gitdir: "+gitDir+"\n")
	require.Equal(t, hashB, checkoutHead(wt))

	broken := t.TempDir()
	write(t, filepath.Join(broken, ".git", "HEAD"), "ref: refs/heads/gone\n")
	require.Empty(t, checkoutHead(broken), "a branch with no commit")
}

// TestBinaryWithoutVCSStamping builds a binary with -buildvcs=false, as
// GOFLAGS does on some machines: without the Makefile's flag it reports the
// commit of the checkout it runs in, or says plainly that it cannot tell
// outside one; with the flag it reports what the build passed.
func TestBinaryWithoutVCSStamping(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	require.NoError(t, err, "the test runs inside the repository's checkout")
	bin := filepath.Join(t.TempDir(), "printcommit")
	build := func(ldflags string) {
		args := []string{"build", "-buildvcs=false", "-o", bin}
		if ldflags != "" {
			args = append(args, "-ldflags", ldflags)
		}
		cmd := exec.Command("go", append(args, "./testdata/printcommit")...)
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
	}
	run := func(dir string) []string {
		cmd := exec.Command(bin)
		cmd.Dir = dir
		out, err := cmd.Output()
		require.NoError(t, err)
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	build("")
	wd, err := os.Getwd()
	require.NoError(t, err)
	require.Equal(t, []string{strings.TrimSpace(string(head)), SourceCheckout}, run(wd))
	require.Equal(t, []string{Unknown, SourceNone}, run(t.TempDir()))

	build("-X github.com/greenflow/greenflow/pkg/version.commit=" + hashA)
	require.Equal(t, []string{hashA, SourceBuildFlag}, run(t.TempDir()))
}
