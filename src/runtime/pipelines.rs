//! Compiled kernels, cached by (shader, entry point, override constants). Pipelines use
//! the layout derived from the entry point, so each kernel's bind group 0 holds exactly
//! the bindings it uses (see ARCHITECTURE.md, "binding convention").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::runtime::shaders::Shader;
use crate::Result;

/// A kernel: a shader's entry point specialised with override constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The WGSL source the entry point lives in.
    pub shader: Shader,
    /// The `@compute` entry point's name, e.g. `"relu_forward"`.
    pub entry: &'static str,
    /// Override constants (name, value) the pipeline is specialised with; order does not
    /// matter to the cache key.
    pub constants: Vec<(&'static str, f64)>,
}

impl Kernel {
    /// The entry point with no override constants (the WGSL defaults apply).
    pub fn new(shader: Shader, entry: &'static str) -> Self {
        Kernel { shader, entry, constants: Vec::new() }
    }

    /// Sets an override constant (a `u32`, `i32`, `f32` or `bool` override in WGSL).
    pub fn with(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        let value = value.into();
        match self.constants.iter_mut().find(|(n, _)| *n == name) {
            Some(c) => c.1 = value,
            None => self.constants.push((name, value)),
        }
        self
    }

    fn key(&self) -> (Shader, &'static str, Vec<(&'static str, u64)>) {
        let mut c: Vec<_> = self.constants.iter().map(|(n, v)| (*n, v.to_bits())).collect();
        c.sort();
        (self.shader, self.entry, c)
    }
}

type Key = (Shader, &'static str, Vec<(&'static str, u64)>);

/// The compiled shader modules and pipelines of one GPU, keyed by shader and by (shader,
/// entry point, override constants); `Gpu::pipeline` compiles what is missing. Lookups do
/// not hold a lock while compiling, so threads building different steps compile in
/// parallel (two may compile the same pipeline once each; the first stored stays).
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Shader, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl PipelineCache {
    /// The pipeline of `kernel`: cached, else `compile` of its shader's module (cached, else
    /// `module` of the shader).
    pub(crate) fn get(
        &self,
        kernel: &Kernel,
        module: impl FnOnce(Shader) -> Result<wgpu::ShaderModule>,
        compile: impl FnOnce(&wgpu::ShaderModule) -> Result<wgpu::ComputePipeline>,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = kernel.key();
        if let Some(p) = self.pipelines.lock().expect("pipeline cache").get(&key) {
            return Ok(p.clone());
        }
        let cached = self.modules.lock().expect("module cache").get(&kernel.shader).cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                let m = Arc::new(module(kernel.shader)?);
                self.modules.lock().expect("module cache").entry(kernel.shader).or_insert(m).clone()
            }
        };
        let pipeline = Arc::new(compile(&module)?);
        Ok(self.pipelines.lock().expect("pipeline cache").entry(key).or_insert(pipeline).clone())
    }

    /// Pipelines compiled so far.
    pub(crate) fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
}
