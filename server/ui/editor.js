// The campaign editor: create a campaign or edit one's configuration in a form. Every edit is
// checked by the server's own validation (POST /admin/v1/campaigns/{id}/validate, a dry run of
// the save); the field its 400 names gets the message next to it. Fields the form does not show
// (featurizer, Personalizer settings, ...) are kept as loaded.
import { $, api, campaignPath, canEdit, el, nextId, session, status } from "./util.js";

/// Policy types and their settings (policies/src/policy.rs); `half_life` is optional everywhere
/// it appears.
export const POLICIES = {
  sparse_linucb: { label: "Sparse LinUCB (learns from context; default)", params: [
    ["alpha", "Exploration bonus α (0–10)", 0.2], ["lambda", "Prior precision λ", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  thompson: { label: "Thompson sampling (clicks, conversions)", params: [
    ["prior_alpha", "Prior successes", 1], ["prior_beta", "Prior failures", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  gaussian_thompson: { label: "Gaussian Thompson (revenue)", params: [
    ["prior_mean", "Prior mean reward", 0], ["prior_count", "Prior count κ₀", 1], ["prior_shape", "Noise shape α₀", 1],
    ["prior_scale", "Noise scale β₀", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  linucb: { label: "LinUCB (shared model)", params: [
    ["alpha", "Exploration bonus α", 1], ["lambda", "Ridge λ", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  linucb_disjoint: { label: "LinUCB (one model per item)", params: [
    ["alpha", "Exploration bonus α", 1], ["lambda", "Ridge λ", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  linear_thompson: { label: "Linear Thompson", params: [
    ["scale", "Posterior scale v", 1], ["lambda", "Ridge λ", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  epsilon_greedy: { label: "ε-greedy", params: [
    ["epsilon", "ε: share of random choices (0–1)", 0.1], ["estimator", "Estimator", "mean", ["mean", "ridge"]],
    ["lambda", "Ridge λ (ridge estimator)", 1], ["half_life", "Half-life in rewards (optional)", null]] },
  uniform: { label: "Uniform random (baseline)", params: [] },
  fixed: { label: "Fixed: the order sent (baseline)", params: [] },
};

const UNITS = [["seconds", 1], ["minutes", 60], ["hours", 3600], ["days", 86400]];

const state = {
  mode: "create", // or "edit"
  loaded: null, // the config as loaded (edit) or {} (create)
  etag: null, // the loaded config's version (ETag), sent as If-Match on save
  plugins: [], // names of loaded plugins, for suggestions
  onSaved: null,
  seq: 0,
  timer: null,
};

// ---- building blocks -------------------------------------------------------------------------

/// A labelled input with an error slot: the error element is tied by aria-describedby and the
/// input carries data-field (the config path the server names in a 400).
function field(label, input, fieldPath, hint) {
  const id = input.id || (input.id = nextId("f"));
  input.dataset.field = fieldPath;
  input.dataset.edit = "";
  const err = el("span", { class: "field-error", id: id + "-err", hidden: true });
  const ids = [err.id];
  let hintEl = null;
  if (hint) {
    hintEl = el("span", { class: "hint", id: id + "-hint", text: hint });
    ids.unshift(hintEl.id);
  }
  input.setAttribute("aria-describedby", ids.join(" "));
  return el("div", { class: "field" }, [el("label", { for: id, text: label }), input, hintEl, err]);
}

const numberInput = (value, attrs) => el("input", Object.assign({ type: "number", step: "any", value: value === null || value === undefined ? "" : String(value) }, attrs || {}));
const select = (options, value) => {
  const s = el("select");
  for (const [v, label] of options) s.appendChild(el("option", { value: v, text: label }));
  if (value !== undefined) s.value = value;
  return s;
};
const button = (text, onclick, attrs) => el("button", Object.assign({ type: "button", onclick, "data-edit": "" }, attrs || {}), text);

/// A policy editor (type + its settings) under config path `path` ("policy" or
/// "shadow_policies"); returns {node, read()}.
function policyEditor(path, policy, legend, onRemove) {
  const box = el("fieldset", { class: "policy" });
  box.appendChild(el("legend", { text: legend }));
  const type = select(Object.entries(POLICIES).map(([k, v]) => [k, v.label]), policy.type);
  box.appendChild(field("Type", type, path + ".type"));
  const params = el("div", { class: "row" });
  box.appendChild(params);
  let inputs = {};
  let keep = Object.assign({}, policy); // unknown settings survive an edit of the known ones
  const draw = () => {
    params.innerHTML = "";
    inputs = {};
    for (const [name, label, def, choices] of POLICIES[type.value].params) {
      const v = keep[name] !== undefined ? keep[name] : def;
      const input = choices ? select(choices.map((c) => [c, c]), v) : numberInput(v, def === null ? { placeholder: "none" } : {});
      inputs[name] = input;
      params.appendChild(field(label, input, path + "." + name));
    }
  };
  type.addEventListener("change", () => { keep = { type: type.value }; draw(); });
  draw();
  if (onRemove) box.appendChild(button("Remove this shadow policy", onRemove, { class: "secondary" }));
  return {
    node: box,
    read() {
      const out = Object.assign({}, keep, { type: type.value });
      for (const [name, , def, choices] of POLICIES[type.value].params) {
        const raw = inputs[name].value.trim();
        if (choices) out[name] = raw;
        else if (raw === "") { if (def === null) delete out[name]; else out[name] = def; }
        else out[name] = Number(raw);
      }
      return out;
    },
  };
}

// ---- the form --------------------------------------------------------------------------------

let parts = null; // {read() -> config} pieces of the current form

export function initEditor({ onSaved }) {
  state.onSaved = onSaved;
  $("editor-form").addEventListener("input", scheduleCheck);
  $("editor-form").addEventListener("change", scheduleCheck);
  $("editor-form").addEventListener("submit", (ev) => { ev.preventDefault(); save(); });
  $("editor-reset").addEventListener("click", () => fill(state.mode, state.loaded, state.etag));
}

/// Loaded plugin names (for the name suggestions); a campaign-scoped key may not list them.
export async function loadPluginNames() {
  try {
    // The plugin list is server-wide: a campaign-scoped key would get a 403.
    if (session.me && session.me.campaign) throw new Error("scoped key");
    const list = await api("GET", "/admin/v1/plugins");
    state.plugins = [...new Set((list.plugins || []).filter((p) => p.current).map((p) => p.name))].sort();
  } catch (e) {
    state.plugins = [];
  }
  const dl = $("plugin-names");
  dl.innerHTML = "";
  for (const n of state.plugins) dl.appendChild(el("option", { value: n }));
}

/// Fill the form: mode "create" (an empty campaign) or "edit" (config as loaded).
export function fill(mode, config, etag) {
  state.mode = mode;
  state.etag = etag || null;
  state.loaded = JSON.parse(JSON.stringify(config || {}));
  const c = state.loaded;
  const root = $("editor-fields");
  root.innerHTML = "";
  $("editor-title").textContent = mode === "create" ? "New campaign" : "Configuration";
  $("editor-save").textContent = mode === "create" ? "Create campaign" : "Save configuration";
  $("editor-check").textContent = "";

  // Identity.
  const basics = el("fieldset", {}, [el("legend", { text: "Campaign" })]);
  const id = el("input", { type: "text", value: c.id || "", autocomplete: "off", spellcheck: "false", readOnly: mode === "edit" });
  id.id = "f-id";
  basics.appendChild(field("Id", id, "id", "1–64 characters: letters, digits, - _ ."));
  const kind = select([["items", "Items: rank products or content"], ["send_time", "Send time: pick when to message"]], c.kind || "items");
  kind.id = "f-kind";
  kind.disabled = mode === "edit";
  basics.appendChild(field("Kind", kind, "kind", mode === "edit" ? "The kind is fixed once created." : undefined));
  const slots = select([["hour_of_day", "Each hour of the day (24 slots)"], ["hour_of_week", "Each hour of the week (168 slots)"]],
    typeof c.slots === "string" ? c.slots : "hour_of_day");
  slots.id = "f-slots";
  const slotsField = field("Send slots", slots, "slots");
  basics.appendChild(slotsField);
  const statusSel = select([["active", "Active: the policy serves"], ["paused", "Paused: the order sent, still learning"], ["logging_only", "Logging only: the order sent, no learning"]], c.status || "active");
  statusSel.id = "f-status";
  basics.appendChild(field("Status", statusSel, "status"));
  root.appendChild(basics);

  // Learning.
  const learning = el("fieldset", {}, [el("legend", { text: "Learning" })]);
  const serving = policyEditor("policy", c.policy || { type: kind.value === "items" ? "sparse_linucb" : "thompson" }, "Serving policy");
  serving.node.id = "f-policy";
  learning.appendChild(serving.node);
  const shadowBox = el("div", { id: "f-shadows", "data-field": "shadow_policies" });
  const shadowErr = el("span", { class: "field-error", id: "f-shadows-err", hidden: true });
  let shadows = [];
  const drawShadows = (list) => {
    shadowBox.innerHTML = "";
    shadows = [];
    list.forEach((p, i) => {
      const ed = policyEditor("shadow_policies", p, "Shadow policy " + (i + 1) + " (learns, does not serve)", () => {
        drawShadows(shadows.map((s) => s.read()).filter((_, j) => j !== i));
        scheduleCheck();
      });
      shadows.push(ed);
      shadowBox.appendChild(ed.node);
    });
  };
  drawShadows(c.shadow_policies || []);
  learning.appendChild(shadowBox);
  learning.appendChild(shadowErr);
  learning.appendChild(button("Add a shadow policy", () => {
    const used = new Set([serving.read().type].concat(shadows.map((s) => s.read().type)));
    const free = Object.keys(POLICIES).find((t) => !used.has(t)) || "uniform";
    drawShadows(shadows.map((s) => s.read()).concat([{ type: free }]));
    shadowBox.lastChild.querySelector("select").focus();
    scheduleCheck();
  }, { id: "f-add-shadow", class: "secondary" }));
  const exploration = numberInput(c.exploration || 0, { min: 0, max: 1, step: 0.01, id: "f-exploration" });
  const holdout = numberInput(c.holdout || 0, { min: 0, max: 0.5, step: 0.01, id: "f-holdout" });
  learning.appendChild(el("div", { class: "row" }, [
    field("Exploration share (0–1)", exploration, "exploration", "Served uniformly at random on top of the policy."),
    field("Holdout share (0–0.5)", holdout, "holdout", "Shoppers who always get the order sent."),
  ]));
  root.appendChild(learning);

  // Rewards.
  const rewards = el("fieldset", {}, [el("legend", { text: "Rewards" })]);
  const wait = c.reward_wait_seconds === undefined ? 86400 : c.reward_wait_seconds;
  const [, unitSize] = UNITS.slice().reverse().find(([, s]) => wait % s === 0) || UNITS[0];
  const waitIn = numberInput(wait / unitSize, { min: 0, id: "f-wait" });
  const unit = select(UNITS.map(([n, s]) => [String(s), n]), String(unitSize));
  unit.id = "f-wait-unit";
  unit.setAttribute("aria-label", "Reward window unit");
  unit.dataset.edit = "";
  const waitField = field("Reward window", waitIn, "reward_wait_seconds", "How long after a decision rewards count (at most 30 days).");
  waitField.insertBefore(el("div", { class: "row" }, [waitIn, unit]), waitField.querySelector(".hint"));
  const range = c.reward_range || [0, 1];
  const lo = numberInput(range[0], { id: "f-range-lo" });
  const hi = numberInput(range[1], { id: "f-range-hi" });
  const def = numberInput(c.default_reward || 0, { id: "f-default-reward" });
  rewards.appendChild(el("div", { class: "row" }, [
    waitField,
    field("Lowest reward", lo, "reward_range"),
    field("Highest reward", hi, "reward_range.hi"),
    field("Reward when none arrives", def, "default_reward"),
  ]));
  const keepRequests = el("input", { type: "checkbox", id: "f-log-requests", checked: !!c.log_requests });
  rewards.appendChild(el("div", { class: "field inline" }, [keepRequests,
    el("label", { for: "f-log-requests", text: "Keep each decision\u2019s request (context and candidates)" })]));
  keepRequests.dataset.field = "log_requests";
  rewards.appendChild(el("p", { class: "hint", text: "Needed for estimates of shadow policies, off-policy evaluation and the log export; a few KiB per decision instead of a few hundred bytes." }));
  root.appendChild(rewards);

  // Plugins.
  const pluginSet = el("fieldset", { id: "f-plugins", "data-field": "plugins" }, [el("legend", { text: "Plugin chain (runs in this order)" })]);
  const pluginBox = el("div");
  const pluginErr = el("span", { class: "field-error", id: "f-plugins-err", hidden: true });
  let pluginRows = [];
  const drawPlugins = (list, focusIndex) => {
    pluginBox.innerHTML = "";
    pluginRows = list.map((p, i) => pluginRow(p, i, list.length, (op) => {
      const cur = pluginRows.map((r) => r.read(true));
      if (op === "remove") cur.splice(i, 1);
      if (op === "up" && i > 0) [cur[i - 1], cur[i]] = [cur[i], cur[i - 1]];
      if (op === "down" && i < cur.length - 1) [cur[i + 1], cur[i]] = [cur[i], cur[i + 1]];
      drawPlugins(cur, op === "up" ? i - 1 : op === "down" ? i + 1 : null);
      scheduleCheck();
    }));
    for (const r of pluginRows) pluginBox.appendChild(r.node);
    if (!list.length) pluginBox.appendChild(el("p", { class: "muted", text: "No plugins: every candidate is eligible." }));
    if (focusIndex !== null && focusIndex !== undefined && pluginRows[focusIndex]) pluginRows[focusIndex].focus();
  };
  drawPlugins(c.plugins || []);
  pluginSet.appendChild(pluginBox);
  pluginSet.appendChild(pluginErr);
  pluginSet.appendChild(button("Add a plugin", () => {
    drawPlugins(pluginRows.map((r) => r.read(true)).concat([{ name: "", config: {} }]), pluginRows.length);
    scheduleCheck();
  }, { id: "f-add-plugin", class: "secondary" }));
  root.appendChild(pluginSet);

  // Pins and boosts.
  const merch = merchEditor(c.merchandising || {});
  root.appendChild(merch.node);

  const showKind = () => {
    slotsField.hidden = kind.value !== "send_time";
    merch.node.hidden = kind.value !== "items";
  };
  kind.addEventListener("change", showKind);
  showKind();

  parts = {
    read() {
      const out = JSON.parse(JSON.stringify(state.loaded));
      out.id = id.value.trim();
      out.kind = kind.value;
      if (kind.value === "send_time") {
        if (typeof out.slots !== "object" || out.slots === null) out.slots = slots.value;
      } else delete out.slots;
      out.status = statusSel.value;
      out.policy = serving.read();
      out.shadow_policies = shadows.map((s) => s.read());
      out.exploration = numOr(exploration.value, 0);
      out.holdout = numOr(holdout.value, 0);
      out.reward_wait_seconds = numOr(waitIn.value, NaN) * Number(unit.value);
      out.reward_range = [numOr(lo.value, NaN), numOr(hi.value, NaN)];
      out.default_reward = numOr(def.value, 0);
      out.log_requests = keepRequests.checked;
      out.plugins = pluginRows.map((r) => r.read(false));
      const m = merch.read();
      if (kind.value === "items" && (m.pins.length || m.boosts.length || out.merchandising)) out.merchandising = m;
      if (kind.value !== "items") delete out.merchandising;
      if (!out.shadow_policies.length) delete out.shadow_policies;
      if (!out.plugins.length) delete out.plugins;
      return out;
    },
  };
  const editable = canEdit() && (mode === "edit" || !(session.me && session.me.campaign));
  for (const e of root.querySelectorAll("input, select, textarea, button")) {
    e.dataset.edit = "";
    if (!editable) e.disabled = true;
  }
  $("editor-save").disabled = !editable;
  $("editor-reset").disabled = !editable;
  kind.disabled = !editable || mode === "edit";
  renderJson();
}

const numOr = (s, d) => (String(s).trim() === "" ? d : Number(s));

/// One plugin of the chain: name (suggested from the loaded plugins), on-failure, config JSON.
function pluginRow(p, i, n, op) {
  const box = el("fieldset", { class: "plugin" }, [el("legend", { text: "Plugin " + (i + 1) + (p.name ? ": " + p.name : "") })]);
  const name = el("input", { type: "text", value: p.name || "", list: "plugin-names", autocomplete: "off", spellcheck: "false" });
  const failure = select([["baseline", "Serve the order sent"], ["refuse", "Refuse the decision (503)"]], p.on_failure || "baseline");
  const config = el("textarea", { rows: 3, spellcheck: "false", class: "code" });
  config.value = typeof p.config === "string" ? p.config : JSON.stringify(p.config === undefined || p.config === null ? {} : p.config, null, 1);
  box.appendChild(el("div", { class: "row" }, [
    field("Name", name, "plugins[" + i + "].name"),
    field("When it fails", failure, "plugins[" + i + "].on_failure"),
  ]));
  box.appendChild(field("Config (JSON, checked by the plugin)", config, "plugins[" + i + "].config"));
  box.appendChild(el("div", { class: "row buttons" }, [
    button("Move up", () => op("up"), { disabled: i === 0, "aria-label": "Move plugin " + (i + 1) + " up" }),
    button("Move down", () => op("down"), { disabled: i === n - 1, "aria-label": "Move plugin " + (i + 1) + " down" }),
    button("Remove", () => op("remove"), { "aria-label": "Remove plugin " + (i + 1), class: "secondary" }),
  ]));
  return {
    node: box,
    focus: () => name.focus(),
    /// raw: keep a config that does not parse as the text typed (while re-drawing the list).
    read(raw) {
      let cfg;
      const text = config.value.trim();
      try { cfg = text === "" ? {} : JSON.parse(text); } catch (e) {
        if (raw) cfg = config.value;
        else throw Object.assign(new Error("not valid JSON: " + e.message), { field: "plugins[" + i + "].config" });
      }
      return { name: name.value.trim(), config: cfg, on_failure: failure.value };
    },
  };
}

/// Pins (item X in slot N) and boosts (attribute = value times a factor), each with an optional
/// time window (`merchandising` in the config; docs/merchandising.md).
function merchEditor(m) {
  const box = el("fieldset", { id: "f-merch", "data-field": "merchandising" }, [el("legend", { text: "Pins and boosts" })]);
  box.appendChild(el("p", { class: "hint", text: "Times are UTC. A pin serves its item in its slot (slot 1 is the top) while its window is open; a boost multiplies the score of items whose attribute has the value (above 1 promotes, below 1 buries)." }));
  const pinBox = el("div", { id: "f-pins" });
  const boostBox = el("div", { id: "f-boosts" });
  let pins = [], boosts = [];
  const window_ = (rule, path) => {
    const s = el("input", { type: "datetime-local", value: toLocal(rule.starts_at) });
    const e = el("input", { type: "datetime-local", value: toLocal(rule.ends_at) });
    return [s, e, field("From (UTC, optional)", s, path + ".starts_at"), field("Until (UTC, optional)", e, path + ".ends_at")];
  };
  const drawPins = (list, focus) => {
    pinBox.innerHTML = "";
    pins = list.map((p, i) => {
      const path = "merchandising.pins[" + i + "]";
      const item = el("input", { type: "text", value: p.item || "", autocomplete: "off", spellcheck: "false" });
      const slot = numberInput(p.slot === undefined ? 1 : p.slot + 1, { min: 1, max: 100, step: 1 });
      const [s, e, sf, ef] = window_(p, path);
      const note = el("input", { type: "text", value: p.note || "" });
      const row = el("fieldset", { class: "rule" }, [el("legend", { text: "Pin " + (i + 1) }),
        el("div", { class: "row" }, [field("Item id", item, path + ".item"), field("Slot (1 = top)", slot, path + ".slot"), sf, ef, field("Note", note, path + ".note")]),
        button("Remove pin " + (i + 1), () => { drawPins(pins.map((r) => r.read()).filter((_, j) => j !== i)); scheduleCheck(); }, { class: "secondary" })]);
      pinBox.appendChild(row);
      if (focus && i === list.length - 1) setTimeout(() => item.focus());
      return { read: () => rule({ item: item.value.trim(), slot: numOr(slot.value, 1) - 1, note: note.value }, s, e, p) };
    });
  };
  const drawBoosts = (list, focus) => {
    boostBox.innerHTML = "";
    boosts = list.map((b, i) => {
      const path = "merchandising.boosts[" + i + "]";
      const attribute = el("input", { type: "text", value: b.attribute || "category", autocomplete: "off", spellcheck: "false" });
      const value = el("input", { type: "text", value: b.value === undefined ? "" : typeof b.value === "string" ? b.value : JSON.stringify(b.value) });
      const factor = numberInput(b.factor === undefined ? 2 : b.factor, { min: 0.01, max: 100, step: "any" });
      const [s, e, sf, ef] = window_(b, path);
      const note = el("input", { type: "text", value: b.note || "" });
      const row = el("fieldset", { class: "rule" }, [el("legend", { text: "Boost " + (i + 1) }),
        el("div", { class: "row" }, [field("Attribute", attribute, path + ".attribute"), field("Value", value, path + ".value", "text; true, false or a number as typed"),
          field("Factor (0.01–100)", factor, path + ".factor"), sf, ef, field("Note", note, path + ".note")]),
        button("Remove boost " + (i + 1), () => { drawBoosts(boosts.map((r) => r.read()).filter((_, j) => j !== i)); scheduleCheck(); }, { class: "secondary" })]);
      boostBox.appendChild(row);
      if (focus && i === list.length - 1) setTimeout(() => attribute.focus());
      return { read: () => rule({ attribute: attribute.value.trim(), value: scalar(value.value), factor: numOr(factor.value, NaN), note: note.value }, s, e, b) };
    });
  };
  drawPins(m.pins || []);
  drawBoosts(m.boosts || []);
  box.appendChild(el("span", { class: "field-error", id: "f-merch-err", hidden: true }));
  box.appendChild(el("h4", { text: "Pins" }));
  box.appendChild(pinBox);
  box.appendChild(button("Add a pin", () => { drawPins(pins.map((r) => r.read()).concat([{}]), true); scheduleCheck(); }, { id: "f-add-pin", class: "secondary" }));
  box.appendChild(el("h4", { text: "Boosts and buries" }));
  box.appendChild(boostBox);
  box.appendChild(button("Add a boost", () => { drawBoosts(boosts.map((r) => r.read()).concat([{}]), true); scheduleCheck(); }, { id: "f-add-boost", class: "secondary" }));
  return { node: box, read: () => ({ pins: pins.map((r) => r.read()), boosts: boosts.map((r) => r.read()) }) };
}

function rule(out, s, e, was) {
  const keep = Object.assign({}, was, out);
  if (!keep.note) delete keep.note;
  const from = fromLocal(s.value), until = fromLocal(e.value);
  if (from) keep.starts_at = from; else delete keep.starts_at;
  if (until) keep.ends_at = until; else delete keep.ends_at;
  return keep;
}

// datetime-local inputs hold UTC wall time here (the hint says so): RFC 3339 <-> "YYYY-MM-DDTHH:MM".
const toLocal = (rfc) => (rfc ? new Date(rfc).toISOString().slice(0, 16) : "");
const fromLocal = (v) => (v ? v + ":00Z" : null);
const scalar = (v) => {
  const t = v.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return v;
};

// ---- validation and saving -----------------------------------------------------------------

/// Read the form into a config, or show the local error (a config that is not JSON).
function readForm() {
  clearErrors();
  try {
    return parts.read();
  } catch (e) {
    if (e.field) showError(e.field, e.message);
    return null;
  }
}

function clearErrors() {
  for (const e of document.querySelectorAll("#editor-form .field-error")) { e.hidden = true; e.textContent = ""; }
  for (const e of document.querySelectorAll("#editor-form [aria-invalid]")) e.removeAttribute("aria-invalid");
  $("editor-error").textContent = "";
}

/// Show `message` next to the input for config path `path` (or its closest named parent);
/// returns the input, or null when the message went to the form's own error line.
function showError(path, message) {
  let target = null;
  for (let p = path; p && !target; p = parentPath(p)) {
    target = document.querySelector('#editor-form [data-field="' + CSS.escape(p) + '"]');
  }
  if (!target) {
    $("editor-error").textContent = (path ? path + ": " : "") + message;
    return null;
  }
  const control = ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName);
  const err = $(target.id + "-err");
  if (err) { err.textContent = message; err.hidden = false; }
  if (control) target.setAttribute("aria-invalid", "true");
  else $("editor-error").textContent = path + ": " + message;
  return control ? target : null;
}

// "plugins[0].config.x" -> "plugins[0].config" -> "plugins[0]" -> "plugins"; "policy.alpha" -> "policy.type"? no: -> "policy".
function parentPath(p) {
  if (p.endsWith("]")) return p.slice(0, p.lastIndexOf("["));
  const dot = p.lastIndexOf(".");
  if (dot < 0) return p === "policy" ? "policy.type" : null;
  const parent = p.slice(0, dot);
  return parent === "policy" || parent === "shadow_policies" ? parent + ".type" : parent;
}

function renderJson() {
  let text;
  try { text = JSON.stringify(parts.read(), null, 2); } catch (e) { text = "(" + e.message + ")"; }
  $("editor-json").textContent = text;
}

function scheduleCheck() {
  if (!parts) return;
  renderJson();
  clearTimeout(state.timer);
  state.timer = setTimeout(check, 300);
}

/// Ask the server whether the form would save; show its verdict next to the field it names.
async function check() {
  if (!canEdit()) return;
  const config = readForm();
  if (!config) { setCheck("Not checked: fix the marked field first.", false); return; }
  if (!config.id) { showError("id", "Enter an id for the campaign."); setCheck("Needs an id.", false); return; }
  const seq = ++state.seq;
  $("editor-form").setAttribute("aria-busy", "true");
  try {
    const r = await api("POST", campaignPath(config.id, "/validate"), config);
    if (seq !== state.seq) return;
    if (state.mode === "create" && r.exists) {
      showError("id", "A campaign with this id exists already.");
      setCheck("The id is taken.", false);
    } else {
      setCheck("Checked by the server: ready to " + (state.mode === "create" ? "create." : "save."), true);
    }
  } catch (e) {
    if (seq !== state.seq) return;
    showError(e.field || "", e.message);
    setCheck("Not valid yet: " + (e.field ? e.field + " — " : "") + e.message, false);
  } finally {
    if (seq === state.seq) $("editor-form").removeAttribute("aria-busy");
  }
}

function setCheck(text, ok) {
  const c = $("editor-check");
  if (c.textContent !== text) c.textContent = text;
  c.className = ok ? "ok" : "error";
  c.dataset.valid = ok ? "true" : "false";
}

async function save() {
  clearTimeout(state.timer);
  state.seq++;
  const config = readForm();
  if (!config) return;
  status("Saving…");
  try {
    const saved = state.mode === "create"
      ? await api("POST", "/admin/v1/campaigns", config)
      : await api("PUT", campaignPath(config.id), config, state.etag ? { "If-Match": state.etag } : undefined);
    setCheck("", true);
    status(state.mode === "create" ? "Created campaign " + saved.id + "." : "Saved.");
    if (state.onSaved) await state.onSaved(saved.id, state.mode);
  } catch (e) {
    if (e.status === 412 || e.code === "config_conflict") {
      // Someone saved this campaign since it was loaded: their change is not overwritten.
      const msg = "Not saved: this campaign was changed by someone else since you opened it. " +
        "Reload the page to see their change, then make your edit again.";
      setCheck(msg, false);
      status(msg, true);
      $("editor-error").textContent = msg;
      $("editor-error").focus();
      return;
    }
    const input = showError(e.field || "", e.message);
    setCheck("Not saved: " + (e.field ? e.field + " — " : "") + e.message, false);
    status("Not saved: " + e.message, true);
    (input || $("editor-error")).focus();
  }
}

