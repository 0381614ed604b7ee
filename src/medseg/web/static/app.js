// The medseg browser app: upload an image, show the segmentation and counts (or, for a classification run,
// the predicted class, the probabilities and a Grad-CAM heatmap) and downloads; the run's report.
// Plain JavaScript, no build step, nothing loaded from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: null, lastFile: null, busy: false };
// Leukocyte types: a differential over these only is a differential white-cell count.
const WHITE_CELL_TYPES = new Set(["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"]);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setProgress(text, fraction) {
  const progress = $("progress");
  progress.hidden = text === null;
  if (text === null) return;
  $("progress-text").textContent = text;
  progress.classList.toggle("busy", fraction === null);
  $("progress-bar").style.width = fraction === null ? "" : `${Math.round(fraction * 100)}%`;
}

function formatMegabytes(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function loadModels() {
  let response;
  try {
    response = await fetch("/api/models");
  } catch (err) {
    showError("Cannot reach the medseg server. Is `medseg serve` still running?");
    return;
  }
  const info = await response.json();
  state.models = info.models;
  state.limits = info.limits;
  const select = $("model");
  select.replaceChildren(
    ...info.models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      const kinds = m.task === "classify" ? `classifier, ${m.classes.length} classes`
        : m.task !== "instance" ? `${m.classes.length} classes`
          : m.typed ? `instances, ${m.classes.length - 1} types` : "instances";
      option.textContent = `${m.name} (${m.architecture}, ${kinds})`;
      return option;
    })
  );
  select.value = info.default;
  select.disabled = info.models.length < 2;
  describeModel();
  const mpx = (info.limits.max_pixels / 1e6).toFixed(0);
  $("limits").textContent =
    `${info.limits.accepted} · up to ${info.limits.max_upload_mb} MB and ${mpx} megapixels · ` +
    "the file stays in this server's memory";
}

// One <li> per foreground class (instance runs: per type; classification runs: every class, as none is a
// background): colour swatch and name. Untyped instance runs colour each object differently, so their one
// class gets a many-coloured swatch.
function legendItems(classes, perObject = false, withFirst = false) {
  return classes
    .filter((c) => withFirst || c.id !== 0)
    .map((c) => {
      const item = document.createElement("li");
      if (perObject) {
        const mark = swatch("transparent");
        mark.classList.add("multi");
        item.append(mark, `${c.name} (a colour each)`);
      } else {
        item.append(swatch(c.color), c.name);
      }
      return item;
    });
}

function differentialTitle(types) {
  return types.length && types.every((t) => WHITE_CELL_TYPES.has(t))
    ? "Differential white-cell count"
    : "Differential count";
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function describeModel() {
  const model = currentModel();
  if (!model) return;
  $("empty-title").textContent = `Model ${model.name}`;
  if (model.task === "classify") {
    $("empty-text").textContent =
      `Image classification with ${model.architecture} on ${model.in_channels}-channel images ` +
      `(seen at ${model.image_size} × ${model.image_size} px). Drop an image above: the predicted class ` +
      "and the probability of each class, with a Grad-CAM heatmap of where the evidence for it lies.";
    $("empty-classes").replaceChildren(...legendItems(model.classes, false, true));
    return;
  }
  const kind = `${model.task[0].toUpperCase()}${model.task.slice(1)} segmentation with ${model.architecture} ` +
    `on ${model.in_channels}-channel images. `;
  if (model.task === "instance") {
    const differential = model.differential && model.differential.length
      ? ` and the ${differentialTitle(model.differential).toLowerCase()} (% of ${model.differential.join(", ")})`
      : "";
    $("empty-text").textContent = kind +
      `Drop an image above: every object is outlined${model.typed ? " in the colour of its type" : ""}, ` +
      `beside the original, with the objects counted${model.typed ? " per type" : ""}${differential}.`;
  } else {
    $("empty-text").textContent = kind +
      "Drop an image above: the original and the predicted classes appear side by side, with pixel counts per class.";
  }
  $("empty-classes").replaceChildren(
    ...legendItems(model.classes, model.task === "instance" && !model.typed)
  );
}

// The server names the file (as it sanitised it) at the start of its messages; the page already does.
function serverName(name) {
  const base = name.split(/[\\/]/).pop().replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._]+|[._]+$/g, "");
  return base.slice(0, 80) || "upload";
}

