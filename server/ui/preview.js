// The preview panel: build (or paste) a shopper's context and candidates, and see the ranked
// answer the campaign would give now, with probabilities and the reasons — without logging or
// learning anything (POST /admin/v1/campaigns/{id}/preview).
import { $, api, campaignPath, el, esc, num, pct, session, table } from "./util.js";

let rows = [];

export function initPreview() {
  $("pv-add").addEventListener("click", () => { addRow({}); rows[rows.length - 1].id.focus(); });
  $("pv-fill").addEventListener("click", fillFromItems);
  $("pv-paste-apply").addEventListener("click", applyPaste);
  $("preview-form").addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  $("explain-form").addEventListener("submit", (ev) => { ev.preventDefault(); explain(); });
}

/// GET .../decisions/{event_id}/explain: what a logged decision served and why; when the
/// campaign kept the request, it can be loaded into the preview form.
async function explain() {
  const id = $("ex-event").value.trim();
  const out = $("ex-result");
  if (!id) { out.innerHTML = '<p class="error">Enter the event id of a decision.</p>'; return; }
  out.setAttribute("aria-busy", "true");
  try {
    const x = await api("GET", campaignPath(session.current, "/decisions/" + encodeURIComponent(id) + "/explain"));
    out.innerHTML = "<p><strong>Served " + (x.slots || []).map((s) => esc(s.id)).join(", ") + "</strong> at " + esc(x.at) + " — policy <code>" + esc(x.policy) +
      "</code>; holdout: " + yesNo(x.holdout) + "; exploring: " + yesNo(x.explore) + "; " + esc(x.eligible_candidates) + " eligible candidates.</p>" +
      table([["slot", (s) => String(s.slot + 1)], ["item", (s) => "<code>" + esc(s.id) + "</code>" + (s.pinned ? ' <span class="tag">pinned</span>' : "")],
        ["probability", (s) => pct(s.probability)], ["why", (s) => esc(s.why || "")]], x.slots || [], "The logged answer") +
      ((x.removed || []).length ? "<ul>" + x.removed.map((r) => "<li>" + esc(r.id) + " removed by " + esc(r.plugin) + ": " + esc(r.message || r.reason) + "</li>").join("") + "</ul>" : "") +
      (x.request ? "" : '<p class="muted">The campaign did not keep this request, so it cannot be replayed in the preview.</p>');
    if (x.request) {
      const load = el("button", { type: "button", class: "secondary", onclick: () => {
        $("pv-paste").value = JSON.stringify(x.request, null, 1);
        applyPaste();
        $("pv-run").focus();
      } }, "Load this request into the preview");
      out.appendChild(load);
    }
  } catch (e) {
    out.innerHTML = '<p class="error">Could not explain: ' + esc(e.message) + "</p>";
  } finally {
    out.removeAttribute("aria-busy");
  }
}

/// Reset the builder for campaign `id`, with candidates from its per-action report if any.
/// A preview changes nothing, so the server lets viewer keys run one too: these controls stay
/// enabled for every key that can read the campaign (they carry no data-edit).
export function resetPreview(items) {
  $("pv-shopper").value = "shopper-1";
  $("pv-k").value = "3";
  $("pv-context").value = JSON.stringify({ segment: "new", device: "mobile" }, null, 1);
  $("pv-result").innerHTML = '<p class="muted">Build a request and press Preview.</p>';
  $("pv-paste").value = "";
  $("ex-event").value = "";
  $("ex-result").innerHTML = "";
  rows = [];
  $("pv-rows").innerHTML = "";
  const ids = (items || []).slice(0, 5);
  for (const id of ids.length ? ids : ["sku-1", "sku-2", "sku-3"]) addRow({ id });
  lastItems = items || [];
}

let lastItems = [];

function fillFromItems() {
  rows = [];
  $("pv-rows").innerHTML = "";
  for (const id of lastItems.slice(0, 20)) addRow({ id });
  if (!rows.length) addRow({});
}


function addRow(c) {
  const i = rows.length;
  const id = el("input", { type: "text", value: c.id || "", "aria-label": "Candidate " + (i + 1) + " id", autocomplete: "off", spellcheck: "false" });
  const attrs = el("input", { type: "text", class: "code", value: c.attributes ? JSON.stringify(c.attributes) : "", placeholder: '{"category": "shoes"}',
    "aria-label": "Candidate " + (i + 1) + " attributes (JSON)", spellcheck: "false" });
  const feats = el("input", { type: "text", class: "code", value: c.features ? JSON.stringify(c.features) : "", placeholder: '{"price": 49}',
    "aria-label": "Candidate " + (i + 1) + " features (JSON)", spellcheck: "false" });
  const row = { id, attrs, feats };
  const remove = el("button", { type: "button", class: "secondary", "aria-label": "Remove candidate " + (i + 1), onclick: () => {
    const keep = rows.filter((r) => r !== row).map(readRow);
    rows = [];
    $("pv-rows").innerHTML = "";
    for (const k of keep) addRow(k);
  } }, "Remove");
  const tr = el("tr", {}, [el("td", {}, id), el("td", {}, attrs), el("td", {}, feats), el("td", {}, remove)]);
  rows.push(row);
  $("pv-rows").appendChild(tr);
}

