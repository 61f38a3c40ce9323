//! The load generator behind `examples/loadgen.rs`: clients on threads (ureq, blocking)
//! send MNIST test digits as PNGs to a server on 127.0.0.1 and check every answer against
//! the digit the same checkpoint gives here, prepared as `predict` prepares a file. Bounded:
//! at most [`MAX_CLIENTS`] clients, [`MAX_SECONDS`] seconds, and `max_requests` requests.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::digits::classify::Classifier;
use crate::digits::data::mnist::Split;
use crate::digits::predict;
use crate::{Error, Gpu, Result};

/// The most clients one run may start.
pub const MAX_CLIENTS: usize = 1024;
/// The longest one run may last, seconds.
pub const MAX_SECONDS: f64 = 600.0;

/// What to send, to where, how long.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `http://127.0.0.1:PORT`: nothing else is accepted.
    pub url: String,
    /// Concurrent clients, each a thread with its own connection.
    pub clients: usize,
    /// How long to send.
    pub duration: Duration,
    /// Stop after this many requests in all.
    pub max_requests: u64,
    /// Requests per second over all clients (open loop, each client on its own schedule);
    /// `None`: each client sends its next request as soon as it has the last answer.
    pub rate: Option<f64>,
    /// The server's process, whose resident memory is sampled every 200 ms.
    pub pid: Option<u32>,
}

impl LoadConfig {
    /// Refuses a target that is not this machine's loopback, and unbounded runs.
    pub fn check(&self) -> Result<()> {
        let bad = |flag: &str, what: String| Err(Error::unsupported("loadgen", format!("{flag}: {what}")));
        let rest = self.url.strip_prefix("http://127.0.0.1:").unwrap_or("");
        if rest.is_empty() || rest.parse::<u16>().is_err() {
            return bad("--url", format!("'{}': only http://127.0.0.1:PORT is allowed (a load test targets this machine only)", self.url));
        }
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return bad("--clients", format!("expected 1 to {MAX_CLIENTS}"));
        }
        if !(self.duration.as_secs_f64() > 0.0 && self.duration.as_secs_f64() <= MAX_SECONDS) {
            return bad("--seconds", format!("expected more than 0 and at most {MAX_SECONDS}"));
        }
        if self.max_requests == 0 {
            return bad("--max-requests", "expected at least 1".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad("--rate", "expected a positive number of requests per second".into());
        }
        Ok(())
    }
}

/// A digit to send: its PNG, its label, and the digit the checkpoint gives it here.
pub struct Digit {
    /// The PNG file's bytes.
    pub png: Vec<u8>,
    /// MNIST's label.
    pub label: u8,
    /// The class the checkpoint gives the prepared image (the served answer must equal it).
    pub expected: usize,
}

/// The first `n` digits of the MNIST test split in `data_dir` as PNGs, each classified here
/// with `model` after the same preparation as `predict`'s.
pub fn digits(data_dir: &Path, n: usize, model: &Path) -> Result<Vec<Digit>> {
    let find = |name: &str| crate::digits::data::mnist::find_file(data_dir, name).ok_or_else(|| Error::file(data_dir, format!("--data-dir: no {name} (MNIST's test split) here")));
    let split = Split::read(&find("t10k-images-idx3-ubyte.gz")?, &find("t10k-labels-idx1-ubyte.gz")?, 9).map_err(|e| Error::file(data_dir, e.to_string()))?;
    let n = n.min(split.len());
    let gpu = Gpu::new()?;
    let mut classifier = Classifier::load(&gpu, model)?;
    let preparation = predict::Preparation::of(classifier.checkpoint());
    let mut pngs = Vec::with_capacity(n);
    let mut prepared = Vec::with_capacity(n);
    for i in 0..n {
        let img = image::GrayImage::from_raw(28, 28, split.images.image(i).expect("i < len").to_vec()).expect("28x28");
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).map_err(|e| Error::unsupported("loadgen", format!("encoding a PNG: {e}")))?;
        let name = format!("test digit {i}");
        prepared.push(predict::to_mnist_with(&predict::load_gray_bytes(&png, Path::new(&name))?, Path::new(&name), &preparation)?);
        pngs.push(png);
    }
    let probs = classifier.classify(&prepared)?;
    Ok(pngs
        .into_iter()
        .zip(probs)
        .enumerate()
        .map(|(i, (png, p))| Digit { png, label: split.labels[i], expected: (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).expect("10 classes") })
        .collect())
}

