// The page of `medcl annotate`: NiiVue draws the volume and the scribbles; this file wires
// the case list, the tools, saving, the model's prediction and uncertainty, and training.
import { Niivue, NVImage, SLICE_TYPE } from "@niivue/niivue";
import { UndoStack } from "./history.js";
import { api, putDrawing } from "./api.js";

const AUTOSAVE_MS = 4000;
const POLL_MS = 1500;
const RANKING_SHOWN = 8;
const DRAW_OPACITY = 0.8;
const $ = (id) => document.getElementById(id);

const state = {
  info: null, cases: [], caseId: null, detail: null, version: null, channel: 0,
  dirty: false, saving: false, pen: 1, history: null, zAxis: 2, zFlip: false, zDim: 1,
  model: null, lastRound: null,
};
window.annotate = state; // for tests and debugging

const nv = new Niivue({ isResizeCanvas: true, backColor: [0.08, 0.09, 0.11, 1], show3Dcrosshair: false,
  crosshairColor: [1, 0.85, 0, 0.35], crosshairWidth: 0.5, isColorbar: false, dragAndDropEnabled: false });
window.nv = nv;

// ---------------------------------------------------------------- colours
function rgb(hex) { return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)); }
function labelColormap(classes, offset) {
  // offset 1: drawing pens (0 = unlabelled); offset 0: predictions (class indices)
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  if (offset) { cm.R.push(0); cm.G.push(0); cm.B.push(0); cm.A.push(0); cm.I.push(0); cm.labels.push("unlabelled"); }
  for (const c of classes) {
    const [r, g, b] = rgb(c.color);
    cm.R.push(r); cm.G.push(g); cm.B.push(b); cm.A.push(offset || c.index ? 255 : 0);
    cm.I.push(c.index + offset); cm.labels.push(c.name);
  }
  return cm;
}
function heat(v) { // 0..1 -> dark blue .. orange
  const t = Math.max(0, Math.min(1, v));
  return `rgb(${Math.round(40 + 215 * t)},${Math.round(50 + 90 * t)},${Math.round(90 - 70 * t)})`;
}

// ---------------------------------------------------------------- slices (native voxel Z)
function sliceGeometry() {
  const vol = nv.volumes[0];
  const axis = vol.permRAS.findIndex((p) => Math.abs(p) === 3);
  state.zAxis = axis; state.zFlip = vol.permRAS[axis] < 0; state.zDim = vol.dimsRAS[axis + 1];
  nv.setSliceType([SLICE_TYPE.SAGITTAL, SLICE_TYPE.CORONAL, SLICE_TYPE.AXIAL][axis]);
}
function currentSlice() {
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  const r = vox[state.zAxis];
  return state.zFlip ? state.zDim - 1 - r : r;
}
function goToSlice(z) {
  z = Math.max(0, Math.min(state.zDim - 1, z));
  const vox = Array.from(nv.frac2vox(nv.scene.crosshairPos));
  vox[state.zAxis] = state.zFlip ? state.zDim - 1 - z : z;
  nv.scene.crosshairPos = nv.vox2frac(vox);
  nv.updateGLVolume();
  showWhere();
}
function showWhere() {
  const z = currentSlice();
  const u = state.detail?.slices?.[z];
  $("where").textContent = `${state.caseId} | slice ${z + 1}/${state.zDim}` + (u !== undefined ? ` | uncertainty ${u.toFixed(3)}` : "");
  for (const el of $("slicebar").children) el.classList.toggle("current", Number(el.dataset.z) === z);
}

// ---------------------------------------------------------------- case list
async function loadCases() {
  state.cases = await api("GET", "/api/cases");
  renderCases();
}
function renderCases() {
  const list = [...state.cases];
  if ($("sort").value === "uncertainty") list.sort((a, b) => (b.worst ?? -1) - (a.worst ?? -1) || a.id.localeCompare(b.id));
  const top = Math.max(1e-6, ...list.map((c) => c.worst ?? 0));
  $("cases").replaceChildren(...list.map((c) => {
    const li = document.createElement("li");
    li.dataset.case = c.id;
    li.classList.toggle("open", c.id === state.caseId);
    const counts = Object.entries(c.counts).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(", ");
    const scribbled = c.version === "none" ? "no scribbles" : `${c.scribbled_slices.length} slices scribbled`;
    const unc = c.worst === null ? "" : ` | worst slice ${c.worst_slice + 1}: ${c.worst.toFixed(3)}`;
    li.innerHTML = `<div class="id"></div><div class="meta"></div><div class="meta"></div>` +
      (c.worst === null ? "" : `<div class="ubar"><div style="width:${(100 * c.worst) / top}%"></div></div>`);
    li.children[0].textContent = c.id;
    li.children[1].textContent = scribbled + unc;
    li.children[2].textContent = counts;
    li.onclick = () => openCase(c.id);
    return li;
  }));
}

