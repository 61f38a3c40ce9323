//! `Gpu`: the instance, adapter, device and queue, the kernels compiled on it, and the
//! counters that let callers check "no per-step readback" instead of claiming it.
//!
//! Errors: every device operation that can fail validation or run out of memory is wrapped
//! in [`Gpu::catch`] (error scopes), uncaptured errors are stored and surfaced by
//! [`Gpu::check`], and device loss is recorded by the device-lost callback. None of them
//! panic or abort.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::pipelines::{Kernel, PipelineCache};
use crate::runtime::shaders::Shader;
use crate::{Error, Result};

/// The WGSL of `shader`, labelled with its file name (validation errors name it).
fn module_descriptor(shader: Shader) -> wgpu::ShaderModuleDescriptor<'static> {
    wgpu::ShaderModuleDescriptor { label: Some(shader.file_name()), source: wgpu::ShaderSource::Wgsl(shader.source().into()) }
}

/// What [`Gpu::compile_every_shader`] found.
#[derive(Clone, Debug, Default)]
pub struct ShaderCheck {
    /// The shader files compiled.
    pub checked: Vec<&'static str>,
    /// Those not compiled: they call subgroup built-ins and the device has no subgroups.
    pub skipped: Vec<&'static str>,
    /// `file:line:column: message` for each compilation or validation error.
    pub errors: Vec<String>,
}

/// When `KILN_ADAPTER` matches none of the adapters that are there.
pub const ADAPTER_FILTER_HINT: &str = "KILN_ADAPTER=<substring> must match part of one of the adapter names present \
(case does not matter); unset it to take the default adapter.";

/// How to get a GPU when there is none: Mesa's lavapipe runs Vulkan on the CPU.
pub const INSTALL_HINT: &str = "No GPU? Install Mesa's lavapipe (Vulkan on the CPU): \
`sudo bash scripts/install-lavapipe.sh` on Debian/Ubuntu (or `apt-get install mesa-vulkan-drivers libvulkan1`). \
KILN_BACKEND=vulkan|metal|dx12|gl picks a backend, KILN_ADAPTER=<substring> an adapter.";

/// What `Gpu::info()` reports: the adapter and the limits kiln runs under.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// The adapter's name as the driver reports it (matched by `KILN_ADAPTER`).
    pub name: String,
    /// The backend the adapter runs on (chosen by `KILN_BACKEND`).
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU or other; see [`GpuInfo::is_cpu`].
    pub device_type: wgpu::DeviceType,
    /// The driver's name; empty on backends that do not report it.
    pub driver: String,
    /// The driver's version string; may be empty.
    pub driver_info: String,
    /// The device's limits: the adapter's full limits, as requested by [`Gpu::new`].
    pub limits: wgpu::Limits,
    /// The optional features enabled on the device: the subset of timestamp queries, f16 and
    /// subgroups that the adapter offers.
    pub features: wgpu::Features,
    /// The fewest invocations a subgroup may have on this adapter; 0 without the SUBGROUP
    /// feature.
    pub subgroup_min_size: u32,
}

impl GpuInfo {
    /// True for CPU adapters (lavapipe/llvmpipe, WARP): kernel variants without workgroup
    /// memory win there.
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether kernels may share loads across groups of 8 lanes with subgroup broadcasts
    /// (`gemm_vec4_sg`): the SUBGROUP feature (else `subgroup_min_size` is 0), and no
    /// subgroup smaller than 8.
    pub fn shares_subgroups(&self) -> bool {
        self.subgroup_min_size >= 8
    }

    /// The driver's name and version as the adapter reports them; some backends (GL)
    /// report none.
    pub fn driver_label(&self) -> String {
        let label = format!("{} {}", self.driver, self.driver_info).trim().to_string();
        if label.is_empty() {
            "driver not reported".into()
        } else {
            label
        }
    }

