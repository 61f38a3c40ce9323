// Inverted dropout: y = x * keep / (1 - p) at train time (identity at eval: the graph
// does not run this kernel then). The keep mask is a counter-based hash of
// (seed, step, element), recomputed in the backward instead of stored, and the step is
// read from the executor's step buffer, so no random numbers come from the host per step.

struct Params {
    n: u32,
    // keep iff hash >= threshold, threshold = p * 2^32
    threshold: u32,
    scale: f32,
    seed: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// step[0] is the global training step (see ARCHITECTURE.md, "step buffer")
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// pcg(): shaders/pcg.wgsl, joined in front of this file.

fn keep(i: u32) -> bool {
    return pcg(i ^ pcg(step[0] ^ pcg(p.seed))) >= p.threshold;
}

fn element(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// The backward is the same map applied to dy: dx = dy * keep / (1 - p).
@compute @workgroup_size(WG)
fn dropout_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = select(0.0, x[i] * p.scale, keep(i));
}
