// vit-digits page: draw or upload a digit, see the prediction and where the model looked.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad"), ctx = pad.getContext("2d");
const heat = $("heat"), hctx = heat.getContext("2d");
const state = { strokes: [], current: null, last: null, timer: null, seq: 0, key: sessionStorage.getItem("vitDigitsKey") || "" };
const INK = 20; // stroke width on the 280 px pad: about MNIST's stroke once fitted into 20x20

// ---- drawing -------------------------------------------------------------------------------
function resetPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function redraw() {
  resetPad();
  ctx.strokeStyle = "#000";
  ctx.lineWidth = INK;
  ctx.lineCap = ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    ctx.beginPath();
    stroke.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return [((event.clientX - r.left) * pad.width) / r.width, ((event.clientY - r.top) * pad.height) / r.height];
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  state.current = [point(e)];
  state.strokes.push(state.current);
  redraw();
});
pad.addEventListener("pointermove", (e) => {
  if (!state.current) return;
  state.current.push(point(e));
  redraw();
  if ($("live").checked) schedule();
});
const endStroke = () => {
  if (!state.current) return;
  state.current = null;
  if ($("live").checked) schedule(0);
};
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("keydown", (e) => {
  if (e.key === "Enter") predictDrawing();
  if (e.key === "Backspace" || (e.key === "z" && (e.ctrlKey || e.metaKey))) { e.preventDefault(); undo(); }
  if (e.key === "Escape") clearAll();
});

function undo() {
  state.strokes.pop();
  redraw();
  state.strokes.length ? schedule(0) : clearResult("Draw a digit to start.");
}

function clearAll() {
  state.strokes = [];
  redraw();
  clearResult("Draw a digit to start.");
}

function schedule(delay = 250) {
  clearTimeout(state.timer);
  state.timer = setTimeout(predictDrawing, delay); // debounced while drawing
}

function predictDrawing() {
  if (!state.strokes.length) return setStatus("Draw a digit first.", true);
  pad.toBlob((blob) => send(blob, "your drawing"), "image/png");
}

// ---- files, drag and drop, camera -------------------------------------------------------------
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) sendFile(file);
  e.target.value = "";
});
const panel = pad.closest(".panel");
panel.addEventListener("dragover", (e) => { e.preventDefault(); panel.classList.add("dragging"); });
panel.addEventListener("dragleave", () => panel.classList.remove("dragging"));
panel.addEventListener("drop", (e) => {
  e.preventDefault();
  panel.classList.remove("dragging");
  const file = e.dataTransfer.files[0];
  if (file) sendFile(file);
});

function sendFile(file) {
  if (!file.type.startsWith("image/")) return setStatus(`${file.name} is not an image.`, true);
  state.strokes = [];
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => { // show the picture on the pad, letterboxed
    resetPad();
    const s = Math.min(pad.width / img.width, pad.height / img.height);
    ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
    URL.revokeObjectURL(url);
  };
  img.src = url;
  send(file, file.name);
}

// ---- talking to the API --------------------------------------------------------------------
async function send(blob, what) {
  const seq = ++state.seq; // answers to older requests are dropped
  setStatus(`Reading ${what}…`);
  let response;
  try {
    const headers = { "Content-Type": blob.type || "image/png" };
    if (state.key) headers["X-API-Key"] = state.key;
    response = await fetch("/v1/attention?layers=all", { method: "POST", body: blob, headers });
  } catch (err) {
    return seq === state.seq && setStatus("Cannot reach the server. Is it running?", true);
  }
  if (seq !== state.seq) return;
  if (response.status === 401) {
    if (await askKey()) return send(blob, what);
    return setStatus("This server needs an API key.", true);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) return setStatus(describeError(response.status, body), true);
  state.last = body;
  showResult(body);
  setStatus(`Read ${what}${body.inverted ? " (dark ink on light paper, inverted)" : ""}.`);
}

function describeError(status, body) {
  const msg = body && body.error ? body.error.message : `HTTP ${status}`;
  if (status === 503) return `The server is not ready yet (${msg}). Try again in a moment.`;
  if (status === 413) return `That image is too large: ${msg}.`;
  if (status === 422 && body && body.error && body.error.code === "no_digit") return "No digit found: draw darker or bigger.";
  if (status >= 400 && status < 500) return `Image rejected: ${msg}.`;
  return `Server error: ${msg}.`;
}

