"use strict";

// The page talks to the service with the same endpoints as any client: /info, /compare,
// /classify. Relative URLs keep it working behind a path prefix; the curl lines it shows name
// the page's own address.

const MAX_SHOWN = 8;
const $ = (id) => document.getElementById(id);

const state = { info: null, files: { a: null, b: null }, compareSeq: 0, classifySeq: 0 };

function fmt(x) {
  if (x === null || x === undefined) return "–";
  const digits = Math.abs(x) >= 100 ? 1 : 4;
  return x.toFixed(digits);
}

async function postImages(url, fields) {
  const form = new FormData();
  for (const [name, [blob, filename]] of Object.entries(fields)) form.append(name, blob, filename);
  const response = await fetch(url, { method: "POST", body: form });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { detail: `the service answered ${response.status} without JSON` };
  }
  if (!response.ok) throw new Error(body.detail || `the service answered ${response.status}`);
  return body;
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

// --- model summary ------------------------------------------------------------------------

async function loadInfo() {
  try {
    const response = await fetch("info");
    state.info = await response.json();
  } catch (e) {
    $("model-summary").textContent = "Could not reach the service.";
    return;
  }
  const info = state.info;
  const colour = info.in_channels === 1 ? "grey" : "colour";
  const parts = [
    `${info.checkpoint}: ${info.model}, ${info.head} head`,
    `${info.image_size[0]}×${info.image_size[1]} ${colour}`,
    info.threshold === null ? "no threshold" : `threshold ${fmt(info.threshold)}`,
  ];
  if (info.support) {
    parts.push(`support: ${info.support.classes.length} classes, ${info.support.images} images`);
  }
  if (info.gallery) parts.push(`gallery: ${info.gallery.items} items`);
  $("model-summary").textContent = parts.join(" · ");
  showApiLines(info);
  setUpPadColours();
  if (!info.support) {
    const note = $("classify-note");
    note.innerHTML =
      "No support set: start the service with <code>--support DIR</code> " +
      "(one sub-folder of images per class) to rank classes for a drawing.";
    note.hidden = false;
  }
}

// --- the API from a program -----------------------------------------------------------------

function showApiLines(info) {
  const base = new URL(".", window.location.href).href.replace(/\/$/, "");
  const lines = $("api-lines").textContent.split("\n").filter((line) => {
    if (line.includes("/classify")) return Boolean(info.support);
    if (line.includes("/search")) return Boolean(info.gallery);
    return true;
  });
  $("api-lines").textContent = lines.map((line) => line.replaceAll("BASE", base)).join("\n");
}

// --- compare two images -------------------------------------------------------------------

function setUpDrop(side) {
  const drop = $(`drop-${side}`);
  const input = $(`file-${side}`);
  const preview = $(`preview-${side}`);
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (!file) return;
    state.files[side] = file;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    drop.classList.add("filled");
    runCompare();
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, () => drop.classList.add("over"));
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
}

async function runCompare() {
  const { a, b } = state.files;
  if (!a || !b) {
    $("compare-verdict").textContent = a || b ? "waiting for the other image" : "waiting for two images";
    return;
  }
  const seq = ++state.compareSeq;
  $("compare-verdict").textContent = "comparing…";
  $("compare-verdict").className = "verdict";
  showError("compare-error", "");
  try {
    const answer = await postImages("compare", { a: [a, a.name], b: [b, b.name] });
    if (seq !== state.compareSeq) return;
    $("compare-score").textContent = fmt(answer.score);
    const verdict = $("compare-verdict");
    if (answer.same === null) {
      verdict.textContent = "no threshold to decide";
    } else {
      verdict.textContent = answer.same ? "same" : "different";
      verdict.classList.add(answer.same ? "same" : "different");
    }
    const details = [`${answer.head} head`];
    if (answer.threshold !== null) details.push(`same when score ≥ ${fmt(answer.threshold)}`);
    if (answer.distance !== null && answer.distance !== undefined) {
      details.push(`distance ${fmt(answer.distance)}`);
    }
    $("compare-details").textContent = details.join(" · ");
  } catch (e) {
    if (seq !== state.compareSeq) return;
    $("compare-score").textContent = "–";
    $("compare-verdict").textContent = "no answer";
    showError("compare-error", e.message);
  }
}

