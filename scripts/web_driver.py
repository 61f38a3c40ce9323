#!/usr/bin/env python3
"""Drives the web page in headless Chromium over the DevTools protocol on a pipe (fds 3/4),
with no dependencies: what scripts/test-web.sh runs.

It draws real MNIST test digits on the page's canvas stroke by stroke, through synthetic
mouse and touch input (the page sees pointer events, as from a hand), and checks the page's
prediction and saliency map; records the canvas pixels, the 28x28 digit and the
probabilities for the native comparison (web_reference); writes numbers made of MNIST test
digits on the "write a number" canvas and checks the page's readings (and records them for
web_reference); trains the CNN in the page on a
small subset and checks that the loss fell; saves a screenshot; then loses the GPU device
(as a driver reset does) and checks the message and the retry, and hides WebGPU and checks
the page says how to enable it.

  web_driver.py --chromium /usr/lib/chromium/chromium --url http://127.0.0.1:8000/ \
      --data-dir ../shared/data/mnist --cases target/web-cases.json --screenshot target/web.png
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_idx import find_file, read_idx_bytes  # noqa: E402  (the scripts' one IDX reader)


def find(directory, name):
    path = find_file(directory, name + ".gz")
    if path is None:
        sys.exit(f"web_driver: no {name}(.gz) in {directory}")
    return path


class Chrome:
    """One headless Chromium and one page session, spoken to over --remote-debugging-pipe:
    JSON messages separated by NUL bytes, commands on fd 3, replies and events on fd 4."""

    def __init__(self, binary, log, webgpu=True):
        self.log = log
        self.profile = tempfile.mkdtemp(prefix="kiln-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        ours = (self.to_chrome, self.from_chrome)

        def fds():
            # in the child: its ends of the pipes on fds 3 and 4, ours closed. (close_fds
            # would run after this and close 3 and 4 again, hence close_fds=False.)
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            for fd in (a, b, to_chrome_r, from_chrome_w) + ours:
                if fd not in (3, 4):
                    os.close(fd)

        # webgpu=False: a browser with WebGPU turned off (scripts/web_fallback.py)
        gpu = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--enable-features=Vulkan"] if webgpu else ["--disable-features=WebGPU"]
        flags = gpu + [
            "--headless=new", "--no-sandbox", "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}", "--use-angle=swiftshader", "--no-first-run",
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
            "--window-size=1000,900", "about:blank",
        ]
        self.proc = subprocess.Popen([binary] + flags, close_fds=False, preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        self.console = []
        # raise on the first WebGPU validation error (off for the lost-device check)
        self.fail_fast = True

    def _read_message(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                sys.exit(f"web_driver: Chromium closed the pipe (see {self.log})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read_message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._event(m)

    def _event(self, m):
        method = m.get("method", "")
        p = m.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append(f"console.{p.get('type')}: {text}")
            print(f"  page console.{p.get('type')}: {text}", file=sys.stderr)
            # a kernel the browser refuses leaves the page waiting for results that never come:
            # stop at the first one instead of at the time limit
            if self.fail_fast and p.get("type") == "error" and "GPU validation error" in text:
                raise RuntimeError(f"the page hit a WebGPU validation error: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text")
            self.console.append(f"exception: {text}")
            print(f"  page exception: {text}", file=sys.stderr)

    def attach(self):
        pages = [t for t in self.send("Target.getTargets", session=False)["targetInfos"] if t["type"] == "page"]
        target = pages[0]["targetId"] if pages else self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1000, "height": 900, "deviceScaleFactor": 1, "mobile": False})

    def eval(self, expression, timeout_ms=600_000):
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout_ms})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(f"{expression[:60]}...: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def strokes(pixels, scale, threshold=100):
    """A 28x28 digit as horizontal strokes: each run of ink in a row, left to right, in
    canvas pixels (the centre of each cell)."""
    out = []
    for y in range(28):
        x = 0
        while x < 28:
            if pixels[28 * y + x] > threshold:
                x0 = x
                while x < 28 and pixels[28 * y + x] > threshold:
                    x += 1
                out.append(((x0 + 0.5) * scale, (y + 0.5) * scale, (x - 0.5) * scale))
            x += 1
    return out


def draw(chrome, rect, pixels, touch):
    """Draws the digit on the 280x280 canvas: see draw_strokes."""
    lines = [[(x0 + i * 6.0, y) for i in range(int((x1 - x0) / 6.0) + 1)] + [(x1, y)] for (x0, y, x1) in strokes(pixels, 10.0)]
    draw_strokes(chrome, rect, 280, 280, lines, touch)


def snake(runs, spacing):
    """Horizontal runs (x0, y, x1, as `strokes` gives them, rows `spacing` apart) joined into
    strokes as a hand fills a shape: a run that overlaps a stroke's last run in the row above
    continues that stroke, in the other direction; the pen is lifted only where none does."""
    done, open_ = [], []  # open_: (stroke points, last run) of strokes that may continue
    for y in sorted({r[1] for r in runs}):
        row = [r for r in runs if r[1] == y]
        still = []
        for (x0, _, x1) in row:
            k = next((k for k, (_, (a, ya, b)) in enumerate(open_) if y - ya < 1.5 * spacing and a <= x1 and x0 <= b), None)
            if k is None:
                still.append(([(x0, y), (x1, y)], (x0, y, x1)))
                continue
            points, _ = open_.pop(k)
            rightwards = points[-1][0] <= points[-2][0]  # the last run went left: this one goes right
            points += [(x0, y), (x1, y)] if rightwards else [(x1, y), (x0, y)]
            still.append((points, (x0, y, x1)))
        done += [p for p, _ in open_]
        open_ = still
    return done + [p for p, _ in open_]


def draw_strokes(chrome, rect, width, height, lines, touch):
    """Draws strokes (each a list of points in the pixels of a width x height canvas shown at
    `rect`) with synthetic input: a press at the first point, a move to each next one, a
    release. Mouse events or touch events (the page sees pointer events either way)."""
    sx, sy = rect["width"] / width, rect["height"] / height
    at = lambda x, y: (rect["left"] + x * sx, rect["top"] + y * sy)
    for line in lines:
        points = [at(x, y) for (x, y) in line]
        if touch:
            tp = lambda p: {"touchPoints": [{"x": p[0], "y": p[1], "id": 1}]}
            chrome.send("Input.dispatchTouchEvent", {"type": "touchStart", **tp(points[0])})
            for p in points[1:]:
                chrome.send("Input.dispatchTouchEvent", {"type": "touchMove", **tp(p)})
            chrome.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:
            base = {"button": "left", "clickCount": 1}
            chrome.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": points[0][0], "y": points[0][1], "buttons": 0})
            chrome.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": points[0][0], "y": points[0][1], "buttons": 1, **base})
            for p in points[1:]:
                chrome.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": p[0], "y": p[1], "buttons": 1, "button": "left"})
            chrome.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": points[-1][0], "y": points[-1][1], "buttons": 0, **base})


# keeps the devices the page opens and gives each a way to be lost as a driver reset loses
# it: its `lost` promise resolves with reason "unknown" (destroy() alone says "destroyed",
# which kiln, like any program dropping its device, does not treat as a fault)
HOOK_DEVICES = """(() => {
  const request = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const device = await request.apply(this, args);
    let lose;
    const lost = new Promise((resolve) => (lose = resolve));
    device.lost.then(lose);
    Object.defineProperty(device, "lost", { value: lost });
    device.loseForTest = (message) => { lose({ reason: "unknown", message }); device.destroy(); };
    (window.__kilnDevices = window.__kilnDevices || []).push(device);
    return device;
  };
})();"""


def load(chrome, url):
    """Navigates and waits for the page's start-up (which may end in a message)."""
    chrome.send("Page.navigate", {"url": url})
    time.sleep(0.5)
    for _ in range(300):
        if chrome.eval("typeof window.kiln === 'object' && document.readyState === 'complete'"):
            break
        time.sleep(0.1)
    return chrome.eval("window.kiln.ready")


