//! Recognises digits in PNG/JPEG images with a kiln checkpoint, on the GPU.
//!
//!   cargo run --release --example predict -- --model model.safetensors digit.png [...]
//!
//! Prints the digit and the top-3 probabilities per image. Exit code 2 on bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::checkpoint::Checkpoint;
use kiln::graph::{Executor, Mode};
use kiln::ops::gemm::GemmConfig;
use kiln::{DType, Tensor};

#[derive(Parser, Debug)]
#[command(about = "Recognise handwritten digits with a kiln checkpoint")]
struct Args {
    /// Checkpoint written by train_mnist
    #[arg(long)]
    model: PathBuf,
    /// 3x3 median filter on the GPU before cropping (photos with speckle noise)
    #[arg(long)]
    denoise: bool,
    /// Write the 28x28 image the network saw (first image; with several, -N is appended)
    #[arg(long)]
    dump_preprocessed: Option<PathBuf>,
    /// Images to classify
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn denoise(gpu: &kiln::Gpu, img: &image::GrayImage) -> kiln::Result<image::GrayImage> {
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.pixels().map(|p| p[0] as f32).collect();
    let input = Tensor::from_f32(gpu, &[1, h as usize, w as usize], &data)?;
    let out = Tensor::empty(gpu, &[1, h as usize, w as usize], DType::F32)?;
    gpu.run(&[&kiln::data::gpu::median3x3(gpu, &input, &out, h as usize, w as usize)?])?;
    let v = out.to_f32(gpu)?;
    Ok(image::GrayImage::from_fn(w, h, |x, y| image::Luma([v[(y * w + x) as usize] as u8])))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let ck = match Checkpoint::load(&args.model) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let gpu = match kiln::Gpu::new() {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let mut inputs = Vec::new();
    for (i, path) in args.images.iter().enumerate() {
        let prepared = kiln::predict::load_gray(path)
            .and_then(|g| if args.denoise { denoise(&gpu, &g) } else { Ok(g) })
            .and_then(|g| kiln::predict::to_mnist(&g, path));
        let img = match prepared {
            Ok(i) => i,
            Err(e) => return fail(e),
        };
        if let Some(dump) = &args.dump_preprocessed {
            let target = if args.images.len() == 1 { dump.clone() } else { dump.with_extension(format!("{i}.png")) };
            if let Err(e) = img.save(&target) {
                return fail(format!("--dump-preprocessed {}: {e}", target.display()));
            }
        }
        inputs.extend(kiln::predict::normalise(&img, ck.mean, ck.std));
    }
    let run = || -> kiln::Result<Vec<f32>> {
        let model = ck.model.build_inference(args.images.len())?;
        let cfg = GemmConfig::default_for(gpu.info());
        let mut exec = Executor::new(&gpu, &model.graph, Mode::Eval, None, &cfg, None)?;
        exec.write_params(&ck.params)?;
        exec.write_input(&inputs)?;
        exec.run_step(0)?;
        exec.read_node(model.probs)
    };
    let probs = match run() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    for (path, p) in args.images.iter().zip(probs.chunks(10)) {
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top: Vec<String> = order[..3].iter().map(|&c| format!("{c}: {:.1}%", 100.0 * p[c])).collect();
        println!("{}: {}   ({})", path.display(), order[0], top.join(", "));
    }
    ExitCode::SUCCESS
}
