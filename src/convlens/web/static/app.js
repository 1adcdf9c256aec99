// convlens explorer: plain JavaScript over the JSON API of convlens.web.app (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, layers: [], predictions: [], layerFacts: null, camJobs: [] };
// Each panel numbers its requests; an answer that is no longer the latest is dropped.
const latest = {};
function ticket(panel) { latest[panel] = (latest[panel] || 0) + 1; return latest[panel]; }
function current(panel, n) { return latest[panel] === n; }

function status(text, isError) {
  const el = $("status");
  el.textContent = text || "";
  el.classList.toggle("error", !!isError);
}
// A long action owns the status line until a newer one starts: its late "ready" never hides a
// newer message (an upload error, say).
function begin(text) { const n = ticket("status"); status(text); return n; }
function finish(n, text, isError) { if (current("status", n)) status(text, isError); }

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

function withModel(path) {
  return path + (path.includes("?") ? "&" : "?") + "model=" + encodeURIComponent(state.model);
}

function imagePath(suffix) {
  return "/api/images/" + encodeURIComponent(state.image.id) + suffix;
}

function option(select, value, text, selected) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  el.selected = !!selected;
  select.appendChild(el);
}

function shape(list) { return list.join("×"); }

// -- start -------------------------------------------------------------------------------------
async function start() {
  try {
    const facts = await api("/api/models");
    for (const m of facts.models) option($("model-select"), m.name, m.name);
    for (const name of facts.cam_methods) option($("cam-method"), name, name, name === "gradcam");
    for (const name of facts.filter_recipes) option($("filters-recipe"), name, name, name === "chollet");
    state.camJobs = facts.cam_jobs;
    $("limit").textContent = Math.round(facts.max_upload_bytes / 1048576);
    state.models = facts.models;
    const samples = await api("/api/samples");
    for (const s of samples) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = s.name;
      button.title = s.description;
      button.dataset.name = s.name;
      button.addEventListener("click", () => pickSample(s.name));
      $("samples").appendChild(button);
    }
    await selectModel($("model-select").value);
    if (!state.image) status("ready");
  } catch (err) {
    showError(err);
  }
}

async function selectModel(name) {
  state.model = name;
  const m = state.models.find((x) => x.name === name);
  $("model-facts").textContent = m.framework + " · input " + shape(m.input_size) + " · "
    + m.parameters.toLocaleString("en") + " parameters" + (m.classes ? " · " + m.classes + " classes" : "");
  state.layers = await api(withModel("/api/layers"));
  fillLayers();
  if (state.image) await refreshAll();
}

function fillLayers() {
  const select = $("layer-select"), filters = $("filters-layer");
  select.innerHTML = "";
  filters.innerHTML = "";
  const first = state.layers.find((l) => l.default) || state.layers[0];
  const convs = state.layers.filter((l) => l.kind === "conv");
  const middle = convs[Math.floor(convs.length / 2)] || first;
  for (const l of state.layers) {
    const text = l.name + "  (" + l.kind + ", " + shape(l.output_shape) + ")";
    option(select, l.name, text, l === first);
    if (l.kind === "conv") option(filters, l.name, text, l === middle);
  }
}

// -- images ------------------------------------------------------------------------------------
async function pickSample(name) {
  const n = begin("loading " + name + "…");
  try {
    const info = await api("/api/images/sample/" + encodeURIComponent(name), { method: "POST" });
    await useImage(info, n);
  } catch (err) { finish(n, err.message, true); }
}

async function upload(file) {
  if (!file) return;
  const n = begin("uploading " + file.name + "…");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const info = await api("/api/images", { method: "POST", body: form });
    await useImage(info, n);
  } catch (err) { finish(n, err.message, true); }
}

async function useImage(info, n) {
  state.image = info;
  for (const b of $("samples").children) b.classList.toggle("on", b.dataset.name === info.name);
  $("image").src = info.url;
  $("image-name").textContent = info.name + " · " + info.width + "×" + info.height;
  $("image-figure").classList.remove("hidden");
  await refreshAll(n);
}

async function refreshAll(n) {
  if (n === undefined) n = begin("computing…");
  else finish(n, "computing…");
  try {
    await Promise.all([loadPredictions().then(loadCam), loadActivations()]);
    finish(n, "ready");
  } catch (err) { finish(n, err.message, true); }
}

