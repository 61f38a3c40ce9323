//! The recognition service behind `examples/serve.rs`: an HTTP API over one GPU worker that
//! batches requests (see ARCHITECTURE.md, "The server").
//!
//! Routes: `POST /v1/classify` (a PNG/JPEG body, or `multipart/form-data` with several:
//! the top 3 per image, prepared as `predict` prepares a file), `POST /v1/read` (fields of
//! digits, read by `kiln::read::Reader` as the `read` example reads them), `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus),
//! `POST /admin/reload` (and SIGHUP), and the web page from `--web` at `/`.
//!
//! Tokio and hyper run the connections, axum routes; the GPU work runs on one thread of its own ([`worker`]),
//! the decoding and preparation of images on tokio's blocking pool. Every refusal is a
//! JSON `{"error": "..."}` with its status: 400 (not an image, undecodable, no ink), 413
//! (body over `--max-body`, image over `--max-pixels` by its header), 503 with
//! `Retry-After` (queue full), 504 (`--timeout-ms` passed).

pub mod loadgen;
mod metrics;
mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use image::GrayImage;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::digits::classify::CLASSES;
use crate::digits::predict;
use crate::{Error, Gpu, Result};
use metrics::Metrics;
use worker::{Job, Loaded};

/// How the service runs: the example's flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// The checkpoint served (and read again by a reload).
    pub model: PathBuf,
    /// Where to listen (port 0: any free port; [`run`] says which).
    pub addr: SocketAddr,
    /// The most images in one GPU batch.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub max_wait: Duration,
    /// The most requests admitted and waiting for the GPU; past it, 503.
    pub queue: usize,
    /// The web page's folder (`web/dist`), served at `/`.
    pub web: Option<PathBuf>,
    /// The largest request body, bytes; past it, 413.
    pub max_body: usize,
    /// The most pixels an image may declare in its header; past it, 413 before decoding.
    pub max_pixels: u64,
    /// The longest a request may take, its body's upload included; past it, 504.
    pub timeout: Duration,
    /// When set, admin routes are open to any address but need `Authorization: Bearer TOKEN`;
    /// when not, they answer only on loopback.
    pub admin_token: Option<String>,
}

impl Config {
    /// Checks the values that no server could run with, naming the flag.
    pub fn check(&self) -> Result<()> {
        let bad = |flag: &str, what: &str| Err(Error::unsupported("serve", format!("{flag}: {what}")));
        if self.max_batch == 0 || self.max_batch > 4096 {
            return bad("--max-batch", "expected 1 to 4096 images");
        }
        if self.queue == 0 {
            return bad("--queue", "expected at least 1 request");
        }
        if self.max_body == 0 {
            return bad("--max-body", "expected at least 1 byte");
        }
        if self.max_pixels == 0 {
            return bad("--max-pixels", "expected at least 1 pixel");
        }
        if self.timeout.is_zero() {
            return bad("--timeout-ms", "expected at least 1 ms");
        }
        if let Some(web) = &self.web {
            if !web.join("index.html").is_file() {
                return Err(Error::file(web, "--web: no index.html in this folder (scripts/build-web.sh builds web/dist)"));
            }
        }
        if self.admin_token.as_deref() == Some("") {
            return bad("--admin-token", "expected a non-empty token");
        }
        Ok(())
    }
}

/// What every handler shares.
struct Shared {
    config: Config,
    jobs: std::sync::mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Set at shutdown: every answer from then on says `Connection: close`.
    closing: AtomicBool,
}

type App = Arc<Shared>;