function upload(file) {
  if (state.busy || !file) return;
  const model = currentModel();
  const classify = Boolean(model && model.task === "classify");
  state.lastFile = file;
  clearError();
  const maxBytes = state.limits ? state.limits.max_upload_mb * 1024 * 1024 : Infinity;
  if (file.size > maxBytes) {
    showError(`${file.name} is ${formatMegabytes(file.size)}; this server accepts at most ${state.limits.max_upload_mb} MB.`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  const request = new XMLHttpRequest();
  request.open("POST", "/api/predict");
  request.responseType = "json";
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) setProgress(`Uploading ${file.name}…`, event.loaded / event.total);
  };
  request.upload.onload = () => setProgress(`${classify ? "Classifying" : "Segmenting"} ${file.name}…`, null);
  request.onload = () => {
    finish();
    const body = request.response;
    if (request.status === 200 && body) {
      render(body);
    } else {
      let detail = body && typeof body.detail === "string" ? body.detail : `the server answered ${request.status}`;
      const prefix = `${serverName(file.name)}: `;
      if (detail.startsWith(prefix)) detail = detail.slice(prefix.length);
      showError(`Could not ${classify ? "classify" : "segment"} ${file.name}: ${detail}`);
      // An older result under a new error would read as the result of this file.
      $("result").hidden = true;
      $("empty").hidden = false;
      $("dropzone").classList.remove("compact");
    }
  };
  request.onerror = () => {
    finish();
    showError("The connection to the medseg server failed. Is `medseg serve` still running?");
  };
  state.busy = true;
  document.body.setAttribute("aria-busy", "true");
  setProgress(`Uploading ${file.name}…`, 0);
  request.send(form);
}

function finish() {
  state.busy = false;
  document.body.removeAttribute("aria-busy");
  setProgress(null);
}

function swatch(color) {
  const span = document.createElement("span");
  span.className = "swatch";
  span.style.backgroundColor = color;
  return span;
}