// -- predictions -------------------------------------------------------------------------------
async function loadPredictions() {
  const n = ticket("predictions");
  const answer = await api(withModel(imagePath("/predictions")));
  if (!current("predictions", n)) return;
  state.predictions = answer.predictions;
  const list = $("predictions");
  list.innerHTML = "";
  $("predictions-empty").classList.add("hidden");
  const select = $("cam-class");
  select.innerHTML = "";
  answer.predictions.forEach((p, rank) => {
    const li = document.createElement("li");
    li.dataset.index = p.index;
    li.innerHTML = '<div class="bar"><span class="fill"></span><span class="name"></span></div><div class="p"></div>';
    li.querySelector(".fill").style.width = (100 * p.probability).toFixed(1) + "%";
    li.querySelector(".name").textContent = p.name;
    li.querySelector(".bar").title = "class " + p.index;
    li.querySelector(".p").textContent = (100 * p.probability).toFixed(1) + "%";
    li.addEventListener("click", () => { select.value = String(p.index); loadCam().catch(showError); });
    list.appendChild(li);
    option(select, p.index, (rank + 1) + ". " + p.name, rank === 0);
  });
}

// -- class activation maps ---------------------------------------------------------------------
async function loadCam() {
  if (!state.image) return;
  const n = ticket("cam");
  const method = $("cam-method").value, target = $("cam-class").value;
  for (const li of $("predictions").children) li.classList.toggle("on", li.dataset.index === target);
  $("cam-caption").textContent = "computing " + method + "…";
  let facts;
  if (state.camJobs.includes(method)) {
    // One forward pass per channel: a job in the explorer's queue, polled, cancelled if replaced.
    let job = await api(imagePath("/cam"), {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ method: method, target: target ? Number(target) : null, model: state.model }),
    });
    while (job.status === "queued" || job.status === "running") {
      if (!current("cam", n)) { fetch("/api/jobs/" + encodeURIComponent(job.id), { method: "DELETE" }); return; }
      $("cam-caption").textContent = "computing " + method + "… (" + job.status
        + (job.done ? ", step " + job.done : "") + ")";
      await new Promise((resolve) => setTimeout(resolve, 300));
      job = await api("/api/jobs/" + encodeURIComponent(job.id));
    }
    if (job.status !== "done") throw new Error(job.error || method + " was " + job.status);
    facts = job.result;
  } else {
    const query = "/cam?method=" + encodeURIComponent(method) + (target ? "&target=" + target : "");
    facts = await api(withModel(imagePath(query)));
  }
  if (!current("cam", n)) return;
  const img = $("cam-image");
  img.src = facts.image;
  img.dataset.method = facts.method;
  img.dataset.target = facts.target;
  img.classList.remove("hidden");
  $("cam-caption").textContent = facts.method + " · " + facts.target_name + " (" + facts.target
    + ") · score " + facts.score.toFixed(2) + " · box " + facts.box.join(", ")
    + " · layer " + facts.layers.join(", ");
}

// -- activations -------------------------------------------------------------------------------
async function loadActivations() {
  if (!state.image) return;
  const n = ticket("activations");
  const layer = $("layer-select").value;
  const facts = await api(withModel(imagePath("/activations/" + encodeURIComponent(layer))));
  if (!current("activations", n)) return;
  state.layerFacts = facts;
  const empty = facts.empty.length;
  $("layer-facts").textContent = facts.type + " · " + shape(facts.shape) + " · "
    + empty + " of " + facts.channels + " channels empty";
  const img = $("grid");
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("could not load the grid of " + layer));
    img.src = withModel(facts.grid);
  });
  if (!current("activations", n)) return;
  img.dataset.layer = facts.layer;
  // Small grids are enlarged in CSS only (pixelated), up to the card's width.
  const scale = Math.max(1, Math.floor(900 / img.naturalWidth));
  img.style.width = img.naturalWidth * scale + "px";
  img.classList.remove("hidden");
  $("channel-panel").classList.add("hidden");
  $("grid-mark").classList.add("hidden");
}

