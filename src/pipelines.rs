//! Compiled kernels, cached by (shader, entry point, override constants). Pipelines use
//! the layout derived from the entry point, so each kernel's bind group 0 holds exactly
//! the bindings it uses (see ARCHITECTURE.md, "binding convention").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::Gpu;
use crate::shaders::Shader;
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

/// The compiled shader modules and pipelines of one [`Gpu`], keyed by shader and by
/// (shader, entry point, override constants); reached through [`Gpu::pipeline`].
#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<Shader, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
}

impl Gpu {
    fn module(&self, shader: Shader) -> Result<Arc<wgpu::ShaderModule>> {
        if let Some(m) = self.pipelines.modules.lock().expect("module cache").get(&shader) {
            return Ok(m.clone());
        }
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(shader.file_name()),
            source: wgpu::ShaderSource::Wgsl(shader.source().into()),
        };
        let module = self.catch(shader.file_name(), || {
            if self.checked_shaders {
                self.device.create_shader_module(desc)
            } else {
                // SAFETY: every kiln kernel guards its own indices against the sizes in its
                // Params, and the ops check those sizes against the bound tensors before a
                // dispatch is built; every loop is bounded by a Params value. Dropping
                // wgpu's injected bounds checks and loop counters is what lets the inner
                // loops vectorise (see BENCHMARKS.md); KILN_CHECKED_SHADERS=1 restores them.
                unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
            }
        })?;
        let module = Arc::new(module);
        self.pipelines.modules.lock().expect("module cache").insert(shader, module.clone());
        Ok(module)
    }

    /// The compiled pipeline for `kernel`, compiling it on first use.
    pub fn pipeline(&self, kernel: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = kernel.key();
        if let Some(p) = self.pipelines.pipelines.lock().expect("pipeline cache").get(&key) {
            return Ok(p.clone());
        }
        let module = self.module(kernel.shader)?;
        let context = format!("{}::{}", kernel.shader.file_name(), kernel.entry);
        let pipeline = self.catch(&context, || {
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &kernel.constants,
                    // Kernels initialise the workgroup memory they read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        let pipeline = Arc::new(pipeline);
        self.pipelines.pipelines.lock().expect("pipeline cache").insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Number of pipelines compiled so far (start-up cost reports).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
}
