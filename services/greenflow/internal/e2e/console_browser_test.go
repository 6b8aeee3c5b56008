package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/greenflow/greenflow/pkg/auth"
	"github.com/greenflow/greenflow/pkg/testenv"
)

// browserTab is a headless Chromium tab (Debian's chromium, as `make
// test` installs it) at a window size, with its own profile.
func browserTab(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(testenv.Chromium(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(width, height), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Confirmation dialogs (disarm) are accepted, as a user who clicked
	// "OK" would.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return ctx
}

// do runs browser actions within a deadline.
func do(t *testing.T, ctx context.Context, within time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// waitJS waits (in the page, polling) until expr is truthy; a navigation
// meanwhile (a form's answer) restarts the wait on the new page.
func waitJS(t *testing.T, ctx context.Context, within time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(time.Until(deadline)),
			chromedp.WithPollingInterval(100*time.Millisecond)))
		// -32000: the page's JavaScript context went with a navigation.
		if err != nil && strings.Contains(err.Error(), "(-32000)") && time.Now().Before(deadline) {
			continue
		}
		require.NoError(t, err, "waiting for %s (%s)", what, expr)
		return
	}
}

// shot saves a screenshot of the whole page among the test artifacts.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(testenv.ArtifactsDir(t), name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot %s", path)
}

// signInBrowser signs the tab in with token.
func signInBrowser(t *testing.T, ctx context.Context, base, token string) {
	t.Helper()
	do(t, ctx, 30*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#token"),
		chromedp.SendKeys("#token", token),
		chromedp.Submit("#token"),
		chromedp.WaitVisible("table.list"))
}

