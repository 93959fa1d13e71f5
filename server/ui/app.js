// Tailor control room: reads and changes campaigns through the admin API with the typed key.
import { $, api, campaignPath, canEdit, el, esc, num, pct, request, session, status, table } from "./util.js";
import { COLORS, bucketLabel, bucketName, timeChart } from "./charts.js";
import { fill, initEditor, loadPluginNames } from "./editor.js";
import { initPreview, resetPreview } from "./preview.js";
import { renderAudit } from "./audit.js";
import { renderAutopilot } from "./autopilot.js";

async function start() {
  $("key").value = session.key;
  if (!session.key) return;
  try {
    session.me = await api("GET", "/admin/v1/whoami");
  } catch (e) {
    session.me = null;
    $("who").textContent = "";
    status("Key refused: " + e.message, true);
    return;
  }
  const me = session.me;
  $("who").textContent = me.key_id + " (" + me.role + (me.campaign ? ", " + me.campaign : "") + ")";
  $("readonly").hidden = canEdit();
  // New campaigns need an unscoped editor key.
  $("new-campaign").disabled = !canEdit() || !!me.campaign;
  await loadPluginNames();
  try {
    await listCampaigns(true);
    status("");
  } catch (e) {
    status("Could not load: " + e.message, true);
  }
}

async function listCampaigns(open) {
  const { campaigns } = await api("GET", "/admin/v1/campaigns");
  const list = $("campaigns");
  list.innerHTML = "";
  if (!campaigns.length) list.appendChild(el("li", { class: "muted", text: "No campaigns yet." }));
  for (const c of campaigns) {
    const a = el("a", { href: "#" + encodeURIComponent(c.id), "data-id": c.id, text: c.id + (c.status !== "active" ? " (" + c.status.replace("_", " ") + ")" : "") });
    a.addEventListener("click", (ev) => { ev.preventDefault(); openCampaign(c.id, true); });
    list.appendChild(el("li", {}, a));
  }
  markCurrent();
  if (!open) return;
  const wanted = decodeURIComponent(location.hash.slice(1)) || (campaigns[0] && campaigns[0].id);
  if (wanted && campaigns.some((c) => c.id === wanted)) await openCampaign(wanted);
  else if (campaigns[0]) await openCampaign(campaigns[0].id);
}

