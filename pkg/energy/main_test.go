package energy_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/greenflow/greenflow/pkg/energy"
)

// envPermissionChild makes the test binary, re-run as an unprivileged user,
// check that an unreadable energy_uj is reported (see
// TestNewRAPLMeterErrors): root reads mode-000 files, so the real EACCES
// path can only be seen from another user.
const envPermissionChild = "GREENFLOW_TEST_RAPL_PERMISSION_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envPermissionChild); spec != "" {
		os.Exit(permissionChild(spec))
	}
	os.Exit(m.Run())
}

// permissionChild gets "powercapRoot|procRoot|path" and exits 0 when the
// meter reports a permission error naming the file and the root-only hint.
func permissionChild(spec string) int {
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bad child spec", spec)
		return 2
	}
	_, err := energy.NewRAPLMeter(parts[0], parts[1])
	switch {
	case err == nil:
		fmt.Fprintln(os.Stderr, "no error for an unreadable energy_uj")
		return 1
	case !errors.Is(err, fs.ErrPermission):
		fmt.Fprintln(os.Stderr, "not a permission error:", err)
		return 1
	case !strings.Contains(err.Error(), parts[2]) || !strings.Contains(err.Error(), "root-only"):
		fmt.Fprintln(os.Stderr, "error does not name the file and the root-only hint:", err)
		return 1
	}
	return 0
}
