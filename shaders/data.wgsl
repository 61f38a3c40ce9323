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
        // Inverse-map the output pixel through a random affine map about the centre:
        // rotation up to +-15 degrees, scale 0.9..1.1, horizontal shear up to +-0.2,
        // shift up to +-2.5 px; bilinear sampling of the stroke-width-varied source.
        // The rotation comes from u = tan(angle / 2) (uniform, |u| <= tan 7.5 degrees):
        // cos = (1 - u^2) / (1 + u^2), sin = 2u / (1 + u^2) are a few correctly rounded
        // operations, where Vulkan lets sin/cos be off by 2^-11, so every adapter (and the
        // CPU reference in tests/data_gpu.rs) warps alike.
        let u = rand(row, 0u) * 0.13165250;
        let scale = 1.0 + 0.1 * rand(row, 1u);
        let shift = vec2f(rand(row, 2u), rand(row, 3u)) * 2.5;
        let shear = 0.2 * rand(row, 4u);
        let centre = vec2f(f32(p.cols), f32(p.rows)) * 0.5 - 0.5;
        let d = (vec2f(f32(ox), f32(oy)) - centre - shift) / scale;
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
        v = mix(mix(stroke(image, y0, x0, w, amount), stroke(image, y0, x0 + 1, w, amount), t.x),
                mix(stroke(image, y0 + 1, x0, w, amount), stroke(image, y0 + 1, x0 + 1, w, amount), t.x), t.y);
    }
    x[e] = (v / 255.0 - p.mean) * p.inv_std;
    if k == 0u { y[row] = labels[image]; }
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
