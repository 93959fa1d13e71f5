// The autopilot panel: whether it runs, when next, and its last runs with why it switched or not
// (GET /admin/v1/campaigns/{id}/autopilot; docs/optimization.md#autopilot).
import { esc, table, when } from "./util.js";

const OUTCOMES = {
  switched: "switched",
  kept: "kept the serving setting",
  skipped: "did not run",
  conflict: "not applied (the campaign changed meanwhile)",
  failed: "failed",
};

const interval = (c) => (c && c.value ? c.value.value.toFixed(4) + ' <span class="muted">[' + c.value.low.toFixed(4) + ", " + c.value.high.toFixed(4) + "]</span>" : "–");

export function renderAutopilot(node, report) {
  const s = report.settings;
  const head = !report.enabled
    ? "<p>Off. Turn it on with <code>\"autopilot\": {\"enabled\": true}</code> in the configuration (the campaign must keep its requests).</p>"
    : "<p>" + (report.running ? "On" : "On, but not running: " + esc(report.note || "")) + ": every " + esc(s.every) + " over the last " + esc(s.window) +
      " of decisions, at least " + s.min_decisions + " decisions, " + esc(s.cooldown) + " cool-down after a switch." +
      (report.next_run_ms ? " Next run " + when(report.next_run_ms) + " UTC." : "") +
      (report.cooldown_until_ms ? " No switch before " + when(report.cooldown_until_ms) + " UTC." : "") + "</p>";
  node.innerHTML = head + table([
    ["when (UTC)", (r) => '<span class="nowrap">' + when(r.at_ms) + "</span>"],
    ["outcome", (r) => (r.outcome === "switched" ? '<span class="pos">' : "<span>") + esc(OUTCOMES[r.outcome] || r.outcome) + "</span>"],
    ["why", (r) => esc(r.reason)],
    ["serving", (r) => interval(r.serving)],
    ["best candidate", (r) => (r.best ? "<code>" + esc(r.best.name) + "</code><br>" + interval(r.best) : "–")],
    ["decisions", (r) => (r.decisions === undefined ? "–" : r.decisions)],
  ], report.runs, "Autopilot runs");
}