    /// One line: name (backend, device type, driver).
    pub fn summary(&self) -> String {
        format!("{} ({:?}, {:?}, {})", self.name, self.backend, self.device_type, self.driver_label())
    }
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.limits;
        writeln!(f, "adapter:      {}", self.name)?;
        writeln!(f, "backend:      {:?}", self.backend)?;
        writeln!(f, "device type:  {:?}", self.device_type)?;
        writeln!(f, "driver:       {}", self.driver_label())?;
        writeln!(f, "max buffer:   {} MiB", l.max_buffer_size >> 20)?;
        writeln!(f, "max storage binding: {} MiB", l.max_storage_buffer_binding_size >> 20)?;
        writeln!(f, "storage buffers per stage: {}", l.max_storage_buffers_per_shader_stage)?;
        writeln!(f, "workgroup storage: {} KiB", l.max_compute_workgroup_storage_size >> 10)?;
        writeln!(f, "invocations per workgroup: {}", l.max_compute_invocations_per_workgroup)?;
        writeln!(f, "workgroups per dimension: {}", l.max_compute_workgroups_per_dimension)?;
        write!(
            f,
            "features:     timestamp-query={} shader-f16={} subgroups={}",
            self.features.contains(wgpu::Features::TIMESTAMP_QUERY),
            self.features.contains(wgpu::Features::SHADER_F16),
            self.features.contains(wgpu::Features::SUBGROUP)
        )?;
        if self.subgroup_min_size > 0 {
            write!(f, " (at least {} lanes)", self.subgroup_min_size)?;
        }
        Ok(())
    }
}

/// Counters of host/GPU traffic and memory, read by `ExecStats`.
#[derive(Default, Debug)]
pub struct Counters {
    /// Command buffers submitted, readback copies included.
    pub submits: AtomicU64,
    /// Device-to-host copies made by [`Gpu::read_bytes`].
    pub readbacks: AtomicU64,
    /// Bytes of kiln's storage buffers alive now, and the most alive at once so far.
    pub bytes_live: AtomicU64,
    /// The largest value `bytes_live` has reached.
    pub bytes_peak: AtomicU64,
}

/// A storage buffer counted in `Counters::bytes_live` for as long as it exists.
#[derive(Debug)]
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    counters: Arc<Counters>,
}

impl std::ops::Deref for GpuBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.counters.bytes_live.fetch_sub(self.buffer.size(), Ordering::Relaxed);
    }
}

/// The device and queue kiln runs on, with the adapter's description, the pipeline cache
/// and the traffic counters. Open it once and share it: tests use [`crate::runtime::testing::gpu`].
///
/// ```
/// let gpu = kiln::Gpu::new()?;
/// assert!(gpu.limits().max_compute_workgroups_per_dimension >= 65535);
/// println!("{}", gpu.info().summary());
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Gpu {
    /// The wgpu device; resources created on it directly are not counted in [`Gpu::counters`].
    pub device: wgpu::Device,
    /// The queue; submit through [`Gpu::submit`] so the submission is counted and errors are
    /// caught.
    pub queue: wgpu::Queue,
    info: GpuInfo,
    pub(crate) pipelines: PipelineCache,
    /// Submits, readbacks and live/peak storage bytes since the device was opened.
    pub counters: Arc<Counters>,
    /// Compile shaders with wgpu's runtime bounds checks (KILN_CHECKED_SHADERS=1).
    pub(crate) checked_shaders: bool,
    /// Set by the device-lost callback and the uncaptured-error handler.
    fault: Arc<Mutex<Option<Error>>>,
    /// The shared scratch region (see [`Gpu::scratch`]).
    scratch: Mutex<Option<Arc<GpuBuffer>>>,
}

fn parse_backend(value: &str) -> Result<wgpu::Backends> {
    match value.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        _ => Err(Error::Env {
            var: "KILN_BACKEND",
            value: value.to_string(),
            expected: "one of vulkan, metal, dx12, gl",
        }),
    }
}

