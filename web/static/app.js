// The page: drawing (pointer events: mouse, pen, finger), live prediction, the 28x28 input,
// writing a number read by kiln::read, training in the browser. Everything numeric happens
// in kiln, compiled to WebAssembly (pkg/kiln_web.js); this file only moves pixels and draws.
// window.kiln is what scripts/web_driver.py drives in the CI test.
import init, { App, prepare } from "./pkg/kiln_web.js";

const $ = (id) => document.getElementById(id);

const HOW_TO_ENABLE =
  "Chrome or Edge 113+ have WebGPU on Windows, macOS and ChromeOS; on Linux start Chrome with " +
  "--enable-unsafe-webgpu --enable-features=Vulkan (or turn on chrome://flags/#enable-unsafe-webgpu " +
  "and #enable-vulkan). Firefox 141+ has it on Windows (elsewhere: Nightly, or about:config " +
  "dom.webgpu.enabled = true). Safari 26 has it on macOS and iOS (earlier: Develop > Feature Flags > WebGPU). " +
  "The page must be served from https:// or http://localhost.";

// A digit of a written number whose top probability is below this is marked unsure, and so
// is a reading whose confidence (the product of its digits') is: kiln::read's `reject`, the
// read example's --reject 0.9. The shipped CNN is about calibrated (ECE 0.97% on MNIST's test
// set): its digits under 0.87 are wrong one time in five (22%), those over 0.93 one in a
// thousand, and 0.9 leaves between 5 and 10% of MNIST's test digits unsure (measured
// 2026-12-07 with evaluate --json: README, "In the browser").
const READ_REJECT = 0.9;

const state = {
  app: null,
  last: null, // { digit: 784 bytes, probs: 10 floats } of the last classification
  reading: null, // the last reading of the written number (kiln::read's Reading, as JSON)
  reads: 0, // readings made of the written number
  readMs: [], // how long each reading of ink took, milliseconds
  lineWidth: 18,
  numberLineWidth: 12,
  initialised: false,
  training: false,
  server: false, // no WebGPU here: kiln serve's /v1/classify and /v1/read answer instead
  deskew: false, // the model was trained on deskewed digits (its checkpoint says so): the drawing is deskewed too
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
  digitLoop.redo();
  numberLoop.redo();
  return true;
}

// Without WebGPU (no navigator.gpu, no adapter, or a failed start), the page falls back to the server it came from when that is kiln serve
// (its /healthz answers): drawings go to /v1/classify as PNGs, prepared there as predict
// prepares a file, and written numbers to /v1/read. Training and the saliency map need WebGPU
// and are turned off.
async function useServer() {
  try {
    const r = await fetch("healthz");
    if (!r.ok) return false;
  } catch (e) {
    return false;
  }
  state.server = true;
  $("adapter").textContent = "No WebGPU in this browser: the server answers (kiln serve, POST /v1/classify and /v1/read)";
  $("model").textContent = "model: the one the server serves (GET /metrics names it)";
  $("train").disabled = true;
  $("train-status").textContent = "training in the browser needs WebGPU";
  $("show-saliency").checked = false;
  $("show-saliency").disabled = true;
  digitLoop.redo();
  numberLoop.redo();
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
  // a model trained on deskewed digits reads the drawing deskewed too
  state.deskew = m.deskew;
  $("model").textContent = `model: ${m.name} (${m.values.toLocaleString()} values), trained on ${m.dataset}${m.deskew ? ", deskewed" : ""}`;
}

// ---- drawing ----
// Pointer input on `canvas` (mouse, pen, finger) drawn in black with `lineWidth()`: `moved`
// runs after each piece of a stroke, `lifted` after each stroke.
function pad(canvas, lineWidth, moved, lifted) {
  const g = canvas.getContext("2d", { willReadFrequently: true });
  let pen = null;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
  };
  const stroke = (from, to) => {
    g.strokeStyle = "#000";
    g.lineWidth = lineWidth();
    g.lineCap = "round";
    g.lineJoin = "round";
    g.beginPath();
    g.moveTo(from[0], from[1]);
    g.lineTo(to[0], to[1]);
    g.stroke();
  };
  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    pen = point(e);
    stroke(pen, pen);
    moved();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!pen) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const c of events.length ? events : [e]) {
      const p = point(c);
      stroke(pen, p);
      pen = p;
    }
    moved();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => {
      if (!pen) return;
      pen = null;
      lifted();
    });
  }
  return g;
}

