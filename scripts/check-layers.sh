#!/usr/bin/env bash
# Each folder of src/ is one layer and may name only itself and the layers below it
# (ARCHITECTURE.md, "Layers"). Reads every `crate::` path (in `use` trees, code and doc
# links) and every `super::super` that climbs out of a layer; prints each upward or unknown
# reference and exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import os, re, sys
LAYERS = ["base", "runtime", "kernels", "graph", "model", "digits", "cli", "serve"]
# Items lib.rs re-exports at the root, by the layer that defines them.
ROOT = {"Error": "base", "Result": "base", "Gpu": "runtime", "DType": "runtime", "Tensor": "runtime",
        "Classifier": "digits", "outln": "cli", "errln": "cli"}
def heads(text, i):
    """The first segment of each path after `crate::` at text[i:]."""
    if text[i] != "{":
        return [re.match(r"\w*", text[i:]).group()]
    depth, start, out = 0, i + 1, []
    for j in range(i, len(text)):
        c = text[j]
        if c == "{": depth += 1
        elif c == "}": depth -= 1
        if (c == "," and depth == 1) or depth == 0:
            item = text[start:j].strip()
            if item: out.append(re.match(r"\w*", item).group())
            start = j + 1
            if depth == 0: return out
    return out
bad = 0
for root, _, files in os.walk("src"):
    for f in sorted(files):
        path = os.path.join(root, f)
        parts = path.split(os.sep)
        if len(parts) < 3 or not f.endswith(".rs"):
            continue  # src/lib.rs: the root, which declares and re-exports the layers
        layer = parts[1]
        if layer not in LAYERS:
            print(f"{path}: folder '{layer}' is not a layer ({', '.join(LAYERS)})"); bad += 1; continue
        text = open(path).read()
        for m in re.finditer(r"(?<![\w:])\$?crate::", text):
            line = text.count("\n", 0, m.start()) + 1
            for h in heads(text, m.end()):
                target = h if h in LAYERS else ROOT.get(h)
                if target is None:
                    print(f"{path}:{line}: crate::{h} is not a layer; name the layer (crate::<layer>::...)"); bad += 1
                elif LAYERS.index(target) > LAYERS.index(layer):
                    print(f"{path}:{line}: {layer} imports {target} (crate::{h}), a layer above it"); bad += 1
        depth = len(parts) - 2  # folders below the layer's own
        for m in re.finditer(r"\b(?:super::)+", text):
            if m.group().count("super::") > depth - (f == "mod.rs"):
                line = text.count("\n", 0, m.start()) + 1
                print(f"{path}:{line}: super:: climbs out of layer '{layer}'"); bad += 1
if bad:
    print(f"check-layers: {bad} reference(s) break the layering"); sys.exit(1)
print("check-layers: every src/ layer imports only itself and the layers below it")
PY
