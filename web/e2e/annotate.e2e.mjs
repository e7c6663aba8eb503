// End-to-end run of the annotate page in headless Chromium (driven by tests/test_annotate_e2e.py).
// Usage: node e2e/annotate.e2e.mjs URL CASE_ID OUT_DIR [--train]
// Draws two classes, undoes a third stroke, saves, reloads, optionally trains; writes
// OUT_DIR/result.json with what Python checks against the saved NIfTI, and screenshots.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, caseId, outDir, ...flags] = process.argv.slice(2);
const TIMEOUT_MS = 60_000;
const TRAIN_TIMEOUT_MS = 300_000;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"];

const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
const errors = [];
page.on("pageerror", (e) => errors.push(e.message));

async function openCase(id) {
  await page.waitForFunction(() => window.ready === true, null, { timeout: TIMEOUT_MS });
  await page.click(`#cases li[data-case="${id}"]`);
  await page.waitForFunction((cid) => window.annotate.caseId === cid && !window.annotate.loading,
    id, { timeout: TIMEOUT_MS });
}
// the native voxel (nibabel order) under the crosshair, which follows the last click
const nativeVoxel = () => page.evaluate(() => {
  const vol = window.nv.volumes[0];
  const ras = window.nv.frac2vox(window.nv.scene.crosshairPos);
  const out = [0, 0, 0];
  vol.permRAS.forEach((p, i) => {
    const axis = Math.abs(p) - 1;
    out[axis] = p < 0 ? vol.dimsRAS[i + 1] - 1 - ras[i] : ras[i];
  });
  return out;
});
const drawnVoxels = () => page.evaluate(() => window.nv.drawBitmap.reduce((n, v) => n + (v > 0), 0));

async function stroke(key, x0, y0, x1, y1) {
  await page.keyboard.press(key);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  await page.mouse.move(x1, y1, { steps: 8 });
  await page.mouse.up();
  await page.waitForTimeout(100);
  return nativeVoxel();
}

await page.goto(url);
await openCase(caseId);
const box = await page.locator("#gl").boundingBox();
const cx = box.x + box.width / 2, cy = box.y + box.height / 2, d = box.height / 8;
const result = { errors };
result.rv = await stroke("2", cx - d, cy - d, cx + d, cy - d); // RV: pen 2
result.lv = await stroke("4", cx - d, cy + d, cx + d / 2, cy + d); // LV: pen 4
const beforeUndoCount = await drawnVoxels();
result.myo = await stroke("3", cx - d, cy + 2 * d, cx + d, cy + 2 * d); // Myo, undone below
result.withMyo = await drawnVoxels();
await page.keyboard.press("Control+z");
result.afterUndo = await drawnVoxels();
result.undoRestored = result.afterUndo === beforeUndoCount;
await page.click("#save");
await page.waitForFunction(() => !window.annotate.dirty && !window.annotate.saving
  && window.annotate.version !== "none", null, { timeout: TIMEOUT_MS });
result.saveState = await page.textContent("#save-state");
await page.screenshot({ path: `${outDir}/drawn.png` });

await page.reload();
await openCase(caseId);
result.afterReload = await drawnVoxels();

if (flags.includes("--train")) {
  await page.fill("#train-steps", "4");
  await page.fill("#train-minutes", "0");
  await page.click("#train");
  await page.waitForFunction(() => window.annotate.model === "round_001" && window.nv.volumes.length === 2
    && document.getElementById("train-state").textContent.includes("finished"),
    null, { timeout: TRAIN_TIMEOUT_MS, polling: 500 });
  result.model = await page.evaluate(() => window.annotate.model);
  result.predictionVoxels = await page.evaluate(() => window.nv.volumes[1].img.length);
  result.ranking = await page.evaluate(() => window.annotate.detail.ranking);
  result.trainState = await page.textContent("#train-state");
  result.curvePoints = await page.evaluate(() => document.querySelector("#curve polyline")?.getAttribute("points").split(" ").length ?? 0);
  await page.screenshot({ path: `${outDir}/trained.png` });
}
writeFileSync(`${outDir}/result.json`, JSON.stringify(result, null, 1));
await browser.close();