function channelAt(img, event) {
  const f = state.layerFacts, rect = img.getBoundingClientRect();
  const x = (event.clientX - rect.left) * img.naturalWidth / rect.width;
  const y = (event.clientY - rect.top) * img.naturalHeight / rect.height;
  const col = Math.min(f.per_row - 1, Math.floor(x / (f.cell[1] + 1)));
  const row = Math.floor(y / (f.cell[0] + 1));
  const channel = row * f.per_row + col;
  return channel < f.channels ? channel : null;
}

function markChannel(channel) {
  // Outline the channel's cell on the grid, in % of the grid, so it follows any resizing.
  const f = state.layerFacts, img = $("grid"), mark = $("grid-mark");
  const col = channel % f.per_row, row = Math.floor(channel / f.per_row);
  const pct = (value, total) => (100 * value / total) + "%";
  mark.style.left = pct(col * (f.cell[1] + 1), img.naturalWidth);
  mark.style.top = pct(row * (f.cell[0] + 1), img.naturalHeight);
  mark.style.width = pct(f.cell[1], img.naturalWidth);
  mark.style.height = pct(f.cell[0], img.naturalHeight);
  mark.classList.remove("hidden");
}

function showChannel(channel) {
  const f = state.layerFacts;
  markChannel(channel);
  $("channel").src = withModel(imagePath("/activations/" + encodeURIComponent(f.layer)
    + "/channels/" + channel + ".png"));
  $("channel").dataset.channel = channel;
  $("channel-caption").textContent = f.layer + " · channel " + channel + " · " + shape(f.cell)
    + (f.empty.includes(channel) ? " · empty" : "");
  $("channel-panel").classList.remove("hidden");
}

function stepLayer(delta) {
  const select = $("layer-select");
  const index = Math.min(select.options.length - 1, Math.max(0, select.selectedIndex + delta));
  if (index !== select.selectedIndex) {
    select.selectedIndex = index;
    loadActivations().catch(showError);
  }
}

// -- filters -----------------------------------------------------------------------------------
async function runFilters() {
  const n = ticket("filters");
  const layer = $("filters-layer").value, recipe = $("filters-recipe").value;
  const channels = $("filters-channels").value || 16;
  const progress = $("filters-progress");
  $("filters-image").classList.add("hidden");
  progress.classList.remove("hidden");
  let job = await api(withModel("/api/filters/" + encodeURIComponent(layer) + "?recipe="
    + encodeURIComponent(recipe) + "&channels=" + channels), { method: "POST" });
  while (job.status === "queued" || job.status === "running") {
    if (!current("filters", n)) return;
    progress.max = job.total;
    progress.value = job.done;
    $("filters-note").textContent = job.status + " · " + job.layer + " · step " + job.done + " of " + job.total;
    await new Promise((resolve) => setTimeout(resolve, 400));
    job = await api("/api/jobs/" + encodeURIComponent(job.id));
  }
  if (!current("filters", n)) return;
  progress.classList.add("hidden");
  if (job.status === "error") throw new Error(job.error);
  const quality = job.result.quality.filter((q) => q !== null).sort((a, b) => a - b);
  $("filters-note").textContent = job.layer + " · " + job.recipe + " · channels "
    + job.channels[0] + "–" + job.channels[job.channels.length - 1]
    + (quality.length ? " · median quality " + quality[Math.floor(quality.length / 2)].toFixed(2) : "");
  const img = $("filters-image");
  img.src = job.grid;
  img.classList.remove("hidden");
}

function showError(err) { begin(err.message); status(err.message, true); }

// -- wiring ------------------------------------------------------------------------------------
$("model-select").addEventListener("change", (e) => selectModel(e.target.value).catch(showError));
$("upload").addEventListener("change", (e) => upload(e.target.files[0]));
$("cam-method").addEventListener("change", () => loadCam().catch(showError));
$("cam-class").addEventListener("change", () => loadCam().catch(showError));
$("layer-select").addEventListener("change", () => loadActivations().catch(showError));
$("layer-prev").addEventListener("click", () => stepLayer(-1));
$("layer-next").addEventListener("click", () => stepLayer(1));
$("grid").addEventListener("click", (event) => {
  const channel = channelAt($("grid"), event);
  if (channel !== null) showChannel(channel);
});
$("filters-run").addEventListener("click", () => {
  runFilters().catch((err) => { $("filters-progress").classList.add("hidden"); showError(err); });
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  upload(e.dataTransfer.files[0]);
});
start();