/// Serves until SIGTERM or Ctrl-C, then stops accepting, answers every request already
/// accepted and returns. The checkpoint is validated and the model run once on the GPU
/// before the port is bound; `on_bound` is told the address listened on.
pub fn run(config: Config, on_bound: impl FnOnce(SocketAddr)) -> Result<()> {
    config.check()?;
    let first = Loaded::read(&config.model)?;
    let metrics = Arc::new(Metrics::default());
    let (jobs, receiver) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (max_batch, max_wait, worker_metrics) = (config.max_batch, config.max_wait, metrics.clone());
    let worker = std::thread::Builder::new()
        .name("kiln-gpu".into())
        .spawn(move || match Gpu::new() {
            Ok(gpu) => worker::run(gpu, first, receiver, max_batch, max_wait, worker_metrics, ready_tx),
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| Error::unsupported("serve", format!("cannot start the GPU worker thread: {e}")))?;
    ready_rx.recv().map_err(|_| Error::unsupported("serve", "the GPU worker stopped while loading the model"))??;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::unsupported("serve", format!("cannot start the async runtime: {e}")))?;
    let shared = Arc::new(Shared { permits: Arc::new(Semaphore::new(config.queue)), config, jobs, metrics, closing: AtomicBool::new(false) });
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(shared.config.addr)
            .await
            .map_err(|e| Error::unsupported("serve", format!("--addr {}: cannot listen: {e}", shared.config.addr)))?;
        let local = listener.local_addr().map_err(|e| Error::unsupported("serve", format!("cannot read the bound address: {e}")))?;
        tokio::spawn(reload_on_hangup(shared.clone()));
        on_bound(local);
        serve_connections(listener, router(shared.clone()), shared.config.timeout, &shared.closing).await;
        Ok(())
    });
    // Every accepted request is answered: drop the runtime's tasks (the SIGHUP listener holds
    // a sender), then the last sender, and let the worker finish what it holds.
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(shared);
    let _ = worker.join();
    served
}

/// How long, after SIGTERM, connections already open are still served (each answer saying
/// `Connection: close`) before the idle ones are closed.
const DRAIN: Duration = Duration::from_millis(500);

/// Accepts connections until SIGTERM or Ctrl-C, each served by hyper's HTTP/1.1 with its
/// headers due within `header_timeout` (a client that dribbles them is disconnected); then
/// stops accepting and drains: for up to [`DRAIN`] the open connections are still served,
/// every answer saying `Connection: close` (`closing` is set), so that a keep-alive client
/// leaves after its answer instead of sending its next request into a connection being
/// closed (a request the server would never read, and the client would count lost). Then
/// each connection finishes the request it is in (idle ones close at once), and it returns
/// when all have.
async fn serve_connections(listener: tokio::net::TcpListener, app: Router, header_timeout: Duration, closing: &AtomicBool) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // out of file descriptors, say: wait instead of spinning
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopped.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    closing.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

fn router(shared: App) -> Router {
    let mut app = Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/read", post(read))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/admin/reload", post(reload));
    app = match &shared.config.web {
        Some(dir) => app.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => app.fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such route (and no web page: start serve with --web web/dist)".into()) }),
    };
    // the body limit is ours (413 with a message), not axum's default 2 MB
    app.layer(middleware::from_fn_with_state(shared.clone(), deadline))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// A JSON error answer.
fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Counts every answer by route and status, with its latency.
async fn count(State(s): State<App>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None if s.config.web.is_some() && req.method() == axum::http::Method::GET => "static".into(),
        None => "unmatched".into(),
    };
    let start = Instant::now();
    let mut response = next.run(req).await;
    s.metrics.request(&route, response.status().as_u16(), start.elapsed());
    if s.closing.load(Ordering::Relaxed) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 504 when a request (its upload included) takes longer than `--timeout-ms`.
async fn deadline(State(s): State<App>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(s.config.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(StatusCode::GATEWAY_TIMEOUT, format!("the request took longer than --timeout-ms {} ms (its upload included)", s.config.timeout.as_millis())),
    }
}

/// The body, at most `--max-body` bytes (413 past it, before reading when the length is declared).
async fn body_bytes(s: &Shared, headers: &HeaderMap, body: Body) -> std::result::Result<Bytes, Response> {
    let too_big = |n: String| refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is {n} bytes, over --max-body {} bytes", s.config.max_body));
    if let Some(n) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if n > s.config.max_body as u64 {
            return Err(too_big(n.to_string()));
        }
    }
    axum::body::to_bytes(body, s.config.max_body).await.map_err(|e| {
        let over = std::iter::successors(std::error::Error::source(&e), |e| e.source()).any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_big("more than that".into())
        } else {
            refuse(StatusCode::BAD_REQUEST, format!("could not read the request body: {e}"))
        }
    })
}

