//! The native side of scripts/test-web.sh's comparison: for each case the page recorded (the
//! canvas's RGBA pixels, the 28x28 digit the wasm build prepared from them, and the
//! probabilities the wasm build computed on WebGPU), prepares the same pixels natively (must
//! be the same bytes: one implementation, `kiln::predict`) and classifies that digit with
//! the same checkpoint on the native GPU (must agree within `WEB_VS_NATIVE`, the
//! tolerance table in ARCHITECTURE.md). For each number the page recorded (the "write a
//! number" canvas's pixels and the page's reading), reads the same pixels natively with
//! `kiln::read::Reader`: the same digits in the same boxes, probabilities within `WEB_VS_NATIVE`.
//!
//!   cargo run --release -p kiln-web --bin web_reference -- web/model/cnn.safetensors target/web-cases.json

#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

use std::process::ExitCode;

use kiln::checkpoint::Checkpoint;
use kiln::{Classifier, Gpu};

/// A native program: nothing to do in a wasm build of the workspace.
#[cfg(target_arch = "wasm32")]
fn main() {}

/// Probabilities, browser (WebGPU) vs native: `|web - native| <= abs + rel * |native|`.
/// Both are f32 GPU runs of the same WGSL, but the adapters differ and so may the GEMM/conv
/// variants `GemmConfig::default_for` picks: the sums may run in another order. Measured
/// 2026-11-26, SwiftShader (Chromium 156) vs lavapipe, the same variants: at most 3.7e-9.
const WEB_VS_NATIVE: (f32, f32) = (1e-5, 1e-4);

#[cfg(not(target_arch = "wasm32"))]
fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("web_reference: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, cases] = args.as_slice() else {
        return Err("usage: web_reference CHECKPOINT CASES.json".into());
    };
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cases)?)?;
    let gpu = Gpu::new()?;
    let mut classifier = Classifier::new(&gpu, Checkpoint::load(std::path::Path::new(model))?, 256)?;
    let (abs, rel) = WEB_VS_NATIVE;
    let mut ok = true;
    let mut worst = 0f32;
    let numbers = |v: &serde_json::Value| -> Vec<f64> { v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default() };
    for (i, case) in cases.as_array().ok_or("cases: expected a JSON array")?.iter().enumerate() {
        if case.get("number").is_some() {
            ok &= compare_reading(&gpu, model, case, &mut worst)?;
            continue;
        }
        let web_digit: Vec<u8> = numbers(&case["digit"]).into_iter().map(|v| v as u8).collect();
        let web_probs: Vec<f32> = numbers(&case["probs"]).into_iter().map(|v| v as f32).collect();
        let rgba: Vec<u8> = numbers(&case["rgba"]).into_iter().map(|v| v as u8).collect();
        let (w, h) = (case["width"].as_u64().unwrap_or(0) as u32, case["height"].as_u64().unwrap_or(0) as u32);
        let native_digit = kiln_web::prepare(rgba, w, h, &kiln::predict::Preparation::of(classifier.checkpoint()))?.ok_or("the native preprocessing found no ink")?;
        if native_digit.as_raw() != &web_digit {
            let differ = native_digit.as_raw().iter().zip(&web_digit).filter(|(a, b)| a != b).count();
            println!("case {i}: the 28x28 digit differs from the browser's in {differ} pixels");
            ok = false;
        }
        let native = classifier.classify(&[native_digit])?[0];
        let mut case_ok = web_probs.len() == native.len();
        let mut case_worst = 0f32;
        for (&n, &web) in native.iter().zip(&web_probs) {
            let err = (web - n).abs();
            case_worst = case_worst.max(err);
            if !(err <= abs + rel * n.abs()) {
                case_ok = false;
            }
        }
        worst = worst.max(case_worst);
        println!("case {i}: label {} native argmax {} max |web - native| {case_worst:.2e}{}", case["label"], argmax(&native), if case_ok { "" } else { "  FAIL" });
        ok &= case_ok;
    }
    println!("web vs native probabilities: max abs difference {worst:.2e} (tolerance {abs:e} + {rel:e}*|p|) on {}", gpu.info().summary());
    Ok(ok)
}

/// A number written on the page's canvas: read natively from the same pixels as the page
/// reads them (`kiln_web::number_field`, the same `Reader` options), the reading must be the
/// browser's: the same digits in the same boxes, each digit's probability and the string's
/// confidence within `WEB_VS_NATIVE`, the same unsure marks.
#[cfg(not(target_arch = "wasm32"))]
fn compare_reading(gpu: &Gpu, model: &str, case: &serde_json::Value, worst: &mut f32) -> Result<bool, Box<dyn std::error::Error>> {
    use kiln::read::{Options, Reader};
    let rgba: Vec<u8> = case["rgba"].as_array().ok_or("a number case without rgba")?.iter().map(|v| v.as_u64().unwrap_or(0) as u8).collect();
    let (w, h) = (case["width"].as_u64().unwrap_or(0) as u32, case["height"].as_u64().unwrap_or(0) as u32);
    let reject = case["reject"].as_f64().ok_or("a number case without reject")? as f32;
    let classifier = Classifier::new(gpu, Checkpoint::load(std::path::Path::new(model))?, 256)?;
    let mut native = Reader::new(classifier, Options { reject }).read(&[kiln_web::number_field(rgba, w, h)?])?.remove(0);
    for d in &mut native.digits {
        d.bbox = kiln_web::to_canvas(d.bbox);
    }
    let native = serde_json::to_value(&native)?;
    let web = &case["reading"];
    let (abs, rel) = WEB_VS_NATIVE;
    let close = |a: &serde_json::Value, b: &serde_json::Value, worst: &mut f32| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => {
            let err = (a - b).abs() as f32;
            *worst = worst.max(err);
            err <= abs + rel * b.abs() as f32
        }
        _ => false,
    };
    let (nd, wd) = (native["digits"].as_array().ok_or("native digits")?, web["digits"].as_array().ok_or("a number case's reading without digits")?);
    let mut same = native["text"] == web["text"] && native["accepted"] == web["accepted"] && nd.len() == wd.len() && close(&web["confidence"], &native["confidence"], worst);
    for (n, d) in nd.iter().zip(wd) {
        same &= n["bbox"] == d["bbox"] && n["label"] == d["label"] && n["unsure"] == d["unsure"] && close(&d["top3"][0][1], &n["top3"][0][1], worst);
    }
    println!(
        "number {}: the browser read {} ({:.4}), natively {} ({:.4}){}",
        case["number"], web["text"], web["confidence"].as_f64().unwrap_or(f64::NAN), native["text"], native["confidence"].as_f64().unwrap_or(f64::NAN),
        if same { ", the same boxes" } else { "  FAIL: the readings differ" }
    );
    if !same {
        println!("  browser: {web_digits}\n  native:  {native_digits}", web_digits = web["digits"], native_digits = native["digits"]);
    }
    Ok(same)
}

fn argmax(p: &[f32]) -> usize {
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0)
}