impl Gpu {
    /// Opens the adapter chosen by `KILN_BACKEND` and `KILN_ADAPTER`, else the
    /// high-performance default. CPU adapters (lavapipe) are accepted. Native only (it
    /// blocks); the browser uses [`Gpu::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Gpu> {
        pollster::block_on(Self::new_async())
    }

    /// [`Gpu::new`] without blocking: what the browser awaits. There, the backend is
    /// WebGPU and the environment variables do not exist.
    pub async fn new_async() -> Result<Gpu> {
        if cfg!(target_arch = "wasm32") {
            return Self::open(wgpu::Backends::BROWSER_WEBGPU, None).await;
        }
        let backends = match std::env::var("KILN_BACKEND") {
            Ok(v) if !v.is_empty() => parse_backend(&v)?,
            _ => wgpu::Backends::PRIMARY | wgpu::Backends::GL,
        };
        let name_filter = std::env::var("KILN_ADAPTER").ok().filter(|s| !s.is_empty());
        Self::open(backends, name_filter).await
    }

    async fn open(backends: wgpu::Backends, name_filter: Option<String>) -> Result<Gpu> {
        let tried = || {
            let mut s = format!("backends {backends:?}");
            if let Some(f) = &name_filter {
                s += &format!(", adapter name containing {f:?}");
            }
            s
        };
        // GL last, and only where the other backends offer no discrete GPU (which GL could
        // not beat: ties go to the other backends below). Creating a GL instance starts EGL,
        // which loads and initialises a second driver: time a GPU machine's default run
        // spends before its first step for an adapter it never takes.
        let mut adapters = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for stage in [backends - wgpu::Backends::GL, backends & wgpu::Backends::GL] {
            if stage.is_empty() || adapters.iter().any(|a: &wgpu::Adapter| a.get_info().device_type == wgpu::DeviceType::DiscreteGpu) {
                continue;
            }
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: stage,
                ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
            });
            let mut found = instance.enumerate_adapters(stage).await;
            names.extend(found.iter().map(|a| a.get_info()).map(|i| format!("{} ({:?})", i.name, i.backend)));
            if let Some(filter) = &name_filter {
                let f = filter.to_lowercase();
                found.retain(|a| a.get_info().name.to_lowercase().contains(&f));
            }
            adapters.extend(found);
        }
        if name_filter.is_some() && adapters.is_empty() && !names.is_empty() {
            // one entry per adapter and backend: the same device seen twice is named once
            names.sort();
            names.dedup();
            return Err(Error::NoAdapter {
                tried: format!("{}; adapters present: {}", tried(), names.join("; ")),
                hint: ADAPTER_FILTER_HINT,
            });
        }
        // High-performance preference: discrete > integrated > virtual > other > CPU.
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        // Among equals, prefer Vulkan/Metal/DX12 over GL (GL compiles workgroup-memory
        // kernels very slowly and lacks features).
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (rank(i.device_type), i.backend == wgpu::Backend::Gl)
        });
        let Some(adapter) = adapters.into_iter().next() else {
            return Err(Error::NoAdapter { tried: tried(), hint: INSTALL_HINT });
        };
        let ainfo = adapter.get_info();
        // kiln asks for everything the adapter offers: large storage bindings (the resident
        // dataset), many storage buffers per stage, big workgroups.
        let required_limits = adapter.limits();
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP;
        let required_features = adapter.features() & wanted;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kiln"),
                required_features,
                required_limits: required_limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice { adapter: ainfo.name.clone(), message: e.to_string() })?;

        let fault: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let lost = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                if let Ok(mut f) = lost.lock() {
                    f.get_or_insert(Error::DeviceLost(format!("{reason:?}: {message}")));
                }
            }
        });
        let uncaptured = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut f) = uncaptured.lock() {
                f.get_or_insert(to_error("uncaptured", e));
            }
        }));

        let info = GpuInfo {
            name: ainfo.name.clone(),
            backend: ainfo.backend,
            device_type: ainfo.device_type,
            driver: ainfo.driver.clone(),
            driver_info: ainfo.driver_info.clone(),
            limits: device.limits(),
            features: device.features(),
            subgroup_min_size: if device.features().contains(wgpu::Features::SUBGROUP) { ainfo.subgroup_min_size } else { 0 },
        };
        Ok(Gpu {
            device,
            queue,
            info,
            pipelines: PipelineCache::default(),
            counters: Arc::default(),
            checked_shaders: std::env::var("KILN_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
            fault,
            scratch: Mutex::new(None),
        })
    }

    /// The adapter, limits and features this device runs under.
    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Shorthand for `&self.info().limits`.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.info.limits
    }

    /// The compiled pipeline for `kernel`, compiling it (and its shader's module) on first
    /// use. Pipelines use the layout derived from the entry point.
    pub fn pipeline(&self, kernel: &Kernel) -> Result<Arc<wgpu::ComputePipeline>> {
        let compile = |module: &wgpu::ShaderModule| {
            let context = format!("{}::{}", kernel.shader.file_name(), kernel.entry);
            self.catch(&context, || {
                self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.entry),
                    layout: None,
                    module,
                    entry_point: Some(kernel.entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &kernel.constants,
                        // Kernels initialise the workgroup memory they read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
        };
        self.pipelines.get(kernel, |shader| self.module(shader), compile)
    }

    /// Compiles every kiln shader with this device's WGSL compiler (in a browser its own,
    /// Tint in Chrome), whichever kernels this adapter's family runs: the shaders that call
    /// subgroup built-ins are skipped on a device without subgroups. Each module is created
    /// inside an error scope and its compilation messages read, so a bad one is reported
    /// here, not as a device fault. The web page's test runs it.
    pub async fn compile_every_shader(&self) -> ShaderCheck {
        let mut report = ShaderCheck::default();
        let subgroups = self.device.features().contains(wgpu::Features::SUBGROUP);
        for shader in Shader::ALL {
            if shader.uses_subgroups() && !subgroups {
                report.skipped.push(shader.file_name());
                continue;
            }
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = self.device.create_shader_module(module_descriptor(shader));
            let info = module.get_compilation_info().await;
            for m in info.messages.iter().filter(|m| m.message_type == wgpu::CompilationMessageType::Error) {
                let at = match m.location {
                    Some(l) => {
                        let (file, line) = shader.locate(l.line_number);
                        format!("{file}:{line}:{}", l.line_position)
                    }
                    None => shader.file_name().to_string(),
                };
                report.errors.push(format!("{at}: {}", m.message));
            }
            if let Some(e) = scope.pop().await {
                report.errors.push(format!("{}: {e}", shader.file_name()));
            }
            report.checked.push(shader.file_name());
        }
        report
    }

    fn module(&self, shader: Shader) -> Result<wgpu::ShaderModule> {
        let desc = module_descriptor(shader);
        self.catch(shader.file_name(), || {
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
        })
    }

    /// Number of pipelines compiled so far (start-up cost reports).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.len()
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they catch
    /// into `Error` values naming `context`.
    ///
    /// In the browser an error scope resolves only as a promise, which nothing may block on:
    /// there `f` runs unscoped, and its errors arrive later through the uncaptured-error
    /// handler, surfaced by the next [`Gpu::check`] (each `catch` and every readback calls it).
    pub fn catch<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = context;
            let out = f();
            self.check()?;
            Ok(out)
        }
        #[cfg(not(target_arch = "wasm32"))]
        self.catch_scoped(context, f)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn catch_scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match (v, o) {
            (Some(e), _) | (None, Some(e)) => Err(to_error(context, e)),
            (None, None) => {
                self.check()?;
                Ok(out)
            }
        }
    }

    /// Returns the first uncaptured error or device loss seen so far, if any.
    pub fn check(&self) -> Result<()> {
        match self.fault.lock() {
            Ok(mut f) => f.take().map_or(Ok(()), Err),
            Err(_) => Err(Error::DeviceLost("fault slot poisoned".into())),
        }
    }

    /// Submits one command buffer, counted in `counters.submits`.
    pub fn submit(&self, commands: wgpu::CommandBuffer) -> Result<wgpu::SubmissionIndex> {
        self.counters.submits.fetch_add(1, Ordering::Relaxed);
        self.catch("queue submit", || self.queue.submit([commands]))
    }

    /// Blocks until all submitted work has finished. In the browser nothing may block:
    /// there it is `Error::Unsupported` (await a `*_async` read instead).
    pub fn wait(&self) -> Result<()> {
        if cfg!(target_arch = "wasm32") {
            return Err(Error::unsupported("Gpu::wait", "the browser cannot block on the GPU: use the *_async reads"));
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// The device's scratch region, at least `bytes` long: the temporary memory of a pass
    /// that one op records as several dispatches (im2col columns, a padded weight copy,
    /// split-K partials). One buffer serves every such pass of every executor on this device:
    /// a pass writes its scratch before it reads it, passes run one after another in
    /// submission order, and nothing outlives its pass. When a pass needs more than the
    /// region holds, a larger region replaces it for later passes (earlier dispatches keep
    /// theirs alive); [`Gpu::reserve_scratch`] up front avoids that.
    pub fn scratch(&self, bytes: u64) -> Result<Arc<GpuBuffer>> {
        let mut region = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        match region.as_ref() {
            Some(r) if r.size() >= bytes => Ok(r.clone()),
            _ => {
                let r = Arc::new(self.storage_buffer("kiln scratch", bytes)?);
                *region = Some(r.clone());
                Ok(r)
            }
        }
    }

    /// Grows the scratch region to at least `bytes` (an executor calls it with the most any
    /// of its passes needs before it records them).
    pub fn reserve_scratch(&self, bytes: u64) -> Result<()> {
        if bytes > 0 {
            self.scratch(bytes)?;
        }
        Ok(())
    }

    /// Creates a storage buffer of `size` bytes (rounded up to 4), counted in
    /// `counters.bytes_live` until it is dropped.
    pub fn storage_buffer(&self, label: &str, size: u64) -> Result<GpuBuffer> {
        let size = size.max(4).next_multiple_of(4);
        if size > self.info.limits.max_buffer_size {
            return Err(Error::unsupported(
                label,
                format!(
                    "buffer of {size} bytes exceeds the adapter's max_buffer_size of {} bytes",
                    self.info.limits.max_buffer_size
                ),
            ));
        }
        let buffer = self.catch(label, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let live = self.counters.bytes_live.fetch_add(size, Ordering::Relaxed) + size;
        self.counters.bytes_peak.fetch_max(live, Ordering::Relaxed);
        Ok(GpuBuffer { buffer, counters: self.counters.clone() })
    }

    /// Copies `size` bytes at `offset` of `buffer` to the host, waiting for the GPU. Counted
    /// in `counters.readbacks`: training code calls this only for metrics, rarely. Native
    /// only in effect (see [`block_on`]): the browser awaits [`Gpu::read_bytes_async`].
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        block_on(self.read_bytes_async(buffer, offset, size))
    }

    /// The one readback path. In the browser the mapping resolves as a promise while the
    /// page keeps running; natively the device is polled to completion first, so the future
    /// is ready when first polled.
    pub async fn read_bytes_async(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let pending = self.start_read(buffer, offset, size)?;
        if !cfg!(target_arch = "wasm32") {
            // Once the queue is idle the mapping has resolved; its callback may still be
            // running on another thread that polled (tests share one device), so the await
            // below can wait for it.
            self.wait()?;
        }
        (&pending).await?;
        self.check()?;
        pending.take()
    }

    /// Copies the range into a fresh staging buffer and asks to map it; the result is
    /// ready once the copy has run (see [`PendingRead`]).
    fn start_read(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<PendingRead> {
        let padded = size.max(4).next_multiple_of(4);
        let staging = self.catch("readback staging buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln readback"),
                size: padded,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
        self.counters.readbacks.fetch_add(1, Ordering::Relaxed);
        self.counters.submits.fetch_add(1, Ordering::Relaxed);
        self.catch("readback copy", || self.queue.submit([encoder.finish()]))?;
        let slot: Arc<Mutex<MapSlot>> = Arc::default();
        let done = slot.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut s) = done.lock() {
                s.result = Some(r.map_err(|e| e.to_string()));
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        });
        Ok(PendingRead { staging, size, slot })
    }
}

