// Drives Debian's headless chromium (via playwright-core, no downloaded browser) through the
// control room. Run by tests/e2e/browser.rs, which starts the server (with the inventory-floor
// plugin installed), creates a campaign with traffic and the keys, and afterwards checks through
// the API what the page did.
//
// Environment: TAILOR_URL (server base), TAILOR_CAMPAIGN (the campaign with traffic),
// TAILOR_POLICY (its shadow policy type to switch to), TAILOR_NEW_CAMPAIGN (the id to create in
// the page), TAILOR_PLUGIN (a loaded constraint plugin: inventory-floor), TAILOR_EDITOR_KEY,
// TAILOR_VIEWER_KEY, TAILOR_SCREENSHOT_DIR, optionally CHROMIUM (default /usr/bin/chromium) and
// TAILOR_SKIP_MERCH=1 (a server without pins and boosts).
// Prints one JSON line (`RESULT {...}`) with what it saw; exits non-zero on any failed check.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("TAILOR_URL");
const campaign = env("TAILOR_CAMPAIGN");
const target = env("TAILOR_POLICY");
const created = env("TAILOR_NEW_CAMPAIGN");
const plugin = env("TAILOR_PLUGIN");
const editorKey = env("TAILOR_EDITOR_KEY");
const viewerKey = env("TAILOR_VIEWER_KEY");
const shots = env("TAILOR_SCREENSHOT_DIR");
const merch = process.env.TAILOR_SKIP_MERCH !== "1";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok: " + what);
}

// Without the background-networking flags chromium waits on network services that a closed
// network never answers.
const profile = mkdtempSync(join(tmpdir(), "tailor-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 1400 },
});
// Generous: the machine may be busy with the rest of the test suite.
browser.setDefaultTimeout(60_000);
const pageErrors = [];
const result = { validate_400s: 0 };

// Open the control room in a fresh tab (session storage is per tab), enter the key like a user
// (type, then leave the field), wait for the campaign page.
async function openAs(key, role) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${role}: ${e.message}`));
  page.on("console", (m) => {
    // Chromium logs every 4xx fetch as a console error; those are judged by status below.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`${role} console: ${m.text()}`);
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    // The live check of a config being typed answers 400 while it is invalid: expected.
    if (r.status() === 400 && r.url().endsWith("/validate")) { result.validate_400s++; return; }
    pageErrors.push(`${role}: ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  await page.goto(`${base}/ui#${encodeURIComponent(campaign)}`);
  await page.fill("#key", key);
  await page.press("#key", "Tab");
  await page.waitForSelector("#overview:not([hidden])");
  await page.waitForFunction(() => document.querySelector("#who").textContent !== "");
  await page.waitForFunction(() => document.querySelector("#actions").textContent !== "");
  return page;
}

// Every control that changes something carries data-edit.
const editControls = (page) =>
  page.evaluate(() => [...document.querySelectorAll("[data-edit]")].map((e) => ({ id: e.id || e.textContent, disabled: e.matches(":disabled") })));

// Every visible form control has an accessible name (label, aria-label or its text).
const unnamed = (page) =>
  page.evaluate(() => [...document.querySelectorAll("input, select, textarea, button")]
    .filter((e) => e.offsetParent !== null)
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
    .map((e) => e.outerHTML.slice(0, 80)));

const statusIs = (page, text) => page.waitForFunction((t) => document.querySelector("#status").textContent === t, text);

