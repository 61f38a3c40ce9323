//! Each kernel's `#[repr(C)]` uniform mirrors its shader's `struct Params` by hand. This test
//! reads the WGSL side's layout from naga's layouter and holds the Rust side to it: every WGSL
//! field at the same byte offset in the Rust struct (padding, `_pad*`, may be split
//! differently on the two sides), Rust-only fields named `_pad*`, and the
//! same size in bytes (what the uniform binding is given).

use std::mem::{offset_of, size_of};

use crate::kernels::*;
use crate::runtime::shaders::Shader;

/// (size, [(field, offset)]) of a Rust struct, for the fields named.
macro_rules! layout {
    ($t:ty { $($f:ident),* $(,)? }) => {
        (size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
    };
}

type Layout = (usize, Vec<(&'static str, usize)>);

fn pairs() -> Vec<(Shader, Layout)> {
    vec![
        (Shader::Elementwise, layout!(elementwise::Params { n, c, inner, _pad, alpha, beta, _pad1 })),
        (Shader::Activation, layout!(activation::Params { n, slope, _pad })),
        (Shader::Gemm, layout!(gemm::Params { m, n, k, flags, batch, cin, h, w, cout, r, s, stride, oh, ow, pad, k_chunk, ph, pw, pk, ppad })),
        (Shader::Im2col, layout!(conv::im2col::ColParams { batch, cin, h, w, r, s, stride, pad, oh, ow, rows, cols, rows_out, cout, ph, pw, pk, ppad, relu, _pad })),
        (Shader::ConvDirect, layout!(conv::direct::DirectParams { batch, cin, h, w, cout, oh, ow, flags, pad_y, pad_x, ph, pw, pk, ppad, _pad })),
        (Shader::ConvShared, layout!(conv::shared::ConvSharedParams { batch, cin, h, w, cout, oh, ow, r, s, stride, pad_y, pad_x, band, pitch, count, flags, slices, pool, pool_pad, _pad })),
        (Shader::Pool, layout!(pool::Params { planes, h, w, oh, ow, kh, kw, stride, pad, _pad })),
        (Shader::Softmax, layout!(softmax::Params { rows, classes, scale, smoothing })),
        (Shader::Reduce, layout!(reduce::Params { outer, c, inner, accumulate })),
        (Shader::Dropout, layout!(dropout::Params { n, threshold, scale, seed })),
        (Shader::Optim, layout!(optim::Params { n, momentum, beta1, beta2, eps, weight_decay, _pad })),
        (Shader::Data, layout!(data::Params { batch, rows, cols, count, mean, inv_std, augment, seed })),
        (Shader::Batchnorm, layout!(batchnorm::Params { outer, c, inner, accumulate, momentum, eps, _pad })),
        (Shader::Linear, layout!(linear::SmallParams { rows, inp, out, flags, ph, pw, pk, ppad })),
    ]
}

/// `struct Params` of a shader as naga lays it out: (size, [(member, offset)]).
fn wgsl_layout(shader: Shader) -> (usize, Vec<(String, usize)>) {
    let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| panic!("{}: {e}", shader.file_name()));
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).expect("layout");
    for (handle, ty) in module.types.iter() {
        if ty.name.as_deref() == Some("Params") {
            let naga::TypeInner::Struct { members, .. } = &ty.inner else { panic!("{}: Params is not a struct", shader.file_name()) };
            let size = layouter[handle].size as usize;
            return (size, members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect());
        }
    }
    panic!("{}: no struct Params", shader.file_name())
}

#[test]
fn every_uniform_struct_matches_its_shaders_params() {
    let pairs = pairs();
    for (shader, (rust_size, rust_fields)) in pairs {
        let file = shader.file_name();
        let (wgsl_size, wgsl_fields) = wgsl_layout(shader);
        for (name, offset) in wgsl_fields.iter().filter(|(f, _)| !f.starts_with("_pad")) {
            let rust = rust_fields.iter().find(|(f, _)| f == name).unwrap_or_else(|| panic!("{file}: Params.{name} has no Rust field"));
            assert_eq!(rust.1, *offset, "{file}: Params.{name} is at byte {offset} in WGSL, {} in Rust", rust.1);
        }
        for (name, _) in &rust_fields {
            assert!(name.starts_with("_pad") || wgsl_fields.iter().any(|(f, _)| f == name), "{file}: Rust field {name} is not in the WGSL Params");
        }
        assert_eq!(rust_size, wgsl_size, "{file}: Rust uniform is {rust_size} bytes, WGSL Params {wgsl_size}");
    }
}

#[test]
fn every_shader_with_a_params_struct_is_listed() {
    let listed: Vec<Shader> = pairs().into_iter().map(|(s, _)| s).collect();
    for shader in Shader::ALL {
        let has_params = shader.source().contains("struct Params");
        // gemm_subgroup.wgsl is gemm.wgsl with entry points appended: the same Params.
        let covered = listed.contains(&shader) || shader == Shader::GemmSubgroup;
        assert!(!has_params || covered, "{}: its Params has no layout check here", shader.file_name());
    }
}
