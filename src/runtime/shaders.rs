//! The WGSL sources, embedded at build time behind one enum. Every source is parsed,
//! validated and translated to SPIR-V, MSL and HLSL by `tests/shaders.rs` (no GPU needed).

/// One embedded WGSL file: each op family's forward and backward entry points side by
/// side. [`Shader::source`] is the text, [`Shader::file_name`] its name under `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// ReLU, bias, scale-add, fill: forward and backward.
    Elementwise,
    /// LeakyReLU, Tanh, Sigmoid, GELU: one kernel, the activation an override constant.
    Activation,
    /// GEMM and implicit-GEMM convolution: both kernel families, every mode.
    Gemm,
    /// gemm.wgsl with gemm_subgroup.wgsl appended: `gemm_vec4_sg`, which needs the SUBGROUP
    /// feature (a module of its own, so that gemm.wgsl never does).
    GemmSubgroup,
    /// im2col / col2im staging of the im2col GEMM convolution.
    Im2col,
    /// Direct convolution forward for CPU adapters: needs the SUBGROUP feature.
    ConvDirect,
    /// Direct convolutions from workgroup memory for GPUs: forward, dX, few-weight dW.
    ConvShared,
    /// Max/average pooling, forward and backward.
    Pool,
    /// Softmax, fused softmax + cross-entropy, metrics.
    Softmax,
    /// Column/channel sums (bias gradients) and the deterministic loss reduction.
    Reduce,
    /// Dropout with a counter-based RNG.
    Dropout,
    /// SGD (momentum) and Adam.
    Optim,
    /// Batch gather from the resident u8 dataset, normalisation, augmentation.
    Data,
    /// Batch normalisation: train and eval forward, backward.
    Batchnorm,
    /// The one-dispatch backward of a linear layer with few outputs.
    Linear,
}

impl Shader {
    /// Every shader, in file order (what `tests/shaders.rs` validates).
    pub const ALL: [Shader; 15] = [
        Shader::Elementwise,
        Shader::Activation,
        Shader::Gemm,
        Shader::GemmSubgroup,
        Shader::Im2col,
        Shader::ConvDirect,
        Shader::ConvShared,
        Shader::Pool,
        Shader::Softmax,
        Shader::Reduce,
        Shader::Dropout,
        Shader::Optim,
        Shader::Data,
        Shader::Batchnorm,
        Shader::Linear,
    ];

    /// The file's name under `shaders/`, also the module's label in validation errors.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Gemm => "gemm.wgsl",
            Shader::GemmSubgroup => "gemm.wgsl + gemm_subgroup.wgsl",
            Shader::Im2col => "im2col.wgsl",
            Shader::ConvDirect => "conv_direct.wgsl",
            Shader::ConvShared => "conv_shared.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Dropout => "dropout.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Data => "data.wgsl",
            Shader::Batchnorm => "batchnorm.wgsl",
            Shader::Linear => "linear.wgsl",
        }
    }

    /// Whether the WGSL calls subgroup built-ins: only devices with wgpu's `SUBGROUP` feature
    /// compile it (kiln chooses those kernels only there, `GpuInfo::shares_subgroups`).
    pub fn uses_subgroups(self) -> bool {
        matches!(self, Shader::GemmSubgroup | Shader::ConvDirect)
    }

    /// The WGSL text, embedded with `include_str!`.
    pub fn source(self) -> &'static str {
        match self {
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Shader::Activation => include_str!("../../shaders/activation.wgsl"),
            Shader::Gemm => include_str!("../../shaders/gemm.wgsl"),
            Shader::GemmSubgroup => concat!(include_str!("../../shaders/gemm.wgsl"), include_str!("../../shaders/gemm_subgroup.wgsl")),
            Shader::Im2col => include_str!("../../shaders/im2col.wgsl"),
            Shader::ConvDirect => include_str!("../../shaders/conv_direct.wgsl"),
            Shader::ConvShared => include_str!("../../shaders/conv_shared.wgsl"),
            Shader::Pool => include_str!("../../shaders/pool.wgsl"),
            Shader::Softmax => include_str!("../../shaders/softmax.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Dropout => concat!(include_str!("../../shaders/pcg.wgsl"), include_str!("../../shaders/dropout.wgsl")),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Data => concat!(include_str!("../../shaders/pcg.wgsl"), include_str!("../../shaders/data.wgsl")),
            Shader::Batchnorm => include_str!("../../shaders/batchnorm.wgsl"),
            Shader::Linear => include_str!("../../shaders/linear.wgsl"),
        }
    }
}
