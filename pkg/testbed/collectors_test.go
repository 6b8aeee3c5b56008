package testbed_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/testbed"
	collectorapp "github.com/greenflow/greenflow/services/energy-collector/app"
)

// The API's addresses are asked on the control node, where the
// collectors' pods resolve: every address getent prints (IPv4 and IPv6),
// once each, as host CIDRs. A URL naming an address asks nothing; a
// resolver that answers nothing, or something that is not an address,
// fails saying what and where.
func TestKwollectCIDRsResolvedOnTheControlNode(t *testing.T) {
	const control = "taurus-1.lyon.grid5000.fr"
	answers := map[string]string{
		"getent ahosts api.grid5000.fr": "172.16.63.5     STREAM api.grid5000.fr\n172.16.63.5     DGRAM  \n" +
			"2001:660:4406:700::5 STREAM api.grid5000.fr\n172.16.63.4     STREAM api.grid5000.fr\n",
		"getent ahosts api.example.org": "",
		"getent ahosts api.broken.org":  "api.broken.org has no address\n",
	}
	sshw := newSSHWorldFunc(t, func(_, cmd string) (string, int) { return answers[cmd], 0 })
	run := sshw.runner(t, spec(t))
	ctx := context.Background()

	cidrs, err := testbed.KwollectCIDRs(ctx, run, control, "")
	require.NoError(t, err)
	require.Equal(t, []string{"172.16.63.4/32", "172.16.63.5/32", "2001:660:4406:700::5/128"}, cidrs)
	cmds := sshw.srv.Commands()
	require.Len(t, cmds, 1)
	require.Equal(t, []string{control, "getent ahosts api.grid5000.fr"}, []string{cmds[0].Host, cmds[0].Cmd})

	cidrs, err = testbed.KwollectCIDRs(ctx, run, control, "http://127.0.0.1:8443/stable")
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1/32"}, cidrs)
	require.Len(t, sshw.srv.Commands(), 1, "an address literal is not resolved")

	_, err = testbed.KwollectCIDRs(ctx, run, control, "https://api.example.org/stable")
	require.ErrorContains(t, err, "resolve api.example.org on taurus-1.lyon.grid5000.fr: no address")
	_, err = testbed.KwollectCIDRs(ctx, run, control, "https://api.broken.org/stable")
	require.ErrorContains(t, err, `line "api.broken.org has no address": expected an address first`)
	_, err = testbed.KwollectCIDRs(ctx, run, control, "api.grid5000.fr")
	require.ErrorContains(t, err, "expected an absolute URL")
}

// What `testbed up` writes for the collectors is what the collector reads:
// each file of the ConfigMap parses with the collector's own parser (the
// one --sources-file uses, which refuses unknown keys) into a valid
// configuration for the collector on that node — its local meter as
// without a file, and its wattmeter (or its BMC where the reference API
// says it has no wattmeter) on its site, pinned to that node's collector.
func TestCollectorSourcesAreWhatTheCollectorReads(t *testing.T) {
	r := testbed.Reservation{Name: "energy-a", ID: "lyon/4242", Spec: spec(t),
		Nodes: []testbed.Node{{Host: "taurus-1.lyon.grid5000.fr", Role: testbed.RoleControl, Facts: testbed.HostFacts{Wattmeter: true}},
			{Host: "taurus-2.lyon.grid5000.fr", Role: testbed.RoleSUT, Facts: testbed.HostFacts{Wattmeter: true}},
			{Host: "taurus-3.lyon.grid5000.fr", Role: testbed.RoleSUT},
			{Host: "taurus-4.lyon.grid5000.fr", Role: testbed.RoleBroker, Facts: testbed.HostFacts{Wattmeter: true}}}}
	files, err := testbed.CollectorSources(r, "")
	require.NoError(t, err)
	require.Len(t, files, 2, "the nodes of the system under test only")
	want := map[string][]collectorapp.SourceConfig{
		"taurus-2.yaml": {{ID: "local", Kind: "auto"}, {ID: "wattmeter/taurus-2", Kind: "kwollect", Node: "taurus-2", Site: "lyon", Pinned: true}},
		"taurus-3.yaml": {{ID: "local", Kind: "auto"}, {ID: "bmc/taurus-3", Kind: "kwollect", Node: "taurus-3", Site: "lyon", BMC: true, Pinned: true}},
	}
	for key, file := range files {
		list, err := collectorapp.ParseSources([]byte(file))
		require.NoError(t, err, key)
		require.Equal(t, want[key], list, key)
		cfg := collectorapp.Service.Default()
		cfg.Instance, cfg.Node, cfg.Interval, cfg.Sources = key, key[:len(key)-len(".yaml")], time.Second, list
		require.NoError(t, cfg.Validate(), key)
	}
	require.Contains(t, files["taurus-2.yaml"], "# greenflow testbed up, reservation energy-a (lyon/4242)")

	// The API root is written only when it is not the collector's default.
	files, err = testbed.CollectorSources(r, "http://127.0.0.1:8443/stable")
	require.NoError(t, err)
	list, err := collectorapp.ParseSources([]byte(files["taurus-3.yaml"]))
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:8443/stable", list[1].URL)

	// A misspelt key is refused, naming it, not dropped.
	_, err = collectorapp.ParseSources([]byte("- {id: w, kind: kwollect, node: taurus-2, site: lyon, pinnned: true}\n"))
	require.ErrorContains(t, err, "field pinnned not found")
}