/// What a run measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: u64,
    /// Answered 200 with the expected digit.
    pub ok: u64,
    /// Answered 200 with another digit than this machine's classification (must be 0).
    pub mismatches: u64,
    /// Of the 200s, how many name the MNIST label.
    pub correct_labels: u64,
    /// Answered 503 (queue full), each with Retry-After.
    pub refused_503: u64,
    /// 503s without a Retry-After header (must be 0).
    pub refused_without_retry_after: u64,
    /// Other statuses.
    pub other_status: u64,
    /// Connections the server refused (it was not listening: before start, after shutdown).
    pub connect_refused: u64,
    /// Requests sent on an open connection that got no answer (lost).
    pub lost: u64,
    /// Seconds the run lasted.
    pub seconds: f64,
    /// 200s per second.
    pub throughput: f64,
    /// Latency of the 200s, milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Latency of the 503s, milliseconds (how fast a refusal comes).
    pub p50_503_ms: f64,
    /// See `p50_503_ms`.
    pub p99_503_ms: f64,
    /// The server's resident memory, KiB: the largest and the last sample.
    pub rss_max_kib: u64,
    /// See `rss_max_kib`.
    pub rss_last_kib: u64,
    /// The first few unexpected answers, for the reader.
    pub examples: Vec<String>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs the clients until the time or the request count is spent.
pub fn run(config: &LoadConfig, digits: &[Digit]) -> Result<LoadReport> {
    config.check()?;
    if digits.is_empty() {
        return Err(Error::unsupported("loadgen", "no digits to send"));
    }
    let url = format!("{}/v1/classify", config.url);
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let report = Mutex::new(LoadReport::default());
    let (lat_ok, lat_503) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + config.duration;
    std::thread::scope(|s| {
        if let Some(pid) = config.pid {
            let (report, done) = (&report, &done);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        let mut r = report.lock().unwrap();
                        r.rss_max_kib = r.rss_max_kib.max(kib);
                        r.rss_last_kib = kib;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        let clients: Vec<_> = (0..config.clients)
            .map(|c| {
                let (url, sent, report, lat_ok, lat_503) = (&url, &sent, &report, &lat_ok, &lat_503);
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
                    let interval = config.rate.map(|r| Duration::from_secs_f64(config.clients as f64 / r));
                    let mut next = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / config.clients as f64));
                    let mut k = c;
                    loop {
                        if let Some(i) = interval {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            next = (next + i).max(Instant::now());
                        }
                        if Instant::now() >= end || sent.fetch_add(1, Ordering::Relaxed) >= config.max_requests {
                            return;
                        }
                        let digit = &digits[k % digits.len()];
                        k += config.clients;
                        let t = Instant::now();
                        let answer = agent.post(url).header("content-type", "image/png").send(&digit.png[..]);
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let mut r = report.lock().unwrap();
                        r.requests += 1;
                        match answer {
                            Ok(mut resp) => {
                                let status = resp.status().as_u16();
                                let retry = resp.headers().contains_key("retry-after");
                                let body = resp.body_mut().read_to_string().unwrap_or_default();
                                match status {
                                    200 => {
                                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                                        let got = v["results"][0]["digit"].as_u64();
                                        if got == Some(digit.expected as u64) {
                                            r.ok += 1;
                                            r.correct_labels += u64::from(got == Some(digit.label as u64));
                                            lat_ok.lock().unwrap().push(ms);
                                        } else {
                                            r.mismatches += 1;
                                            if r.examples.len() < 5 {
                                                r.examples.push(format!("expected {} (label {}), got {body}", digit.expected, digit.label));
                                            }
                                        }
                                    }
                                    503 => {
                                        r.refused_503 += 1;
                                        r.refused_without_retry_after += u64::from(!retry);
                                        lat_503.lock().unwrap().push(ms);
                                    }
                                    _ => {
                                        r.other_status += 1;
                                        if r.examples.len() < 5 {
                                            r.examples.push(format!("{status}: {body}"));
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                let refused = matches!(&e, ureq::Error::ConnectionFailed) || matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
                                if refused {
                                    r.connect_refused += 1;
                                    drop(r);
                                    std::thread::sleep(Duration::from_millis(50)); // the server is not there: no busy loop
                                } else {
                                    r.lost += 1;
                                    if r.examples.len() < 5 {
                                        r.examples.push(format!("no answer: {e}"));
                                    }
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            let _ = c.join();
        }
        done.store(true, Ordering::Relaxed);
    });
    let mut r = report.into_inner().unwrap();
    r.seconds = start.elapsed().as_secs_f64();
    r.throughput = r.ok as f64 / r.seconds;
    let mut ok = lat_ok.into_inner().unwrap();
    ok.sort_by(f64::total_cmp);
    let mut refused = lat_503.into_inner().unwrap();
    refused.sort_by(f64::total_cmp);
    (r.p50_ms, r.p99_ms, r.p50_503_ms, r.p99_503_ms) = (percentile(&ok, 0.5), percentile(&ok, 0.99), percentile(&refused, 0.5), percentile(&refused, 0.99));
    Ok(r)
}
