// Tailor control room: reads and changes campaigns through the admin API with the typed key.
"use strict";
const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("tailor-key") || "";
let me = null;
let current = null;

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + key } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: { message: text } }; }
  if (!r.ok) throw new Error((data && data.error && data.error.message) || r.status + " " + r.statusText);
  return data;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(2) + "%");
const num = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(3));
const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

function table(cols, rows) {
  if (!rows.length) return '<p class="muted">Nothing yet.</p>';
  return "<table><tr>" + cols.map((c) => "<th>" + esc(c[0]) + "</th>").join("") + "</tr>" +
    rows.map((r) => "<tr>" + cols.map((c) => "<td>" + c[1](r) + "</td>").join("") + "</tr>").join("") +
    "</table>";
}

function status(msg, error) {
  $("status").textContent = msg || "";
  $("status").className = error ? "error" : "muted";
}

async function start() {
  $("key").value = key;
  if (!key) return;
  try {
    me = await api("GET", "/admin/v1/whoami");
  } catch (e) {
    me = null;
    $("who").textContent = "";
    status("Key refused: " + e.message, true);
    return;
  }
  $("who").textContent = me.key_id + " (" + me.role + (me.campaign ? ", " + me.campaign : "") + ")";
  try {
    await listCampaigns();
    status("");
  } catch (e) {
    status("Could not load: " + e.message, true);
  }
}

async function listCampaigns() {
  const { campaigns } = await api("GET", "/admin/v1/campaigns");
  const nav = $("campaigns");
  nav.innerHTML = campaigns.length ? "" : '<span class="muted">No campaigns.</span>';
  for (const c of campaigns) {
    const a = document.createElement("a");
    a.href = "#" + c.id;
    a.textContent = c.id + (c.status === "paused" ? " (paused)" : "");
    a.dataset.id = c.id;
    a.onclick = (ev) => { ev.preventDefault(); openCampaign(c.id); };
    nav.appendChild(a);
  }
  const wanted = location.hash.slice(1) || (campaigns[0] && campaigns[0].id);
  if (wanted) await openCampaign(wanted);
}

async function openCampaign(id) {
  current = id;
  history.replaceState(null, "", "#" + id);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.id === id);
  const c = await api("GET", "/admin/v1/campaigns/" + encodeURIComponent(id));
  $("campaign").hidden = false;
  $("title").textContent = c.id + " — " + c.kind + ", " + c.status;
  const sel = $("policy");
  sel.innerHTML = "";
  for (const p of [c.policy].concat(c.shadow_policies || [])) {
    const o = document.createElement("option");
    o.value = p.type;
    o.textContent = p.type + (p === c.policy ? " (serving)" : " (shadow)");
    sel.appendChild(o);
  }
  sel.value = c.policy.type;
  $("pause").textContent = c.status === "paused" ? "Resume" : "Pause";
  $("pause").dataset.action = c.status === "paused" ? "resume" : "pause";
  $("holdout").value = c.holdout || 0;
  const canEdit = me && me.role === "editor";
  for (const el of [sel, $("pause"), $("holdout"), $("holdout-save")]) el.disabled = !canEdit;
  $("readonly").hidden = canEdit;
  await loadReports(id);
}

