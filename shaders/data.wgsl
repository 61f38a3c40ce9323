// The resident dataset: images stay on the GPU as packed u8 (four pixels per u32 word),
// labels as u32. Each step a gather builds the batch: image index = perm[start + b],
// pixel -> (pixel / 255 - mean) / std, optionally through a random affine warp and a random
// change of stroke width.
// Rows past the end of the data (a partial last batch) get label 0xffffffff, which the
// loss and metrics kernels ignore.
//
// Dimensions: B batch rows, ROWS x COLS pixels per image, COUNT images in the split.

struct Params {
    batch: u32,
    rows: u32,
    cols: u32,
    count: u32,
    mean: f32,
    inv_std: f32,
    augment: u32,
    seed: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// step[0]: global step (augmentation RNG counter); step[1]: index of the batch's first row
// in the permutation
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> images: array<u32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> perm: array<u32>;
@group(0) @binding(5) var<storage, read_write> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<u32>;

// pcg(): shaders/pcg.wgsl, joined in front of this file.

// Uniform in [-1, 1) from the hash of (seed, step, row, which).
fn rand(row: u32, which: u32) -> f32 {
    let h = pcg(which ^ pcg(row ^ pcg(step[0] ^ pcg(p.seed))));
    return f32(h >> 8u) / 8388608.0 - 1.0;
}

fn pixel(image: u32, py: i32, px: i32) -> f32 {
    if py < 0 || px < 0 || py >= i32(p.rows) || px >= i32(p.cols) { return 0.0; }
    let j = image * p.rows * p.cols + u32(py) * p.cols + u32(px);
    return f32((images[j / 4u] >> (8u * (j % 4u))) & 255u);
}

// The source pixel blended by `amount` towards its dilation (w > 0) or erosion (w < 0).
fn stroke(image: u32, py: i32, px: i32, w: f32, amount: f32) -> f32 {
    let c = pixel(image, py, px);
    if amount == 0.0 { return c; }
    let right = pixel(image, py, px + 1);
    let down = pixel(image, py + 1, px);
    var m: f32;
    if w > 0.0 {
        m = max(max(c, right), max(down, max(pixel(image, py, px - 1), pixel(image, py - 1, px))));
    } else {
        m = min(c, min(right, down));
    }
    return mix(c, m, amount);
}

// The affine level's sample for output position `o`: inverse-map it through a random affine
// map about the centre -- rotation up to +-15 degrees, scale 0.9..1.1, horizontal shear up
// to +-0.2, shift up to +-2.5 px -- and sample the stroke-width-varied source bilinearly.
// The rotation comes from u = tan(angle / 2) (uniform, |u| <= tan 7.5 degrees):
// cos = (1 - u^2) / (1 + u^2), sin = 2u / (1 + u^2) are a few correctly rounded
// operations, where Vulkan lets sin/cos be off by 2^-11, so every adapter (and the
// CPU references) warps alike.
fn warped(image: u32, row: u32, o: vec2f) -> f32 {
    let u = rand(row, 0u) * 0.13165250;
    let scale = 1.0 + 0.1 * rand(row, 1u);
    let shift = vec2f(rand(row, 2u), rand(row, 3u)) * 2.5;
    let shear = 0.2 * rand(row, 4u);
    let centre = vec2f(f32(p.cols), f32(p.rows)) * 0.5 - 0.5;
    let d = (o - centre - shift) / scale;
    let cs = (1.0 - u * u) / (1.0 + u * u);
    let sn = 2.0 * u / (1.0 + u * u);
    let r = vec2f(cs * d.x + sn * d.y, -sn * d.x + cs * d.y);
    let src = vec2f(r.x - shear * r.y, r.y) + centre;
    // Stroke width: with probability 0.6 the source is blended towards its dilation
    // (max over the pixel and its 4 neighbours, ~1 px thicker each side) or, as often,
    // its erosion (min over the pixel, its right and lower neighbours, ~1 px thinner in
    // all), by an amount uniform in (0, 1].
    let w = rand(row, 5u);
    let amount = max(abs(w) - 0.4, 0.0) / 0.6;
    let f = floor(src);
    let t = src - f;
    let x0 = i32(f.x);
    let y0 = i32(f.y);
    return mix(mix(stroke(image, y0, x0, w, amount), stroke(image, y0, x0 + 1, w, amount), t.x),
               mix(stroke(image, y0 + 1, x0, w, amount), stroke(image, y0 + 1, x0 + 1, w, amount), t.x), t.y);
}

@compute @workgroup_size(WG)
fn gather_batch(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
    let plane = p.rows * p.cols;
    if e >= p.batch * plane { return; }
    let row = e / plane;
    let k = e - row * plane;
    let oy = k / p.cols;
    let ox = k - oy * p.cols;
    let slot = step[1] + row;
    if slot >= p.count {
        x[e] = 0.0;
        if k == 0u { y[row] = 0xffffffffu; }
        return;
    }
    let image = perm[slot];
    var v: f32;
    if p.augment == 0u {
        v = pixel(image, i32(oy), i32(ox));
    } else {
        v = warped(image, row, vec2f(f32(ox), f32(oy)));
    }
    x[e] = (v / 255.0 - p.mean) * p.inv_std;
    if k == 0u { y[row] = labels[image]; }
}

// ---- gather_batch_warp: the elastic (augment 2) and robust (augment 3) levels, one
// workgroup per batch row, the image's stages in workgroup memory (at most MAX_PLANE pixels,
// checked by the host). Every barrier is reached by the whole workgroup: the per-image choices
// only select what each stage computes.
//
// Elastic distortion (Simard et al. 2003: displacements uniform in [-1, 1] per pixel,
// smoothed by a Gaussian of sigma 4 px, scaled by alpha 34), computed on a grid of half the
// resolution, which the smoothing leaves nothing finer for: noise per grid cell, the separable
// Gaussian of sigma ELASTIC_SIGMA cells (truncated at ELASTIC_RADIUS, weights normalised to
// sum 1 per axis, zero outside the grid), scaled by ELASTIC_ALPHA (half of 34: a field of
// half the cells per sigma, so the displacement's spread is that of the full-resolution
// one), interpolated bilinearly at each pixel and added to its position before the affine
// level's warp. On lavapipe the full-resolution field cost 8x the arithmetic.
// Robust adds what scanners do, after the warp: with probability 0.3 a down-up sampling (area
// mean onto an s x s grid, s uniform in 8..16, then bilinear back, edges clamped), with
// probability 0.3 a blur (the [1 2 1]/4 kernel on both axes, zero outside, blended in by an
// amount uniform in (0, 1]), with probability 0.15 a binarisation at a threshold uniform in
// [64, 192] levels.
const MAX_PLANE: u32 = 1024u;
const ELASTIC_SIGMA: f32 = 2.0;
const ELASTIC_ALPHA: f32 = 17.0;
const ELASTIC_RADIUS: i32 = 6;

// Two planes of MAX_PLANE vec2 components: 16 KiB, WebGPU's default workgroup storage.
var<workgroup> wa: array<f32, 2048>;
var<workgroup> wb: array<f32, 2048>;

// Uniform in [0, 1) from (row hash, which): one hash per draw.
fn unit(rowhash: u32, which: u32) -> f32 {
    return f32(pcg(which ^ rowhash) >> 8u) / 16777216.0;
}

@compute @workgroup_size(WG)
fn gather_batch_warp(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_id) lid: vec3u) {
    let row = wid.x + wid.y * nwg.x;
    let plane = p.rows * p.cols;
    let rows = i32(p.rows);
    let cols = i32(p.cols);
    let inside = row < p.batch;
    let slot = step[1] + row;
    let valid = inside && slot < p.count;
    var image = 0u;
    if valid { image = perm[slot]; }
    let rowhash = pcg(row ^ pcg(step[0] ^ pcg(p.seed)));
    // the field's grid: (rows + 1) / 2 x (cols + 1) / 2 cells
    let grows = (rows + 1) / 2;
    let gcols = (cols + 1) / 2;
    let cells = u32(grows * gcols);
    // 1-D Gaussian weights, normalised over the truncated support
    var g: array<f32, 7>;
    var gsum = 0.0;
    for (var t = 0; t <= ELASTIC_RADIUS; t++) {
        g[t] = exp(-f32(t * t) / (2.0 * ELASTIC_SIGMA * ELASTIC_SIGMA));
        gsum += select(2.0, 1.0, t == 0) * g[t];
    }
    // noise: x component at cell k, y at MAX_PLANE + k (which = 16 + k, 16 + cells + k)
    for (var k = lid.x; k < cells; k += WG) {
        wa[k] = 2.0 * unit(rowhash, 16u + k) - 1.0;
        wa[MAX_PLANE + k] = 2.0 * unit(rowhash, 16u + cells + k) - 1.0;
    }
    workgroupBarrier();
    // horizontal pass into wb
    for (var k = lid.x; k < cells; k += WG) {
        let cy = i32(k) / gcols;
        let cx = i32(k) % gcols;
        var s = vec2f(0.0);
        for (var t = -ELASTIC_RADIUS; t <= ELASTIC_RADIUS; t++) {
            let sx = cx + t;
            if sx >= 0 && sx < gcols {
                let j = u32(cy * gcols + sx);
                s += g[abs(t)] * vec2f(wa[j], wa[MAX_PLANE + j]);
            }
        }
        wb[k] = s.x / gsum;
        wb[MAX_PLANE + k] = s.y / gsum;
    }
    workgroupBarrier();
    // vertical pass into wa, times alpha
    for (var k = lid.x; k < cells; k += WG) {
        let cy = i32(k) / gcols;
        let cx = i32(k) % gcols;
        var s = vec2f(0.0);
        for (var t = -ELASTIC_RADIUS; t <= ELASTIC_RADIUS; t++) {
            let sy = cy + t;
            if sy >= 0 && sy < grows {
                let j = u32(sy * gcols + cx);
                s += g[abs(t)] * vec2f(wb[j], wb[MAX_PLANE + j]);
            }
        }
        wa[k] = ELASTIC_ALPHA * s.x / gsum;
        wa[MAX_PLANE + k] = ELASTIC_ALPHA * s.y / gsum;
    }
    workgroupBarrier();
    // each pixel: the field interpolated at its place on the grid, then the warped sample into wb
    for (var k = lid.x; k < plane; k += WG) {
        let yy = i32(k / p.cols);
        let xx = i32(k % p.cols);
        let gy = clamp((f32(yy) + 0.5) * 0.5 - 0.5, 0.0, f32(grows - 1));
        let gx = clamp((f32(xx) + 0.5) * 0.5 - 0.5, 0.0, f32(gcols - 1));
        let y0 = i32(floor(gy));
        let x0 = i32(floor(gx));
        let y1 = min(y0 + 1, grows - 1);
        let x1 = min(x0 + 1, gcols - 1);
        let ty = gy - f32(y0);
        let tx = gx - f32(x0);
        let i00 = u32(y0 * gcols + x0);
        let i01 = u32(y0 * gcols + x1);
        let i10 = u32(y1 * gcols + x0);
        let i11 = u32(y1 * gcols + x1);
        let d = mix(mix(vec2f(wa[i00], wa[MAX_PLANE + i00]), vec2f(wa[i01], wa[MAX_PLANE + i01]), tx),
                    mix(vec2f(wa[i10], wa[MAX_PLANE + i10]), vec2f(wa[i11], wa[MAX_PLANE + i11]), tx), ty);
        var v = 0.0;
        if valid { v = warped(image, row, vec2f(f32(xx), f32(yy)) + d); }
        wb[k] = v;
    }
    workgroupBarrier();
    // robust: the scanner's stages, each drawn per image
    let robust = p.augment == 3u;
    let down = robust && unit(rowhash, 6u) < 0.3;
    let size = 8 + min(i32(unit(rowhash, 7u) * 9.0), 8);
    let blur = robust && unit(rowhash, 8u) < 0.3;
    let blur_amount = 1.0 - unit(rowhash, 9u);
    let binarise = robust && unit(rowhash, 10u) < 0.15;
    let threshold = 64.0 + 128.0 * unit(rowhash, 11u);
    // down: cell (i, j) of the size x size grid is the mean of the pixels (y, x) with
    // y * size / rows == i and x * size / cols == j
    if down {
        for (var c = i32(lid.x); c < size * size; c += i32(WG)) {
            let ci = c / size;
            let cj = c % size;
            let y0 = (ci * rows + size - 1) / size;
            let y1 = ((ci + 1) * rows + size - 1) / size;
            let x0 = (cj * cols + size - 1) / size;
            let x1 = ((cj + 1) * cols + size - 1) / size;
            var s = 0.0;
            for (var yy = y0; yy < y1; yy++) {
                for (var xx = x0; xx < x1; xx++) { s += wb[yy * cols + xx]; }
            }
            wa[c] = s / f32(max((y1 - y0) * (x1 - x0), 1));
        }
    }
    workgroupBarrier();
    // up: bilinear from the grid, positions clamped to its centres
    if down {
        let fs = f32(size);
        for (var k = lid.x; k < plane; k += WG) {
            let yy = i32(k / p.cols);
            let xx = i32(k % p.cols);
            let ly = clamp((f32(yy) + 0.5) * fs / f32(rows) - 0.5, 0.0, fs - 1.0);
            let lx = clamp((f32(xx) + 0.5) * fs / f32(cols) - 0.5, 0.0, fs - 1.0);
            let y0 = min(i32(floor(ly)), size - 1);
            let x0 = min(i32(floor(lx)), size - 1);
            let y1 = min(y0 + 1, size - 1);
            let x1 = min(x0 + 1, size - 1);
            let ty = ly - f32(y0);
            let tx = lx - f32(x0);
            wb[k] = mix(mix(wa[y0 * size + x0], wa[y0 * size + x1], tx), mix(wa[y1 * size + x0], wa[y1 * size + x1], tx), ty);
        }
    }
    workgroupBarrier();
    // blur and binarisation, then the batch
    for (var k = lid.x; k < plane; k += WG) {
        let yy = i32(k / p.cols);
        let xx = i32(k % p.cols);
        var v = wb[k];
        if blur {
            var s = 0.0;
            for (var dy = -1; dy <= 1; dy++) {
                for (var dx = -1; dx <= 1; dx++) {
                    let sy = yy + dy;
                    let sx = xx + dx;
                    if sy >= 0 && sy < rows && sx >= 0 && sx < cols {
                        s += f32((2 - abs(dy)) * (2 - abs(dx))) * wb[sy * cols + sx];
                    }
                }
            }
            v = mix(v, s / 16.0, blur_amount);
        }
        if binarise { v = select(0.0, 255.0, v >= threshold); }
        if inside {
            let e = row * plane + k;
            x[e] = select(0.0, (v / 255.0 - p.mean) * p.inv_std, valid);
        }
    }
    if inside && lid.x == 0u {
        y[row] = select(0xffffffffu, labels[image], valid);
    }
}

