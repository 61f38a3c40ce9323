//! The recognition service (`examples/serve.rs`, `kiln::serve`), started on an ephemeral
//! loopback port and spoken to with a real HTTP client (ureq): every route, every refusal
//! with its status and message, the Prometheus text parsed, reloads good and bad, a full
//! queue, slow headers, slow and abandoned uploads, and a graceful shutdown with requests in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

/// A running server; killed when dropped (a test that passed has stopped it itself).
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, flags: &[&str]) -> Server {
        let mut child = Command::new(common::example("serve"))
            .arg("--model")
            .arg(model)
            .args(["--addr", "127.0.0.1:0"])
            .args(flags)
            .env("NODEVICE_SELECT", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("serve printed {line:?}, not its address")).to_string();
        Server { child, url }
    }

    /// SIGTERM, then the exit code and standard error (within 20 s).
    fn stop(mut self) -> (i32, String) {
        signal(&self.child, "TERM");
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "serve still ran 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (self.child.wait().unwrap().code().unwrap_or(-1), err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into()
}

/// Status, body and Retry-After of a request.
fn call(req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, String, Option<String>) {
    let mut r = req.unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap(), retry)
}

fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, String, Option<String>) {
    call(agent().post(url).header("content-type", content_type).send(body))
}

fn get(url: &str) -> (u16, String) {
    let (s, b, _) = call(agent().get(url).call());
    (s, b)
}

/// A multipart form of files, as browsers and curl -F send it.
fn multipart(files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "kiln-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, bytes) in files {
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The first `n` MNIST test digits as PNG files in `dir`, with their labels.
fn digits(dir: &Path, n: usize) -> Vec<(PathBuf, u8)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let split = kiln::data::mnist::Split::read(&data.join("t10k-images-idx3-ubyte.gz"), &data.join("t10k-labels-idx1-ubyte.gz"), 9).unwrap();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("digit-{i}.png"));
            image::GrayImage::from_raw(28, 28, split.images.image(i).unwrap().to_vec()).unwrap().save(&path).unwrap();
            (path, split.labels[i])
        })
        .collect()
}

/// A PNG whose header declares `w` x `h` gray pixels, followed by a few bytes of image data.
fn declared_png(w: u32, h: u32) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// `name{labels} value` lines of the Prometheus text, every one parsed (a line that is
/// neither a comment nor a sample fails the test).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {l:?}"));
            assert!(name.chars().next().unwrap().is_ascii_alphabetic() && name.matches('{').count() == name.matches('}').count(), "bad name in {l:?}");
            (name.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number in {l:?}")))
        })
        .collect()
}

fn sample(all: &[(String, f64)], name: &str) -> f64 {
    all.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or(0.0)
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// predict's lines `PATH: D   (D: P%, D: P%, D: P%)`: path -> the three (digit, percent) text.
fn predict_answers(model: &Path, files: &[PathBuf]) -> Vec<String> {
    let out = Command::new(common::example("predict")).arg("--model").arg(model).args(files).env("NODEVICE_SELECT", "1").output().unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 0, "predict: {stderr}");
    stdout.lines().map(|l| l.split_once("(").unwrap().1.trim_end_matches(')').to_string()).collect()
}

/// The same text from a served answer.
fn served_answer(result: &serde_json::Value) -> String {
    let top: Vec<String> = result["top3"].as_array().unwrap().iter().map(|t| format!("{}: {:.1}%", t["digit"], 100.0 * t["probability"].as_f64().unwrap())).collect();
    top.join(", ")
}

