// The page: drawing (pointer events: mouse, pen, finger), live prediction, the 28x28 input,
// training in the browser. Everything numeric happens in kiln, compiled to WebAssembly
// (pkg/kiln_web.js); this file only moves pixels and draws. window.kiln is what
// scripts/web_driver.py drives in the CI test.
import init, { App, prepare } from "./pkg/kiln_web.js";

const $ = (id) => document.getElementById(id);

const HOW_TO_ENABLE =
  "Chrome or Edge 113+ have WebGPU on Windows, macOS and ChromeOS; on Linux start Chrome with " +
  "--enable-unsafe-webgpu --enable-features=Vulkan (or turn on chrome://flags/#enable-unsafe-webgpu " +
  "and #enable-vulkan). Firefox 141+ has it on Windows (elsewhere: Nightly, or about:config " +
  "dom.webgpu.enabled = true). Safari 26 has it on macOS and iOS (earlier: Develop > Feature Flags > WebGPU). " +
  "The page must be served from https:// or http://localhost.";

const state = {
  app: null,
  version: 0, // bumped by every change to the drawing
  classified: -1, // the version the bars show
  busy: false,
  last: null, // { digit: 784 bytes, probs: 10 floats } of the last classification
  waiters: [],
  lineWidth: 18,
  initialised: false,
  training: false,
  server: false, // no WebGPU here: kiln serve's /v1/classify answers instead
};

function problem(title, text, retry) {
  $("problem").hidden = false;
  $("problem-title").textContent = title;
  $("problem-text").textContent = text;
  $("retry").hidden = !retry;
  $("app").hidden = retry ? false : true;
}

function isLost(message) {
  return /lost|destroyed/i.test(message);
}

function fail(e) {
  const message = e && e.message ? e.message : String(e);
  console.error(message);
  if (isLost(message)) {
    state.app = null;
    problem("The GPU device was lost", `${message}. The driver may have reset, or the GPU was removed or reclaimed. Retry opens a new device.`, true);
  } else {
    $("train-status").textContent = message;
  }
}

async function start() {
  $("problem").hidden = true;
  $("app").hidden = false;
  if (!navigator.gpu) {
    if (await useServer()) return true;
    problem("WebGPU is not available in this browser", HOW_TO_ENABLE, false);
    return false;
  }
  try {
    if (!state.initialised) {
      await init();
      state.initialised = true;
    }
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) {
      if (await useServer()) return true;
      problem("WebGPU is on, but the browser offers no GPU adapter", `The GPU may be blocklisted or its driver too old. ${HOW_TO_ENABLE}`, true);
      return false;
    }
    const i = adapter.info || {};
    state.adapterName = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" ");
    state.app = await App.open(await shippedModel());
    $("shipped").hidden = true;
  } catch (e) {
    const message = e && e.message ? e.message : String(e);
    if (await useServer()) return true;
    problem("Could not start WebGPU", `${message}. ${HOW_TO_ENABLE}`, true);
    return false;
  }
  const a = JSON.parse(state.app.adapter());
  const name = a.name || state.adapterName || "(name not reported)";
  $("adapter").textContent = `GPU: ${name} — ${a.backend}, ${a.device_type}, ${a.driver}; storage binding ${a.max_storage_binding_mib} MiB, ${a.storage_buffers_per_stage} storage buffers per stage`;
  showModel();
  state.classified = -1;
  schedule();
  return true;
}

// Without WebGPU (no navigator.gpu, no adapter, or a failed start), the page falls back to the server it came from when that is kiln serve
// (its /healthz answers): drawings go to /v1/classify as PNGs, prepared there as predict
// prepares a file. Training and the saliency map need WebGPU and are turned off.
async function useServer() {
  try {
    const r = await fetch("healthz");
    if (!r.ok) return false;
  } catch (e) {
    return false;
  }
  state.server = true;
  $("adapter").textContent = "No WebGPU in this browser: the server answers (kiln serve, POST /v1/classify)";
  $("model").textContent = "model: the one the server serves (GET /metrics names it)";
  $("train").disabled = true;
  $("train-status").textContent = "training in the browser needs WebGPU";
  $("show-saliency").checked = false;
  $("show-saliency").disabled = true;
  state.classified = -1;
  schedule();
  return true;
}

// The server's top 3 for the drawing, as 10 probabilities (the others 0); null when the
// server finds no ink (an empty canvas).
async function classifyOnServer() {
  const png = await new Promise((r) => canvas.toBlob(r, "image/png"));
  const r = await fetch("v1/classify", { method: "POST", headers: { "content-type": "image/png" }, body: png });
  const answer = await r.json();
  if (r.status === 400 && /no ink/.test(answer.error)) return null;
  if (!r.ok) throw new Error(`the server answered ${r.status}: ${answer.error}`);
  const probs = new Array(10).fill(0);
  for (const t of answer.results[0].top3) probs[t.digit] = t.probability;
  return probs;
}