function cell(text, className = "") {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function setHead(columns) {
  const row = document.createElement("tr");
  row.append(
    ...columns.map(([text, className]) => {
      const th = document.createElement("th");
      if (className) th.className = className;
      th.textContent = text;
      return th;
    })
  );
  $("counts").tHead.replaceChildren(row);
}

function classLabel(name, color) {
  const label = document.createElement("span");
  label.className = "class-label";
  label.append(swatch(color), name);
  return label;
}

// Semantic runs: pixels and fraction of the image per class, with a bar relative to the largest class.
function renderClassCounts(result) {
  $("counts-title").textContent = "Counts";
  setHead([["Class"], ["Pixels", "num"], ["Fraction", "num"], ["", "bar-col"]]);
  const largest = Math.max(...result.classes.filter((c) => c.id !== 0).map((c) => c.fraction), 1e-9);
  $("counts").tBodies[0].replaceChildren(
    ...result.classes.map((c) => {
      const row = document.createElement("tr");
      row.dataset.classId = c.id;
      if (c.id === 0) row.className = "background";
      const nameCell = document.createElement("td");
      nameCell.append(classLabel(c.name, c.id === 0 ? "transparent" : c.color));
      const barCell = document.createElement("td");
      if (c.id !== 0) {
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.width = `${Math.min(100, (c.fraction / largest) * 100)}%`;
        bar.style.backgroundColor = c.color;
        barCell.append(bar);
      }
      row.append(
        nameCell,
        cell(c.pixels.toLocaleString("en-US"), "num"),
        cell(`${(c.fraction * 100).toFixed(2)} %`, "num"),
        barCell
      );
      return row;
    })
  );
  $("counts").tFoot.replaceChildren();
  $("differential").hidden = true;
}

// Instance runs: objects per type, the % of each differential type among them, the total, and a bar
// chart of the differential count.
function renderObjectCounts(result) {
  const colors = Object.fromEntries(result.classes.map((c) => [c.name, c.color]));
  const differential = result.differential || [];
  const inDifferential = new Set(differential);
  const withPercent = inDifferential.size > 0;
  $("counts-title").textContent = "Objects";
  setHead(withPercent ? [["Class"], ["Count", "num"], ["%", "num"]] : [["Class"], ["Count", "num"]]);
  // An untyped run has one "objects" row, the same number as the total below.
  const rows = result.typed ? result.counts.filter((r) => r.class !== "total") : [];
  $("counts").tBodies[0].replaceChildren(
    ...rows.map((r) => {
      const row = document.createElement("tr");
      row.dataset.class = r.class;
      const nameCell = document.createElement("td");
      nameCell.append(classLabel(r.class, colors[r.class] || "transparent"));
      row.append(nameCell, cell(r.count.toLocaleString("en-US"), "num"));
      if (withPercent) {
        const percent = inDifferential.has(r.class) && r.percent !== "" ? `${Number(r.percent).toFixed(1)} %` : "–";
        const percentCell = cell(percent, "num");
        if (!inDifferential.has(r.class)) percentCell.title = "not part of the differential count";
        row.append(percentCell);
      }
      return row;
    })
  );
  const total = document.createElement("tr");
  total.className = "total";
  total.append(cell("Total objects"), cell(result.objects.toLocaleString("en-US"), "num"));
  if (withPercent) total.append(cell(""));
  $("counts").tFoot.replaceChildren(total);

  const box = $("differential");
  box.hidden = !(result.typed && withPercent);
  if (box.hidden) return;
  const counted = result.counts.filter((r) => inDifferential.has(r.class));
  const among = counted.reduce((sum, r) => sum + r.count, 0);
  const white = differential.every((t) => WHITE_CELL_TYPES.has(t));
  $("differential-title").textContent = differentialTitle(differential);
  $("differential-bars").replaceChildren(
    ...counted.map((r) => {
      const percent = r.percent === "" ? 0 : Number(r.percent);
      const item = document.createElement("li");
      item.dataset.class = r.class;
      const name = document.createElement("span");
      name.className = "differential-name";
      name.textContent = r.class;
      const track = document.createElement("span");
      track.className = "differential-track";
      const bar = document.createElement("span");
      bar.className = "differential-bar";
      bar.style.width = `${percent}%`;
      bar.style.backgroundColor = colors[r.class] || "";
      track.append(bar);
      const value = document.createElement("span");
      value.className = "num";
      value.textContent = `${percent.toFixed(1)} %`;
      item.append(name, track, value);
      return item;
    })
  );
  const cells = white ? "white cells" : `${differential.join(", ")} objects`;
  $("differential-note").textContent = among === 0
    ? `No ${cells} in this image.`
    : `% of the ${among.toLocaleString("en-US")} ${cells} in this image` +
      (among < 100 ? "; a differential count is usually read over at least 100." : ".");
}

function percent(probability) {
  return `${(probability * 100).toFixed(1)} %`;
}

// Classification runs: the predicted class and a bar per class, in class order, the predicted one in bold.
function renderPrediction(result) {
  const top = result.prediction;
  const predicted = $("predicted");
  const value = document.createElement("span");
  value.className = "predicted-probability";
  value.textContent = percent(top.probability);
  const name = document.createElement("span");
  name.id = "predicted-class";
  name.textContent = top.class;
  predicted.replaceChildren(swatch(result.probabilities[top.id].color), name, value);
  $("probability-bars").replaceChildren(
    ...result.probabilities.map((p) => {
      const item = document.createElement("li");
      item.dataset.class = p.name;
      if (p.id === top.id) item.className = "top";
      const label = document.createElement("span");
      label.className = "differential-name";
      label.textContent = p.name;
      const track = document.createElement("span");
      track.className = "differential-track";
      const bar = document.createElement("span");
      bar.className = "differential-bar";
      bar.style.width = `${Math.min(100, p.probability * 100)}%`;
      bar.style.backgroundColor = p.color;
      track.append(bar);
      const number = document.createElement("span");
      number.className = "num";
      number.textContent = percent(p.probability);
      item.append(label, track, number);
      return item;
    })
  );
  const heat = result.heatmap;
  $("heatmap-note").textContent = heat.zero
    ? `The Grad-CAM heatmap of ${heat.class} is empty: no location of layer ${heat.layer} raises its score.`
    : `The heatmap shows where layer ${heat.layer} holds the evidence for ${heat.class} (${heat.method}).`;
}

function render(result) {
  const png = (b64) => `data:image/png;base64,${b64}`;
  const instance = result.task === "instance";
  const classify = result.task === "classify";
  $("original").src = png(result.image_png_base64);
  $("overlay-base").src = png(result.image_png_base64);
  // Classification: the colour-mapped heatmap alone over the original, so the slider fades it (at 50 %
  // it is the overlay `medseg predict --explain` writes).
  $("overlay").src = png(classify ? result.heatmap_png_base64 : result.color_mask_png_base64);
  $("overlay").alt = classify ? `Grad-CAM heatmap of ${result.prediction.class} over the image`
    : "predicted classes over the image";
  $("overlay-caption").textContent = classify ? `Grad-CAM · ${result.heatmap.class}` : "Overlay";
  // Small images are enlarged; keep their pixels sharp rather than blurred.
  const small = Math.max(result.width, result.height) < 400;
  document.querySelectorAll(".frame").forEach((frame) => frame.classList.toggle("pixelated", small));

  const title = $("result-title");
  title.replaceChildren();
  const name = document.createElement("strong");
  name.textContent = result.filename;
  const objects = instance ? ` · ${result.objects.toLocaleString("en-US")} objects` : "";
  const predicted = classify ? ` · ${result.prediction.class} (${percent(result.prediction.probability)})` : "";
  title.append(
    name,
    ` · ${result.width} × ${result.height} px, ${result.channels} channel(s), ${result.dtype}` +
      ` · model ${result.model}${objects}${predicted} · ${result.seconds.toFixed(2)} s`
  );

  $("legend").hidden = classify;
  $("heat-scale").hidden = !classify;
  $("prediction-card").hidden = !classify;
  $("counts-card").hidden = classify;
  if (classify) {
    $("legend").replaceChildren();
    renderPrediction(result);
  } else {
    $("legend").replaceChildren(...legendItems(result.classes, instance && !result.typed));
    if (instance) renderObjectCounts(result);
    else renderClassCounts(result);
  }

  const links = {
    "dl-mask-png": "mask_png",
    "dl-mask-tiff": "mask_tiff",
    "dl-overlay": "overlay_png",
    "dl-csv": "counts_csv",
    "dl-objects": "objects_csv",
    "dl-heatmap": "heatmap_png",
    "dl-predictions": "predictions_csv",
  };
  for (const [id, key] of Object.entries(links)) {
    const url = result.downloads[key];
    $(id).hidden = !url;
    if (url) $(id).href = url;
    else $(id).removeAttribute("href");
  }
  let hint = "The mask holds class ids (0 = background), the size of the input.";
  if (classify) {
    hint = "The heatmap PNG is the Grad-CAM overlay that medseg predict --explain writes; the CSV is the " +
      "image's row of predictions.csv: the class, its probability and the probability of every class.";
  } else if (result.regions && Object.keys(result.regions).length) {
    const bits = Object.entries(result.regions).map(([name, values]) => `${name} ${values.join("/")}`);
    hint = "The classes overlap: each mask value stands for a set of regions (" + bits.join("; ") +
      "), the size of the input. Pixel counts give every region its pixels, so they can sum past 100 %.";
  } else if (instance) {
    hint = "The mask holds instance ids (0 = background, 16-bit), the size of the input. The objects CSV has " +
      "one row per object: type, area, centroid, mean intensity, eccentricity.";
  }
  $("download-hint").textContent = hint;

  $("result").hidden = false;
  $("empty").hidden = true;
  $("dropzone").classList.add("compact");
  applyOpacity();
}

function applyOpacity() {
  const value = $("opacity").value;
  $("overlay").style.opacity = value / 100;
  $("opacity-value").textContent = `${value}%`;
}

function selectTab(name) {
  for (const tab of ["segment", "report"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
  if (name === "report") {
    const url = `/report/${encodeURIComponent($("model").value)}`;
    $("report-open").href = url;
    if ($("report-frame").getAttribute("src") !== url) $("report-frame").src = url;
  }
}

function wire() {
  const input = $("file");
  const zone = $("dropzone");
  $("choose").addEventListener("click", (event) => {
    event.stopPropagation();
    input.click();
  });
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragover");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
  });
  $("opacity").addEventListener("input", applyOpacity);
  $("tab-segment").addEventListener("click", () => selectTab("segment"));
  $("tab-report").addEventListener("click", () => selectTab("report"));
  $("model").addEventListener("change", () => {
    describeModel();
    if (!$("panel-report").hidden) selectTab("report");
    else if (state.lastFile) upload(state.lastFile);
  });
}

wire();
loadModels();