async function loadReports(id) {
  const base = "/admin/v1/campaigns/" + encodeURIComponent(id) + "/reports/";
  // One failing report shows its error in its own section; the others still render.
  const get = (path) => api("GET", path).catch((e) => ({ failed: e.message }));
  const [lift, policies, values, gems, affinity, actions, audit] = await Promise.all([
    get(base + "lift"),
    get(base + "policies"),
    get(base + "policy-values"),
    get(base + "hidden-gems"),
    get(base + "affinity"),
    get(base + "actions"),
    get("/admin/v1/audit?limit=50&campaign=" + encodeURIComponent(id)),
  ]);
  if (current !== id) return; // another campaign was opened meanwhile
  render("lift", lift, () => renderLift(lift));
  render("policy-legend", policies, () => renderPolicies(policies));
  render("values-legend", values, () => renderValues(values));
  render("gems", gems, () => renderGems(gems));
  render("affinity", affinity, () => {
    $("affinity").innerHTML = table([["bought", (p) => esc(p.bought)], ["shown", (p) => esc(p.shown)], ["exposures", (p) => p.exposures],
      ["response rate", (p) => pct(p.rate.estimate) + ' <span class="muted">[' + pct(p.rate.low) + ", " + pct(p.rate.high) + "]</span>"],
      ["all shoppers", (p) => pct(p.baseline_rate)], ["lift", (p) => num(p.lift)]], affinity.pairs.slice(0, 30));
  });
  render("actions", actions, () => {
    $("actions").innerHTML = table([["item", (x) => esc(x.id)], ["exposures", (x) => x.exposures], ["rewarded", (x) => x.rewarded],
      ["reward rate", (x) => pct(x.reward_rate)], ["posterior mean [95%]", (x) => pct(x.posterior.estimate) + " [" + pct(x.posterior.low) + ", " + pct(x.posterior.high) + "]"]], actions.actions);
  });
  render("audit", audit, () => {
    $("audit").innerHTML = table([["time", (e) => when(e.at_ms)], ["key", (e) => esc(e.key_id)], ["action", (e) => esc(e.action)],
      ["change", (e) => esc(diff(e.before, e.after))]], audit.entries);
  });
}

function render(id, data, fn) {
  if (data && data.failed !== undefined) {
    $(id).innerHTML = '<p class="error">Could not load: ' + esc(data.failed) + "</p>";
    return;
  }
  fn();
}

function renderLift(lift) {
  const a = lift.absolute, r = lift.relative;
  const cls = a ? (a.low > 0 ? "pos" : a.high < 0 ? "neg" : "") : "";
  $("lift").innerHTML =
    table([["", (x) => x[0]], ["decisions", (x) => x[1].decisions], ["reward rate", (x) => pct(x[1].rate.estimate) +
      ' <span class="muted">[' + pct(x[1].rate.low) + ", " + pct(x[1].rate.high) + "]</span>"]],
      [["personalized", lift.personalized], ["holdout", lift.holdout]]) +
    "<p>Absolute lift: <span id='lift-abs' class='" + cls + "'>" + (a ? pct(a.estimate) + " [" + pct(a.low) + ", " + pct(a.high) + "]" : "needs traffic in both groups") +
    "</span>; relative: " + (r ? pct(r.estimate) + " [" + pct(r.low) + ", " + pct(r.high) + "]" : "–") +
    "; p-value: " + (lift.p_value === null || lift.p_value === undefined ? "–" : lift.p_value.toPrecision(3)) + "</p>";
  chart($("lift-chart"), [{ name: "lift", color: "#3367d6",
    points: lift.series.filter((p) => p.absolute).map((p) => [p.start_ms, p.absolute.estimate, p.absolute.low, p.absolute.high]) }]);
}

function renderPolicies(policies) {
  const colors = ["#3367d6", "#e37400", "#0a7d32", "#b00020", "#7b1fa2"];
  const series = policies.policies.map((p, i) => ({ name: p.policy, color: colors[i % colors.length],
    points: p.series.map((s) => [s.start_ms, s.rate]) }));
  chart($("policy-chart"), series);
  $("policy-legend").innerHTML = series.map((s) => '<span style="color:' + s.color + '">■ ' + esc(s.name) + "</span>").join(" &nbsp; ");
}

function renderValues(values) {
  const colors = ["#3367d6", "#e37400", "#0a7d32", "#b00020", "#7b1fa2"];
  const series = values.policies.map((p, i) => ({ name: p.policy + " (" + p.role + ")", color: colors[i % colors.length],
    points: p.series.filter((s) => s.value !== null).map((s) => [s.start_ms, s.value]) }));
  chart($("values-chart"), series);
  $("values-note").textContent = values.method;
  $("values-legend").innerHTML = series.map((s) => '<span style="color:' + s.color + '">■ ' + esc(s.name) + "</span>").join(" &nbsp; ");
}

