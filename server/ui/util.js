// Shared helpers of the control room: the API client (with the typed key) and formatting.

export const $ = (id) => document.getElementById(id);

export const session = {
  key: sessionStorage.getItem("tailor-key") || "",
  me: null, // whoami of the key
  current: null, // open campaign id
};

export const canEdit = () => !!(session.me && session.me.role === "editor");

/// An API error: the server's message, status and the field it names (docs/errors.md).
export class ApiError extends Error {
  constructor(message, status, field, code) {
    super(message);
    this.status = status;
    this.field = field || null;
    this.code = code || null;
  }
}

export async function api(method, path, body, headers) {
  return (await request(method, path, body, headers)).data;
}

/// `api` answering `{data, etag}`: the response's ETag (a campaign config's version, sent back as
/// If-Match on save).
export async function request(method, path, body, headers) {
  const opts = { method, headers: Object.assign({ Authorization: "Bearer " + session.key }, headers || {}) };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: { message: text } }; }
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(err.message || r.status + " " + r.statusText, r.status, err.field, err.code);
  }
  return { data, etag: r.headers.get("ETag") };
}

export const campaignPath = (id, rest) => "/admin/v1/campaigns/" + encodeURIComponent(id) + (rest || "");

export const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
export const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? "–" : (100 * x).toFixed(2) + "%");
export const num = (x, digits) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits === undefined ? 3 : digits));
export const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);

/// An HTML table: cols are [header, cell(row) -> html]; rows empty -> a "nothing yet" line.
export function table(cols, rows, caption) {
  if (!rows.length) return '<p class="muted">Nothing yet.</p>';
  return "<table>" + (caption ? '<caption class="sr-only">' + esc(caption) + "</caption>" : "") +
    "<thead><tr>" + cols.map((c) => '<th scope="col">' + esc(c[0]) + "</th>").join("") + "</tr></thead><tbody>" +
    rows.map((r) => "<tr>" + cols.map((c) => "<td>" + c[1](r) + "</td>").join("") + "</tr>").join("") +
    "</tbody></table>";
}

/// The page's status line (an aria-live region): what just happened.
export function status(msg, error) {
  const s = $("status");
  s.textContent = msg || "";
  s.className = error ? "error" : "muted";
}

/// Create an element: el("button", {type: "button", class: "x"}, "text" | [children]).
export function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of [].concat(children === undefined ? [] : children)) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

let uid = 0;
export const nextId = (prefix) => prefix + "-" + ++uid;
