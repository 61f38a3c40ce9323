#!/usr/bin/env python3
"""The page's fallback in a browser without WebGPU (Chromium with --disable-features=WebGPU),
served by kiln serve: the page must say the server answers, its answers to drawn MNIST test
digits must come from the server's /v1/classify, and its readings of numbers written on the
"write a number" canvas from /v1/read. What scripts/test-web-fallback.sh runs.

  web_fallback.py --chromium /usr/bin/chromium --url http://127.0.0.1:PORT/ --data-dir DIR
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_idx import read_idx_bytes  # noqa: E402
from web_driver import Chrome, draw, find, load, write_numbers  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chromium", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--log", default="target/chromium-fallback.log")
    args = ap.parse_args()
    _, images = read_idx_bytes(find(args.data_dir, "t10k-images-idx3-ubyte"))
    _, labels = read_idx_bytes(find(args.data_dir, "t10k-labels-idx1-ubyte"))
    failures = []
    chrome = Chrome(args.chromium, args.log, webgpu=False)
    try:
        chrome.attach()
        ok = load(chrome, args.url)
        # Chromium keeps navigator.gpu with the feature off, but offers no adapter
        usable = chrome.eval("(async () => !!(navigator.gpu && await navigator.gpu.requestAdapter()))()")
        said = chrome.eval("document.getElementById('adapter').innerText")
        print(f"without WebGPU (an adapter: {usable}), the page started: {ok}; it says: {said!r}")
        if usable:
            failures.append("the browser offers a WebGPU adapter despite --disable-features=WebGPU")
        if not ok or chrome.eval("window.kiln.answeredBy()") != "server" or "the server answers" not in said:
            failures.append(f"the page did not fall back to the server: {said!r}")
        chrome.eval("window.kiln.setLineWidth(13)")
        rect = chrome.eval("JSON.parse(JSON.stringify(document.getElementById('draw').getBoundingClientRect()))")
        rect = {"left": rect["left"] + 1, "top": rect["top"] + 1, "width": rect["width"] - 2, "height": rect["height"] - 2}
        correct, picks = 0, [0, 1, 2, 3, 4, 7, 8, 18, 61, 9]
        for i in picks:
            chrome.eval("window.kiln.clear()")
            draw(chrome, rect, images[784 * i:784 * (i + 1)], False)
            last = chrome.eval("window.kiln.settled().then(() => window.kiln.last())")
            shown = chrome.eval("document.getElementById('answered-by').innerText")
            if not last or last.get("answeredBy") != "server" or "answered by the server" not in shown:
                failures.append(f"image {i}: not answered by the server ({last!r}, the page says {shown!r})")
                continue
            guess = max(range(10), key=lambda k: last["probs"][k])
            correct += guess == labels[i]
            print(f"  test image {i}: label {labels[i]}: the server says {guess} ({100 * last['probs'][guess]:.1f}%); the page says {shown!r}")
        print(f"drawn digits answered by the server: {correct}/{len(picks)} right")
        if correct < len(picks) - 1:
            failures.append(f"only {correct}/{len(picks)} drawn digits recognised")
        failures += write_numbers(chrome, labels, lambda i: images[784 * i:784 * (i + 1)], ["90210", "165"], "server")
    finally:
        chrome.close()
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print("web_fallback: the page falls back to the server and says so")


if __name__ == "__main__":
    main()