function askKey() {
  const dialog = $("key-dialog");
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok" && $("key").value;
      if (ok) { state.key = $("key").value; sessionStorage.setItem("vitDigitsKey", state.key); }
      resolve(Boolean(ok));
    }, { once: true });
    dialog.showModal();
  });
}

// ---- showing the answer --------------------------------------------------------------------
function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function clearResult(text) {
  state.last = null;
  state.seq++;
  $("digit").textContent = "–";
  $("digit").classList.remove("not-digit");
  $("confidence").textContent = "";
  renderBars(new Array(10).fill(0), -1);
  hctx.clearRect(0, 0, heat.width, heat.height);
  setStatus(text);
}

function renderBars(probs, top) {
  const list = $("bars");
  if (!list.children.length) {
    for (let d = 0; d < 10; d++) {
      const li = document.createElement("li");
      li.innerHTML = `<span>${d}</span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
      list.appendChild(li);
    }
  }
  probs.forEach((p, d) => {
    const li = list.children[d];
    li.classList.toggle("top", d === top);
    li.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    li.querySelector(".pct").textContent = `${(p * 100).toFixed(1)}%`;
    li.setAttribute("aria-label", `${d}: ${(p * 100).toFixed(1)} percent`);
  });
}

function showResult(body) {
  // is_digit false: the picture does not look like a digit, so the digit is not worth showing
  $("digit").textContent = body.is_digit ? body.label : "not a digit";
  $("digit").classList.toggle("not-digit", !body.is_digit);
  $("confidence").textContent = body.is_digit
    ? `${(body.confidence * 100).toFixed(1)}% sure`
    : `(closest digit: ${body.label}, digit score ${body.digit_score.toFixed(2)})`;
  renderBars(body.probabilities, body.digit);
  const layers = body.layers || [];
  fillSelect($("layer"), layers.length);
  fillSelect($("head"), layers.length ? layers[0].heads.length : 0);
  drawHeat();
}

function fillSelect(select, n) {
  if (select.options.length === n) return;
  select.innerHTML = "";
  for (let i = 0; i < n; i++) select.add(new Option(String(i + 1), String(i)));
  select.value = String(Math.max(n - 1, 0));
}

function currentMap(body) {
  const which = document.querySelector("input[name=map]:checked").value;
  $("head-pick").hidden = which !== "head";
  if (which === "rollout") return body.rollout;
  if (which === "cls") return body.cls_attention;
  return body.layers[Number($("layer").value)].heads[Number($("head").value)];
}

// "inferno"-like ramp, the same stops as the server's PNG heatmaps
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function ramp(v) {
  const pos = Math.min(Math.max(v, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(pos), STOPS.length - 2), f = pos - i;
  return STOPS[i].map((c, k) => Math.round(c * (1 - f) + STOPS[i + 1][k] * f));
}

function drawHeat() {
  const body = state.last;
  if (!body) return;
  const digit = document.createElement("canvas"); // the 28x28 input the model saw
  digit.width = digit.height = body.input.length;
  const dctx = digit.getContext("2d"), img = dctx.createImageData(digit.width, digit.height);
  body.input.flat().forEach((v, i) => { img.data.set([v * 255, v * 255, v * 255, 255], i * 4); });
  dctx.putImageData(img, 0, 0);
  hctx.imageSmoothingEnabled = false;
  hctx.drawImage(digit, 0, 0, heat.width, heat.height);
  if (!$("overlay").checked) return;
  const map = currentMap(body), g = map.length, max = Math.max(...map.flat()) || 1;
  const cells = document.createElement("canvas");
  cells.width = cells.height = g;
  const cctx = cells.getContext("2d"), cimg = cctx.createImageData(g, g);
  map.flat().forEach((v, i) => { cimg.data.set([...ramp(v / max), 255], i * 4); });
  cctx.putImageData(cimg, 0, 0);
  hctx.globalAlpha = 0.55;
  hctx.imageSmoothingEnabled = true;
  hctx.drawImage(cells, 0, 0, heat.width, heat.height);
  hctx.globalAlpha = 1;
  heat.dataset.rendered = "true";
}

document.querySelectorAll("input[name=map]").forEach((r) => r.addEventListener("change", drawHeat));
["layer", "head", "overlay"].forEach((id) => $(id).addEventListener("change", drawHeat));
$("predict").addEventListener("click", predictDrawing);
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
resetPad();
renderBars(new Array(10).fill(0), -1);