/// The images of a request: the body itself, or each part of a multipart form.
async fn images_of(s: &Shared, req: Request) -> std::result::Result<Vec<(String, Bytes)>, Response> {
    let (parts, body) = req.into_parts();
    let bytes = body_bytes(s, &parts.headers, body).await?;
    let multipart = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("multipart/form-data"));
    if !multipart {
        return Ok(vec![("image".into(), bytes)]);
    }
    let bad = |e: axum::extract::multipart::MultipartError| refuse(StatusCode::BAD_REQUEST, format!("not a readable multipart form: {}", e.body_text()));
    let mut form = axum::extract::Multipart::from_request(Request::from_parts(parts, Body::from(bytes)), &()).await.map_err(|e| e.into_response())?;
    let mut out = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.file_name().or(field.name()).map(str::to_string).unwrap_or_else(|| format!("part {}", out.len()));
        out.push((name, field.bytes().await.map_err(bad)?));
    }
    if out.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "the multipart form holds no image".into()));
    }
    Ok(out)
}

/// Images of at most this many pixels in all (a 128x128 digit) are decoded and prepared on
/// the async thread that received them; larger ones on tokio's blocking pool.
const INLINE_PIXELS: u64 = 128 * 128;

/// A request's images, checked by the sizes their headers declare (a decompression bomb is
/// refused before decoding), admitted to the queue (503 when full) and decoded as `predict`
/// decodes a file (EXIF orientation applied, grayscale), then `prepare`d off the async
/// threads when they are large: their names, the prepared images and the queue place.
async fn admit(
    s: &App,
    req: Request,
    prepare: impl Fn(GrayImage, &Path) -> Result<GrayImage> + Send + 'static,
) -> std::result::Result<(Vec<String>, Vec<GrayImage>, OwnedSemaphorePermit), Response> {
    let images = images_of(s, req).await?;
    let mut pixels = 0u64; // declared, over all the images
    for (name, bytes) in &images {
        match predict::declared_size(bytes) {
            None => return Err(refuse(StatusCode::BAD_REQUEST, format!("{name}: not an image (PNG or JPEG expected; its header does not read as either)"))),
            Some((w, h)) if w as u64 * h as u64 > s.config.max_pixels => {
                return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("{name}: the image declares {w}x{h} = {} pixels, over --max-pixels {}", w as u64 * h as u64, s.config.max_pixels)));
            }
            Some((w, h)) => pixels += w as u64 * h as u64,
        }
    }
    let Ok(permit) = s.permits.clone().try_acquire_owned() else {
        let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, format!("the queue is full ({} requests waiting for the GPU): retry later", s.config.queue));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(r);
    };
    let names: Vec<String> = images.iter().map(|(n, _)| n.clone()).collect();
    let work = move || images.iter().map(|(name, bytes)| predict::load_gray_bytes(bytes, Path::new(name)).and_then(|g| prepare(g, Path::new(name)))).collect::<Result<Vec<_>>>();
    // a small image is prepared here, on the async thread: it costs less than handing it to
    // another thread and back (0.1-0.2 ms for a 28x28 digit); a larger one on the blocking pool
    let prepared = if pixels <= INLINE_PIXELS { Ok(work()) } else { tokio::task::spawn_blocking(work).await };
    match prepared {
        Ok(Ok(d)) => Ok((names, d, permit)),
        Ok(Err(e)) => Err(refuse(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, format!("preparing the images failed: {e}"))),
    }
}

/// Sends `job` to the GPU worker and answers with what `ok` makes of its reply.
async fn ask<T>(s: &App, job: Job, answer: oneshot::Receiver<std::result::Result<T, String>>, ok: impl FnOnce(T) -> Response) -> Response {
    if s.jobs.send(job).is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the GPU worker has stopped".into());
    }
    match answer.await {
        Ok(Ok(t)) => ok(t),
        Ok(Err(e)) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the GPU worker stopped before answering".into()),
    }
}

