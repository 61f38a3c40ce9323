//! The WGSL sources, embedded at build time behind one enum. Every source is parsed,
//! validated and translated to SPIR-V, MSL and HLSL by `tests/layer_kernels/shaders.rs` (no GPU needed).

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
    /// Every shader, in file order (what `tests/layer_kernels/shaders.rs` validates).
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

    /// The module's label (its main file under `shaders/`), in validation errors and reports.
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

    /// The files under `shaders/` this module joins, in order, each with its text: most
    /// modules are one file; a kernel family's files follow the file of what they share
    /// (`gemm.wgsl`'s gathers and stores, `pcg.wgsl`'s hash), so each file stays one topic.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        macro_rules! wgsl {
            ($($file:literal),+) => { &[$(($file, include_str!(concat!("../../shaders/", $file)))),+] };
        }
        match self {
            Shader::Elementwise => wgsl!("elementwise.wgsl"),
            Shader::Activation => wgsl!("activation.wgsl"),
            Shader::Gemm => wgsl!("gemm.wgsl", "gemm_tiled.wgsl", "gemm_regblock.wgsl", "gemm_vec4.wgsl"),
            Shader::GemmSubgroup => wgsl!("gemm.wgsl", "gemm_tiled.wgsl", "gemm_regblock.wgsl", "gemm_vec4.wgsl", "gemm_subgroup.wgsl"),
            Shader::Im2col => wgsl!("im2col.wgsl"),
            Shader::ConvDirect => wgsl!("conv_direct.wgsl"),
            Shader::ConvShared => wgsl!("conv_shared.wgsl", "conv_shared_weight.wgsl"),
            Shader::Pool => wgsl!("pool.wgsl"),
            Shader::Softmax => wgsl!("softmax.wgsl"),
            Shader::Reduce => wgsl!("reduce.wgsl"),
            Shader::Dropout => wgsl!("pcg.wgsl", "dropout.wgsl"),
            Shader::Optim => wgsl!("optim.wgsl"),
            Shader::Data => wgsl!("pcg.wgsl", "data.wgsl"),
            Shader::Batchnorm => wgsl!("batchnorm.wgsl"),
            Shader::Linear => wgsl!("linear.wgsl"),
        }
    }

    /// The module's WGSL text: its [`files`](Self::files) joined (once per process).
    pub fn source(self) -> &'static str {
        static JOINED: [std::sync::OnceLock<String>; Shader::ALL.len()] = [const { std::sync::OnceLock::new() }; Shader::ALL.len()];
        match self.files() {
            [(_, text)] => text,
            files => JOINED[self as usize].get_or_init(|| files.iter().map(|(_, text)| *text).collect()),
        }
    }

    /// The file and the line in it (1-based) of line `line` of [`source`](Self::source), for
    /// compiler messages about a joined module.
    pub fn locate(self, line: u32) -> (&'static str, u32) {
        let mut first = 1;
        for (file, text) in self.files() {
            let lines = text.matches('\n').count() as u32;
            if line < first + lines {
                return (file, line + 1 - first);
            }
            first += lines;
        }
        let (file, _) = self.files()[self.files().len() - 1];
        (file, line + 1 - first)
    }
}