// ---------------------------------------------------------------- opening a case
async function openCase(caseId, channel = 0) {
  state.loading = true;
  if (state.dirty) await save();
  const detail = await api("GET", `/api/cases/${encodeURIComponent(caseId)}`);
  Object.assign(state, { caseId, detail, channel, version: detail.version, dirty: false });
  const base = `/api/cases/${encodeURIComponent(caseId)}`;
  await nv.loadVolumes([{ url: `${base}/image/${channel}.nii`, name: detail.files[channel] }]);
  sliceGeometry();
  nv.setDrawColormap(labelColormap(state.info.classes, 1));
  nv.setDrawOpacity(DRAW_OPACITY);
  await nv.loadDrawingFromUrl(`${base}/scribbles.nii?v=${detail.version}`);
  if (!nv.drawBitmap) nv.createEmptyDrawing();
  state.history = new UndoStack(nv.drawBitmap);
  await loadPrediction();
  $("wmin").value = nv.volumes[0].cal_min.toPrecision(4);
  $("wmax").value = nv.volumes[0].cal_max.toPrecision(4);
  $("channel").replaceChildren(...detail.files.map((f, i) => new Option(state.info.channels[i] ?? f, i)));
  $("channel").value = channel;
  $("channel-row").hidden = detail.channels < 2;
  renderSlicebar(); renderRanking(); renderCases(); setTool(state.pen);
  goToSlice(detail.ranking.length ? detail.ranking[0] : Math.floor(state.zDim / 2));
  setSaveState(detail.version === "none" ? "not scribbled yet" : "saved", "ok");
  state.loading = false;
}
async function loadPrediction() {
  while (nv.volumes.length > 1) nv.removeVolume(nv.volumes[1]);
  if (!state.model) return;
  const url = `/api/cases/${encodeURIComponent(state.caseId)}/prediction.nii?m=${state.model}`;
  if (!state.detail.slices?.length) return; // this case has no prediction from this model
  await nv.addVolumeFromUrl({ url, name: "prediction.nii", opacity: Number($("pred-opacity").value) });
  nv.volumes[1].setColormapLabel(labelColormap(state.info.classes, 0));
  nv.updateGLVolume();
}
function renderSlicebar() {
  const d = state.detail, lo = Math.min(...(d.slices || [0])), span = Math.max(1e-6, Math.max(...(d.slices || [0])) - lo);
  const scribbled = new Set(d.scribbled_slices);
  const cells = [];
  for (let z = state.zDim - 1; z >= 0; z--) {
    const el = document.createElement("div");
    el.dataset.z = z;
    el.title = `slice ${z + 1}` + (d.slices?.length ? `: uncertainty ${d.slices[z].toFixed(3)}` : "");
    el.style.background = d.slices?.length ? heat((d.slices[z] - lo) / span) : "#333";
    el.classList.toggle("scribbled", scribbled.has(z));
    el.onclick = () => goToSlice(z);
    cells.push(el);
  }
  $("slicebar").replaceChildren(...cells.reverse());
}
function renderRanking() {
  const d = state.detail;
  $("ranking").replaceChildren(...d.ranking.slice(0, RANKING_SHOWN).map((z) => {
    const li = document.createElement("li");
    li.textContent = `slice ${z + 1}: ${d.slices[z].toFixed(3)}`;
    li.onclick = () => goToSlice(z);
    return li;
  }));
  if (!d.ranking.length) $("ranking").innerHTML = "<li class='hint'>no model yet</li>";
}