// the committed checkpoint (web/model/cnn.safetensors)
async function shippedModel() {
  const r = await fetch("model/cnn.safetensors");
  if (!r.ok) throw new Error(`model/cnn.safetensors: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

$("shipped").addEventListener("click", async () => {
  try {
    const bytes = await shippedModel();
    await swapModel(() => state.app.use_checkpoint(bytes));
    $("shipped").hidden = true;
    $("train-status").textContent = $("train-status").textContent.replace("now classifying with this model", "classifying with the shipped model again");
  } catch (e) {
    fail(e);
  }
});

function showModel() {
  const m = JSON.parse(state.app.model());
  $("model").textContent = `model: ${m.name} (${m.values.toLocaleString()} values), trained on ${m.dataset}`;
}

// ---- drawing ----
const canvas = $("draw");
const ctx = canvas.getContext("2d", { willReadFrequently: true });
let pen = null;

function point(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
}

function stroke(from, to) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = state.lineWidth;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  pen = point(e);
  stroke(pen, pen);
  changed();
});
canvas.addEventListener("pointermove", (e) => {
  if (!pen) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const c of events.length ? events : [e]) {
    const p = point(c);
    stroke(pen, p);
    pen = p;
  }
  changed();
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => {
    pen = null;
    changed();
  });
}

function clear() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  changed();
}
$("clear").addEventListener("click", clear);

// ---- live prediction: one classification at a time, always of the latest drawing ----
function changed() {
  state.version++;
  schedule();
}

function schedule() {
  if (state.busy || state.swapping || !(state.app || state.server) || state.classified === state.version) return;
  state.busy = true;
  requestAnimationFrame(classifyNow);
}

// resolves once the bars show the latest drawing
function settled() {
  return new Promise((r) => (!state.busy && (state.swapping || state.classified === state.version) ? r() : state.waiters.push(r)));
}

// Runs `swap` (which replaces the classifier's model) with no classification in flight,
// then classifies the drawing with the new model.
async function swapModel(swap) {
  state.swapping = true;
  try {
    await settled();
    await swap();
  } finally {
    state.swapping = false;
  }
  showModel();
  state.classified = -1;
  schedule();
}

// the drawing prepared and classified by kiln in WebAssembly on WebGPU
async function classifyInBrowser() {
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const digit = prepare(new Uint8Array(img.data.buffer), canvas.width, canvas.height);
  if (!digit) {
    state.last = null;
    showSeen(null);
    showBars(null);
    showSaliency(null);
  } else {
    showSeen(digit);
    const probs = await state.app.classify(digit);
    state.last = { digit: Array.from(digit), probs: Array.from(probs), answeredBy: "webgpu" };
    showBars(probs);
    $("answered-by").textContent = "answered by WebGPU in this browser";
    if ($("show-saliency").checked) {
      const saliency = await state.app.saliency(digit);
      state.last.saliency = Array.from(saliency);
      showSaliency(saliency);
    }
  }
}

async function classifyNow() {
  const version = state.version;
  try {
    if (state.server) {
      const probs = await classifyOnServer();
      state.last = probs && { probs, answeredBy: "server" };
      showBars(probs);
      $("answered-by").textContent = probs ? "answered by the server (/v1/classify)" : "";
    } else {
      await classifyInBrowser();
    }
    state.classified = version;
  } catch (e) {
    fail(e);
  } finally {
    state.busy = false;
  }
  if ((state.app || state.server) && !state.swapping && state.classified !== state.version) {
    schedule();
  } else {
    for (const w of state.waiters.splice(0)) w();
  }
}

function showSeen(digit) {
  const seen = $("seen").getContext("2d");
  const img = seen.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = digit ? digit[i] : 0;
    img.data.set([v, v, v, 255], 4 * i);
  }
  seen.putImageData(img, 0, 0);
}

// kiln::explain's saliency over the 28x28 input: red, opaque where the gradient is largest
function showSaliency(saliency) {
  const g = $("saliency").getContext("2d");
  const img = g.createImageData(28, 28);
  if (saliency && $("show-saliency").checked) {
    for (let i = 0; i < 784; i++) img.data.set([255, 40, 40, Math.round(255 * Math.sqrt(saliency[i]))], 4 * i);
  }
  g.putImageData(img, 0, 0);
}

$("show-saliency").addEventListener("change", () => {
  showSaliency(null);
  state.classified = -1;
  schedule();
});

function showBars(probs) {
  const bars = $("bars");
  bars.replaceChildren();
  if (!probs) {
    bars.textContent = "(draw a digit)";
    return;
  }
  const top = Array.from(probs, (p, d) => [p, d]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  for (const [p, d] of top) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.digit = d;
    const label = document.createElement("b");
    label.textContent = d;
    const fill = document.createElement("div");
    fill.style.width = `${Math.max(1, Math.round(200 * p))}px`;
    const text = document.createElement("span");
    text.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(label, fill, text);
    bars.append(row);
  }
}

// ---- training in the browser ----
async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} (scripts/build-web.sh copies MNIST's test set into dist/data/)`);
  return new Uint8Array(await r.arrayBuffer());
}