def wait_for(chrome, expression, seconds=60):
    """Polls `expression` until it is truthy (or the time is up); returns its last value."""
    value = None
    for _ in range(int(seconds * 10)):
        value = chrome.eval(expression)
        if value:
            break
        time.sleep(0.1)
    return value


def inner_rect(chrome, element):
    """The drawing surface of a canvas with a 1 CSS pixel border, in page pixels."""
    r = chrome.eval(f"JSON.parse(JSON.stringify(document.getElementById('{element}').getBoundingClientRect()))")
    return {"left": r["left"] + 1, "top": r["top"] + 1, "width": r["width"] - 2, "height": r["height"] - 2}


# The "write a number" canvas, and how the test writes on it: MNIST digits at 6 canvas pixels
# per MNIST pixel (168 px tall), each NUMBER_GAP pixels right of the previous one's ink, the
# rows of ink joined into strokes (`snake`: each synthetic event is a round trip to the
# renderer, a few milliseconds).
NUMBER_CANVAS = (880, 200)
NUMBER_SCALE = 6.0
NUMBER_GAP = 24.0
NUMBER_TOP = 16.0


def write_number(chrome, rect, digits, touch=False, on_digit=None):
    """Writes a number on the "write a number" canvas, stroke by stroke (each digit's ink rows
    as strokes, as `draw` draws a digit), each digit after the previous one's ink: `digits` are
    28x28 MNIST images. Calls on_digit(k, (left, right)) after digit k with its ink's columns
    in canvas pixels; returns those spans."""
    spans, x = [], 12.0
    for k, pixels in enumerate(digits):
        lines = strokes(pixels, NUMBER_SCALE)
        left = min(l[0] for l in lines)
        lines = [(x + x0 - left, NUMBER_TOP + y, x + x1 - left) for (x0, y, x1) in lines]
        right = max(l[2] for l in lines)
        draw_strokes(chrome, rect, *NUMBER_CANVAS, snake(lines, NUMBER_SCALE), touch)
        spans.append((x, right))
        if on_digit:
            on_digit(k, (x, right))
        x = right + NUMBER_GAP
    return spans