// ---------------------------------------------------------------- tools
function setTool(pen) {
  state.pen = pen;
  nv.setDrawingEnabled(pen !== null);
  if (pen !== null) nv.setPenValue(pen, false);
  for (const b of document.querySelectorAll("[data-pen]")) b.classList.toggle("active", Number(b.dataset.pen) === pen);
  $("eraser").classList.toggle("active", pen === 0);
  $("navigate").classList.toggle("active", pen === null);
}
function buildClassButtons() {
  $("classes").replaceChildren(...state.info.classes.map((c, i) => {
    const b = document.createElement("button");
    b.className = "class-btn"; b.dataset.pen = c.pen; b.title = `key ${i + 1}`;
    b.innerHTML = `<span class="swatch"></span><span></span>`;
    b.children[0].style.background = c.color;
    b.children[1].textContent = `${i + 1}  ${c.name} (${c.value})`;
    b.onclick = () => setTool(c.pen);
    return b;
  }));
}
function applyBitmap(bitmap) {
  if (!bitmap) return;
  nv.drawBitmap.set(bitmap);
  nv.refreshDrawing(true);
  markDirty();
}
function markDirty() { state.dirty = true; setSaveState("unsaved changes", ""); }
function setSaveState(text, cls) { $("save-state").textContent = `| ${text}`; $("save-state").className = cls; }

async function save() {
  if (!state.caseId || state.saving || !state.dirty) return;
  state.saving = true; state.dirty = false;
  try {
    const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    const reply = await putDrawing(`/api/cases/${encodeURIComponent(state.caseId)}/scribbles.nii`, bytes, state.version);
    state.version = reply.version;
    Object.assign(state.cases.find((c) => c.id === state.caseId), reply);
    state.detail.scribbled_slices = reply.scribbled_slices;
    setSaveState(`saved ${new Date().toLocaleTimeString()}`, "ok");
    renderCases(); renderSlicebar(); showWhere();
  } catch (err) {
    state.dirty = true;
    setSaveState(err.message, "error");
  } finally {
    state.saving = false;
  }
}

// ---------------------------------------------------------------- training and model
async function refreshModel() {
  const review = await api("GET", "/api/review");
  $("model-name").textContent = review.current ? `(${review.current})` : "(none)";
  if (review.state === "running") $("model-name").textContent += ` reviewing ${review.done}/${review.total}`;
  const ready = review.current && review.reviewed;
  if (ready && review.current !== state.model) {
    state.model = review.current;
    await loadCases();
    if (state.caseId) {
      Object.assign(state.detail, await api("GET", `/api/cases/${encodeURIComponent(state.caseId)}/uncertainty`));
      await loadPrediction(); renderSlicebar(); renderRanking(); showWhere();
    }
  }
}
function drawCurve(job) {
  const pts = job.loss;
  if (!pts.length) { $("curve").innerHTML = ""; return; }
  const maxStep = Math.max(job.total || 1, pts[pts.length - 1][0]);
  const losses = pts.map((p) => p[1]), hi = Math.max(...losses), lo = Math.min(...losses);
  const xy = (s, v, a, b) => `${(240 * s) / maxStep},${85 - (80 * (v - a)) / Math.max(b - a, 1e-9)}`;
  const line = pts.map(([s, l]) => xy(s, l, lo, hi)).join(" ");
  const val = job.val.filter((p) => p[1] !== null).map(([s, d]) => `<circle cx="${(240 * s) / maxStep}" cy="${85 - 80 * d}" r="2.5" fill="#7ee787"><title>step ${s}: Dice ${d.toFixed(3)}</title></circle>`).join("");
  $("curve").innerHTML = `<polyline points="${line}" fill="none" stroke="#58a6ff" stroke-width="1.5"><title>training loss</title></polyline>${val}`;
}
async function pollTraining() {
  const { job } = await api("GET", "/api/train");
  $("train").disabled = !state.info.trainable || !state.info.has_run || job?.state === "running";
  $("cancel").disabled = job?.state !== "running";
  if (!job) return;
  const frac = job.budget ? job.elapsed / job.budget : job.total ? job.step / job.total : 0;
  $("train-progress").value = job.state === "running" ? Math.min(frac, 1) : job.state === "finished" ? 1 : 0;
  const lastVal = job.val.length ? job.val[job.val.length - 1][1] : null;
  $("train-state").textContent = `${job.round}: ${job.state}, step ${job.step}/${job.total ?? "?"}` +
    (lastVal !== null && lastVal !== undefined ? `, val Dice ${lastVal.toFixed(3)}` : "") +
    (job.state === "failed" ? ` -- ${job.log_tail.slice(-2).join(" ")}` : "");
  $("train-state").className = job.state === "failed" ? "error" : "";
  drawCurve(job);
}
async function startTraining() {
  if (state.dirty) await save();
  const options = { iterations: Number($("train-steps").value) };
  const minutes = Number($("train-minutes").value);
  if (minutes > 0) options.max_minutes = minutes;
  try { await api("POST", "/api/train", options); } catch (err) { $("train-state").textContent = err.message; $("train-state").className = "error"; }
  await pollTraining();
}