function readRow(r) {
  const out = { id: r.id.value.trim() };
  for (const [k, input] of [["attributes", r.attrs], ["features", r.feats]]) {
    const t = input.value.trim();
    if (!t) continue;
    try { out[k] = JSON.parse(t); } catch (e) { out[k] = t; }
  }
  return out;
}

/// A pasted decide body fills the builder (so what runs is always what is shown).
function applyPaste() {
  let body;
  try { body = JSON.parse($("pv-paste").value); } catch (e) {
    showError("The pasted text is not JSON: " + e.message);
    return;
  }
  if (body.shopper_id !== undefined) $("pv-shopper").value = body.shopper_id;
  if (body.k !== undefined) $("pv-k").value = body.k;
  $("pv-context").value = body.context === undefined ? "" : JSON.stringify(body.context, null, 1);
  rows = [];
  $("pv-rows").innerHTML = "";
  for (const c of body.candidates || []) addRow(c);
  $("pv-result").innerHTML = '<p class="muted">Filled from the pasted body; press Preview.</p>';
}

function showError(msg) {
  $("pv-result").innerHTML = '<p class="error">' + esc(msg) + "</p>";
}

function body() {
  const out = { candidates: rows.map(readRow).filter((c) => c.id) };
  for (const c of out.candidates) {
    for (const k of ["attributes", "features"]) {
      if (typeof c[k] === "string") throw new Error("Candidate " + c.id + ": " + k + " is not valid JSON.");
    }
  }
  const ctx = $("pv-context").value.trim();
  if (ctx) {
    try { out.context = JSON.parse(ctx); } catch (e) { throw new Error("The context is not valid JSON: " + e.message); }
  }
  const shopper = $("pv-shopper").value.trim();
  if (shopper) out.shopper_id = shopper;
  const k = $("pv-k").value.trim();
  if (k) out.k = Number(k);
  return out;
}

async function run() {
  let req;
  try { req = body(); } catch (e) { showError(e.message); return; }
  $("pv-result").setAttribute("aria-busy", "true");
  try {
    const p = await api("POST", campaignPath(session.current, "/preview"), req);
    render(p);
  } catch (e) {
    showError("Preview failed" + (e.field ? " (" + e.field + ")" : "") + ": " + e.message);
  } finally {
    $("pv-result").removeAttribute("aria-busy");
  }
}

const yesNo = (b) => (b ? "yes" : "no");

export function render(p) {
  const slots = p.slots || [];
  const head = "<p><strong>" + (slots.length ? "Would serve " + slots.map((s) => esc(s.id)).join(", ") : "Would serve nothing") + "</strong> — policy <code>" +
    esc(p.policy) + "</code>" + (p.policy_version !== undefined ? " (learned from " + esc(p.policy_version) + " rewards)" : "") +
    "; holdout: " + yesNo(p.holdout) + "; exploring: " + yesNo(p.explore) +
    (p.exploration ? " (+" + pct(p.exploration) + " uniform)" : "") + ". " +
    (p.dry_run ? '<span class="muted">A dry run: nothing was logged or learned.</span>' : "") + "</p>" +
    (p.fallback ? '<p class="error">Plugin fallback: ' + esc(p.fallback) + "</p>" : "");
  const answer = table([
    ["slot", (s) => String(s.slot + 1)],
    ["item", (s) => "<code>" + esc(s.id) + "</code>" + (s.pinned ? ' <span class="tag">pinned</span>' : "")],
    ["probability", (s) => pct(s.probability)],
    ["why", (s) => esc(s.why || "")],
  ], slots, "The ranked answer");
  const why = (c) => {
    const out = [];
    if (c.removed) out.push("removed by " + esc(c.removed.plugin) + ": " + esc(c.removed.message || c.removed.reason));
    for (const a of c.adjustments || []) out.push(esc(a.why) + " (×" + num(a.factor, 2) + ")");
    return out.join("; ") || '<span class="muted">—</span>';
  };
  const cands = table([
    ["item", (c) => "<code>" + esc(c.id) + "</code>"],
    ["served in", (c) => (c.slot === null || c.slot === undefined ? (c.eligible ? "not served" : "removed") : "slot " + (c.slot + 1))],
    ["chance of top slot", (c) => pct(c.first_slot_probability)],
    ["estimate", (c) => num(c.mean)],
    ["uncertainty", (c) => num(c.uncertainty)],
    ["score", (c) => num(c.score)],
    ["factor", (c) => (c.factor === 1 || c.factor === undefined ? "1" : "×" + num(c.factor, 2))],
    ["explanation", why],
  ], p.candidates || [], "Every candidate");
  const rules = (p.pins || []).map((r) => "<li>Pin " + (r.rule + 1) + " (" + esc(r.item) + " in slot " + (r.slot + 1) + "): " +
    (r.applied ? "served in slot " + (r.slot + 1) + " with probability 1" : esc(r.why)) + "</li>")
    .concat((p.boosts || []).map((b) => "<li>Boost " + (b.rule + 1) + " (" + esc(b.attribute) + " = " + esc(JSON.stringify(b.value)) + ", ×" + num(b.factor, 2) + "): " +
      (b.open ? (b.matched.length ? "matched " + b.matched.map(esc).join(", ") : "matched no candidate") : "window closed") + "</li>"));
  $("pv-result").innerHTML = head + "<h3>Answer</h3>" + answer + "<h3>Every candidate</h3>" + cands +
    (rules.length ? "<h3>Pins and boosts</h3><ul>" + rules.join("") + "</ul>" : "");
}