def check_reading(reading, want, spans, reject):
    """What is wrong with a reading of the written number `want` (digits at `spans`): its
    text, each box against the ink it was drawn from, the unsure marks against the reader's
    rule (a digit under `reject`, a string whose confidence is under it) and the confidence
    against the product of the digits' probabilities. [] when all is right."""
    if not reading:
        return [f"{want}: no reading"]
    wrong = []
    if reading["text"] != want:
        wrong.append(f"{want} read as {reading['text']!r}")
    digits = reading["digits"]
    if len(digits) == len(spans):
        for d, (left, right) in zip(digits, spans):
            b = d["bbox"]
            # in the ink drawn (give or take the pen's half width and the reading's scale), over
            # its middle (a speck of it may be left out as dirt)
            if not (left - 8 <= b["x0"] <= (left + right) / 2 <= b["x1"] <= right + 8):
                wrong.append(f"{want}: digit {d['label']} boxed at x {b['x0']}-{b['x1']}, drawn at {left:.0f}-{right:.0f}")
    for d in digits:
        if d["unsure"] != (d["top3"][0][1] < reject):
            wrong.append(f"{want}: digit {d['label']} at {d['top3'][0][1]:.3f} marked unsure={d['unsure']} (threshold {reject})")
    product = 1.0
    for d in digits:
        product *= d["top3"][0][1]
    if digits and abs(reading["confidence"] - product) > 1e-5:
        wrong.append(f"{want}: confidence {reading['confidence']} is not the product of the digits' {product}")
    if reading["accepted"] != (bool(digits) and reading["confidence"] >= reject):
        wrong.append(f"{want}: accepted={reading['accepted']} at confidence {reading['confidence']:.3f} (threshold {reject})")
    return wrong


# The page's reading line and box overlay: the text shown (unsure digits as '?') and how many
# of the overlay's pixels are drawn.
SHOWN_READING = """(() => {
  const b = document.getElementById('number-boxes');
  const d = b.getContext('2d').getImageData(0, 0, b.width, b.height).data;
  let drawn = 0;
  for (let i = 3; i < d.length; i += 4) drawn += d[i] > 0;
  const text = document.querySelector('#reading b');
  return { text: text ? text.innerText : '', unsure: document.querySelectorAll('#reading .unsure').length,
           line: document.getElementById('reading').innerText, by: document.getElementById('read-by').innerText, drawn };
})()"""


def marked(reading):
    return "".join("?" if d["unsure"] else str(d["label"]) for d in reading["digits"])


def nth_of(labels, digit, n, start=8000):
    """The index of the n-th (0-based) test image of `digit` from `start` on."""
    return [i for i in range(start, len(labels)) if labels[i] == digit][n]


def canvas_rgba(element):
    """An expression for a canvas's pixels: {width, height, rgba (base64)}."""
    return CANVAS_RGBA.replace("ELEMENT", element)


CANVAS_RGBA = """(() => {
  const c = document.getElementById('ELEMENT');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = '';
  for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode.apply(null, d.subarray(i, i + 8192));
  return { width: c.width, height: c.height, rgba: btoa(s) };
})()"""