// One job per canvas, always of its latest drawing: `run` (the classification, the reading)
// runs again when the drawing changed while it ran; settled() resolves once the page shows
// the answer to the latest drawing.
function live(run) {
  const s = { version: 0, done: -1, busy: false, waiters: [] };
  const ready = () => (state.app || state.server) && !state.swapping;
  s.changed = () => {
    s.version++;
    s.schedule();
  };
  s.redo = () => {
    s.done = -1;
    s.schedule();
  };
  s.schedule = () => {
    if (s.busy || !ready() || s.done === s.version) return;
    s.busy = true;
    requestAnimationFrame(async () => {
      const version = s.version;
      try {
        await run();
        s.done = version;
      } catch (e) {
        fail(e);
      } finally {
        s.busy = false;
      }
      if (ready() && s.done !== s.version) s.schedule();
      else for (const w of s.waiters.splice(0)) w();
    });
  };
  s.settled = () => new Promise((r) => (!s.busy && (state.swapping || s.done === s.version) ? r() : s.waiters.push(r)));
  return s;
}

// The App's GPU calls, one at a time across the page's canvases (each borrows the classifier
// while it runs).
let gpuQueue = Promise.resolve();
function exclusive(call) {
  const result = gpuQueue.then(call);
  gpuQueue = result.catch(() => {});
  return result;
}

const canvas = $("draw");
const digitLoop = live(classifyNow);
const changed = () => digitLoop.changed();
const ctx = pad(canvas, () => state.lineWidth, changed, changed);

function clear() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  changed();
}
$("clear").addEventListener("click", clear);

// Runs `swap` (which replaces the classifier's model) with no classification or reading in
// flight, then answers both drawings with the new model.
async function swapModel(swap) {
  state.swapping = true;
  try {
    await Promise.all([digitLoop.settled(), numberLoop.settled()]);
    await exclusive(swap);
  } finally {
    state.swapping = false;
  }
  showModel();
  digitLoop.redo();
  numberLoop.redo();
}

// the drawing prepared and classified by kiln in WebAssembly on WebGPU
async function classifyInBrowser() {
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const digit = prepare(new Uint8Array(img.data.buffer), canvas.width, canvas.height, state.deskew);
  if (!digit) {
    state.last = null;
    showSeen(null);
    showBars(null);
    showSaliency(null);
  } else {
    showSeen(digit);
    const probs = await exclusive(() => state.app.classify(digit));
    state.last = { digit: Array.from(digit), probs: Array.from(probs), answeredBy: "webgpu" };
    showBars(probs);
    $("answered-by").textContent = "answered by WebGPU in this browser";
    if ($("show-saliency").checked) {
      const saliency = await exclusive(() => state.app.saliency(digit));
      state.last.saliency = Array.from(saliency);
      showSaliency(saliency);
    }
  }
}