async fn classify(State(s): State<App>, req: Request) -> Response {
    // the same preparation as predict: decode, grayscale, to_mnist as the model wants it
    let preparation = s.metrics.preparation();
    let (names, digits, permit) = match admit(&s, req, move |g, path| predict::to_mnist_with(&g, path, &preparation)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (reply, answer) = oneshot::channel();
    ask(&s, Job::Classify { images: digits, reply, permit }, answer, |probs| {
        Json(json!({ "results": names.iter().zip(&probs).map(|(n, p)| result_json(n, p)).collect::<Vec<_>>() })).into_response()
    })
    .await
}

/// `POST /v1/read`: each image a field of handwritten digits, read by `kiln::read::Reader`
/// (decoded as `predict` decodes; the reader finds and prepares the digits itself).
async fn read(State(s): State<App>, req: Request) -> Response {
    let (names, fields, permit) = match admit(&s, req, |g, _| Ok(g)).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (reply, answer) = oneshot::channel();
    ask(&s, Job::Read { fields, reply, permit }, answer, |readings| {
        let results: Vec<_> = names
            .iter()
            .zip(&readings)
            .map(|(name, r)| json!({ "name": name, "text": r.text, "marked": r.marked(), "confidence": r.confidence, "accepted": r.accepted, "digits": r.digits }))
            .collect();
        Json(json!({ "results": results })).into_response()
    })
    .await
}

/// One image's answer: the digit and the three most probable classes.
fn result_json(name: &str, p: &[f32; CLASSES]) -> serde_json::Value {
    let mut order: Vec<usize> = (0..CLASSES).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    json!({
        "name": name,
        "digit": order[0],
        "top3": order[..3].iter().map(|&c| json!({ "digit": c, "probability": p[c] })).collect::<Vec<_>>(),
    })
}


async fn readyz(State(s): State<App>) -> Response {
    let (reply, answer) = oneshot::channel();
    if s.jobs.send(Job::Ping { reply }).is_err() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the GPU worker has stopped".into());
    }
    match answer.await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => refuse(StatusCode::SERVICE_UNAVAILABLE, format!("the GPU does not answer: {e}")),
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "the GPU worker stopped before answering".into()),
    }
}

async fn metrics_text(State(s): State<App>) -> Response {
    let depth = s.config.queue - s.permits.available_permits();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(depth, s.config.queue)).into_response()
}

/// Loads `--model` again and serves it if it is good; answers with the model served after.
async fn reload(State(s): State<App>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    match &s.config.admin_token {
        Some(token) => {
            let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return refuse(StatusCode::UNAUTHORIZED, "admin routes need 'Authorization: Bearer TOKEN' with the --admin-token the server was started with".into());
            }
        }
        // to_canonical: on a dual-stack socket ([::]) a local IPv4 client is ::ffff:127.0.0.1
        None if !peer.ip().to_canonical().is_loopback() => {
            return refuse(StatusCode::FORBIDDEN, format!("admin routes answer only on loopback ({peer} is not) unless the server has an --admin-token"));
        }
        None => {}
    }
    match reload_model(&s).await {
        Ok((model, sha256)) => Json(json!({ "reloaded": true, "model": model, "sha256": sha256 })).into_response(),
        Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, format!("reload refused: {e}")),
    }
}

async fn reload_model(s: &Shared) -> std::result::Result<(String, String), String> {
    let (reply, answer) = oneshot::channel();
    s.jobs.send(Job::Reload { path: s.config.model.clone(), reply }).map_err(|_| "the GPU worker has stopped".to_string())?;
    let result = answer.await.map_err(|_| "the GPU worker stopped before answering".to_string())?;
    s.metrics.reload(if result.is_ok() { "ok" } else { "failed" });
    result
}

/// SIGHUP reloads the model as `POST /admin/reload` does; the outcome goes to stderr.
async fn reload_on_hangup(s: App) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        match reload_model(&s).await {
            Ok((model, sha)) => crate::errln!("SIGHUP: now serving {model} ({sha})"),
            Err(e) => crate::errln!("SIGHUP: reload refused: {e}"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    crate::errln!("shutting down: no new connections; answering the requests already accepted");
}
