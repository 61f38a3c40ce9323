//! A load generator for `serve`: N clients send MNIST test digits as PNGs to a server on
//! 127.0.0.1 (nothing else is accepted) for a bounded time and request count, and check every
//! answer against the digit the same checkpoint gives here, prepared as `predict` prepares it.
//!
//!   cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --model M.safetensors \
//!       --data-dir /work/shared/data/mnist [--clients 64] [--seconds 60] [--rate R] [--pid PID]
//!
//! Prints throughput, p50/p99 latency, errors and 503s, and one JSON line (`--json`). Exits 1
//! when an answer was wrong, a request got no answer or an unexpected status (503s are
//! expected under overload; `--allow-refused` says whether connection refusals are too).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kiln::cli::fail;
use kiln::outln;
use kiln::serve::loadgen::{self, LoadConfig};

#[derive(Parser, Debug)]
#[command(about = "Load-test a kiln server on 127.0.0.1 with MNIST test digits")]
struct Args {
    /// The server: http://127.0.0.1:PORT only
    #[arg(long)]
    url: String,
    /// The checkpoint the server serves: each answer is checked against its digit here
    #[arg(long)]
    model: PathBuf,
    /// Folder with MNIST's test split (t10k-*.gz)
    #[arg(long)]
    data_dir: PathBuf,
    /// How many test digits to cycle through
    #[arg(long, default_value_t = 1000)]
    digits: usize,
    /// Concurrent clients (at most 1024)
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to send, seconds (at most 600)
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many requests
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Requests per second over all clients (open loop); default: each client sends again at once
    #[arg(long)]
    rate: Option<f64>,
    /// The server's process id: its resident memory is sampled
    #[arg(long)]
    pid: Option<u32>,
    /// Connection refusals are expected (the server is being stopped): not an error
    #[arg(long)]
    allow_refused: bool,
    /// Also print the report as one JSON line
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    if !(a.seconds > 0.0 && a.seconds <= loadgen::MAX_SECONDS) {
        return fail(format!("--seconds {}: expected more than 0 and at most {}", a.seconds, loadgen::MAX_SECONDS));
    }
    let config = LoadConfig { url: a.url.trim_end_matches('/').to_string(), clients: a.clients, duration: Duration::from_secs_f64(a.seconds), max_requests: a.max_requests, rate: a.rate, pid: a.pid };
    if let Err(e) = config.check() {
        return fail(e);
    }
    let digits = match loadgen::digits(&a.data_dir, a.digits, &a.model) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let r = match loadgen::run(&config, &digits) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    outln!("{} clients, {:.1} s: {} requests, {} answered right ({:.1} /s), {} wrong, {} x 503 (p50 {:.1} ms, p99 {:.1} ms, {} without Retry-After), {} other statuses, {} lost, {} connections refused",
        config.clients, r.seconds, r.requests, r.ok, r.throughput, r.mismatches, r.refused_503, r.p50_503_ms, r.p99_503_ms, r.refused_without_retry_after, r.other_status, r.lost, r.connect_refused);
    outln!("latency of the answers: p50 {:.1} ms, p99 {:.1} ms; labels right: {:.2}%", r.p50_ms, r.p99_ms, 100.0 * r.correct_labels as f64 / r.ok.max(1) as f64);
    if a.pid.is_some() {
        outln!("server RSS: max {} KiB, last {} KiB", r.rss_max_kib, r.rss_last_kib);
    }
    for e in &r.examples {
        outln!("  {e}");
    }
    if a.json {
        outln!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    let bad = r.mismatches + r.other_status + r.lost + r.refused_without_retry_after + if a.allow_refused { 0 } else { r.connect_refused };
    if bad > 0 || r.ok == 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
