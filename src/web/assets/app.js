// edgeclass web page: plain DOM, no framework, no build step. Every text from the daemon
// (camera ids, labels) is set with textContent, never parsed as HTML.
"use strict";

const pages = ["cameras", "classify", "thresholds", "label"];
const tiles = new Map(); // camera id -> tile element

function show() {
  const name = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "cameras";
  for (const page of pages) {
    document.getElementById("page-" + page).hidden = page !== name;
    document.getElementById("nav-" + page).classList.toggle("active", page === name);
  }
  if (name === "thresholds") loadThresholds();
}

function percent(score) {
  return (score * 100).toFixed(1) + " %";
}

// Top-k bars: one row per prediction, label as text, score as a meter.
function bars(container, predictions) {
  container.replaceChildren();
  for (const p of predictions || []) {
    const row = document.createElement("div");
    row.className = "bar";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.label;
    name.title = p.raw_label || p.label;
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    meter.value = p.score;
    const value = document.createElement("span");
    value.textContent = percent(p.score);
    row.append(name, meter, value);
    container.append(row);
  }
}

function newTile(title) {
  const tile = document.getElementById("tile").content.firstElementChild.cloneNode(true);
  tile.querySelector(".name").textContent = title;
  return tile;
}

function snapshotUrl(id) {
  return "/api/cameras/" + encodeURIComponent(id) + "/snapshot.jpg?t=" + Date.now();
}

function cameraTile(id) {
  let tile = tiles.get(id);
  if (!tile) {
    tile = newTile(id);
    tile.dataset.camera = id;
    tiles.set(id, tile);
    document.getElementById("tiles").append(tile);
  }
  return tile;
}

function showEvent(tile, event) {
  const label = tile.querySelector(".label");
  label.textContent = event.label + " · " + percent(event.score);
  label.classList.toggle("unknown", event.unknown);
  bars(tile.querySelector(".bars"), event.top3);
  tile.dataset.lastEvent = new Date(event.ts).toLocaleTimeString();
  tile.dataset.latency = event.latency_ms.toFixed(0);
  showDetails(tile);
}

function showStatus(tile, online) {
  const status = tile.querySelector(".status");
  status.textContent = online ? "online" : "offline";
  status.className = "status badge " + (online ? "online" : "offline");
}

function showDetails(tile) {
  const d = tile.dataset;
  tile.querySelector(".details").textContent =
    (d.fps || "0.0") + " fps · " + (d.latency || "–") + " ms inference · last event " +
    (d.lastEvent || "–");
}

async function refreshCameras() {
  const response = await fetch("/api/cameras");
  if (!response.ok) return;
  for (const camera of await response.json()) {
    const tile = cameraTile(camera.id);
    showStatus(tile, camera.online);
    tile.dataset.fps = camera.fps.toFixed(1);
    if (camera.event && tile.dataset.seq !== String(camera.event.seq)) {
      tile.dataset.seq = camera.event.seq;
      showEvent(tile, camera.event);
    }
    if (camera.frames_processed > 0) {
      tile.querySelector(".snapshot").src = snapshotUrl(camera.id);
    }
    showDetails(tile);
  }
}

function listen() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  source.onopen = () => { live.textContent = "live"; live.className = "badge online"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge offline"; };
  source.onmessage = (message) => {
    const update = JSON.parse(message.data);
    if (update.kind === "availability") {
      showStatus(cameraTile(update.camera), update.online);
    } else if (update.kind === "event" && !update.head) {
      const tile = cameraTile(update.event.camera);
      tile.dataset.seq = update.event.seq;
      showEvent(tile, update.event);
      tile.querySelector(".snapshot").src = snapshotUrl(update.event.camera);
    }
  };
}