try {
  // ---- Viewer: sees the campaign and its reports, every control disabled. ----
  const viewer = await openAs(viewerKey, "viewer");
  result.viewer_who = await viewer.textContent("#who");
  check(result.viewer_who.includes("viewer"), `viewer key shown as viewer (${result.viewer_who})`);
  const vc = await editControls(viewer);
  result.viewer_controls = vc.length;
  check(vc.length >= 25, `the page has its editing controls (${vc.length})`);
  check(vc.every((c) => c.disabled), "viewer: every control is disabled: " + JSON.stringify(vc.filter((c) => !c.disabled)));
  check(await viewer.isVisible("#readonly"), "viewer: the read-only note is shown");
  // A preview changes nothing: the server lets viewers preview, and so does the page.
  check(!(await viewer.isDisabled("#pv-run")), "viewer: the preview stays usable");
  check((await viewer.textContent("#title")) === campaign, "viewer: campaign page open");
  // All the traffic is in one hour: the charts say so instead of drawing an empty box.
  await viewer.waitForSelector("#decisions-chart .chart-empty");
  result.empty_chart = await viewer.textContent("#decisions-chart");
  check(result.empty_chart.includes("Not enough data yet") && /\d+ decisions so far/.test(result.empty_chart),
    `one bucket reads as not enough data yet (${result.empty_chart})`);
  // A logged decision explained, from its event id.
  await viewer.fill("#ex-event", env("TAILOR_EVENT_ID"));
  await viewer.click("#ex-run");
  await viewer.waitForSelector("#ex-result table");
  result.explained = (await viewer.textContent("#ex-result")).replace(/\s+/g, " ");
  check(/^Served sku-\d/.test(result.explained), `viewer: a logged decision is explained (${result.explained.slice(0, 120)})`);
  check((await unnamed(viewer)).length === 0, "viewer: every control has an accessible name: " + JSON.stringify(await unnamed(viewer)));
  await viewer.screenshot({ path: join(shots, "dashboard-viewer.png"), fullPage: true });
  await viewer.close();

  // ---- Editor: controls enabled; switch the serving policy in the quick controls. ----
  const editor = await openAs(editorKey, "editor");
  result.editor_who = await editor.textContent("#who");
  check(result.editor_who.includes("editor"), `editor key shown as editor (${result.editor_who})`);
  // Disabled for an editor only where the page says why: the kind is fixed once created.
  const stillDisabled = (await editControls(editor)).filter((c) => c.disabled).map((c) => c.id);
  check(stillDisabled.length === 1 && stillDisabled[0] === "f-kind", "editor: every control is enabled but the fixed kind: " + JSON.stringify(stillDisabled));
  check(!(await editor.isVisible("#readonly")), "editor: no read-only note");
  result.serving_before = await editor.inputValue("#policy");
  check(result.serving_before !== target, `serving policy before is not ${target}`);
  await editor.selectOption("#policy", target);
  await statusIs(editor, "Saved.");
  await editor.waitForFunction(
    (t) => {
      const o = document.querySelector(`#policy option[value="${t}"]`);
      return o && o.textContent.endsWith("(serving)") && document.querySelector("#policy").value === t;
    },
    target,
  );
  result.serving_after = await editor.inputValue("#policy");
  // The change is in the audit log, as a diff for people.
  await editor.waitForSelector('#audit tr[data-action="campaign.policy"]');
  result.audit_policy = (await editor.textContent('#audit tr[data-action="campaign.policy"]')).replace(/\s+/g, " ");
  check(result.audit_policy.includes("serving policy") && result.audit_policy.includes(target),
    `the audit shows the policy change as before → after (${result.audit_policy.slice(0, 200)})`);

  // The chart component with data: three hours draw three points and a readable label.
  const drawn = await editor.evaluate(async () => {
    const { timeChart } = await import("/ui/charts.js");
    const div = document.createElement("div");
    const h = 3600e3, t = Date.UTC(2026, 11, 7, 10);
    timeChart(div, [{ name: "thompson", color: "#000", points: [0, 1, 2].map((i) => ({ x: t + i * h, y: 0.1 * (i + 1) })) }],
      { title: "Reward", bucketSeconds: 3600, format: (v) => v.toFixed(1) });
    const one = document.createElement("div");
    timeChart(one, [{ name: "thompson", color: "#000", points: [{ x: t, y: 0.5 }] }], { title: "Reward", bucketSeconds: 3600, format: String });
    return { circles: div.querySelectorAll("circle").length, label: div.querySelector("svg").getAttribute("aria-label"),
      rows: div.querySelectorAll("details.data tbody tr").length, one: one.textContent };
  });
  check(drawn.circles === 3 && drawn.rows === 3 && drawn.label.includes("3 hours"), "a 3-hour series draws 3 points and a 3-row data table: " + JSON.stringify(drawn));
  check(drawn.one.includes("Not enough data yet"), "a 1-point series reads as not enough data yet");

  // ---- Create a campaign from scratch in the page. ----
  await editor.click("#new-campaign");
  await editor.waitForFunction(() => document.querySelector("#editor-title").textContent === "New campaign");
  check(await editor.evaluate(() => document.activeElement.id === "f-id"), "the id field has the focus in the new-campaign form");
  await editor.fill("#f-id", created);
  await editor.selectOption("#f-policy select", "epsilon_greedy");
  await editor.fill('#f-policy [data-field="policy.epsilon"]', "0.2");
  await editor.fill("#f-exploration", "0.05");
  await editor.fill("#f-holdout", "0.1");
  await editor.fill("#f-wait", "2");
  await editor.selectOption("#f-wait-unit", "3600");
  // A bad policy setting: the server's message appears next to the field it names.
  await editor.fill('#f-policy [data-field="policy.epsilon"]', "1.5");
  await editor.waitForFunction(() => document.querySelector('[data-field="policy.epsilon"]').getAttribute("aria-invalid") === "true");
  result.epsilon_error = await editor.evaluate(() => {
    const input = document.querySelector('[data-field="policy.epsilon"]');
    return document.getElementById(input.id + "-err").textContent;
  });
  check(result.epsilon_error.length > 0, `epsilon 1.5 is refused next to its field (${result.epsilon_error})`);
  await editor.fill('#f-policy [data-field="policy.epsilon"]', "0.2");
  // A plugin whose config the plugin itself refuses, then fixed.
  await editor.click("#f-add-plugin");
  check(await editor.evaluate(() => document.activeElement.dataset.field === "plugins[0].name"), "the new plugin's name field has the focus");
  await editor.fill('[data-field="plugins[0].name"]', plugin);
  await editor.fill('[data-field="plugins[0].config"]', '{"min_inventory": -1}');
  await editor.waitForFunction(() => document.querySelector('[data-field="plugins[0].config"]').getAttribute("aria-invalid") === "true");
  result.plugin_error = await editor.evaluate(() => {
    const input = document.querySelector('[data-field="plugins[0].config"]');
    return document.getElementById(input.id + "-err").textContent;
  });
  check(result.plugin_error.includes("min_inventory"), `the plugin's own config error is shown next to its config (${result.plugin_error})`);
  await editor.fill('[data-field="plugins[0].config"]', '{"min_inventory": 2}');
  if (merch) {
    await editor.click("#f-add-pin");
    await editor.fill('[data-field="merchandising.pins[0].item"]', "sku-3");
    await editor.fill('[data-field="merchandising.pins[0].slot"]', "1");
    await editor.click("#f-add-boost");
    await editor.fill('[data-field="merchandising.boosts[0].attribute"]', "category");
    await editor.fill('[data-field="merchandising.boosts[0].value"]', "shoes");
    await editor.fill('[data-field="merchandising.boosts[0].factor"]', "0");
    await editor.waitForFunction(() => document.querySelector('[data-field="merchandising.boosts[0].factor"]').getAttribute("aria-invalid") === "true");
    check(true, "a boost factor of 0 is refused next to its field");
    await editor.fill('[data-field="merchandising.boosts[0].factor"]', "2");
  }
  await editor.waitForFunction(() => document.querySelector("#editor-check").dataset.valid === "true");
  result.check_text = await editor.textContent("#editor-check");
  check(result.check_text.includes("ready to create"), `the server's check passes (${result.check_text})`);
  check((await unnamed(editor)).length === 0, "editor: every control has an accessible name: " + JSON.stringify(await unnamed(editor)));
  await editor.screenshot({ path: join(shots, "dashboard-create.png"), fullPage: true });
  await editor.click("#editor-save");
  await statusIs(editor, `Created campaign ${created}.`);
  await editor.waitForFunction((id) => document.querySelector("#title").textContent === id, created);
  check(await editor.isVisible(`#campaigns a[data-id="${created}"][aria-current="page"]`), "the new campaign is listed and current");

  // ---- Configure it further: add a shadow policy in the editor and save. ----
  await editor.click("#f-add-shadow");
  await editor.selectOption('[data-field="shadow_policies.type"]', "thompson");
  await editor.click("#editor-save");
  await statusIs(editor, "Saved.");
  await editor.waitForSelector('#audit tr[data-action="campaign.update"]');
  result.audit_update = (await editor.textContent('#audit tr[data-action="campaign.update"]')).replace(/\s+/g, " ");
  check(result.audit_update.includes("thompson"), `the update's diff names the new shadow policy (${result.audit_update.slice(0, 200)})`);

  // ---- Preview: three candidates, one below the inventory floor. ----
  await editor.waitForSelector("#preview:not([hidden])");
  const rowsIn = await editor.$$("#pv-rows tr");
  check(rowsIn.length === 3, `the preview starts with three candidates (${rowsIn.length})`);
  const attrs = ['{"inventory": 10, "category": "shoes"}', '{"inventory": 0, "category": "bags"}', '{"inventory": 5, "category": "hats"}'];
  for (let i = 0; i < 3; i++) {
    await editor.fill(`#pv-rows tr:nth-child(${i + 1}) td:nth-child(1) input`, `sku-${i + 1}`);
    await editor.fill(`#pv-rows tr:nth-child(${i + 1}) td:nth-child(2) input`, attrs[i]);
  }
  await editor.fill("#pv-k", "2");
  await editor.click("#pv-run");
  await editor.waitForSelector("#pv-result table");
  result.preview = (await editor.textContent("#pv-result")).replace(/\s+/g, " ");
  check(result.preview.includes("removed by " + plugin), `the preview says which plugin removed sku-2 (${result.preview.slice(0, 300)})`);
  check(/Would serve sku-\d, sku-\d/.test(result.preview), "the preview ranks two items");
  if (merch) check(result.preview.includes("pinned"), "the pinned item is marked");
  await editor.screenshot({ path: join(shots, "dashboard-preview.png"), fullPage: true });

  // ---- Pause it. ----
  check((await editor.textContent("#pause")) === "Pause", "the campaign can be paused");
  await editor.click("#pause");
  await statusIs(editor, "Saved.");
  await editor.waitForFunction(() => document.querySelector("#pause").textContent === "Resume");
  await editor.waitForFunction((id) => document.querySelector(`#campaigns a[data-id="${id}"]`).textContent.includes("paused"), created);
  await editor.waitForSelector('#audit tr[data-action="campaign.pause"]');
  check(true, "paused, listed as paused, and audited");
  await editor.screenshot({ path: join(shots, "dashboard-editor.png"), fullPage: true });
  await editor.close();

  check(pageErrors.length === 0, "no JavaScript errors or failed requests: " + JSON.stringify(pageErrors));
  console.log("RESULT " + JSON.stringify(result));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  console.error("page errors: " + JSON.stringify(pageErrors));
  for (const p of browser.pages()) {
    await p.screenshot({ path: join(shots, "dashboard-failure.png"), fullPage: true }).catch(() => {});
    console.error("status on failure: " + (await p.textContent("#status").catch(() => "?")));
    console.error("check on failure: " + (await p.textContent("#editor-check").catch(() => "?")) + " / " + (await p.textContent("#editor-error").catch(() => "?")));
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
