// edgeclass "Label and train" page: a camera's collected frames in a grid, bulk labelling,
// training with live progress, its report, and activating the trained head. Plain DOM; every
// name from the daemon (camera ids, classes, files) is set with textContent or as a URL
// component, never parsed as HTML.
"use strict";

const label = {
  camera: null,
  listing: null, // GET /api/datasets/{camera}
  selected: new Set(), // "class/file"
  lastClicked: null, // index in the grid, for shift-click ranges
  polling: null,
};

function $(id) {
  return document.getElementById(id);
}

function frameKey(c, f) {
  return c + "/" + f;
}

function message(text, isError) {
  const p = $("label-message");
  p.textContent = text;
  p.classList.toggle("error", !!isError);
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let answer = null;
  try { answer = text ? JSON.parse(text) : null; } catch (_) { answer = { error: text }; }
  if (!response.ok) throw new Error((answer && answer.error) || text || response.statusText);
  return answer;
}

function datasetPath(suffix) {
  return "/api/datasets/" + encodeURIComponent(label.camera) + (suffix || "");
}

function fillSelect(select, names, keep) {
  const previous = keep ? select.value : null;
  select.replaceChildren();
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.append(option);
  }
  if (previous && names.includes(previous)) select.value = previous;
}

async function loadCameras() {
  const cameras = await api("GET", "/api/cameras");
  const ids = cameras.map((c) => c.id);
  fillSelect($("label-camera"), ids, true);
  if (!label.camera && ids.length) label.camera = ids[0];
}

async function loadDataset() {
  if (!label.camera) return;
  label.listing = await api("GET", datasetPath());
  const names = label.listing.classes.map((c) => c.name);
  const classes = names.filter((n) => n !== "unlabelled");
  fillSelect($("assign-class"), classes, true);
  fillSelect($("show-class"), ["all"].concat(names), true);
  $("label-counts").textContent = label.listing.classes
    .map((c) => c.name + " " + c.frames.length).join(" · ");
  // Forget selections of frames that moved or went.
  const present = new Set();
  for (const c of label.listing.classes) for (const f of c.frames) present.add(frameKey(c.name, f));
  for (const key of [...label.selected]) if (!present.has(key)) label.selected.delete(key);
  renderGrid();
}

function shownFrames() {
  const show = $("show-class").value || "all";
  const frames = [];
  for (const c of label.listing.classes) {
    if (show !== "all" && c.name !== show) continue;
    for (const f of c.frames) frames.push({ class: c.name, file: f });
  }
  return frames;
}

function renderGrid() {
  const grid = $("frames");
  grid.replaceChildren();
  const frames = shownFrames();
  frames.forEach((frame, index) => {
    const figure = document.createElement("figure");
    figure.className = "frame";
    figure.dataset.class = frame.class;
    figure.dataset.file = frame.file;
    figure.dataset.index = index;
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = frame.file;
    img.src = datasetPath("/frames/" + encodeURIComponent(frame.class) + "/" +
      encodeURIComponent(frame.file));
    const caption = document.createElement("figcaption");
    caption.textContent = frame.class;
    figure.append(img, caption);
    figure.classList.toggle("selected", label.selected.has(frameKey(frame.class, frame.file)));
    figure.addEventListener("click", (e) => toggleFrame(frames, index, e.shiftKey));
    grid.append(figure);
  });
  $("selected-count").textContent = label.selected.size + " selected";
}

function toggleFrame(frames, index, range) {
  const key = (f) => frameKey(f.class, f.file);
  if (range && label.lastClicked !== null) {
    const [a, b] = [Math.min(label.lastClicked, index), Math.max(label.lastClicked, index)];
    for (let i = a; i <= b; i++) label.selected.add(key(frames[i]));
  } else if (label.selected.has(key(frames[index]))) {
    label.selected.delete(key(frames[index]));
  } else {
    label.selected.add(key(frames[index]));
  }
  label.lastClicked = index;
  renderGrid();
}

function selectedFrames() {
  return [...label.selected].map((key) => {
    const slash = key.indexOf("/");
    return { class: key.slice(0, slash), file: key.slice(slash + 1) };
  });
}

// Runs a change, then reloads the grid; errors are shown, never thrown.
async function change(work, done) {
  try {
    const answer = await work();
    message(done(answer), false);
  } catch (error) {
    message(error.message, true);
  }
  await loadDataset().catch((e) => message(e.message, true));
}

function setupLabelling() {
  $("label-camera").addEventListener("change", () => {
    label.camera = $("label-camera").value;
    label.selected.clear();
    label.lastClicked = null;
    loadDataset().catch((e) => message(e.message, true));
  });
  $("show-class").addEventListener("change", () => { label.lastClicked = null; renderGrid(); });
  $("select-all").addEventListener("click", () => {
    for (const f of shownFrames()) label.selected.add(frameKey(f.class, f.file));
    renderGrid();
  });
  $("select-none").addEventListener("click", () => { label.selected.clear(); renderGrid(); });
  $("assign").addEventListener("click", () => {
    const to = $("assign-class").value;
    if (!to) return message("create a class first", true);
    const frames = selectedFrames();
    change(() => api("POST", datasetPath("/assign"), { frames, to }),
      (a) => a.moved + " frame(s) moved to " + to);
  });
  $("delete-frames").addEventListener("click", () => {
    const frames = selectedFrames();
    if (!frames.length || !confirm("Delete " + frames.length + " frame(s)?")) return;
    change(() => api("POST", datasetPath("/delete"), { frames }),
      (a) => a.deleted + " frame(s) deleted");
  });
  $("create-class").addEventListener("click", () => {
    const name = $("new-class").value.trim();
    change(() => api("POST", datasetPath("/classes"), { name }), () => {
      $("new-class").value = "";
      return "class " + name + " created";
    }).then(() => { $("assign-class").value = name; });
  });
  $("delete-class").addEventListener("click", () => {
    const name = $("assign-class").value;
    if (!name || !confirm("Delete class " + name + "? Its frames go back to unlabelled.")) return;
    change(() => api("DELETE", datasetPath("/classes/" + encodeURIComponent(name))),
      () => "class " + name + " deleted; its frames are unlabelled again");
  });
}