# The numbers the test writes: each digit the n-th test image of its label from 8000 on (the
# images the page's own training never sees), the n-th occurrence of the digit in the number.
NUMBERS = ["165", "4738", "90210", "2026"]


def write_numbers(chrome, labels, image, numbers=NUMBERS, answered_by="webgpu", cases=None):
    """Writes `numbers` on the "write a number" canvas stroke by stroke (the second by finger),
    and checks the page reads each as it is written (after each digit, a reading whose last
    box is on that digit: the page reads after each stroke) and, at the end, the whole
    number exactly, its boxes, its unsure marks, who read it (`answered_by`: "webgpu", or
    "server" in the page's fallback) and what the page shows. Appends each number's canvas and
    reading to `cases` (for web_reference), if given. Returns the failures. (The readings of
    the unfinished numbers are printed, not checked: a lone digit may read otherwise than in
    its number; the 4 of 4738 reads 41 alone.)"""
    failures = []
    rect = inner_rect(chrome, "number")
    reject = chrome.eval("window.kiln.number.reject")
    chrome.eval("window.kiln.number.setLineWidth(8)")
    says = {"webgpu": "in this browser (WebGPU)", "server": "by the server (POST /v1/read)"}[answered_by]
    for n, want in enumerate(numbers):
        t0 = time.time()
        touch = n == 1
        if touch:
            chrome.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
        chrome.eval("window.kiln.number.clear()")
        cleared = chrome.eval("window.kiln.number.settled()")
        shown = chrome.eval(SHOWN_READING)
        if cleared is not None or shown["drawn"] or shown["text"]:
            failures.append(f"before writing {want}: the cleared canvas still has a reading {cleared!r}, the page shows {shown!r}")
        reads = chrome.eval("window.kiln.number.reads()")
        images = [image(nth_of(labels, int(c), want[:k].count(c))) for k, c in enumerate(want)]
        prefixes = []

        def after_digit(k, span):
            r = chrome.eval("window.kiln.number.settled()")
            prefixes.append(r["text"] if r else "")
            last = r["digits"][-1]["bbox"] if r and r["digits"] else None
            if not last or not (span[0] - 8 <= last["x1"] <= span[1] + 8):
                failures.append(f"writing {want}: after {k + 1} digits the reading {r!r} does not end on digit {k + 1} (x {span[0]:.0f}-{span[1]:.0f})")

        spans = write_number(chrome, rect, images, touch, after_digit)
        if touch:
            chrome.send("Emulation.setTouchEmulationEnabled", {"enabled": False})
        reading = chrome.eval("window.kiln.number.settled()")
        reads = chrome.eval("window.kiln.number.reads()") - reads
        if cases is not None and reading:
            canvas = chrome.eval(canvas_rgba("number"))
            cases.append({"number": want, "reading": reading, "reject": reject, "width": canvas["width"], "height": canvas["height"],
                          "rgba": list(base64.b64decode(canvas["rgba"]))})
        shown = chrome.eval(SHOWN_READING)
        failures += check_reading(reading, want, spans, reject)
        if reading and reading.get("answeredBy") != answered_by:
            failures.append(f"{want}: read by {reading.get('answeredBy')!r}, not by {answered_by}")
        if reading and (shown["text"] != marked(reading) or shown["unsure"] != marked(reading).count("?") or shown["drawn"] == 0 or says not in shown["by"]):
            failures.append(f"{want}: the page shows {shown!r} for the reading {marked(reading)!r}")
        # read as written: at least once per digit, not only at the end
        if reads < len(want):
            failures.append(f"{want}: read {reads} times while written, fewer than its {len(want)} digits")
        digits = " ".join(f"{d['label']}{'?' if d['unsure'] else ''} {100 * d['top3'][0][1]:.1f}%" for d in reading["digits"]) if reading else ""
        print(f"  wrote {want} by {'finger' if touch else 'mouse'} ({time.time() - t0:.1f} s, read {reads} times while written; "
              f"after each digit: {' '.join(prefixes)}): the page reads {shown['line']!r} [{digits}]")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--cases", required=True, help="where to write the drawn cases for web_reference")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--train-images", type=int, default=640)
    ap.add_argument("--min-correct", type=int, default=9, help="of the 10 drawn digits")
    ap.add_argument("--log", default="target/chromium.log")
    args = ap.parse_args()

    (count, rows, cols), pixels = read_idx_bytes(find(args.data_dir, "t10k-images-idx3-ubyte"))
    _, labels = read_idx_bytes(find(args.data_dir, "t10k-labels-idx1-ubyte"))
    # one of each digit, from the images the page's own training never sees (8000 on)
    picks = [next(i for i in range(8000, count) if labels[i] == d) for d in range(10)]

    t0 = time.time()
    chrome = Chrome(args.chromium, args.log)
    failures = []
    try:
        chrome.attach()
        chrome.send("Page.navigate", {"url": args.url})
        for _ in range(600):
            if chrome.eval("typeof window.kiln === 'object'"):
                break
            time.sleep(0.1)
        ok = chrome.eval("window.kiln.ready")
        adapter = chrome.eval("window.kiln.adapter()")
        if not ok:
            problem = chrome.eval("document.getElementById('problem').innerText")
            sys.exit(f"web_driver: the page did not start: {problem}")
        print(f"page ready in {time.time() - t0:.1f} s; adapter: {json.dumps(adapter)}")
        # every shader through the browser's own WGSL compiler, not only those this adapter runs
        shaders = chrome.eval("window.kiln.checkShaders()", 120_000)
        print(f"shaders compiled by the browser: {len(shaders['checked'])} ({', '.join(shaders['checked'])}); "
              f"skipped (subgroups, which this device lacks): {', '.join(shaders['skipped']) or 'none'}")
        failures += [f"shader: {e}" for e in shaders["errors"]]
        # the GPU families' kernels (conv_shared with its pools, the routed linear dX) run in this
        # browser too: one training step's loss against the adapter's own kernels
        steps = {k: chrome.eval(f"window.kiln.firstStepLoss('{k}')", 300_000) for k in ["default", "tiled32x64", "tiled4_64x128"]}
        print(f"first training step by kernel variant: {json.dumps(steps)}")
        want = steps["default"]["loss"]
        for k, v in steps.items():
            if not abs(v["loss"] - want) <= 1e-4 * abs(want) + 1e-5:
                failures.append(f"kernel variant {k}: first step's loss {v['loss']} against the default's {want}")
            # the GPU families' step: 16 dispatches (ARCHITECTURE.md) less the batch gather (this
            # step's batch is written, not gathered), not the CPU family's
            if k != "default" and v["dispatches"] != 15:
                failures.append(f"kernel variant {k}: {v['dispatches']} dispatches per step, expected the GPU families' 15 without a gather")

        chrome.eval("window.kiln.setLineWidth(13)")
        rect = chrome.eval("JSON.parse(JSON.stringify(document.getElementById('draw').getBoundingClientRect()))")
        # borders: the drawing surface is the rect less 1 CSS pixel each side
        rect = {"left": rect["left"] + 1, "top": rect["top"] + 1, "width": rect["width"] - 2, "height": rect["height"] - 2}
        cases, correct = [], 0
        for n, i in enumerate(picks):
            t_digit = time.time()
            touch = n % 5 == 4  # digits 4 and 9 by finger, the rest by mouse
            if touch:
                chrome.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
            chrome.eval("window.kiln.clear()")
            digit = pixels[i * rows * cols:(i + 1) * rows * cols]
            draw(chrome, rect, digit, touch)
            if touch:
                chrome.send("Emulation.setTouchEmulationEnabled", {"enabled": False})
            last = chrome.eval("window.kiln.settled().then(() => window.kiln.last())")
            if not last:
                failures.append(f"image {i}: no prediction")
                continue
            probs = last["probs"]
            saliency = last.get("saliency") or []
            if len(saliency) != 784 or not all(0.0 <= v <= 1.0 for v in saliency) or max(saliency) != 1.0:
                failures.append(f"image {i}: no saliency map in [0, 1] with a maximum of 1")
            ink = sum(v for v, p in zip(saliency, last["digit"]) if p > 0) / max(sum(saliency), 1e-12)
            guess = max(range(10), key=lambda k: probs[k])
            correct += guess == labels[i]
            canvas = chrome.eval(canvas_rgba("draw"))
            cases.append({"index": i, "label": labels[i], "input": "touch" if touch else "mouse", "digit": last["digit"], "probs": probs,
                          "width": canvas["width"], "height": canvas["height"], "rgba": list(base64.b64decode(canvas["rgba"]))})
            print(f"  test image {i}: label {labels[i]}, drawn by {'finger' if touch else 'mouse'}: page says {guess} ({100 * probs[guess]:.1f}%), saliency {100 * ink:.0f}% on the ink, {time.time() - t_digit:.1f} s")
        print(f"drawn digits: {correct}/10 recognised (at least {args.min_correct} required)")
        if correct < args.min_correct:
            failures.append(f"only {correct}/10 drawn digits recognised")

        failures += write_numbers(chrome, labels, lambda i: pixels[i * rows * cols:(i + 1) * rows * cols], cases=cases)
        ms = chrome.eval("window.kiln.number.readMs()")
        print(f"  readings of the written numbers: {len(ms)}, median {sorted(ms)[len(ms) // 2]:.0f} ms, longest {max(ms):.0f} ms")
        with open(args.cases, "w") as f:
            json.dump(cases, f)

        t1 = time.time()
        r = chrome.eval(f"window.kiln.train({{ count: {args.train_images}, heldOut: 250, epochs: 1, batch: 64, stepsPerCall: 2 }})")
        losses = [p["loss"] for p in r["points"]]
        first, last = sum(losses[:2]) / len(losses[:2]), sum(losses[-2:]) / len(losses[-2:])
        print(f"training in the page: {args.train_images} images (1 epoch, batch 64) in {r['total_seconds']:.1f} s; "
              f"{r['images_per_sec']:.1f} images/s over the {r['images']} images after the first call (which compiles the kernels)")
        print(f"  loss per read: {' '.join(f'{l:.3f}' for l in losses)}; held-out: {r['evals']}")
        if not last < first:
            failures.append(f"the loss did not fall: first reads {first:.4f}, last reads {last:.4f}")
        print(f"  (wall clock of the call: {time.time() - t1:.1f} s)")

        # the curve of that training, and a digit answered by the shipped model, for the screenshot
        chrome.eval("window.kiln.useShipped()")
        wait_for(chrome, "document.getElementById('shipped').hidden")
        chrome.eval("window.kiln.clear()")
        draw(chrome, rect, pixels[picks[3] * rows * cols:(picks[3] + 1) * rows * cols], False)
        chrome.eval("window.kiln.settled()")
        shot = chrome.send("Page.captureScreenshot", {"format": "png"})
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"screenshot: {args.screenshot}")
        errors = [c for c in chrome.console if c.startswith("exception") or c.startswith("console.error")]
        if errors:
            failures.append(f"page errors: {errors}")

        # a lost device: the page must say so and offer a retry that works
        chrome.fail_fast = False
        chrome.send("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK_DEVICES})
        load(chrome, args.url)
        chrome.eval("window.__kilnDevices[window.__kilnDevices.length - 1].loseForTest('lost by web_driver.py')")
        said = wait_for(chrome, "document.getElementById('problem').hidden ? '' : document.getElementById('problem').innerText", 20)
        retry = chrome.eval("!document.getElementById('retry').hidden")
        print(f"after the device was lost the page says: {said[:90]!r}... (retry button: {retry})")
        if "lost" not in (said or "") or not retry:
            failures.append(f"a lost device is not reported with a retry button: {said!r}")
        else:
            chrome.eval("document.getElementById('retry').click()")
            wait_for(chrome, "document.getElementById('problem').hidden && window.kiln.adapter() !== null", 60)
            chrome.eval("window.kiln.clear()")
            draw(chrome, rect, pixels[picks[7] * rows * cols:(picks[7] + 1) * rows * cols], False)
            again = chrome.eval("window.kiln.settled().then(() => window.kiln.last())")
            guess = max(range(10), key=lambda k: again["probs"][k]) if again else None
            print(f"after retry (a new device) the page says {guess} for a drawn {labels[picks[7]]}")
            if guess != labels[picks[7]]:
                failures.append(f"after retry: {guess}, label {labels[picks[7]]}")

        # a browser without WebGPU: the page must say so and how to enable it, not go blank
        chrome.send("Page.addScriptToEvaluateOnNewDocument", {"source": "delete Navigator.prototype.gpu;"})
        load(chrome, args.url)
        shown = chrome.eval("document.getElementById('problem').hidden ? '' : document.getElementById('problem').innerText")
        print(f"without WebGPU the page says: {shown[:100]!r}...")
        if "WebGPU is not available" not in shown or "enable-unsafe-webgpu" not in shown:
            failures.append(f"without WebGPU the page does not explain how to enable it: {shown!r}")
    finally:
        chrome.close()
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print(f"web_driver: all page checks passed in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
