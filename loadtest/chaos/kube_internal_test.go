package chaos

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The RBAC fault takes exactly one verb on one resource out of the
// provisioner's role and leaves every other grant as it was.
func TestWithoutVerbTakesOneVerbOfOneResource(t *testing.T) {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "secrets"}, Verbs: []string{"get", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"namespaces"}, Verbs: []string{"delete"}}, // another group: kept
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}},
	}
	got := withoutVerb(rules, "", "namespaces", "delete")
	require.Equal(t, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"namespaces"}, Verbs: []string{"delete"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"list"}},
	}, got)
	require.Equal(t, []string{"get", "delete"}, rules[0].Verbs, "the manifest's rules are not modified")

	only := withoutVerb([]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"delete"}}}, "", "namespaces", "delete")
	require.Empty(t, only, "a rule left without verbs goes")
}

// The table's reason keeps the verb and resource of a refusal that comes
// late in a long message; the missing-verb check recognises it.
func TestShownReasonKeepsTheRefusal(t *testing.T) {
	reason := "teardown not confirmed within 1m0s: teardown not finished after attempt 6 (next in 32s): remove the system under test: " +
		`delete namespace gf-chaos-s05-20261130-040614-8505-r0000: namespaces "gf-chaos-s05-20261130-040614-8505-r0000" is forbidden: ` +
		`User "system:serviceaccount:greenflow:greenflow-provisioner" cannot delete resource "namespaces" in API group "" in the namespace "x"`
	require.True(t, missingVerb.MatchString(reason))
	shown := shownReason(reason)
	require.Contains(t, shown, `cannot delete resource "namespaces"`)
	require.Less(t, len(shown), 200)
	require.Equal(t, "short reason", shownReason("short reason"))
	require.Equal(t, "-", shownReason(""))
	require.False(t, missingVerb.MatchString(strings.Replace(reason, "cannot delete", "cannot get", 1)))
}