async function classifyNow() {
  if (state.server) {
    const probs = await classifyOnServer();
    state.last = probs && { probs, answeredBy: "server" };
    showBars(probs);
    $("answered-by").textContent = probs ? "answered by the server (/v1/classify)" : "";
  } else {
    await classifyInBrowser();
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
  digitLoop.redo();
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

// ---- writing a number: read by kiln::read after each stroke ----
const numberCanvas = $("number");
const numberLoop = live(readNow);
let numberInk = false; // a stroke since the last clear
const numberCtx = pad(numberCanvas, () => state.numberLineWidth, () => (numberInk = true), () => numberLoop.changed());

function clearNumber() {
  numberCtx.clearRect(0, 0, numberCanvas.width, numberCanvas.height);
  numberInk = false;
  numberLoop.changed();
}
$("clear-number").addEventListener("click", clearNumber);

// The written number read by kiln::read::Reader in WebAssembly on WebGPU, or by the server's
// POST /v1/read in the fallback; null for a clear canvas.
async function readNow() {
  const t0 = performance.now();
  let reading = null;
  if (!numberInk) {
    // a clear canvas: nothing to read
  } else if (state.server) {
    reading = await readOnServer();
  } else {
    const img = numberCtx.getImageData(0, 0, numberCanvas.width, numberCanvas.height);
    const rgba = new Uint8Array(img.data.buffer);
    reading = { ...JSON.parse(await exclusive(() => state.app.read(rgba, numberCanvas.width, numberCanvas.height, READ_REJECT))), answeredBy: "webgpu" };
  }
  state.reading = reading;
  state.reads++;
  if (reading) state.readMs.push(performance.now() - t0);
  showReading(reading);
}

// The server reads with its own threshold (kiln serve's reader accepts everything): the
// page applies READ_REJECT to its probabilities by the reader's rule (kiln::read::Options).
async function readOnServer() {
  const png = await new Promise((r) => numberCanvas.toBlob(r, "image/png"));
  const r = await fetch("v1/read", { method: "POST", headers: { "content-type": "image/png" }, body: png });
  const answer = await r.json();
  if (!r.ok) throw new Error(`the server answered ${r.status}: ${answer.error}`);
  const { text, confidence, digits } = answer.results[0];
  const judged = digits.map((d) => ({ ...d, unsure: d.top3[0][1] < READ_REJECT }));
  return { text, confidence, digits: judged, accepted: judged.length > 0 && confidence >= READ_REJECT, answeredBy: "server" };
}

// Each digit's box (green; red and dashed when unsure) with its label and probability, and
// the whole string with its confidence.
function showReading(reading) {
  const g = $("number-boxes").getContext("2d");
  g.clearRect(0, 0, g.canvas.width, g.canvas.height);
  const line = $("reading");
  line.replaceChildren();
  if (!reading || !reading.digits.length) {
    line.textContent = numberInk ? "(no digit found)" : "(write a number: it is read after each stroke)";
    $("read-by").textContent = "";
    return;
  }
  g.font = "bold 14px system-ui";
  g.lineWidth = 2;
  for (const d of reading.digits) {
    const { x0, y0, x1, y1 } = d.bbox;
    const colour = d.unsure ? "#c0392b" : "#2a9d4a";
    g.strokeStyle = g.fillStyle = colour;
    g.setLineDash(d.unsure ? [5, 4] : []);
    g.strokeRect(x0 - 2, y0 - 2, x1 - x0 + 5, y1 - y0 + 5);
    const label = `${d.label}${d.unsure ? "?" : ""} ${(100 * d.top3[0][1]).toFixed(0)}%`;
    g.fillText(label, x0, y0 > 20 ? y0 - 6 : y1 + 18);
  }
  const text = document.createElement("b");
  for (const d of reading.digits) {
    const c = document.createElement("span");
    c.textContent = d.unsure ? "?" : d.label;
    if (d.unsure) {
      c.className = "unsure";
      c.title = `unsure: ${d.top3.map(([l, p]) => `${l} ${(100 * p).toFixed(1)}%`).join(", ")}`;
    }
    text.append(c);
  }
  const verdict = reading.accepted ? "" : ` — unsure (under ${100 * READ_REJECT}%), best guess ${reading.text}`;
  line.append("Read: ", text, ` confidence ${(100 * reading.confidence).toFixed(1)}%${verdict}`);
  $("read-by").textContent =
    reading.answeredBy === "server" ? "read by the server (POST /v1/read)" : "read by kiln::read in this browser (WebGPU)";
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
  settled: () => digitLoop.settled(),
  last: () => state.last,
  // "webgpu", or "server" when the page fell back to kiln serve
  answeredBy: () => (state.server ? "server" : state.app ? "webgpu" : null),
  clear,
  setLineWidth: (w) => (state.lineWidth = w),
  // the "write a number" canvas: its reading once it shows the latest writing, the number of
  // readings made so far, the threshold its digits are marked unsure under
  number: {
    settled: () => numberLoop.settled().then(() => state.reading),
    reads: () => state.reads,
    readMs: () => state.readMs,
    reject: READ_REJECT,
    clear: clearNumber,
    setLineWidth: (w) => (state.numberLineWidth = w),
  },
  train,
  useShipped: () => $("shipped").click(),
  adapter: () => (state.app ? { ...JSON.parse(state.app.adapter()), browser_name: state.adapterName } : null),
  // every kiln shader through the browser's WGSL compiler: {checked, skipped, errors}
  checkShaders: () => state.app.check_shaders().then(JSON.parse),
  // one CNN training step's loss with a kernel variant ("default", "tiled32x64", ...)
  firstStepLoss: (kernel) => state.app.first_step_loss(kernel).then(JSON.parse),
};