function percent1(x) {
  return (x * 100).toFixed(1) + " %";
}

function cell(row, text, header) {
  const td = document.createElement(header ? "th" : "td");
  td.textContent = text;
  row.append(td);
}

// The report: accuracy, per-class precision/recall, confusion matrix (validation split).
function renderReport(report) {
  const box = $("train-report");
  box.replaceChildren();
  if (!report) return;
  const summary = document.createElement("p");
  summary.textContent = "accuracy: validation " + percent1(report.val_accuracy) + ", train " +
    percent1(report.train_accuracy) + " · best epoch " + report.best_epoch + " of " +
    report.epochs_run + (report.stopped_early ? " (stopped early)" : "") + " · " +
    report.timings.total_s.toFixed(1) + " s";
  box.append(summary);
  const v = report.validation;
  const classes = v.classes.map((c) => c.name);
  const perClass = document.createElement("table");
  perClass.className = "report";
  let row = perClass.insertRow();
  for (const h of ["class", "precision", "recall", "validation frames"]) cell(row, h, true);
  for (const c of v.classes) {
    row = perClass.insertRow();
    cell(row, c.name, true);
    cell(row, percent1(c.precision));
    cell(row, percent1(c.recall));
    cell(row, String(c.support));
  }
  const confusion = document.createElement("table");
  confusion.className = "report confusion";
  const caption = confusion.createCaption();
  caption.textContent = "confusion matrix (rows: true class, columns: predicted)";
  row = confusion.insertRow();
  cell(row, "", true);
  for (const name of classes) cell(row, name, true);
  v.confusion.forEach((counts, i) => {
    row = confusion.insertRow();
    cell(row, classes[i], true);
    counts.slice(0, classes.length).forEach((n) => cell(row, String(n)));
  });
  box.append(perClass, confusion);
}

function renderJob(job) {
  const status = $("train-status");
  const progress = $("train-progress");
  status.classList.toggle("error", job.phase === "failed");
  let text = "";
  if (job.phase === "idle") text = "no training yet";
  else if (job.phase === "loading") text = "loading the model…";
  else if (job.phase === "features") {
    text = "reading pictures " + job.pictures_done + " / " + job.pictures_total;
    progress.max = job.pictures_total || 1;
    progress.value = job.pictures_done;
  } else if (job.phase === "fitting" || job.phase === "done") {
    const e = job.epochs[job.epochs.length - 1];
    if (e) {
      text = "epoch " + e.epoch + " / " + job.max_epochs + " · loss " + e.train_loss.toFixed(3) +
        " · validation accuracy " + percent1(e.val_accuracy) + " · learning rate " +
        e.learning_rate.toExponential(1);
      progress.max = job.max_epochs || 1;
      progress.value = e.epoch;
    }
    if (job.phase === "done") text = "done (" + job.head + " on " + job.camera + ") · " + text;
  } else if (job.phase === "failed") text = "training failed: " + job.error;
  if (job.skipped && job.skipped.length) {
    text += " · skipped: " + job.skipped.map((s) => s.path + " (" + s.reason + ")").join(", ");
  }
  if (job.activated) text += " · active: " + job.activated;
  status.textContent = text;
  status.dataset.phase = job.phase;
  progress.hidden = !["features", "fitting"].includes(job.phase);
  $("activate").disabled = job.phase !== "done";
  $("train").disabled = ["loading", "features", "fitting"].includes(job.phase);
  renderReport(job.phase === "done" ? job.report : null);
}

async function pollJob() {
  try {
    const job = await api("GET", "/api/train");
    renderJob(job);
    const running = ["loading", "features", "fitting"].includes(job.phase);
    clearTimeout(label.polling);
    if (running) label.polling = setTimeout(pollJob, 500);
  } catch (error) {
    $("train-status").textContent = error.message;
  }
}

function setupTraining() {
  $("train").addEventListener("click", async () => {
    try {
      renderJob(await api("POST", "/api/train", { camera: label.camera, head: $("head-name").value }));
    } catch (error) {
      const status = $("train-status");
      status.textContent = "cannot train: " + error.message;
      status.classList.add("error");
      return;
    }
    pollJob();
  });
  $("activate").addEventListener("click", async () => {
    try {
      const answer = await api("POST", "/api/train/activate", {});
      message("head active: " + answer.head_file + " (running on " + label.camera + ")", false);
    } catch (error) {
      message("cannot activate: " + error.message, true);
    }
    pollJob();
  });
}

async function showLabelPage() {
  if (location.hash !== "#label") return;
  try {
    await loadCameras();
    await loadDataset();
  } catch (error) {
    message(error.message, true);
  }
  pollJob();
}

setupLabelling();
setupTraining();
window.addEventListener("hashchange", showLabelPage);
showLabelPage();
