//! The load generator behind `examples/loadgen.rs`: clients as tasks on one thread (hyper)
//! send MNIST test digits as PNGs to a server on 127.0.0.1 and check every answer against
//! the digit the same checkpoint gives here, prepared as `predict` prepares a file. Bounded:
//! at most [`MAX_CLIENTS`] clients, [`MAX_SECONDS`] seconds, and `max_requests` requests.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

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

/// What one client saw: its counts (in a [`LoadReport`]) and its latencies, milliseconds.
#[derive(Default)]
struct Tally {
    report: LoadReport,
    ok_ms: Vec<f64>,
    refused_ms: Vec<f64>,
}

impl Tally {
    fn example(&mut self, what: String) {
        if self.report.examples.len() < 5 {
            self.report.examples.push(what);
        }
    }
}

/// What every client shares: where to send, what, until when.
struct Plan {
    addr: String,
    digits: Vec<(Bytes, u8, usize)>,
    clients: usize,
    start: Instant,
    end: Instant,
    interval: Option<Duration>,
    max_requests: u64,
    sent: AtomicU64,
}

/// The longest a request may take before it counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections a request is offered to, at most, when each closes before taking it.
const SEND_ATTEMPTS: usize = 3;

/// Runs the clients until the time or the request count is spent. The clients are tasks on
/// one thread (tokio, hyper's HTTP/1 client, one keep-alive connection each): a thread per
/// client would spend a core of a small machine on the load generator itself, and the server
/// shares that machine.
pub fn run(config: &LoadConfig, digits: &[Digit]) -> Result<LoadReport> {
    config.check()?;
    if digits.is_empty() {
        return Err(Error::unsupported("loadgen", "no digits to send"));
    }
    let done = Arc::new(AtomicBool::new(false));
    let rss = Arc::new(Mutex::new((0u64, 0u64))); // the largest and the last sample, KiB
    let sampler = config.pid.map(|pid| {
        let (rss, done) = (rss.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    let mut r = rss.lock().unwrap();
                    *r = (r.0.max(kib), kib);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::unsupported("loadgen", format!("cannot start the client runtime: {e}")))?;
    let start = Instant::now();
    let plan = Arc::new(Plan {
        addr: config.url.trim_start_matches("http://").to_string(),
        digits: digits.iter().map(|d| (Bytes::from(d.png.clone()), d.label, d.expected)).collect(),
        clients: config.clients,
        start,
        end: start + config.duration,
        interval: config.rate.map(|r| Duration::from_secs_f64(config.clients as f64 / r)),
        max_requests: config.max_requests,
        sent: AtomicU64::new(0),
    });
    let tallies = runtime.block_on(async {
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..config.clients {
            clients.spawn(client(c, plan.clone()));
        }
        let mut tallies = Vec::with_capacity(config.clients);
        while let Some(t) = clients.join_next().await {
            tallies.push(t.map_err(|e| Error::unsupported("loadgen", format!("a client failed: {e}")))?);
        }
        Ok::<_, Error>(tallies)
    })?;
    done.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let (mut r, mut ok, mut refused) = (LoadReport::default(), Vec::new(), Vec::new());
    for t in tallies {
        let c = t.report;
        r.requests += c.requests;
        r.ok += c.ok;
        r.mismatches += c.mismatches;
        r.correct_labels += c.correct_labels;
        r.refused_503 += c.refused_503;
        r.refused_without_retry_after += c.refused_without_retry_after;
        r.other_status += c.other_status;
        r.connect_refused += c.connect_refused;
        r.lost += c.lost;
        r.examples.extend(c.examples.into_iter().take(5 - r.examples.len().min(5)));
        ok.extend(t.ok_ms);
        refused.extend(t.refused_ms);
    }
    (r.rss_max_kib, r.rss_last_kib) = *rss.lock().unwrap();
    r.seconds = start.elapsed().as_secs_f64();
    r.throughput = r.ok as f64 / r.seconds;
    ok.sort_by(f64::total_cmp);
    refused.sort_by(f64::total_cmp);
    (r.p50_ms, r.p99_ms, r.p50_503_ms, r.p99_503_ms) = (percentile(&ok, 0.5), percentile(&ok, 0.99), percentile(&refused, 0.5), percentile(&refused, 0.99));
    Ok(r)
}

/// One client: a connection (opened again when the server closes it), requests one after
/// the other, or on its own schedule at `plan.interval`.
async fn client(c: usize, plan: Arc<Plan>) -> Tally {
    let mut t = Tally::default();
    let mut next = plan.start + plan.interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / plan.clients as f64));
    let mut k = c;
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if let Some(i) = plan.interval {
            tokio::time::sleep_until(next.into()).await;
            next = (next + i).max(Instant::now());
        }
        if Instant::now() >= plan.end || plan.sent.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
            return t;
        }
        let (png, label, expected) = plan.digits[k % plan.digits.len()].clone();
        k += plan.clients;
        let started = Instant::now();
        t.report.requests += 1;
        // a request the connection did not take (the server had closed it) goes again on a
        // new one, at most SEND_ATTEMPTS times in all
        let mut request = Some(Request::post("/v1/classify").header(header::HOST, &plan.addr).header(header::CONTENT_TYPE, "image/png").body(Full::new(png)).expect("a valid request"));
        let mut answer = None;
        for _ in 0..SEND_ATTEMPTS {
            let Some(req) = request.take() else { break };
            let sender = match connection.as_mut().filter(|s| !s.is_closed()) {
                Some(s) => s,
                None => match connect(&plan.addr).await {
                    Ok(s) => connection.insert(s),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    Err(e) => {
                        answer = Some(Err(format!("cannot connect: {e}")));
                        break;
                    }
                },
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, exchange(sender, req)).await {
                Ok(Ok(a)) => answer = Some(Ok(a)),
                Ok(Err(Failed(Some(req)))) => {
                    connection = None;
                    request = Some(req);
                }
                Ok(Err(Failed(None))) | Err(_) => {
                    connection = None;
                    answer = Some(Err("no answer".into()));
                }
            }
        }
        if request.is_some() {
            answer = Some(Err(format!("{SEND_ATTEMPTS} connections closed before taking the request")));
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match answer {
            None => {
                // the server is not there: no busy loop
                t.report.connect_refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(Err(e)) => {
                t.report.lost += 1;
                t.example(e);
            }
            Some(Ok((status, retry_after, body))) => match status {
                200 => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let got = v["results"][0]["digit"].as_u64();
                    if got == Some(expected as u64) {
                        t.report.ok += 1;
                        t.report.correct_labels += u64::from(got == Some(label as u64));
                        t.ok_ms.push(ms);
                    } else {
                        t.report.mismatches += 1;
                        t.example(format!("expected {expected} (label {label}), got {}", String::from_utf8_lossy(&body)));
                    }
                }
                503 => {
                    t.report.refused_503 += 1;
                    t.report.refused_without_retry_after += u64::from(!retry_after);
                    t.refused_ms.push(ms);
                }
                _ => {
                    t.report.other_status += 1;
                    t.example(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
            },
        }
    }
}

/// A new HTTP/1 connection to `addr`, its driver running beside the clients.
async fn connect(addr: &str) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok(sender)
}

/// An exchange that failed, with its request when it was never sent (the connection had
/// closed before taking it): that one may go again on a new connection.
struct Failed(Option<Request<Full<Bytes>>>);

/// Waits for the connection to take a request, sends `req` and reads the whole answer:
/// status, whether it has Retry-After, body.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> std::result::Result<(u16, bool, Bytes), Failed> {
    if sender.ready().await.is_err() {
        return Err(Failed(Some(req)));
    }
    let response = sender.try_send_request(req).await.map_err(|mut e| Failed(e.take_message()))?;
    let (status, retry_after) = (response.status().as_u16(), response.headers().contains_key(header::RETRY_AFTER));
    let body = response.into_body().collect().await.map_err(|_| Failed(None))?.to_bytes();
    Ok((status, retry_after, body))
}
