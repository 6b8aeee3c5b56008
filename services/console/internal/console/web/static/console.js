// GreenFlow console: live updates of an experiment page from its
// Server-Sent Events stream. Hand-written, no dependencies; the pages work
// without it (they are rendered on the server), this only keeps them live.
"use strict";
(function () {
  function fmt(v, digits) {
    if (v === undefined || v === null) return "—";
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });
  }
  function set(root, sel, text) {
    var el = root.querySelector(sel);
    if (el && el.textContent !== text) el.textContent = text;
  }
  // addRow makes the row of a run the page did not list (it was created
  // after the page was rendered) from the page's row template.
  function addRow(r) {
    var tpl = document.getElementById("run-template"), body = document.querySelector("table.runs tbody");
    if (!tpl || !body) return null;
    var row = tpl.content.firstElementChild.cloneNode(true);
    row.id = "run-" + r.run_id; row.dataset.run = r.run_id;
    var a = row.querySelector("a");
    if (a) { a.href = a.getAttribute("href") + encodeURIComponent(r.run_id); a.textContent = "#" + r.index; }
    set(row, '[data-f="rep"]', "");
    body.appendChild(row);
    return row;
  }
  function applyRun(r) {
    var row = document.getElementById("run-" + r.run_id) || addRow(r);
    if (!row) return;
    var tl = row.querySelector(".timeline");
    if (tl && r.state && !tl.querySelector('[data-phase="' + r.state + '"]')) {
      var li = document.createElement("li");
      li.dataset.phase = r.state; li.textContent = r.state;
      tl.appendChild(li);
    }
    var st = row.querySelector('[data-f="state"]');
    if (st && r.state) { st.textContent = r.state; st.className = "state s-" + r.state; }
    set(row, '[data-f="reason"]', r.reason || "");
    row.querySelectorAll(".timeline li").forEach(function (li) {
      li.classList.toggle("now", li.dataset.phase === r.state);
    });
    set(row, '[data-f="records"]', fmt(r.records_sent, 0));
    set(row, '[data-f="offered"]', fmt(r.offered_per_sec, 0));
    var delivered = r.delivered_per_sec !== undefined ? r.delivered_per_sec : r.rate_per_sec;
    set(row, '[data-f="delivered"]', fmt(delivered, 0));
    set(row, '[data-f="lag"]', fmt(r.lag, 0));
    set(row, '[data-f="uj"]', fmt(r.uj_per_event, 1) + (r.estimated && r.estimated.indexOf("energy") >= 0 ? "*" : ""));
    var est = r.estimated || [];
    row.querySelectorAll("[data-p]").forEach(function (dd) {
      var role = dd.dataset.p, sum = null, estimated = false;
      Object.keys(r.power_w || {}).forEach(function (comp) {
        var name = comp.indexOf("node ") === 0 ? "node" : comp;
        if (name !== role) return;
        sum = (sum || 0) + r.power_w[comp];
        if (est.indexOf(comp) >= 0) estimated = true;
      });
      var text = sum === null ? "—" : fmt(sum, 2) + (estimated ? "*" : "");
      if (dd.textContent !== text) dd.textContent = text;
      dd.title = estimated ? "estimated: from a power model" : "";
    });
    var flags = row.querySelector('[data-f="flags"]');
    if (flags && r.flags) {
      r.flags.forEach(function (f) {
        if (!flags.querySelector('[data-flag="' + f + '"]')) {
          var s = document.createElement("span");
          s.className = "flag"; s.dataset.flag = f; s.textContent = f;
          flags.appendChild(s); flags.appendChild(document.createTextNode(" "));
        }
      });
    }
    row.dataset.updated = String(r.updated_ms || 0);
  }
  function applyExperiment(root, e) {
    var st = root.querySelector('[data-f="exp-state"]');
    if (st) { st.textContent = e.state; st.className = "state s-" + e.state; }
    var p = e.runs_done + "/" + e.runs_total + " runs done" + (e.runs_failed ? ", " + e.runs_failed + " failed" : "");
    set(root, '[data-f="exp-progress"]', p);
  }
  function live(root) {
    if (!window.EventSource || !root.dataset.live) return;
    var status = root.querySelector('[data-f="live-status"]');
    var es = new EventSource(root.dataset.live);
    es.onopen = function () { if (status) status.textContent = "live"; };
    es.onerror = function () { if (status) status.textContent = "reconnecting…"; };
    es.addEventListener("run", function (ev) { applyRun(JSON.parse(ev.data)); });
    es.addEventListener("experiment", function (ev) { applyExperiment(root, JSON.parse(ev.data)); });
  }
  function gotoLine(ta, line) {
    var lines = ta.value.split("\n"), start = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    var end = start + (lines[line - 1] || "").length;
    ta.focus();
    ta.setSelectionRange(start, end);
    var lh = parseFloat(getComputedStyle(ta).lineHeight) || 18;
    ta.scrollTop = Math.max(0, (line - 3) * lh);
  }
  function fmtDuration(s) {
    if (!s) return "0s";
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.round(s % 60);
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + sec + "s";
  }
  function editor(form) {
    var spec = form.querySelector("#spec"), sets = form.querySelector("#sets"), yes = form.querySelector('input[name="yes"]');
    var verdict = form.querySelector("#verdict"), preview = form.querySelector("#preview"), list = form.querySelector("#problems");
    var csrf = form.querySelector('input[name="csrf"]').value, timer = null, seq = 0;
    list.addEventListener("click", function (ev) {
      var b = ev.target.closest("button.goto");
      if (b && Number(b.dataset.line) > 0) gotoLine(spec, Number(b.dataset.line));
    });
    function check() {
      var mine = ++seq;
      fetch(form.dataset.validate, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ spec: spec.value, sets: sets.value, yes: yes.checked })
      }).then(function (r) { return r.json(); }).then(function (v) {
        if (mine !== seq) return; // a newer check is on its way
        list.textContent = "";
        if (v.error && !v.problems) {
          verdict.textContent = v.error; verdict.className = "bad"; preview.textContent = ""; return;
        }
        if (v.valid) {
          verdict.textContent = "valid"; verdict.className = "ok";
          preview.textContent = v.trigger ? "a template: submitting arms trigger " + v.trigger
            : v.runs + " run" + (v.runs === 1 ? "" : "s") + " · at least " + fmtDuration(v.estimated_seconds) + " of timed phases (" + fmtDuration(v.run_seconds) + " a run)";
        } else {
          verdict.textContent = (v.problems || []).length ? v.problems.length + " problem" + (v.problems.length === 1 ? "" : "s") : v.error;
          verdict.className = "bad"; preview.textContent = "";
        }
        (v.problems || []).forEach(function (p) {
          var li = document.createElement("li"), b = document.createElement("button"), code = document.createElement("code");
          b.type = "button"; b.className = "goto"; b.dataset.line = String(p.line || 0);
          b.textContent = p.line ? "line " + p.line : (p.set ? "--set " + p.set : "spec");
          code.textContent = p.path || "";
          li.appendChild(b); li.appendChild(document.createTextNode(" ")); li.appendChild(code);
          li.appendChild(document.createTextNode(" " + p.message));
          li.dataset.line = String(p.line || 0); li.dataset.path = p.path || "";
          list.appendChild(li);
        });
      }).catch(function () { if (mine === seq) { verdict.textContent = "could not check now"; verdict.className = "bad"; } });
    }
    function later() { clearTimeout(timer); timer = setTimeout(check, 350); }
    spec.addEventListener("input", later); sets.addEventListener("input", later); yes.addEventListener("change", later);
    check();
  }
  document.addEventListener("DOMContentLoaded", function () {
    var ed = document.getElementById("editor");
    if (ed) editor(ed);
    var exp = document.getElementById("experiment");
    if (exp) live(exp);
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (ev) { if (!window.confirm(f.dataset.confirm)) ev.preventDefault(); });
    });
  });
})();
