//! The recognition service: an HTTP API over the GPU that batches requests from many clients.
//!
//!   cargo run --release --example serve -- --model model.safetensors [--addr 127.0.0.1:8080]
//!
//! Prints `listening on http://ADDR` once the model answers on the GPU, serves until SIGTERM
//! or Ctrl-C, answers every request already accepted, and exits 0. Routes, limits and
//! statuses: `kiln::serve` and the README's "Serve".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kiln::cli::fail;
use kiln::outln;

#[derive(Parser, Debug)]
#[command(about = "Serve a kiln checkpoint over HTTP, batching requests on the GPU")]
struct Args {
    /// Checkpoint written by train_mnist (POST /admin/reload or SIGHUP reads it again)
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0: any free port, printed)
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Most images in one GPU batch
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// Longest a request waits for others to join its batch, milliseconds
    #[arg(long, default_value_t = 2)]
    max_wait_ms: u64,
    /// Most requests admitted and waiting for the GPU; past it, 503 with Retry-After
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// The web page's folder (scripts/build-web.sh builds web/dist), served at /
    #[arg(long)]
    web: Option<PathBuf>,
    /// Largest request body, bytes; past it, 413
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// Most pixels an image may declare (width x height); past it, 413 before decoding
    #[arg(long, default_value_t = 40_000_000)]
    max_pixels: u64,
    /// Longest a request may take, its upload included, milliseconds; past it, 504
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Admin routes need 'Authorization: Bearer TOKEN' (and then answer on any address;
    /// without it, only on loopback)
    #[arg(long)]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let config = kiln::serve::Config {
        model: a.model,
        addr: a.addr,
        max_batch: a.max_batch,
        max_wait: Duration::from_millis(a.max_wait_ms),
        queue: a.queue,
        web: a.web,
        max_body: a.max_body,
        max_pixels: a.max_pixels,
        timeout: Duration::from_millis(a.timeout_ms),
        admin_token: a.admin_token,
    };
    match kiln::serve::run(config, |addr| outln!("listening on http://{addr}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
