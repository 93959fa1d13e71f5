// The audit log for people: who did what when, and per changed setting "before → after".
import { esc, when } from "./util.js";

const ACTIONS = {
  "campaign.create": "created the campaign",
  "campaign.update": "changed the configuration",
  "campaign.delete": "deleted the campaign",
  "campaign.pause": "paused the campaign",
  "campaign.resume": "resumed the campaign",
  "campaign.holdout": "set the holdout share",
  "campaign.policy": "switched the serving policy",
  "key.create": "created an API key",
  "key.revoke": "revoked an API key",
  "autopilot.switch": "switched to a better setting (autopilot)",
};

// Settings named for people; anything else shows its config path.
const LABELS = {
  status: "status",
  holdout: "holdout share",
  exploration: "exploration share",
  reward_wait_seconds: "reward window (seconds)",
  reward_range: "reward range",
  default_reward: "reward when none arrives",
  policy: "serving policy",
  shadow_policies: "shadow policies",
  log_requests: "keep raw requests",
};

// Never shown: the holdout assignment's salt is noise to a reader.
const HIDDEN = new Set(["holdout_salt"]);

/// Flatten a JSON value into [path, value] leaves: objects by key, arrays of objects by index,
/// other arrays whole (a reward range reads better as [0, 1] than as two lines). A policy (an
/// object with a `type`) stays one leaf, shown as "linucb (alpha 0.5, lambda 1)". Nulls are
/// left out: they read as "unset".
export function flatten(v, prefix, out) {
  out = out || new Map();
  if (v === null) return out;
  if (typeof v === "object" && !Array.isArray(v) && typeof v.type === "string" && prefix) {
    out.set(prefix, policyText(v));
  } else if (typeof v === "object" && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (!keys.length && prefix) out.set(prefix, v);
    for (const k of keys) flatten(v[k], prefix ? prefix + "." + k : k, out);
  } else if (Array.isArray(v) && v.some((x) => x !== null && typeof x === "object")) {
    if (!v.length && prefix) out.set(prefix, v);
    v.forEach((x, i) => flatten(x, prefix + "[" + i + "]", out));
  } else if (prefix) {
    out.set(prefix, v);
  }
  return out;
}

function policyText(p) {
  const settings = Object.entries(p).filter(([k, v]) => k !== "type" && v !== null).map(([k, v]) => k + " " + (typeof v === "string" ? v : JSON.stringify(v)));
  return p.type + (settings.length ? " (" + settings.join(", ") + ")" : "");
}

const show = (v) => (v === undefined ? "unset" : typeof v === "string" ? v : JSON.stringify(v));

/// The changed settings between two configs: [{path, label, before, after}].
export function changes(before, after) {
  const b = flatten(before || {}), a = flatten(after || {});
  const paths = [...new Set([...b.keys(), ...a.keys()])].filter((p) => !HIDDEN.has(p.split(/[.[]/)[0]));
  return paths
    .filter((p) => JSON.stringify(b.get(p)) !== JSON.stringify(a.get(p)))
    .map((p) => ({ path: p, label: label(p), before: b.get(p), after: a.get(p) }));
}

function label(p) {
  const shadow = /^shadow_policies\[(\d+)\]$/.exec(p);
  if (shadow) return "shadow policy " + (Number(shadow[1]) + 1);
  const plugin = /^plugins\[(\d+)\]\.(.*)$/.exec(p);
  if (plugin) return "plugin " + (Number(plugin[1]) + 1) + " " + plugin[2].replace(/_/g, " ");
  const rule = /^merchandising\.(pins|boosts)\[(\d+)\]\.(.*)$/.exec(p);
  if (rule) return (rule[1] === "pins" ? "pin " : "boost ") + (Number(rule[2]) + 1) + " " + rule[3].replace(/_/g, " ");
  return LABELS[p] || p;
}

function describe(e) {
  if (e.action === "admin.request") return "made a change: <code>" + esc(e.target || "") + "</code>";
  return esc(ACTIONS[e.action] || e.action) + (e.target ? " <code>" + esc(e.target) + "</code>" : "");
}

function changeList(e) {
  if (e.action === "campaign.create") {
    const settings = changes({}, e.after).filter((c) => !c.path.startsWith("featurizer"));
    return "<ul class=\"diff\">" + settings.slice(0, 10).map((c) =>
      '<li><span class="path">' + esc(c.label) + '</span>: <span class="after">' + esc(show(c.after)) + "</span></li>").join("") +
      (settings.length > 10 ? "<li class=\"muted\">and " + (settings.length - 10) + " more settings</li>" : "") + "</ul>";
  }
  if (e.before === null || e.after === null || e.before === undefined || typeof e.before !== "object") {
    return e.after && typeof e.after === "object" ? "<ul class=\"diff\">" + changes({}, e.after).slice(0, 6).map((c) =>
      '<li><span class="path">' + esc(c.label) + '</span>: <span class="after">' + esc(show(c.after)) + "</span></li>").join("") + "</ul>" : "";
  }
  const list = changes(e.before, e.after);
  if (!list.length) return '<span class="muted">no setting changed</span>';
  const item = (c) => '<li><span class="path">' + esc(c.label) + "</span>: " +
    '<span class="sr-only">from </span><del class="before">' + esc(show(c.before)) + "</del>" +
    ' <span aria-hidden="true">→</span><span class="sr-only"> to</span> <ins class="after">' + esc(show(c.after)) + "</ins></li>";
  const first = list.slice(0, 8).map(item).join("");
  const rest = list.slice(8);
  return '<ul class="diff">' + first + "</ul>" +
    (rest.length ? "<details><summary>" + rest.length + " more changes</summary><ul class=\"diff\">" + rest.map(item).join("") + "</ul></details>" : "");
}

export function renderAudit(container, entries) {
  if (!entries.length) {
    container.innerHTML = '<p class="muted">No changes recorded yet.</p>';
    return;
  }
  container.innerHTML = '<table><caption class="sr-only">Changes to this campaign, newest first</caption><thead><tr>' +
    '<th scope="col">time (UTC)</th><th scope="col">key</th><th scope="col">what</th><th scope="col">before → after</th></tr></thead><tbody>' +
    entries.map((e) => '<tr data-action="' + esc(e.action) + '"><td class="nowrap">' + esc(when(e.at_ms)) + "</td><td><code>" + esc(e.key_id) + "</code></td><td>" +
      describe(e) + "</td><td>" + changeList(e) + "</td></tr>").join("") +
    "</tbody></table>";
}
