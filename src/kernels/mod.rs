//! Ops: each file turns an op's parameters and tensors into [`Dispatch`]es (pipeline +
//! bind group + workgroup counts). Ops check shapes and never submit; the caller records
//! dispatches into one compute pass ([`Gpu::run`] for tests, the graph executor for
//! training).
//!
//! Binding convention (bind group 0): binding 0 is the op's `Params` uniform; then the
//! read-only inputs; outputs last. Entry points of one shader file use disjoint binding
//! numbers for their storage buffers, so each pipeline's derived layout holds exactly
//! what it reads and writes.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod data;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;

pub mod reference;
#[cfg(test)]
mod uniform_layout;

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::runtime::gpu::{Gpu, GpuBuffer};
use crate::runtime::pipelines::Kernel;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

/// One recorded kernel launch, ready to replay every step.
pub struct Dispatch {
    /// The kernel's entry point (labels, timing reports).
    pub name: &'static str,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// The buffers the bind group holds. wgpu keeps them alive for it anyway; holding them
    /// here too keeps their `GpuBuffer` counts (live and peak GPU bytes) true for scratch
    /// tensors whose only owner is the dispatch.
    _bound: Vec<Arc<GpuBuffer>>,
}

impl Dispatch {
    /// `new` for kernels with optional resources: a binding whose tensor is `None` gets a
    /// 16-byte dummy of its own (the kernel reads or writes it only when its params say
    /// so, and WebGPU refuses one buffer bound writable twice, or writable and read-only,
    /// in one dispatch).
    pub fn with_dummies<P: bytemuck::Pod>(
        gpu: &Gpu,
        kernel: &Kernel,
        params: &P,
        tensors: &[(u32, Option<&Tensor>)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        let dummies = tensors
            .iter()
            // four words: a vec4 array binding needs at least one element
            .map(|(_, t)| if t.is_some() { Ok(None) } else { Tensor::empty(gpu, &[4], DType::F32).map(Some) })
            .collect::<Result<Vec<_>>>()?;
        let bound: Vec<(u32, &Tensor)> =
            tensors.iter().zip(&dummies).map(|((b, t), d)| (*b, t.or(d.as_ref()).expect("a tensor or its dummy"))).collect();
        Dispatch::new(gpu, kernel, params, &bound, groups)
    }

    /// Builds a dispatch of `kernel` with `params` at binding 0 and `tensors` at their
    /// binding numbers.
    pub fn new<P: bytemuck::Pod>(
        gpu: &Gpu,
        kernel: &Kernel,
        params: &P,
        tensors: &[(u32, &Tensor)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        let pipeline = gpu.pipeline(kernel)?;
        let context = format!("bind group for {}", kernel.entry);
        let bind_group = gpu.catch(&context, || {
            let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(kernel.entry),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            entries.extend(tensors.iter().map(|(b, t)| wgpu::BindGroupEntry { binding: *b, resource: t.binding() }));
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        let _bound = tensors.iter().map(|(_, t)| t.buffer().clone()).collect();
        Ok(Dispatch { name: kernel.entry, pipeline, bind_group, groups, _bound })
    }

    /// Sets the pipeline and bind group and dispatches the grid into `pass`.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// The workgroup grid (x, y, z) the op computed (within the adapter's
    /// `max_compute_workgroups_per_dimension`; see [`Gpu::grid`]).
    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }
}

impl Gpu {
    /// Records `dispatches` into one compute pass and submits them (one submit).
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.submit(encoder.finish())?;
        Ok(())
    }

    /// Workgroup grid for `groups` workgroups in a 1-D launch, split into a 2-D grid when
    /// it exceeds `max_compute_workgroups_per_dimension`. Kernels linearise the
    /// workgroup id as `wid.x + wid.y * nwg.x` and guard the tail.
    pub fn grid(&self, groups: u64) -> [u32; 3] {
        let max = self.limits().max_compute_workgroups_per_dimension as u64;
        let groups = groups.max(1);
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            let y = groups.div_ceil(max);
            [groups.div_ceil(y) as u32, y as u32, 1]
        }
    }

    /// Grid for a 1-D launch of `n` invocations in workgroups of `wg`.
    pub fn grid_for(&self, n: usize, wg: u32) -> [u32; 3] {
        self.grid((n as u64).div_ceil(wg as u64))
    }
}

/// Checks that `t`, named `what` in `op`'s errors, holds `len` elements of `dtype`: what every
/// op checks of each tensor it binds before it builds a dispatch.
pub(crate) fn check_tensor(op: &str, what: &str, t: &Tensor, len: usize, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::shape(op, format!("{what} must be {dtype:?}, is {:?}", t.dtype())));
    }
    if t.len() != len {
        return Err(Error::shape(op, format!("{what} has shape {:?} ({} elements), expected {len}", t.shape(), t.len())));
    }
    Ok(())
}

/// [`check_tensor`] of an f32 tensor.
pub(crate) fn check_len(op: &str, what: &str, t: &Tensor, len: usize) -> Result<()> {
    check_tensor(op, what, t, len, DType::F32)
}

/// The largest size a geometry (a convolution's or a pool's) takes for any one dimension,
/// stride or padding: 2^24. Every sum and product of the index arithmetic then fits a usize,
/// so a size read from a file cannot wrap (a padding of 2^63 + 2 computing as 2).
pub const MAX_DIM: usize = 1 << 24;

/// `Error::Shape` naming `op` and the field when a geometry's field is above [`MAX_DIM`], or
/// when one of its tensors (`lens`, named) holds more elements than a kernel's u32 index
/// reaches.
pub(crate) fn check_geometry(op: &str, fields: &[(&str, usize)], lens: &[(&str, &[usize])]) -> Result<()> {
    if let Some((field, v)) = fields.iter().find(|(_, v)| *v > MAX_DIM) {
        return Err(Error::shape(op, format!("{field} {v} is above the largest size kiln takes, {MAX_DIM}")));
    }
    for (what, dims) in lens {
        let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= u32::MAX as usize);
        if n.is_none() {
            return Err(Error::shape(op, format!("{what} {dims:?} holds more than {} elements", u32::MAX)));
        }
    }
    Ok(())
}
