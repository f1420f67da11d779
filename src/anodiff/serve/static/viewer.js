// anodiff serve: three planes of a case with its maps as overlays, drawn on 2-D canvases.
// Volumes arrive as float32 (x, y, z) in C order, turned by the server so that x, y and z
// increase towards the patient's right, anterior and superior (RAS); planes are drawn
// radiologically: the patient's right on the screen's left, anterior and superior up.
"use strict";

const TOKEN = document.querySelector('meta[name="anodiff-token"]').content;
const $ = (id) => document.getElementById(id);
const PLANES = ["axial", "coronal", "sagittal"];
const OVERLAY_NAMES = {anomaly_map: "anomaly map", mask: "mask",
                       uncertainty: "uncertainty", pseudo_healthy: "pseudo-healthy image"};
const CMAPS = {
  hot: [[0, 0, 0], [230, 30, 0], [255, 200, 0], [255, 255, 255]],
  viridis: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  red: [[120, 0, 0], [255, 0, 0]],
};

const state = {caseId: null, meta: null, volumes: {}, cursor: [0, 0, 0], window: [0, 1],
               overlay: "anomaly_map", opened: 0};
// What the page measured, for tests and the benchmark notes.
const stats = {firstImageMs: null, lastDrawMs: null, overlayPixels: {}};
window.anodiffViewer = {state, stats};

