// Screenshot of the annotate page once the current model's prediction is shown (docs/annotate.png).
// Usage: node e2e/screenshot.mjs URL OUT.png [CASE_ID]
import { chromium } from "playwright-core";

const [url, out, caseId] = process.argv.slice(2);
const TIMEOUT_MS = 120_000;
const PREDICTION_OPACITY = "0.45";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 940 } });
await page.goto(url);
await page.waitForFunction(() => window.ready === true && window.nv.volumes.length === 2, null, { timeout: TIMEOUT_MS });
if (caseId) {
  await page.click(`#cases li[data-case="${caseId}"]`);
  await page.waitForFunction((id) => window.annotate.caseId === id && !window.annotate.loading
    && window.nv.volumes.length === 2, caseId, { timeout: TIMEOUT_MS });
}
await page.fill("#pred-opacity", PREDICTION_OPACITY);
await page.dispatchEvent("#pred-opacity", "input");
await page.waitForTimeout(500);
await page.screenshot({ path: out });
await browser.close();