// TestConsoleInABrowser drives the console in headless Chromium against
// the dev stack, as a user would: sign in, a bad spec refused at its line
// as one types, a good one submitted, its run's live figures changing
// without a reload, the run page's charts drawn from the real data, a
// cancel, a disarm, and a viewer refused a submission. Screenshots of each
// step are kept among the test artifacts.
func TestConsoleInABrowser(t *testing.T) {
	s := startConsoleStack(t)
	admin := s.st.AdminToken()
	ctx := browserTab(t, 1280, 900)

	signInBrowser(t, ctx, s.console, admin)
	require.Contains(t, eval[string](t, ctx, `document.querySelector("header").innerText`), "dev-admin · admin")
	shot(t, ctx, "console-1-experiments.png")

	// The editor: a typo is shown at its line, with its path, as one types.
	do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/submit"), chromedp.WaitVisible("#spec"))
	bad := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: typo}\nspec:\n  repetitons: 2\n"
	do(t, ctx, 30*time.Second, chromedp.SetValue("#spec", bad),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("spec").dispatchEvent(new Event("input"))`))
	waitJS(t, ctx, 30*time.Second, "the typo listed at line 5",
		`document.querySelector('#problems li[data-line="5"][data-path="spec.repetitons"]') !== null`)
	require.Contains(t, eval[string](t, ctx, `document.getElementById("problems").innerText`), `unknown field (did you mean "repetitions"?)`)
	// A click on the problem puts the cursor on its line.
	do(t, ctx, 10*time.Second, chromedp.Click(`#problems li[data-line="5"] button`))
	require.Equal(t, "  repetitons: 2", eval[string](t, ctx,
		`(function(){var ta=document.getElementById("spec");return ta.value.substring(ta.selectionStart, ta.selectionEnd)})()`))
	shot(t, ctx, "console-2-editor-rejects-a-typo.png")

	// A good spec: one run of the example, short; the preview says so;
	// submitted, the browser lands on its live page.
	example, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "uc3-local.yaml"))
	require.NoError(t, err)
	spec := strings.Replace(string(example), `values: ["500", "2000"]`, `values: ["500"]`, 1)
	sets := strings.Join(phases("1s", "1s", "8s"), "\n")
	do(t, ctx, 30*time.Second, chromedp.SetValue("#spec", spec), chromedp.SetValue("#sets", sets),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("sets").dispatchEvent(new Event("input"))`))
	waitJS(t, ctx, 30*time.Second, "the spec checked valid", `document.getElementById("verdict").textContent === "valid"`)
	require.Contains(t, eval[string](t, ctx, `document.getElementById("preview").textContent`), "1 run · at least 10s of timed phases")
	shot(t, ctx, "console-3-editor-valid.png")
	do(t, ctx, 30*time.Second, chromedp.Click("#submit"), chromedp.WaitVisible("#experiment"))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	id := strings.TrimPrefix(strings.SplitN(loc, "?", 2)[0], s.console+"/experiments/")
	require.True(t, strings.HasPrefix(id, "uc3-local-demo-"), loc)

	// Live: the run's records and power change on the page while it runs,
	// with no reload (a marker set on the page survives).
	do(t, ctx, 5*time.Second, chromedp.Evaluate[chromedp.Void](`window.__sameDocument = true`))
	waitJS(t, ctx, 2*time.Minute, "the run's records counted live",
		`(function(){var c=document.querySelector('[data-f="records"]');return c && Number(c.textContent.replace(/,/g,""))>0})()`)
	require.Equal(t, "500", eval[string](t, ctx, `document.querySelector('[data-f="offered"]').textContent`), "the offered rate while it runs")
	first := eval[string](t, ctx, `document.querySelector('[data-f="records"]').textContent`)
	waitJS(t, ctx, time.Minute, "the records move on from "+first,
		fmt.Sprintf(`document.querySelector('[data-f="records"]').textContent !== %q`, first))
	waitJS(t, ctx, time.Minute, "the SUT's power shown, labelled estimated",
		`(function(){var d=document.querySelector('[data-p="sut"]');return d && /\*$/.test(d.textContent) && d.title.indexOf("estimated")===0})()`)
	require.True(t, eval[bool](t, ctx, `window.__sameDocument === true`), "the values changed without a reload")
	require.Equal(t, "live", eval[string](t, ctx, `document.querySelector('[data-f="live-status"]').textContent`))
	shot(t, ctx, "console-4-live-run.png")

	// Done, the run page's charts are drawn from the stored data.
	waitJS(t, ctx, 3*time.Minute, "the experiment done, live", `document.querySelector('[data-f="exp-state"]').textContent === "done"`)
	do(t, ctx, 30*time.Second, chromedp.Click(`table.runs tbody tr td a`), chromedp.WaitVisible("figure.chart svg"))
	charts := eval[[]string](t, ctx, `Array.from(document.querySelectorAll("figure.chart svg")).map(function(s){
		return Array.from(s.querySelectorAll("g.legend text")).map(function(x){return x.textContent}).join("|") + "#" + s.querySelectorAll("polyline").length})`)
	t.Logf("charts (legend#lines): %v", charts)
	require.GreaterOrEqual(t, len(charts), 3)
	all := strings.Join(charts, "\n")
	for _, series := range []string{"node ", "sut", "offered", "delivered", "lag, all partitions"} {
		require.Contains(t, all, series, "a chart has the series %s", series)
	}
	for _, c := range charts {
		require.NotContains(t, c, "#0", "every chart drew lines: %s", c)
	}
	shot(t, ctx, "console-5-run-charts.png")
	runPage, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	// A phone's width (emulated: a headless window is at least 500 px).
	narrow := browserTab(t, 390, 844)
	do(t, narrow, 10*time.Second, chromedp.EmulateViewport(390, 844))
	signInBrowser(t, narrow, s.console, admin)
	do(t, narrow, 30*time.Second, chromedp.Navigate(runPage), chromedp.WaitVisible("figure.chart svg"))
	shot(t, narrow, "console-6-run-charts-390px.png")
	require.Equal(t, 390.0, eval[float64](t, narrow, `window.innerWidth`))
	require.LessOrEqual(t, eval[float64](t, narrow, `document.documentElement.scrollWidth`), 390.0, "nothing wider than a phone's screen")

	// The experiment's HTML report, from the link its page offers, in the
	// browser's session (a synchronous request reads the download).
	do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/experiments/"+id), chromedp.WaitVisible(`a[href$="/report.html"]`))
	report := eval[string](t, ctx, `(function(){var a=document.querySelector('a[href$="/report.html"]');var x=new XMLHttpRequest();`+
		`x.open("GET",a.href,false);x.send();return x.status+"\n"+x.getResponseHeader("Content-Disposition")+"\n"+x.responseText})()`)
	parts := strings.SplitN(report, "\n", 3)
	require.Len(t, parts, 3)
	require.Equal(t, "200", parts[0], parts[2])
	require.Equal(t, `attachment; filename="report-`+id+`.html"`, parts[1])
	require.Contains(t, parts[2], id)
	require.Contains(t, parts[2], "report generated")
	require.Contains(t, parts[2], "<svg", "the report's charts")

	// Cancel from the experiment page (operator).
	long := s.submitAPI(t, admin, true, "spec.phases.measure=1h")
	do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/experiments/"+long), chromedp.WaitVisible("#cancel"))
	do(t, ctx, 30*time.Second, chromedp.Click("#cancel"), chromedp.WaitVisible("p.flash"))
	waitJS(t, ctx, 2*time.Minute, "the experiment cancelled, live", `document.querySelector('[data-f="exp-state"]').textContent === "cancelled"`)
	shot(t, ctx, "console-7-cancelled.png")

	// Disarm a trigger (the confirmation accepted).
	trig := "apiVersion: greenflow.dev/v1alpha1\nkind: Experiment\nmetadata: {name: on-release}\nspec:\n" +
		"  workload: {sensors: 10, periodMs: 1000, format: avro}\n  trigger: {subject: ci.release}\n"
	do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/submit"), chromedp.WaitVisible("#spec"), chromedp.SetValue("#spec", trig),
		chromedp.Click("#submit"))
	waitJS(t, ctx, 30*time.Second, "the template armed", `(document.querySelector("p.flash")||{}).textContent === "armed trigger on-release"`)
	// The scheduler arms it as it takes the submission: the list may need
	// a reload to show it.
	testenv.Eventually(t, 30*time.Second, "the template listed", func() bool {
		do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/triggers"), chromedp.WaitVisible("table.list"))
		return eval[bool](t, ctx, `document.getElementById("trigger-on-release") !== null`)
	})
	shot(t, ctx, "console-8-triggers.png")
	do(t, ctx, 30*time.Second, chromedp.Click("#trigger-on-release button.danger"))
	waitJS(t, ctx, 30*time.Second, "the disarm confirmed", `(document.querySelector("p.flash")||{}).textContent === "disarmed trigger on-release"`)
	require.False(t, eval[bool](t, ctx, `document.getElementById("trigger-on-release") !== null`))

	// A viewer may not submit: the scheduler refuses its token, and the
	// page says why.
	viewer := browserTab(t, 1280, 900)
	signInBrowser(t, viewer, s.console, s.token(t, "browser-viewer", auth.Viewer))
	do(t, viewer, 30*time.Second, chromedp.Navigate(s.console+"/submit"), chromedp.WaitVisible("#spec"), chromedp.SetValue("#spec", spec),
		chromedp.Click("#submit"), chromedp.WaitVisible("p.error"))
	require.Contains(t, eval[string](t, viewer, `document.querySelector("p.error").textContent`), "token browser-viewer has role viewer; this needs operator")
	shot(t, viewer, "console-9-viewer-refused.png")

	// The list now: the experiments of this test, newest first.
	do(t, ctx, 30*time.Second, chromedp.Navigate(s.console+"/"), chromedp.WaitVisible("table.list"))
	require.GreaterOrEqual(t, eval[float64](t, ctx, `document.querySelectorAll('table.list tbody a[href^="/experiments/"]').length`), 2.0)
	shot(t, ctx, "console-10-experiments.png")
}
