//! Every embedded WGSL source parses and validates with naga, and translates through the
//! SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12) back ends for every entry point with its
//! default override constants. No GPU needed: a shader that would only fail on a
//! platform we cannot run here fails here.

use kiln::shaders::Shader;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn check(name: &str, source: &str) -> Result<usize, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: WGSL parse error\n{}", e.emit_to_string_with_path(source, name)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{name}: validation error\n{}", e.emit_to_string_with_path(source, name)))?;
    let constants = naga::back::PipelineConstants::default();
    for ep in &module.entry_points {
        let what = format!("{name}::{}", ep.name);
        let (m, i) = naga::back::pipeline_constants::process_overrides(&module, &info, Some((ep.stage, &ep.name)), &constants)
            .map_err(|e| format!("{what}: override processing: {e}"))?;
        let spv_pipeline = spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
        spv::write_vec(&m, &i, &spv::Options::default(), Some(&spv_pipeline))
            .map_err(|e| format!("{what}: SPIR-V (Vulkan) back end: {e}"))?;
        let msl_pipeline = msl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
            ..Default::default()
        };
        msl::write_string(&m, &i, &msl::Options::default(), &msl_pipeline)
            .map_err(|e| format!("{what}: MSL (Metal) back end: {e}"))?;
        let hlsl_options = hlsl::Options::default();
        let hlsl_pipeline = hlsl::PipelineOptions { entry_point: Some((ep.stage, ep.name.clone())) };
        let mut out = String::new();
        hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
            .write(&m, &i, None)
            .map_err(|e| format!("{what}: HLSL (DX12) back end: {e}"))?;
    }
    Ok(module.entry_points.len())
}

#[test]
fn every_shader_validates_and_translates_for_vulkan_metal_dx12() {
    let mut failures = Vec::new();
    for shader in Shader::ALL {
        match check(shader.file_name(), shader.source()) {
            Ok(n) => assert!(n > 0, "{} has no entry points", shader.file_name()),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_shader_fails_with_its_name_and_line() {
    let broken = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = undefined_thing;\n}\n";
    let err = check("broken.wgsl", broken).expect_err("a broken shader must not validate");
    assert!(err.contains("broken.wgsl:3"), "error should name the file and line 3:\n{err}");
}

#[test]
fn uses_subgroups_names_exactly_the_shaders_that_call_subgroup_builtins() {
    for shader in Shader::ALL {
        let calls = shader.source().contains("subgroup");
        assert_eq!(shader.uses_subgroups(), calls, "{}", shader.file_name());
    }
}

/// `Gpu::compile_every_shader` (what the web page's test runs in the browser, on its own
/// WGSL compiler) on this device: every shader compiles, and only the subgroup ones may be
/// skipped, where the device has no subgroups.
#[test]
fn every_shader_compiles_on_this_device() {
    let gpu = kiln::testing::gpu();
    let report = pollster::block_on(gpu.compile_every_shader());
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert_eq!(report.checked.len() + report.skipped.len(), Shader::ALL.len(), "{report:?}");
    let subgroups = gpu.device.features().contains(wgpu::Features::SUBGROUP);
    for s in Shader::ALL {
        assert_eq!(report.skipped.contains(&s.file_name()), s.uses_subgroups() && !subgroups, "{}", s.file_name());
    }
}

/// Every file under shaders/ is part of some module, and a joined module's lines map back to
/// the file and line they came from.
#[test]
fn every_wgsl_file_is_in_a_module_and_joined_lines_map_back() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(Shader::ALL.iter().any(|s| s.files().iter().any(|(f, _)| *f == name)), "shaders/{name} is in no Shader's files");
        }
    }
    for shader in Shader::ALL {
        let source = shader.source();
        assert_eq!(source, shader.files().iter().map(|(_, t)| *t).collect::<String>(), "{}", shader.file_name());
        let lines: Vec<&str> = source.lines().collect();
        let mut at = 1;
        for (file, text) in shader.files() {
            for (i, line) in text.lines().enumerate() {
                assert_eq!(shader.locate(at), (*file, i as u32 + 1), "{} line {at}", shader.file_name());
                assert_eq!(lines[at as usize - 1], line);
                at += 1;
            }
        }
    }
}