async function classifyFile(file) {
  const tile = newTile(file.name);
  tile.classList.add("result");
  tile.querySelector(".snapshot").src = URL.createObjectURL(file);
  document.getElementById("results").prepend(tile);
  const label = tile.querySelector(".label");
  label.textContent = "classifying…";
  try {
    const response = await fetch("/api/classify", {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    const c = answer.classification;
    label.textContent = c.label + " · " + percent(c.score);
    label.classList.toggle("unknown", c.unknown);
    bars(tile.querySelector(".bars"), c.top3);
    tile.querySelector(".details").textContent =
      "ImageNet: " + answer.top3.map((g) => g.label + " " + percent(g.score)).join(", ") +
      " · " + answer.latency_ms.toFixed(0) + " ms · " + answer.model;
  } catch (error) {
    label.textContent = "failed: " + error.message;
    label.classList.add("error");
  }
}

function setupClassify() {
  const input = document.getElementById("files");
  const drop = document.getElementById("drop");
  input.addEventListener("change", () => { for (const f of input.files) classifyFile(f); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const f of e.dataTransfer.files) classifyFile(f);
  });
}

// Thresholds: for the ImageNet classifier and each head, the recent top-1 scores as
// histograms, a slider for the global threshold and one per label, each previewing which of
// those frames it would turn unknown; Apply writes it to the overrides file. The daemon records
// scores only while this page asks (for ten minutes after the last request), so the note says
// since when and how many.
const BINS = 20;
const SVG = "http://www.w3.org/2000/svg";
const RECORDING_REFRESH_MS = 60000;

async function fetchThresholds() {
  const note = document.getElementById("thresholds-note");
  const response = await fetch("/api/thresholds");
  if (!response.ok) { note.textContent = "cannot load: " + response.statusText; return null; }
  const data = await response.json();
  const frames = data.frames + data.heads.reduce((sum, h) => sum + h.frames, 0);
  note.textContent = "Recording since " + new Date(data.recording.since_ms).toLocaleTimeString() +
    ": " + frames + " classifications seen (the histograms keep the last 240 per camera); " +
    "recording stops 10 minutes after this page last asked. Apply writes to " +
    data.overrides_file + " and reloads.";
  return data;
}

async function loadThresholds() {
  const data = await fetchThresholds();
  if (!data) return;
  const container = document.getElementById("threshold-classifiers");
  container.replaceChildren();
  container.append(classifierSection("ImageNet", null, data));
  for (const head of data.heads) container.append(classifierSection("Head " + head.name, head.name, head));
}

// One classifier: its global threshold tile, then a tile per label, most frequent first.
function classifierSection(title, head, classifier) {
  const section = document.createElement("section");
  section.className = "classifier";
  section.dataset.head = head || "";
  const heading = document.createElement("h2");
  heading.textContent = title + " · " + classifier.frames + " frames";
  const tiles = document.createElement("div");
  tiles.className = "tiles";
  section.append(heading, tiles);
  tiles.append(globalTile(head, classifier));
  const byCount = classifier.labels.map((l) => ({
    head,
    label: l.label,
    threshold: l.threshold,
    frames: classifier.recent.filter((r) => r.label === l.label),
  })).sort((a, b) => b.frames.length - a.frames.length);
  for (const entry of byCount) tiles.append(thresholdTile(entry));
  return section;
}

// The global threshold: every label without its own threshold follows it. Until the slider
// moves, a head without one keeps each label's threshold (the head file's recommendation).
function globalTile(head, classifier) {
  const tile = document.getElementById("threshold-tile").content.firstElementChild.cloneNode(true);
  tile.className = "tile threshold-global";
  tile.querySelector(".name").textContent = "global threshold" +
    (classifier.threshold === null ? " (not set: each label its own)" : "");
  const slider = tile.querySelector(".slider");
  slider.value = classifier.threshold === null ? 0.6 : classifier.threshold;
  const labels = new Map(classifier.labels.map((l) => [l.label, l]));
  let moved = classifier.threshold !== null;
  const update = () => {
    const global = Number(slider.value);
    const thresholdOf = (frame) => {
      const label = labels.get(frame.label);
      if (!label) return global;
      return label.own || !moved ? label.threshold : global;
    };
    previewThreshold(tile, classifier.recent, global, thresholdOf);
  };
  slider.addEventListener("input", () => { moved = true; update(); });
  tile.querySelector(".apply").addEventListener("click", () => {
    const value = Number(slider.value);
    applyThreshold(tile, head === null ? { threshold: value } : { heads: { [head]: { threshold: value } } }, value);
  });
  update();
  return tile;
}

function thresholdTile(entry) {
  const tile = document.getElementById("threshold-tile").content.firstElementChild.cloneNode(true);
  tile.dataset.label = entry.label;
  tile.querySelector(".name").textContent = entry.label;
  const slider = tile.querySelector(".slider");
  slider.value = entry.threshold;
  const update = () => previewThreshold(tile, entry.frames, Number(slider.value));
  slider.addEventListener("input", update);
  tile.querySelector(".apply").addEventListener("click", () => {
    const value = Number(slider.value);
    const thresholds = { [entry.label]: value };
    applyThreshold(tile, entry.head === null ? { thresholds } : { heads: { [entry.head]: { thresholds } } }, value);
  });
  update();
  return tile;
}

// `thresholdOf(frame)`: the threshold a frame is held to (default: the slider's).
function previewThreshold(tile, frames, threshold, thresholdOf = () => threshold) {
  tile.querySelector(".value").textContent = threshold.toFixed(2);
  const unknown = frames.filter((f) => f.score < thresholdOf(f));
  tile.querySelector(".would-unknown").textContent = String(unknown.length);
  tile.querySelector(".total").textContent = String(frames.length);
  const list = tile.querySelector(".frames");
  list.replaceChildren();
  for (const f of unknown) {
    const item = document.createElement("li");
    item.textContent = new Date(f.ts_ms).toLocaleTimeString() + " · " + f.camera + " · " +
      percent(f.score);
    list.append(item);
  }
  histogram(tile.querySelector(".histogram"), frames, threshold);
}

function histogram(svg, frames, threshold) {
  const counts = new Array(BINS).fill(0);
  for (const f of frames) counts[Math.min(BINS - 1, Math.floor(f.score * BINS))] += 1;
  const most = Math.max(1, ...counts);
  svg.replaceChildren();
  counts.forEach((count, bin) => {
    const rect = document.createElementNS(SVG, "rect");
    const height = (count / most) * 38;
    rect.setAttribute("x", String(bin * (100 / BINS) + 0.3));
    rect.setAttribute("width", String(100 / BINS - 0.6));
    rect.setAttribute("y", String(40 - height));
    rect.setAttribute("height", String(height));
    if ((bin + 1) / BINS <= threshold) rect.setAttribute("class", "below");
    svg.append(rect);
  });
  const line = document.createElementNS(SVG, "line");
  for (const [k, v] of [["x1", threshold * 100], ["x2", threshold * 100], ["y1", 0], ["y2", 40]]) {
    line.setAttribute(k, String(v));
  }
  svg.append(line);
}

// `body`: the POST /api/thresholds request.
async function applyThreshold(tile, body, threshold) {
  const status = tile.querySelector(".applied");
  status.textContent = "applying…";
  try {
    const response = await fetch("/api/thresholds", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    status.textContent = "applied " + threshold.toFixed(2);
    status.classList.remove("error");
  } catch (error) {
    status.textContent = "failed: " + error.message;
    status.classList.add("error");
  }
}

document.getElementById("thresholds-refresh").addEventListener("click", loadThresholds);
// While the page is open, keep the daemon recording and the note's count current (the
// histograms change only on Refresh, so sliders keep their place).
setInterval(() => {
  if (!document.getElementById("page-thresholds").hidden) fetchThresholds();
}, RECORDING_REFRESH_MS);
window.addEventListener("hashchange", show);
show();
setupClassify();
refreshCameras().then(listen);
setInterval(refreshCameras, 2000);