// ---- denoise: 3x3 median over f32 images [B, ROWS, COLS] (edges replicate), for
// prediction on user photos. `batch` counts images.
@group(0) @binding(7) var<storage, read> img_in: array<f32>;
@group(0) @binding(8) var<storage, read_write> img_out: array<f32>;

// The median of the 3x3 window about (cy, cx) of the image at `base` (edges replicate).
fn median_at(base: u32, cy: i32, cx: i32) -> f32 {
    var v: array<f32, 9>;
    for (var i = 0; i < 9; i++) {
        let yy = clamp(cy + i / 3 - 1, 0, i32(p.rows) - 1);
        let xx = clamp(cx + i % 3 - 1, 0, i32(p.cols) - 1);
        v[i] = img_in[base + u32(yy) * p.cols + u32(xx)];
    }
    // insertion sort of 9 values; the median is v[4]
    for (var i = 1; i < 9; i++) {
        let t = v[i];
        var j = i - 1;
        while j >= 0 && v[j] > t { v[j + 1] = v[j]; j--; }
        v[j + 1] = t;
    }
    return v[4];
}

@compute @workgroup_size(WG)
fn median3x3(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_id) lid: vec3u) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
    let plane = p.rows * p.cols;
    if e >= p.batch * plane { return; }
    let k = e % plane;
    img_out[e] = median_at((e / plane) * plane, i32(k / p.cols), i32(k % p.cols));
}

