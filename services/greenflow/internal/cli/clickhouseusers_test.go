package cli_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/chserver"
	"github.com/greenflow/greenflow/services/greenflow/internal/cli"
)

// clickhouse-users prints a users.xml with the writer and the reader, the
// SHA-256 hashes of the passwords it keeps in --secrets-dir (never the
// passwords), allowed from --network (any by default); again, the same
// users; a bad network is refused by value.
func TestClickHouseUsers(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main([]string{"clickhouse-users", "--secrets-dir", dir}, &out, &errOut), errOut.String())
	var doc struct {
		Users struct {
			Users []struct {
				XMLName  xml.Name
				Hash     string   `xml:"password_sha256_hex"`
				Networks []string `xml:"networks>ip"`
				Profile  string   `xml:"profile"`
			} `xml:",any"`
		} `xml:"users"`
	}
	require.NoError(t, xml.Unmarshal(out.Bytes(), &doc), out.String())
	got := map[string]string{}
	for _, u := range doc.Users.Users {
		pw, err := os.ReadFile(chserver.PasswordFile(dir, u.XMLName.Local))
		require.NoError(t, err, "a password file for %s", u.XMLName.Local)
		st, err := os.Stat(chserver.PasswordFile(dir, u.XMLName.Local))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		sum := sha256.Sum256(bytes.TrimSpace(pw))
		require.Equal(t, hex.EncodeToString(sum[:]), u.Hash, u.XMLName.Local)
		require.NotContains(t, out.String(), strings.TrimSpace(string(pw)), "the password of %s is printed", u.XMLName.Local)
		require.Equal(t, []string{"::/0"}, u.Networks)
		got[u.XMLName.Local] = u.Profile
	}
	require.Equal(t, map[string]string{chserver.UserWriter: "default", chserver.UserReader: "readonly"}, got, "the writer and the reader, no default user")

	var again bytes.Buffer
	require.Zero(t, cli.Main([]string{"clickhouse-users", "--secrets-dir", dir, "--network", "10.244.0.0/16", "--network", "fd00::1"}, &again, &errOut))
	require.Equal(t, strings.ReplaceAll(out.String(), "<ip>::/0</ip>", "<ip>10.244.0.0/16</ip><ip>fd00::1</ip>"), again.String(),
		"the same passwords, other networks")

	errOut.Reset()
	require.NotZero(t, cli.Main([]string{"clickhouse-users", "--secrets-dir", dir, "--network", "10.244.0.0/33"}, &out, &errOut))
	require.Contains(t, errOut.String(), `"10.244.0.0/33" is neither an IP address nor a CIDR`)
	require.NotZero(t, cli.Main([]string{"clickhouse-users"}, &out, &errOut))
	require.Contains(t, errOut.String(), "--secrets-dir")
}