#[test]
fn routes_answers_limits_and_metrics() {
    let dir = common::scratch("serve", "routes");
    let model = common::trained("cnn");
    let files = digits(&dir, 6);
    let server = Server::start(&model, &["--max-body", "300000", "--max-pixels", "4000000"]);
    let u = &server.url;

    assert_eq!(get(&format!("{u}/healthz")), (200, "ok\n".into()));
    assert_eq!(get(&format!("{u}/readyz")), (200, "ready\n".into()));

    // one image per request, then all of them in one multipart form: predict's answers
    let expected = predict_answers(&model, &files.iter().map(|f| f.0.clone()).collect::<Vec<_>>());
    for ((path, _), want) in files.iter().zip(&expected) {
        let (status, body, _) = post(&format!("{u}/v1/classify"), "image/png", &std::fs::read(path).unwrap());
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(&served_answer(&v["results"][0]), want, "{} served {body}", path.display());
    }
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, _)| (p.file_name().unwrap().to_str().unwrap(), std::fs::read(p).unwrap())).collect();
    let (ct, form) = multipart(&named);
    let (status, body, _) = post(&format!("{u}/v1/classify"), &ct, &form);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), files.len());
    for ((r, (name, _)), want) in results.iter().zip(&named).zip(&expected) {
        assert_eq!(r["name"], *name);
        assert_eq!(&served_answer(r), want);
    }

    // refusals: status and the reason in words
    let png = std::fs::read(&files[0].0).unwrap();
    let blank = {
        let mut b = Vec::new();
        image::GrayImage::new(40, 40).write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
        b
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("text", b"hello, not an image".to_vec(), 400, "not an image"),
        ("truncated PNG", png[..png.len() / 2].to_vec(), 400, "cannot read the image"),
        ("blank PNG", blank, 400, "no ink found"),
        ("decompression bomb", declared_png(100_000, 100_000), 413, "declares 100000x100000 = 10000000000 pixels, over --max-pixels 4000000"),
    ];
    for (what, body, want, words) in &cases {
        let (status, text, _) = post(&format!("{u}/v1/classify"), "image/png", body);
        assert_eq!(status, *want, "{what}: {text}");
        let msg: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert!(msg["error"].as_str().unwrap().contains(words), "{what}: {text}");
    }
    // over --max-body: refused by its declared length before the upload (a client that
    // sends it anyway meets a closed connection, so these speak HTTP by hand), or, sent in
    // chunks with no length, as soon as the limit is passed
    let answer = raw(u, "Content-Length: 300001\r\n", &[]);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("the body is 300001 bytes, over --max-body 300000 bytes"), "{answer}");
    let mut chunked = Vec::new();
    for _ in 0..5 {
        write!(chunked, "{:x}\r\n", 65536).unwrap();
        chunked.extend_from_slice(&[0u8; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(u, "Transfer-Encoding: chunked\r\n", &chunked);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("over --max-body 300000 bytes"), "{answer}");
    // a field of the six digits side by side (white ink on black, as MNIST's): the reading
    // the `read` example gives for the same file
    let mut row = image::GrayImage::new(6 * 34 + 10, 40);
    for (i, (path, _)) in files.iter().enumerate() {
        image::imageops::overlay(&mut row, &image::open(path).unwrap().to_luma8(), 5 + 34 * i as i64, 6);
    }
    let field = dir.join("field.png");
    row.save(&field).unwrap();
    let out = Command::new(common::example("read")).args(["--model", model.to_str().unwrap(), field.to_str().unwrap()]).output().unwrap();
    let (code, stdout, err) = common::text(&out);
    assert_eq!(code, 0, "{err}");
    let (status, text, _) = post(&format!("{u}/v1/read"), "image/png", &std::fs::read(&field).unwrap());
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let read = v["results"][0]["text"].as_str().unwrap();
    assert!(stdout.contains(&format!(": {read} (")), "served {read}, read printed {stdout}");
    assert_eq!(v["results"][0]["digits"].as_array().unwrap().len(), read.len(), "{text}");
    let (status, text, _) = post(&format!("{u}/v1/read"), "image/png", b"hello, not an image");
    assert_eq!(status, 400, "{text}");
    let (status, text) = get(&format!("{u}/nowhere"));
    assert_eq!(status, 404, "{text}");

    let (status, text) = get(&format!("{u}/metrics"));
    assert_eq!(status, 200);
    let m = samples(&text);
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/classify",status="200"}"#), 7.0, "{text}");
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/classify",status="400"}"#), 3.0, "{text}");
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/classify",status="413"}"#), 3.0, "{text}");
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/read",status="200"}"#), 1.0, "{text}");
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/read",status="400"}"#), 1.0, "{text}");
    assert_eq!(sample(&m, "kiln_fields_read_total"), 1.0, "{text}");
    assert_eq!(sample(&m, r#"kiln_request_duration_seconds_count{route="/v1/classify"}"#), 13.0, "{text}");
    // 6 single images and one batch of 6 (a batch may also gather several requests)
    assert_eq!(sample(&m, "kiln_batch_size_sum"), 12.0, "{text}");
    assert!(sample(&m, "kiln_gpu_batch_seconds_count") >= 2.0, "{text}");
    assert_eq!(sample(&m, "kiln_queue_depth"), 0.0, "{text}");
    assert_eq!(sample(&m, &format!(r#"kiln_model_info{{model="cnn",sha256="{}",deskew="false"}}"#, sha256(&model))), 1.0, "{text}");
    let (code, _) = server.stop();
    assert_eq!(code, 0);
}

#[test]
fn reload_good_and_bad_and_admin_token() {
    let dir = common::scratch("serve", "reload");
    let (cnn, mlp) = (common::trained("cnn"), common::trained("mlp"));
    let model = dir.join("served.safetensors");
    std::fs::copy(&cnn, &model).unwrap();
    let png = std::fs::read(&digits(&dir, 1)[0].0).unwrap();
    let server = Server::start(&model, &["--admin-token", "s3cret"]);
    let u = &server.url;
    let reload = |token: Option<&str>| {
        let req = agent().post(&format!("{u}/admin/reload"));
        let req = match token {
            Some(t) => req.header("authorization", &format!("Bearer {t}")),
            None => req,
        };
        call(req.send_empty())
    };
    let (status, text, _) = reload(None);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("--admin-token"), "{text}");
    assert_eq!(reload(Some("wrong")).0, 401);

    // a corrupt file: refused with the reason, the old model still answers
    std::fs::write(&model, b"not a checkpoint at all").unwrap();
    let (status, text, _) = reload(Some("s3cret"));
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("not a kiln checkpoint") && text.contains(&format!("still serving cnn ({})", sha256(&cnn))), "{text}");
    assert_eq!(post(&format!("{u}/v1/classify"), "image/png", &png).0, 200);
    // SIGHUP with the same corrupt file: the same refusal, on stderr, and still serving
    signal(&server.child, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(post(&format!("{u}/v1/classify"), "image/png", &png).0, 200);

    // a good file of another model: served from the next request on
    std::fs::copy(&mlp, &model).unwrap();
    let (status, text, _) = reload(Some("s3cret"));
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["model"].as_str().unwrap(), v["sha256"].as_str().unwrap()), ("mlp", sha256(&mlp).as_str()));
    let (status, text, _) = post(&format!("{u}/v1/classify"), "image/png", &png);
    assert_eq!(status, 200, "{text}");
    let m = samples(&get(&format!("{u}/metrics")).1);
    assert_eq!(sample(&m, &format!(r#"kiln_model_info{{model="mlp",sha256="{}",deskew="false"}}"#, sha256(&mlp))), 1.0);
    assert_eq!(sample(&m, r#"kiln_reloads_total{outcome="failed"}"#), 2.0);
    assert_eq!(sample(&m, r#"kiln_reloads_total{outcome="ok"}"#), 1.0);
    let (code, stderr) = server.stop();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("SIGHUP: reload refused") && stderr.contains("not a kiln checkpoint"), "{stderr}");
}

/// A POST to /v1/classify with these extra header lines and body, spoken by hand; the
/// answer as text. Writes may fail once the server has answered and closed.
fn raw(url: &str, headers: &str, body: &[u8]) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /v1/classify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nConnection: close\r\n{headers}\r\n").unwrap();
    let _ = s.write_all(body);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Opens a connection, sends the headers of a `len`-byte upload and `sent` bytes of it.
fn partial_upload(url: &str, len: usize, sent: usize) -> std::net::TcpStream {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "POST /v1/classify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {len}\r\n\r\n").unwrap();
    s.write_all(&vec![0x89; sent]).unwrap();
    s
}

#[test]
fn full_queue_slow_and_abandoned_uploads() {
    let dir = common::scratch("serve", "queue");
    let model = common::trained("cnn");
    let png = std::fs::read(&digits(&dir, 1)[0].0).unwrap();
    let server = Server::start(&model, &["--queue", "1", "--max-batch", "1", "--timeout-ms", "1500"]);
    let u = server.url.clone();

    // slow-loris: an upload that never finishes is answered 504 after --timeout-ms,
    // and meanwhile others are served (it holds no place in the queue nor the GPU)
    let start = Instant::now();
    let mut slow = partial_upload(&u, 10_000, 10);
    let abandoned = partial_upload(&u, 10_000, 100);
    drop(abandoned); // a client gone mid-upload
    assert_eq!(post(&format!("{u}/v1/classify"), "image/png", &png).0, 200);
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    assert!(answer.contains("longer than --timeout-ms 1500 ms"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(8), "the 504 came after {:?}", start.elapsed());
    // headers that never end: the connection is closed after --timeout-ms, not held
    let start = Instant::now();
    let mut dribble = std::net::TcpStream::connect(u.strip_prefix("http://").unwrap()).unwrap();
    dribble.write_all(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    dribble.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let closed = dribble.read_to_end(&mut rest);
    assert!(closed.is_ok() && start.elapsed() < Duration::from_secs(8), "headers that never end: {closed:?} after {:?}", start.elapsed());

    // 24 clients at once on a queue of one: some are refused at once with 503 and
    // Retry-After, every other is answered
    let answers: Vec<(u16, String, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24).map(|_| s.spawn(|| post(&format!("{u}/v1/classify"), "image/png", &png))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(!refused.is_empty(), "no 503 from 24 concurrent requests on a queue of 1");
    for (status, body, retry) in &answers {
        match status {
            200 => {}
            503 => {
                assert_eq!(retry.as_deref(), Some("1"), "{body}");
                assert!(body.contains("the queue is full"), "{body}");
            }
            _ => panic!("{status}: {body}"),
        }
    }
    let m = samples(&get(&format!("{u}/metrics")).1);
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/classify",status="503"}"#), refused.len() as f64);
    assert_eq!(sample(&m, r#"kiln_requests_total{route="/v1/classify",status="504"}"#), 1.0);
    assert_eq!(server.stop().0, 0);
}

#[test]
fn graceful_shutdown_answers_requests_in_flight() {
    let dir = common::scratch("serve", "shutdown");
    let model = common::trained("cnn");
    let png = std::fs::read(&digits(&dir, 1)[0].0).unwrap();
    // requests wait up to 400 ms for a batch: SIGTERM arrives while they are queued
    let server = Server::start(&model, &["--max-wait-ms", "400", "--max-batch", "64"]);
    let u = server.url.clone();
    let (answers, (code, stderr)) = std::thread::scope(|s| {
        // each answer, and what it says of its connection
        let ask = || {
            let mut r = agent().post(&format!("{u}/v1/classify")).header("content-type", "image/png").send(&png[..]).unwrap();
            let connection = r.headers().get("connection").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap(), connection)
        };
        let handles: Vec<_> = (0..8).map(|_| s.spawn(ask)).collect();
        std::thread::sleep(Duration::from_millis(150));
        let stopped = server.stop();
        (handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>(), stopped)
    });
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    // answered after SIGTERM, each tells its keep-alive client to go (the drain)
    for (status, body, connection) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(connection.as_deref(), Some("close"), "{body}");
    }
}

/// The load test's short version: a few clients for a few seconds, every answer checked
/// against the checkpoint's digit by loadgen itself (exit 0 only with no wrong answer, no
/// error status, nothing lost); and loadgen targets 127.0.0.1 only.
#[test]
fn loadgen_short_run_and_loopback_only() {
    let model = common::trained("cnn");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    let loadgen = |url: &str| {
        let out = Command::new(common::example("loadgen"))
            .args(["--url", url, "--clients", "4", "--seconds", "2", "--digits", "50", "--json"])
            .arg("--model")
            .arg(&model)
            .arg("--data-dir")
            .arg(&data)
            .env("NODEVICE_SELECT", "1")
            .output()
            .unwrap();
        common::text(&out)
    };
    for url in ["http://example.com:80", "http://10.0.0.1:8080", "https://127.0.0.1:8080", "http://127.0.0.1.evil:80"] {
        let (code, _, stderr) = loadgen(url);
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(stderr.contains("only http://127.0.0.1:PORT is allowed"), "{url}: {stderr}");
    }
    let server = Server::start(&model, &[]);
    let (code, stdout, stderr) = loadgen(&server.url);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(report["ok"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(report["ok"], report["requests"], "{stdout}");
    assert!(report["throughput"].as_f64().unwrap() > 0.0 && report["p99_ms"].as_f64().unwrap() >= report["p50_ms"].as_f64().unwrap(), "{stdout}");
    assert_eq!(server.stop().0, 0);
}