function markCurrent() {
  for (const a of document.querySelectorAll("#campaigns a")) {
    if (a.dataset.id === session.current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function showCampaignSections(on) {
  for (const s of document.querySelectorAll(".campaign-only")) s.hidden = !on;
  $("editor").hidden = false;
}

/// The create form, with the campaign sections out of the way.
function newCampaign() {
  session.current = null;
  history.replaceState(null, "", "#");
  markCurrent();
  showCampaignSections(false);
  fill("create", {});
  status("");
  $("f-id").focus();
}

async function openCampaign(id, focus) {
  session.current = id;
  history.replaceState(null, "", "#" + encodeURIComponent(id));
  markCurrent();
  const { data: c, etag } = await request("GET", campaignPath(id));
  showCampaignSections(true);
  $("title").textContent = c.id;
  $("summary").textContent = c.kind.replace("_", " ") + " campaign, " + c.status.replace("_", " ") + "; serving " + c.policy.type +
    (c.shadow_policies && c.shadow_policies.length ? ", shadows " + c.shadow_policies.map((p) => p.type).join(", ") : "") +
    (c.holdout ? "; holdout " + pct(c.holdout) : "") + (c.plugins && c.plugins.length ? "; plugins " + c.plugins.map((p) => p.name).join(" → ") : "") + ".";
  const sel = $("policy");
  sel.innerHTML = "";
  for (const p of [c.policy].concat(c.shadow_policies || [])) {
    sel.appendChild(el("option", { value: p.type, text: p.type + (p === c.policy ? " (serving)" : " (shadow)") }));
  }
  sel.value = c.policy.type;
  const paused = c.status === "paused";
  $("pause").textContent = paused ? "Resume" : "Pause";
  $("pause").dataset.action = paused ? "resume" : "pause";
  $("pause").setAttribute("aria-describedby", "summary");
  $("holdout").value = c.holdout || 0;
  for (const e of document.querySelectorAll("#overview [data-edit]")) e.disabled = !canEdit();
  $("preview").hidden = c.kind !== "items";
  fill("edit", c, etag);
  if (focus) $("title").focus();
  await loadReports(id);
}

let previewFor = null; // the campaign the preview builder was filled for

async function loadReports(id) {
  const base = campaignPath(id, "/reports/");
  const bucket = Number($("bucket").value);
  // One failing report shows its error in its own place; the others still render.
  const get = (path) => api("GET", path).catch((e) => ({ failed: e.message }));
  const [lift, policies, values, gems, affinity, actions, audit, autopilot] = await Promise.all([
    get(base + "lift?bucket_seconds=" + bucket),
    get(base + "policies?bucket_seconds=" + bucket),
    get(base + "policy-values?bucket_seconds=" + bucket),
    get(base + "hidden-gems"),
    get(base + "affinity"),
    get(base + "actions"),
    get("/admin/v1/audit?limit=50&campaign=" + encodeURIComponent(id)),
    get(campaignPath(id, "/autopilot")),
  ]);
  if (session.current !== id) return; // another campaign was opened meanwhile
  render("reward-chart", policies, () => renderPolicies(policies));
  render("lift", lift, () => renderLift(lift));
  render("values-chart", values, () => renderValues(values));
  render("gems", gems, () => renderGems(gems));
  render("affinity", affinity, () => {
    $("affinity").innerHTML = table([["bought", (p) => esc(p.bought)], ["shown", (p) => esc(p.shown)], ["exposures", (p) => p.exposures],
      ["response rate", (p) => pct(p.rate.estimate) + ' <span class="muted">[' + pct(p.rate.low) + ", " + pct(p.rate.high) + "]</span>"],
      ["all shoppers", (p) => pct(p.baseline_rate)], ["lift", (p) => num(p.lift)]], affinity.pairs.slice(0, 30), "Category affinity");
  });
  render("actions", actions, () => {
    $("actions").innerHTML = table([["item", (x) => "<code>" + esc(x.id) + "</code>"], ["exposures", (x) => x.exposures], ["rewarded", (x) => x.rewarded],
      ["reward rate", (x) => pct(x.reward_rate)], ["posterior mean [95%]", (x) => pct(x.posterior.estimate) + " [" + pct(x.posterior.low) + ", " + pct(x.posterior.high) + "]"]],
    actions.actions, "Per item results");
  });
  if (previewFor !== id) {
    previewFor = id;
    resetPreview(actions.actions ? actions.actions.map((a) => a.id) : []);
  }
  render("audit", audit, () => renderAudit($("audit"), audit.entries));
  render("autopilot", autopilot, () => renderAutopilot($("autopilot"), autopilot));
}

function render(id, data, fn) {
  if (data && data.failed !== undefined) {
    $(id).innerHTML = '<p class="error">Could not load: ' + esc(data.failed) + "</p>";
    return;
  }
  fn();
}

const policyColor = (names) => (name) => COLORS[names.indexOf(name) % COLORS.length];

function renderPolicies(report) {
  const b = report.bucket_seconds;
  const color = policyColor(report.policies.map((p) => p.policy));
  const series = report.policies.map((p) => ({ name: p.policy, color: color(p.policy),
    points: p.series.map((s) => ({ x: s.start_ms, y: s.rate })) }));
  // Decisions per bucket, all policies together.
  const total = new Map();
  for (const p of report.policies) for (const s of p.series) total.set(s.start_ms, (total.get(s.start_ms) || 0) + s.decisions);
  const decisions = [...total.entries()].sort((a, b2) => a[0] - b2[0]);
  const all = report.policies.reduce((n, p) => n + p.decisions, 0);
  const detail = () => (all === 0 ? "No decisions yet: the first ones appear here."
    : all + " decision" + (all === 1 ? "" : "s") + " so far, all in one " + bucketName(b) + " (from " + bucketLabel(decisions[0][0], b) +
      " UTC). The chart draws from the second " + bucketName(b) + " on; a shorter period shows more.");
  timeChart($("reward-chart"), series, { title: "Reward rate per serving policy", bucketSeconds: b, format: pct, legend: true, emptyDetail: detail });
  timeChart($("decisions-chart"), [{ name: "decisions", color: COLORS[0], points: decisions.map(([x, y]) => ({ x, y })) }],
    { title: "Decisions", bucketSeconds: b, format: (v) => String(Math.round(v)), bars: true, emptyDetail: detail });
}

function renderLift(lift) {
  const a = lift.absolute, r = lift.relative;
  const cls = a ? (a.low > 0 ? "pos" : a.high < 0 ? "neg" : "") : "";
  $("lift").innerHTML =
    table([["", (x) => x[0]], ["decisions", (x) => x[1].decisions], ["reward rate", (x) => pct(x[1].rate.estimate) +
      ' <span class="muted">[' + pct(x[1].rate.low) + ", " + pct(x[1].rate.high) + "]</span>"]],
    [["personalized", lift.personalized], ["holdout", lift.holdout]], "Personalized vs holdout") +
    "<p>Absolute lift: <span id='lift-abs' class='" + cls + "'>" + (a ? pct(a.estimate) + " [" + pct(a.low) + ", " + pct(a.high) + "]" : "needs traffic in both groups") +
    "</span>; relative: " + (r ? pct(r.estimate) + " [" + pct(r.low) + ", " + pct(r.high) + "]" : "–") +
    "; p-value: " + (lift.p_value === null || lift.p_value === undefined ? "–" : lift.p_value.toPrecision(3)) + "</p>";
  const pts = lift.series.filter((p) => p.absolute).map((p) => ({ x: p.start_ms, y: p.absolute.estimate, low: p.absolute.low, high: p.absolute.high }));
  timeChart($("lift-chart"), [{ name: "absolute lift (95% band)", color: COLORS[0], points: pts }],
    { title: "Incremental lift", bucketSeconds: lift.bucket_seconds, format: pct, legend: true,
      emptyDetail: (_, xs) => (xs.length ? "Lift has one " + bucketName(lift.bucket_seconds) + " with both groups so far; the chart draws from the second on."
        : "Lift needs decisions in both the personalized group and the holdout.") });
}

function renderValues(values) {
  const b = values.bucket_seconds || Number($("bucket").value);
  const series = values.policies.map((p, i) => ({ name: p.policy + " (" + p.role + ")", color: COLORS[i % COLORS.length],
    points: p.series.filter((s) => s.value !== null).map((s) => ({ x: s.start_ms, y: s.value })) }));
  $("values-note").textContent = values.method;
  timeChart($("values-chart"), series, { title: "Estimated reward per policy", bucketSeconds: b, format: pct, legend: true,
    emptyDetail: (_, xs) => (xs.length ? "Estimates cover one " + bucketName(b) + " so far; the chart draws from the second on."
      : "No estimate yet. Estimates replay the logged requests, so the campaign must keep them (\u201cKeep each decision\u2019s request\u201d in the configuration), and need decisions whose reward arrived or whose window closed.") });
}

function renderGems(gems) {
  $("gems").innerHTML = '<p class="muted">Shown to under ' + pct(gems.max_share) + " of exposures, posterior lower bound above the campaign median (" + pct(gems.campaign_median) + ").</p>" +
    table([["item", (g) => "<code>" + esc(g.id) + "</code>"], ["exposures", (g) => g.exposures], ["share", (g) => pct(g.exposure_share)],
      ["reward rate", (g) => pct(g.reward_rate)], ["95% interval", (g) => pct(g.posterior.low) + " – " + pct(g.posterior.high)]], gems.gems, "Hidden gems");
}

/// Run a change, say how it went, and show the campaign as it is now.
async function change(fn) {
  status("Saving…");
  try { await fn(); status("Saved."); } catch (e) { status("Not saved: " + e.message, true); }
  if (session.current) await openCampaign(session.current).catch((e) => status(e.message, true));
  await listCampaigns(false).catch(() => {});
}

$("key").addEventListener("change", () => {
  session.key = $("key").value.trim();
  sessionStorage.setItem("tailor-key", session.key);
  start();
});
$("policy").addEventListener("change", () =>
  change(() => api("PUT", campaignPath(session.current, "/policy"), { type: $("policy").value })));
$("pause").addEventListener("click", () =>
  change(() => api("POST", campaignPath(session.current, "/" + $("pause").dataset.action))));
$("holdout-save").addEventListener("click", () =>
  change(() => api("PUT", campaignPath(session.current, "/holdout"), { share: Number($("holdout").value) })));
$("bucket").addEventListener("change", () => session.current && loadReports(session.current));
$("new-campaign").addEventListener("click", newCampaign);
$("title").setAttribute("tabindex", "-1");
initEditor({
  onSaved: async (id) => {
    await listCampaigns(false);
    await openCampaign(id, true);
  },
});
initPreview();
start();