function renderGems(gems) {
  $("gems").innerHTML = '<p class="muted">Shown to under ' + pct(gems.max_share) + " of exposures, posterior lower bound above the campaign median (" + pct(gems.campaign_median) + ").</p>" +
    table([["item", (g) => esc(g.id)], ["exposures", (g) => g.exposures], ["share", (g) => pct(g.exposure_share)],
      ["reward rate", (g) => pct(g.reward_rate)], ["95% interval", (g) => pct(g.posterior.low) + " – " + pct(g.posterior.high)]], gems.gems);
}

function diff(before, after) {
  if (!before || !after || typeof before !== "object") return JSON.stringify(after);
  const keys = new Set(Object.keys(before).concat(Object.keys(after)));
  const out = [];
  for (const k of keys) {
    const b = JSON.stringify(before[k]), a = JSON.stringify(after[k]);
    if (a !== b) out.push(k + ": " + (b === undefined ? "–" : b) + " → " + (a === undefined ? "–" : a));
  }
  return out.join("; ") || "no change";
}

// A small line chart: series of [x, y, low?, high?] points; intervals drawn as a band.
function chart(svg, series) {
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height"), pad = 30;
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { svg.innerHTML = '<text x="10" y="20" fill="#778">No data yet.</text>'; return; }
  const xs = pts.map((p) => p[0]), ys = pts.flatMap((p) => p.slice(1).filter((v) => v !== undefined)).concat([0]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + (x1 === x0 ? (w - 2 * pad) / 2 : ((x - x0) / (x1 - x0)) * (w - 2 * pad));
  const Y = (y) => h - pad - (y1 === y0 ? 0 : ((y - y0) / (y1 - y0)) * (h - 2 * pad));
  let out = '<line x1="' + pad + '" x2="' + (w - pad) + '" y1="' + Y(0) + '" y2="' + Y(0) + '" stroke="#ccc"/>';
  out += '<text x="2" y="' + (Y(y1) + 4) + '" font-size="10">' + pct(y1) + '</text><text x="2" y="' + (Y(y0) + 4) + '" font-size="10">' + pct(y0) + "</text>";
  for (const s of series) {
    const band = s.points.filter((p) => p.length === 4);
    if (band.length) {
      const poly = band.map((p) => X(p[0]) + "," + Y(p[3])).concat(band.slice().reverse().map((p) => X(p[0]) + "," + Y(p[2])));
      out += '<polygon points="' + poly.join(" ") + '" fill="' + s.color + '" opacity="0.15"/>';
    }
    out += '<polyline fill="none" stroke="' + s.color + '" stroke-width="2" points="' + s.points.map((p) => X(p[0]) + "," + Y(p[1])).join(" ") + '"/>';
    for (const p of s.points) out += '<circle cx="' + X(p[0]) + '" cy="' + Y(p[1]) + '" r="3" fill="' + s.color + '"/>';
  }
  svg.innerHTML = out;
}

async function change(fn) {
  try { await fn(); status("Saved."); } catch (e) { status(e.message, true); }
  if (current) await openCampaign(current).catch((e) => status(e.message, true));
  await listCampaignsQuiet();
}

async function listCampaignsQuiet() {
  const { campaigns } = await api("GET", "/admin/v1/campaigns");
  for (const a of document.querySelectorAll("nav a")) {
    const c = campaigns.find((c) => c.id === a.dataset.id);
    if (c) a.textContent = c.id + (c.status === "paused" ? " (paused)" : "");
  }
}

$("key").addEventListener("change", () => {
  key = $("key").value.trim();
  sessionStorage.setItem("tailor-key", key);
  start();
});
$("policy").addEventListener("change", () =>
  change(() => api("PUT", "/admin/v1/campaigns/" + encodeURIComponent(current) + "/policy", { type: $("policy").value })));
$("pause").addEventListener("click", () =>
  change(() => api("POST", "/admin/v1/campaigns/" + encodeURIComponent(current) + "/" + $("pause").dataset.action)));
$("holdout-save").addEventListener("click", () =>
  change(() => api("PUT", "/admin/v1/campaigns/" + encodeURIComponent(current) + "/holdout", { share: Number($("holdout").value) })));
start();