// ---- denoise that leaves clean pixels alone: the 3x3 median replaces only a pixel taken
// for an impulse (salt or pepper): one at an extreme of the 8-bit range (<= IMPULSE_LOW or
// >= IMPULSE_HIGH) with at most IMPULSE_ALIKE of its (in-image) 8 neighbours within
// IMPULSE_NEAR levels of it. Ink and paper come in connected pieces, so a clean pixel has
// several neighbours like it; an impulse, scattered at random, seldom does (at 10% noise,
// 2 of 8 neighbours hit alike happen for 6% of impulses). IMPULSE_ALIKE = 1, not 2: with 2,
// some pixels of clean MNIST digits (stroke tips, small holes) counted as impulses (0.08 points
// lost on MNIST's test set, none with 1; ARCHITECTURE.md). Every other pixel is copied.
const IMPULSE_LOW: f32 = 8.0;
const IMPULSE_HIGH: f32 = 247.0;
const IMPULSE_NEAR: f32 = 64.0;
const IMPULSE_ALIKE: u32 = 1u;

@compute @workgroup_size(WG)
fn impulse_median3x3(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_id) lid: vec3u) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid.x;
    let plane = p.rows * p.cols;
    if e >= p.batch * plane { return; }
    let base = (e / plane) * plane;
    let k = e % plane;
    let cy = i32(k / p.cols);
    let cx = i32(k % p.cols);
    let v = img_in[e];
    var out = v;
    if v <= IMPULSE_LOW || v >= IMPULSE_HIGH {
        var alike = 0u;
        for (var i = 0; i < 9; i++) {
            let yy = cy + i / 3 - 1;
            let xx = cx + i % 3 - 1;
            if i == 4 || yy < 0 || xx < 0 || yy >= i32(p.rows) || xx >= i32(p.cols) { continue; }
            if abs(img_in[base + u32(yy) * p.cols + u32(xx)] - v) <= IMPULSE_NEAR { alike++; }
        }
        if alike <= IMPULSE_ALIKE { out = median_at(base, cy, cx); }
    }
    img_out[e] = out;
}