async function api(path, options = {}) {
  const response = await fetch(path, {...options,
    headers: {...(options.headers || {}), "X-Anodiff-Token": TOKEN}});
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function status(text) { $("status").textContent = text; }

async function loadCases(select) {
  const cases = await (await api("api/cases")).json();
  const box = $("case");
  box.innerHTML = "";
  for (const c of cases) {
    const option = new Option(`${c.name} (${c.state})`, c.id);
    box.add(option);
  }
  if (select) box.value = select;
  return cases;
}

async function openCase(id, detect) {
  state.caseId = id;
  state.opened = performance.now();
  state.volumes = {};
  state.meta = null;
  let body = await (await api(`api/cases/${id}`, {method: detect ? "POST" : "GET"})).json();
  while (body.state === "queued" || body.state === "running") {
    status(`${body.name}: detection ${body.state}` +
           (body.state === "running" ? ` for ${Math.round(body.seconds)} s…` : "…"));
    await new Promise((r) => setTimeout(r, 500));
    body = await (await api(`api/cases/${id}`)).json();
  }
  if (body.state === "error") { status(`${body.name}: ${body.message}`); return; }
  if (body.state === "new") { status(`${body.name}: press Detect`); return; }
  status(`${body.name}: detected in ${body.seconds} s`);
  state.meta = body.meta;
  await loadVolumes(body.meta);
  showCase();
}

async function loadVolumes(meta) {
  await Promise.all(meta.kinds.map(async (kind) => {
    const buffer = await (await api(`api/cases/${state.caseId}/volume/${kind}`)).arrayBuffer();
    state.volumes[kind] = new Float32Array(buffer);
  }));
}

function showCase() {
  const meta = state.meta;
  const [nx, ny, nz] = meta.shape;
  state.cursor = [nx >> 1, ny >> 1, nz >> 1];
  state.window = percentiles(state.volumes.image, 0.01, 0.99);
  const overlay = $("overlay");
  overlay.innerHTML = "";
  for (const kind of meta.kinds.filter((k) => k !== "image")) {
    overlay.add(new Option(OVERLAY_NAMES[kind] || kind, kind));
  }
  setOverlay(meta.kinds.includes("anomaly_map") ? "anomaly_map" : overlay.value);
  for (const plane of PLANES) {
    $(plane).parentElement.hidden = !meta.volumetric && plane !== "axial";
  }
  fillLesions(meta.lesions);
  fillFiles(meta.files);
  draw();
  stats.firstImageMs = performance.now() - state.opened;
}

function percentiles(values, low, high) {
  const step = Math.max(1, Math.floor(values.length / 20000));
  const sample = [];
  for (let i = 0; i < values.length; i += step) sample.push(values[i]);
  sample.sort((a, b) => a - b);
  return [sample[Math.floor(low * (sample.length - 1))],
          sample[Math.floor(high * (sample.length - 1))] || 1];
}

function setOverlay(kind) {
  state.overlay = kind;
  $("overlay").value = kind;
  const [low, high] = state.meta.ranges[kind];
  const slider = $("threshold");
  slider.min = low; slider.max = high; slider.step = (high - low) / 1000 || 0.001;
  slider.value = kind === "mask" ? 0.5 : low + 0.5 * (high - low);
  $("threshold-value").textContent = Number(slider.value).toPrecision(3);
}

// (u, v) of a plane's canvas -> voxel index; see the header for the convention.
function planeGeometry(plane) {
  const [nx, ny, nz] = state.meta.shape;
  const [cx, cy, cz] = state.cursor;
  if (plane === "axial") return {w: nx, h: ny, voxel: (u, v) => [nx - 1 - u, ny - 1 - v, cz]};
  if (plane === "coronal") return {w: nx, h: nz, voxel: (u, v) => [nx - 1 - u, cy, nz - 1 - v]};
  return {w: ny, h: nz, voxel: (u, v) => [cx, ny - 1 - u, nz - 1 - v]};
}

function colour(t) {
  const stops = CMAPS[$("cmap").value];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((c, k) => c + f * (stops[i + 1][k] - c));
}

function draw() {
  if (!state.meta) return;
  const start = performance.now();
  const [, ny, nz] = state.meta.shape;
  const image = state.volumes.image;
  const over = state.volumes[state.overlay];
  const [wlow, whigh] = state.window;
  const threshold = Number($("threshold").value);
  const [, high] = state.meta.ranges[state.overlay];
  const alpha = Number($("opacity").value);
  for (const plane of PLANES) {
    const canvas = $(plane);
    if (canvas.parentElement.hidden) continue;
    const g = planeGeometry(plane);
    const scratch = new OffscreenCanvas(g.w, g.h);  // voxels, then scaled to millimetres
    const pixels = scratch.getContext("2d").createImageData(g.w, g.h);
    let overlaid = 0;
    for (let v = 0; v < g.h; v++) {
      for (let u = 0; u < g.w; u++) {
        const [x, y, z] = g.voxel(u, v);
        const index = (x * ny + y) * nz + z;
        const grey = 255 * Math.min(Math.max((image[index] - wlow) / (whigh - wlow || 1), 0), 1);
        let rgb = [grey, grey, grey];
        if (over && over[index] >= threshold && !(state.overlay === "mask" && over[index] < 0.5)) {
          const c = colour((over[index] - threshold) / (high - threshold || 1));
          rgb = rgb.map((value, k) => (1 - alpha) * value + alpha * c[k]);
          overlaid++;
        }
        const p = 4 * (v * g.w + u);
        pixels.data[p] = rgb[0]; pixels.data[p + 1] = rgb[1]; pixels.data[p + 2] = rgb[2];
        pixels.data[p + 3] = 255;
      }
    }
    scratch.getContext("2d").putImageData(pixels, 0, 0);
    const [width, height] = displaySize(plane, g);
    canvas.width = width; canvas.height = height;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(scratch, 0, 0, width, height);
    crosshair(context, plane, g, width / g.w, height / g.h);
    stats.overlayPixels[plane] = overlaid;
  }
  showCursor();
  stats.lastDrawMs = performance.now() - start;
}

// The canvas size of a plane: its extent in millimetres (voxel sizes from the affine's
// columns), the longer side DISPLAY pixels.
const DISPLAY = 290;
function displaySize(plane, g) {
  const a = state.meta.affine;
  const size = [0, 1, 2].map((c) => Math.hypot(a[0][c], a[1][c], a[2][c]));
  const [su, sv] = plane === "axial" ? [size[0], size[1]]
    : plane === "coronal" ? [size[0], size[2]] : [size[1], size[2]];
  const scale = DISPLAY / Math.max(g.w * su, g.h * sv);
  return [Math.round(g.w * su * scale), Math.round(g.h * sv * scale)];
}

function crosshair(context, plane, g, du, dv) {
  const [nx, ny, nz] = state.meta.shape;
  const [x, y, z] = state.cursor;
  const [u, v] = plane === "axial" ? [nx - 1 - x, ny - 1 - y]
    : plane === "coronal" ? [nx - 1 - x, nz - 1 - z] : [ny - 1 - y, nz - 1 - z];
  context.fillStyle = "rgba(0, 255, 120, 0.8)";
  context.fillRect(Math.floor((u + 0.5) * du), 0, 1, g.h * dv);
  context.fillRect(0, Math.floor((v + 0.5) * dv), g.w * du, 1);
}

function showCursor(voxel = state.cursor, label = "cursor") {
  const [x, y, z] = voxel;
  const [, ny, nz] = state.meta.shape;
  const index = (x * ny + y) * nz + z;
  const a = state.meta.affine;
  const world = [0, 1, 2].map((r) => a[r][0] * x + a[r][1] * y + a[r][2] * z + a[r][3]);
  const place = state.meta.volumetric
    ? `RAS ${world.map((w) => w.toFixed(1)).join(", ")} mm` : `pixel ${x}, ${y}`;
  const value = state.volumes.anomaly_map[index];
  $("cursor").textContent =
    `${label}: voxel ${x}, ${y}, ${z} · ${place} · map ${value.toPrecision(4)}`;
}

function fillLesions(lesions) {
  const body = $("lesions").tBodies[0];
  body.innerHTML = "";
  for (const lesion of lesions) {
    const row = body.insertRow();
    const centroid = state.meta.volumetric
      ? ["r", "a", "s"].map((k) => Number(lesion[`centroid_${k}_mm`]).toFixed(1)).join(", ")
      : "–";
    const ml = lesion.volume_ml ? Number(lesion.volume_ml).toFixed(3) : "–";
    for (const text of [lesion.lesion, ml, lesion.voxels,
                        Number(lesion.peak_map).toPrecision(3), centroid]) {
      row.insertCell().textContent = text;
    }
    row.addEventListener("click", () => {
      state.cursor = lesion.voxel.slice();
      for (const r of body.rows) r.classList.toggle("current", r === row);
      draw();
    });
  }
}

function fillFiles(files) {
  const list = $("files");
  list.innerHTML = "";
  for (const file of files) {
    const link = document.createElement("a");
    link.href = `api/cases/${state.caseId}/files/${file.index}?token=${TOKEN}`;
    link.textContent = `${file.name} (${(file.bytes / 1024).toFixed(0)} KB)`;
    link.download = file.name;
    list.appendChild(document.createElement("li")).appendChild(link);
  }
}

function canvasVoxel(canvas, event) {
  const box = canvas.getBoundingClientRect();
  const g = planeGeometry(canvas.dataset.plane);
  const u = Math.min(Math.floor((event.clientX - box.left) / box.width * g.w), g.w - 1);
  const v = Math.min(Math.floor((event.clientY - box.top) / box.height * g.h), g.h - 1);
  return g.voxel(u, v);
}

for (const plane of PLANES) {
  const canvas = $(plane);
  canvas.addEventListener("click", (event) => {
    if (!state.meta) return;
    state.cursor = canvasVoxel(canvas, event);
    draw();
  });
  canvas.addEventListener("mousemove", (event) => {
    if (state.meta) showCursor(canvasVoxel(canvas, event), "under the mouse");
  });
  canvas.addEventListener("mouseleave", () => { if (state.meta) showCursor(); });
  canvas.addEventListener("wheel", (event) => {
    if (!state.meta) return;
    event.preventDefault();
    const axis = {axial: 2, coronal: 1, sagittal: 0}[plane];
    const n = state.meta.shape[axis];
    state.cursor[axis] = Math.min(Math.max(state.cursor[axis] + Math.sign(event.deltaY), 0),
                                  n - 1);
    draw();
  }, {passive: false});
}

$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = Number($("threshold").value).toPrecision(3);
  draw();
});
$("opacity").addEventListener("input", draw);
$("cmap").addEventListener("change", draw);
$("overlay").addEventListener("change", () => { setOverlay($("overlay").value); draw(); });
$("case").addEventListener("change", () => openCase($("case").value, false).catch(fail));
$("detect").addEventListener("click", () => openCase($("case").value, true)
  .then(() => loadCases(state.caseId)).catch(fail));
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    status(`uploading ${file.name}…`);
    const added = await (await api(`api/upload?name=${encodeURIComponent(file.name)}`,
                                   {method: "POST", body: file})).json();
    await loadCases(added[0].id);
    await openCase(added[0].id, true);
  } catch (error) { fail(error); }
});

function fail(error) { status(`error: ${error.message}`); }

loadCases().then((cases) => { if (cases.length) return openCase(cases[0].id, false); })
  .catch(fail);