function drawCurve(points, stepsPerEpoch, epochs) {
  const c = $("curve");
  const g = c.getContext("2d");
  const [w, h, pad] = [c.width, c.height, 30];
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#999";
  g.strokeRect(pad, 10, w - pad - 10, h - 10 - pad);
  g.fillStyle = "#555";
  g.font = "11px system-ui";
  g.fillText("loss", 2, 20);
  g.fillText("epochs", w - 50, h - 4);
  if (!points.length) return;
  const maxLoss = Math.max(...points.map((p) => p.loss), 0.1);
  const x = (s) => pad + ((w - pad - 10) * s) / (stepsPerEpoch * epochs);
  const y = (v) => 10 + (h - 10 - pad) * (1 - v);
  g.fillText(maxLoss.toFixed(2), 2, 34);
  for (const [key, colour, scale] of [["loss", "#3a7bd5", 1 / maxLoss], ["acc", "#e08020", 1]]) {
    g.strokeStyle = colour;
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo : g.moveTo).call(g, x(p.step), y(p[key] * scale)));
    g.stroke();
  }
  g.fillStyle = "#e08020";
  g.fillText("accuracy (0–100%)", w - 150, 24);
}

// Trains from scratch; resolves to the curve and the speed. images/s counts the training
// steps only, from the second call on (the first compiles the kernels), readbacks included.
async function train({ count = 8000, heldOut = 2000, epochs = 1, batch = 64, seed = 1, stepsPerCall = 4 } = {}) {
  if (state.training) throw new Error("already training");
  state.training = true;
  $("train").disabled = true;
  const status = $("train-status");
  try {
    status.textContent = "fetching MNIST's test set…";
    const [images, labels] = await Promise.all([
      fetchBytes("data/t10k-images-idx3-ubyte.gz"),
      fetchBytes("data/t10k-labels-idx1-ubyte.gz"),
    ]);
    status.textContent = "compiling the kernels…";
    const trainer = state.app.trainer(images, labels, count, heldOut, epochs, batch, seed);
    const points = [];
    const evals = [];
    let [seen, seconds, last, held] = [0, 0, null, ""];
    const started = performance.now();
    for (let call = 0; ; call++) {
      const t0 = performance.now();
      last = JSON.parse(await trainer.step(stepsPerCall));
      if (call > 0 || last.done) {
        seen += last.images;
        seconds += (performance.now() - t0) / 1000;
      }
      points.push({ step: last.step, loss: last.loss, acc: last.epoch_accuracy });
      drawCurve(points, last.steps / epochs, epochs);
      if (last.epoch_end && heldOut > 0) {
        status.textContent = `epoch ${last.epoch}: evaluating ${heldOut} held-out images…`;
        const e = JSON.parse(await trainer.evaluate());
        evals.push({ epoch: last.epoch, ...e });
        held = `, held-out accuracy ${(100 * e.accuracy).toFixed(2)}% (${e.images} images)`;
      }
      const speed = seconds > 0 ? ` — ${(seen / seconds).toFixed(0)} images/s` : "";
      status.textContent =
        `epoch ${last.epoch}/${epochs}, step ${last.step}/${last.steps}: loss ${last.loss.toFixed(3)}, ` +
        `accuracy ${(100 * last.epoch_accuracy).toFixed(1)}%${held}${speed}`;
      if (last.done) break;
      await new Promise((r) => setTimeout(r, 0)); // let the page draw and take input
    }
    const total = (performance.now() - started) / 1000;
    await swapModel(() => state.app.use_trained(trainer));
    trainer.free();
    $("shipped").hidden = false;
    status.textContent += " — now classifying with this model";
    return { points, evals, images_per_sec: seen / seconds, images: seen, seconds, total_seconds: total, epoch_accuracy: last.epoch_accuracy };
  } catch (e) {
    fail(e);
    throw e;
  } finally {
    state.training = false;
    $("train").disabled = false;
  }
}
$("train").addEventListener("click", () => train().catch(() => {}));

$("retry").addEventListener("click", () => start());

// a device lost while idle shows up here
setInterval(() => {
  if (!state.app) return;
  const fault = state.app.fault();
  if (fault) fail(new Error(fault));
}, 1000);

window.kiln = {
  ready: start(),
  // resolves once the bars show the latest drawing
  settled,
  last: () => state.last,
  // "webgpu", or "server" when the page fell back to kiln serve
  answeredBy: () => (state.server ? "server" : state.app ? "webgpu" : null),
  clear,
  setLineWidth: (w) => (state.lineWidth = w),
  train,
  useShipped: () => $("shipped").click(),
  adapter: () => (state.app ? { ...JSON.parse(state.app.adapter()), browser_name: state.adapterName } : null),
  // every kiln shader through the browser's WGSL compiler: {checked, skipped, errors}
  checkShaders: () => state.app.check_shaders().then(JSON.parse),
  // one CNN training step's loss with a kernel variant ("default", "tiled32x64", ...)
  firstStepLoss: (kernel) => state.app.first_step_loss(kernel).then(JSON.parse),
};