// ---------------------------------------------------------------- events
function bindEvents() {
  nv.onDrawingChanged = (action) => {
    if (action === "draw") { state.history.push(nv.drawBitmap); markDirty(); }
  };
  nv.onLocationChange = () => showWhere();
  $("undo").onclick = () => applyBitmap(state.history.undo());
  $("redo").onclick = () => applyBitmap(state.history.redo());
  $("save").onclick = () => save();
  $("eraser").onclick = () => setTool(0);
  $("navigate").onclick = () => setTool(null);
  $("brush").oninput = () => { nv.opts.penSize = Number($("brush").value); $("brush-value").textContent = $("brush").value; };
  $("sort").onchange = renderCases;
  $("zoom").oninput = () => { const p = nv.scene.pan2Dxyzmm; nv.setPan2Dxyzmm([p[0], p[1], p[2], Number($("zoom").value)]); };
  $("drag").onchange = () => { nv.opts.dragMode = nv.dragModes[$("drag").value]; };
  const setWindow = () => { const v = nv.volumes[0]; v.cal_min = Number($("wmin").value); v.cal_max = Number($("wmax").value); nv.updateGLVolume(); };
  $("wmin").onchange = setWindow; $("wmax").onchange = setWindow;
  $("channel").onchange = () => openCase(state.caseId, Number($("channel").value));
  $("pred-opacity").oninput = () => { if (nv.volumes.length > 1) nv.setOpacity(1, Number($("pred-opacity").value)); };
  $("train").onclick = startTraining;
  $("cancel").onclick = () => api("DELETE", "/api/train").then(pollTraining);
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === "z") { e.preventDefault(); applyBitmap(e.shiftKey ? state.history.redo() : state.history.undo()); }
    else if ((e.ctrlKey || e.metaKey) && k === "y") { e.preventDefault(); applyBitmap(state.history.redo()); }
    else if ((e.ctrlKey || e.metaKey) && k === "s") { e.preventDefault(); save(); }
    else if (e.key === "ArrowUp" || e.key === "PageUp") { e.preventDefault(); goToSlice(currentSlice() + 1); }
    else if (e.key === "ArrowDown" || e.key === "PageDown") { e.preventDefault(); goToSlice(currentSlice() - 1); }
    else if (k === "e") setTool(0);
    else if (k === "n") setTool(null);
    else if (/^[1-9]$/.test(k) && Number(k) <= state.info.classes.length) setTool(Number(k));
  });
  window.addEventListener("beforeunload", (e) => { if (state.dirty) { save(); e.preventDefault(); } });
}

async function main() {
  state.info = await api("GET", "/api/info");
  $("dataset").textContent = `${state.info.dataset} (${state.info.layout} layout)`;
  $("ignore-value").textContent = state.info.ignore_value;
  $("model-section").hidden = !state.info.has_run;
  buildClassButtons();
  await nv.attachTo("gl");
  nv.opts.penSize = Number($("brush").value);
  bindEvents();
  await refreshModel();
  await loadCases();
  if (state.cases.length) {
    const first = [...state.cases].sort((a, b) => (b.worst ?? -1) - (a.worst ?? -1))[0];
    await openCase(first.id);
  }
  setInterval(save, AUTOSAVE_MS);
  if (state.info.has_run) setInterval(() => { pollTraining(); refreshModel(); }, POLL_MS);
  await pollTraining();
  window.ready = true;
}
main().catch((err) => { window.ready = `error: ${err.message}`; setSaveState(err.message, "error"); });
