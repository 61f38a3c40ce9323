// PCG output permutation (O'Neill), used as a 32-bit integer hash: the random draws of
// dropout (dropout.wgsl) and augmentation (data.wgsl). Joined in front of those files by
// `Shader::source`; the CPU side hashes with `kernels::dropout::pcg`.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}