// --- drawing pad and classification -------------------------------------------------------

const pad = $("pad");
const ctx = pad.getContext("2d");
let drawing = false;
let drawn = false;
let colours = { background: "#000", stroke: "#fff" };

function setUpPadColours() {
  if (state.info && state.info.invert) {
    colours = { background: "#fff", stroke: "#000" };
    pad.style.background = "#fff";
    pad.style.border = "1px solid var(--line)";
  }
  clearPad();
}

function clearPad() {
  ctx.fillStyle = colours.background;
  ctx.fillRect(0, 0, pad.width, pad.height);
  drawn = false;
  state.classifySeq++;
  $("ranking").innerHTML = "";
  $("ranking-more").textContent = "";
  $("classify-answer").textContent = "";
  showError("classify-error", "");
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

function startStroke(event) {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  const [x, y] = padPoint(event);
  ctx.strokeStyle = colours.stroke;
  ctx.fillStyle = colours.stroke;
  ctx.lineWidth = pad.width / 12;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.arc(x, y, ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  ctx.beginPath();
  ctx.moveTo(x, y);
}

function continueStroke(event) {
  if (!drawing) return;
  event.preventDefault();
  const [x, y] = padPoint(event);
  ctx.lineTo(x, y);
  ctx.stroke();
  ctx.beginPath();
  ctx.moveTo(x, y);
  drawn = true;
}

function endStroke() {
  if (!drawing) return;
  drawing = false;
  drawn = true;
  runClassify();
}

async function runClassify() {
  if (!drawn || !state.info || !state.info.support) return;
  const seq = ++state.classifySeq;
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  try {
    const answer = await postImages("classify", { image: [blob, "drawing.png"] });
    if (seq !== state.classifySeq) return;
    showError("classify-error", "");
    showRanking(answer);
  } catch (e) {
    if (seq !== state.classifySeq) return;
    showError("classify-error", e.message);
  }
}

function showRanking(answer) {
  const list = $("ranking");
  list.innerHTML = "";
  const shown = answer.ranking.slice(0, MAX_SHOWN);
  const values = shown.map((r) => r.score).filter((s) => s !== null);
  const hi = Math.max(...values);
  const lo = Math.min(...answer.ranking.map((r) => r.score).filter((s) => s !== null));
  shown.forEach((row, i) => {
    const item = document.createElement("li");
    item.dataset.class = row.name;
    if (i === 0) item.classList.add("top");
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `${i + 1}`;
    const img = document.createElement("img");
    img.src = row.image_url;
    img.alt = `a support image of ${row.name}`;
    const body = document.createElement("div");
    const line = document.createElement("div");
    line.className = "name-line";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = row.name;
    name.title = row.name;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = fmt(row.score);
    line.append(name, value);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    const share = hi > lo && row.score !== null ? (row.score - lo) / (hi - lo) : 1;
    fill.style.width = `${Math.round(8 + 92 * share)}%`;
    bar.append(fill);
    body.append(line, bar);
    item.append(rank, img, body);
    list.append(item);
  });
  const rest = answer.ranking.length - shown.length;
  $("ranking-more").textContent = rest > 0 ? `and ${rest} more classes` : "";
  const verdict = $("classify-answer");
  verdict.innerHTML = "";
  const strong = document.createElement("strong");
  strong.textContent = answer.unknown ? "unknown" : answer.label;
  const detail = document.createElement("span");
  detail.className = "detail";
  const parts = [`score ${fmt(answer.score)}`];
  if (answer.unknown) parts.push(`closest ${answer.best}`);
  if (answer.runner_up !== null) {
    parts.push(`runner-up ${answer.runner_up} (${fmt(answer.runner_up_score)})`);
  }
  detail.textContent = parts.join(" · ");
  verdict.append(strong, detail);
}

pad.addEventListener("pointerdown", startStroke);
pad.addEventListener("pointermove", continueStroke);
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", clearPad);

setUpDrop("a");
setUpDrop("b");
clearPad();
loadInfo();