/// Runs a readback future to the end: natively by blocking (pollster); the browser cannot
/// block, so there a future that is not ready at once is `Error::Unsupported`, naming the
/// `*_async` twin to await instead. The sync reads (`Tensor::to_f32`, `Executor::read_metrics`,
/// ...) are this over their async twins: one implementation.
pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    return pollster::block_on(future);
    #[cfg(target_arch = "wasm32")]
    {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(Error::unsupported(
                "readback",
                "the browser cannot wait for the GPU: await the *_async read (Tensor::to_f32_async, Executor::read_metrics_async, ...)",
            )),
        }
    }
}

/// What the map callback leaves for the future that waits on it.
#[derive(Default)]
struct MapSlot {
    result: Option<std::result::Result<(), String>>,
    waker: Option<std::task::Waker>,
}

/// A readback whose copy is submitted and whose staging buffer is being mapped. Awaiting
/// `&PendingRead` resolves when the mapping does (the browser's promise, or a native poll);
/// [`PendingRead::take`] then copies the bytes out.
struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    slot: Arc<Mutex<MapSlot>>,
}

impl std::future::Future for &PendingRead {
    type Output = Result<()>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<()>> {
        let Ok(mut s) = self.slot.lock() else {
            return std::task::Poll::Ready(Err(Error::Readback("map slot poisoned".into())));
        };
        match s.result.take() {
            Some(r) => std::task::Poll::Ready(r.map_err(Error::Readback)),
            None => {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}

impl PendingRead {
    /// The mapped bytes, once awaiting `&self` has resolved.
    fn take(self) -> Result<Vec<u8>> {
        let view = self.staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
        let mut bytes = view.to_vec();
        drop(view);
        self.staging.unmap();
        bytes.truncate(self.size as usize);
        Ok(bytes)
    }
}

fn to_error(context: &str, e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { source } => {
            Error::OutOfMemory { context: context.to_string(), message: source.to_string() }
        }
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => {
            Error::Validation { context: context.to_string(), message: description }
        }
    }
}
