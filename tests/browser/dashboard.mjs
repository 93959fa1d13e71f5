// Drives Debian's headless chromium (via playwright-core, no downloaded browser) through the
// control-room dashboard. Run by tests/e2e/browser.rs, which starts the server, creates the
// campaign and the keys, and afterwards checks through the API that the policy changed.
//
// Environment: TAILOR_URL (server base), TAILOR_CAMPAIGN, TAILOR_POLICY (the shadow policy type to
// switch to), TAILOR_EDITOR_KEY, TAILOR_VIEWER_KEY, TAILOR_SCREENSHOT_DIR, optionally
// CHROMIUM (default /usr/bin/chromium).
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
const editorKey = env("TAILOR_EDITOR_KEY");
const viewerKey = env("TAILOR_VIEWER_KEY");
const shots = env("TAILOR_SCREENSHOT_DIR");
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
const result = {};

// Open the dashboard in a fresh tab (session storage is per tab), enter the key like a user
// (type, then leave the field), wait for the campaign page.
async function openAs(key, role) {
  const page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${role}: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(`${role} console: ${m.text()}`); });
  page.on("response", (r) => { if (r.status() >= 400) pageErrors.push(`${role}: ${r.status()} ${r.request().method()} ${r.url()}`); });
  await page.goto(`${base}/ui#${encodeURIComponent(campaign)}`);
  await page.fill("#key", key);
  await page.press("#key", "Tab");
  await page.waitForSelector("#campaign:not([hidden])");
  await page.waitForFunction(() => document.querySelector("#who").textContent !== "");
  await page.waitForFunction(() => document.querySelector("#actions").textContent !== "");
  return page;
}

const controls = ["#policy", "#pause", "#holdout", "#holdout-save"];
const disabled = (page) =>
  page.evaluate((ids) => ids.map((id) => document.querySelector(id).disabled), controls);

try {
  // Viewer: sees the campaign and its reports, every control disabled.
  const viewer = await openAs(viewerKey, "viewer");
  result.viewer_who = await viewer.textContent("#who");
  check(result.viewer_who.includes("viewer"), `viewer key shown as viewer (${result.viewer_who})`);
  check((await disabled(viewer)).every(Boolean), "viewer: every control is disabled");
  check(await viewer.isVisible("#readonly"), "viewer: the read-only note is shown");
  check((await viewer.textContent("#title")).startsWith(campaign), "viewer: campaign page open");
  await viewer.screenshot({ path: join(shots, "dashboard-viewer.png"), fullPage: true });
  await viewer.close();

  // Editor: controls enabled; switch the serving policy in the select.
  const editor = await openAs(editorKey, "editor");
  result.editor_who = await editor.textContent("#who");
  check(result.editor_who.includes("editor"), `editor key shown as editor (${result.editor_who})`);
  check((await disabled(editor)).every((d) => !d), "editor: every control is enabled");
  check(!(await editor.isVisible("#readonly")), "editor: no read-only note");
  result.serving_before = await editor.inputValue("#policy");
  check(result.serving_before !== target, `serving policy before is not ${target}`);
  await editor.selectOption("#policy", target);
  await editor.waitForFunction(() => document.querySelector("#status").textContent === "Saved.");
  // The page reloads the campaign after the change: the select now marks the target as serving.
  await editor.waitForFunction(
    (t) => {
      const o = document.querySelector(`#policy option[value="${t}"]`);
      return o && o.textContent.endsWith("(serving)") && document.querySelector("#policy").value === t;
    },
    target,
  );
  result.serving_after = await editor.inputValue("#policy");
  // The change is in the audit log section.
  await editor.waitForFunction(() => document.querySelector("#audit").textContent.includes("campaign.policy"));
  result.audit_text = (await editor.textContent("#audit")).slice(0, 400);
  check(true, "editor: policy switched and audited on the page");
  await editor.screenshot({ path: join(shots, "dashboard-editor.png"), fullPage: true });
  await editor.close();

  check(pageErrors.length === 0, "no JavaScript errors: " + JSON.stringify(pageErrors));
  console.log("RESULT " + JSON.stringify(result));
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  console.error("page errors: " + JSON.stringify(pageErrors));
  for (const p of browser.pages()) {
    await p.screenshot({ path: join(shots, "dashboard-failure.png"), fullPage: true }).catch(() => {});
    console.error("status on failure: " + (await p.textContent("#status").catch(() => "?")));
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
