//! Downloads against real HTTP servers on 127.0.0.1 that each test starts and stops
//! itself (never the public mirrors: tests must not need the internet).
//!
//! The server is a minimal HTTP/1.1 responder on port 0: one request per connection,
//! `Connection: close`, a bounded number of connections, stopped on drop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kiln::data::download::{download_dataset, download_file, fetch, RemoteFile};
use kiln::data::{DataError, Dataset, DatasetKind};
use md5::{Digest, Md5};

const SHARED_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
const T10K_IMAGES_MD5: &str = "9fb629c4189551a2d022fa330f9573f3";
const T10K_LABELS_MD5: &str = "ec29112dd5afa0611ce80d1b7f02629c";

/// What the server does with a request for a path.
#[derive(Clone)]
enum Reply {
    /// 200 with these bytes.
    Body(Vec<u8>),
    /// 200 announcing `Content-Length: claimed`, then only `bytes`, then the connection dies.
    Dies { claimed: usize, bytes: Vec<u8> },
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `routes` (path -> reply; anything else is 404) for at most 64 connections.
    fn start(routes: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    let _ = serve_one(s, &routes);
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/files/", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the blocking accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut s: TcpStream, routes: &HashMap<String, Reply>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    // Read the request head (bounded), so closing never resets unread input.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    match routes.get(&path) {
        Some(Reply::Body(b)) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            s.write_all(b)?;
        }
        Some(Reply::Dies { claimed, bytes }) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            )?;
            s.write_all(bytes)?;
            s.flush()?;
        }
        None => write!(
            s,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    s.flush()
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_download")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir under CARGO_TARGET_TMPDIR");
    dir
}

fn shared_file(name: &str) -> Vec<u8> {
    let p = Path::new(SHARED_MNIST).join(name);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "download tests serve the real MNIST test files; {} is missing ({e})",
            p.display()
        )
    })
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file in `dir` (to check that nothing, not even a `.part`, was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read scratch dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    v.sort();
    v
}

/// A base URL where nothing listens (a port bound, then released).
fn dead_mirror() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}/files/")
}

#[test]
fn downloads_real_files_and_verifies_md5() {
    let images = shared_file("t10k-images-idx3-ubyte.gz");
    let labels = shared_file("t10k-labels-idx1-ubyte.gz");
    assert_eq!(md5_hex(&images), T10K_IMAGES_MD5);
    assert_eq!(md5_hex(&labels), T10K_LABELS_MD5);
    let server = Server::start(HashMap::from([
        (
            "/files/t10k-images-idx3-ubyte.gz".to_string(),
            Reply::Body(images.clone()),
        ),
        (
            "/files/t10k-labels-idx1-ubyte.gz".to_string(),
            Reply::Body(labels.clone()),
        ),
    ]));
    let dir = scratch("real");
    // The first mirror is down: the second one must be used.
    let mirrors = [dead_mirror(), server.base_url()];
    let got = download_dataset(DatasetKind::Mnist10k, &dir, &mirrors, true)
        .expect("download from 127.0.0.1");
    assert_eq!(
        got,
        [
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz")
        ]
    );
    assert_eq!(
        listing(&dir),
        ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    );
    assert_eq!(
        md5_hex(&std::fs::read(&got[0]).expect("read")),
        T10K_IMAGES_MD5
    );
    assert_eq!(
        md5_hex(&std::fs::read(&got[1]).expect("read")),
        T10K_LABELS_MD5
    );
    // Files already present are not fetched again.
    assert!(
        download_dataset(DatasetKind::Mnist10k, &dir, &mirrors, true)
            .expect("no-op")
            .is_empty()
    );
    // And the result loads.
    let ds = Dataset::load(DatasetKind::Mnist10k, Some(&dir)).expect("downloaded mnist10k loads");
    assert_eq!((ds.train.len(), ds.test.len()), (8_000, 2_000));
    drop(server);
}

#[test]
fn corrupted_bytes_are_a_checksum_error_and_leave_nothing() {
    let mut labels = shared_file("t10k-labels-idx1-ubyte.gz");
    let mid = labels.len() / 2;
    labels[mid] ^= 0x40;
    let server = Server::start(HashMap::from([(
        "/files/t10k-labels-idx1-ubyte.gz".to_string(),
        Reply::Body(labels.clone()),
    )]));
    let dir = scratch("corrupt");
    let dest = dir.join("t10k-labels-idx1-ubyte.gz");
    let url = format!("{}t10k-labels-idx1-ubyte.gz", server.base_url());
    match download_file(&url, &dest, T10K_LABELS_MD5, true) {
        Err(DataError::Checksum {
            url: u,
            expected,
            found,
        }) => {
            assert_eq!((u, expected), (url.clone(), T10K_LABELS_MD5.to_string()));
            assert_eq!(found, md5_hex(&labels));
        }
        other => panic!("expected Checksum, got {other:?}"),
    }
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));

    // Through the mirror loop: DownloadFailed wraps the Checksum error.
    let file = RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        md5: T10K_LABELS_MD5,
    };
    match fetch(&file, &dir, &[server.base_url()], true) {
        Err(DataError::DownloadFailed {
            attempts, dest: d, ..
        }) => {
            assert_eq!(d, dest);
            assert_eq!(attempts.len(), 1);
            assert!(
                matches!(attempts[0].error, DataError::Checksum { .. }),
                "{:?}",
                attempts[0].error
            );
        }
        other => panic!("expected DownloadFailed, got {other:?}"),
    }
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn connection_dying_mid_transfer_is_an_error_and_leaves_nothing() {
    let images = shared_file("t10k-images-idx3-ubyte.gz");
    let server = Server::start(HashMap::from([(
        "/files/t10k-images-idx3-ubyte.gz".to_string(),
        Reply::Dies {
            claimed: images.len(),
            bytes: images[..100_000].to_vec(),
        },
    )]));
    let dir = scratch("dies");
    let dest = dir.join("t10k-images-idx3-ubyte.gz");
    let url = format!("{}t10k-images-idx3-ubyte.gz", server.base_url());
    match download_file(&url, &dest, T10K_IMAGES_MD5, true) {
        Err(DataError::Incomplete {
            expected, found, ..
        }) => {
            assert_eq!(expected, images.len() as u64);
            assert!(found <= 100_000, "{found}");
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn all_mirrors_down_names_every_url_and_where_to_put_the_file() {
    let dir = scratch("offline");
    let server = Server::start(HashMap::new()); // answers 404 to everything
    let mirrors = [dead_mirror(), server.base_url()];
    match Dataset::load_or_download(DatasetKind::Mnist, Some(&dir), &mirrors, true) {
        Err(e @ DataError::NotObtained { .. }) => {
            let msg = e.to_string();
            let DataError::NotObtained { download, .. } = &e else {
                unreachable!()
            };
            let DataError::DownloadFailed { attempts, file, .. } = &**download else {
                panic!("expected DownloadFailed inside, got {download:?}")
            };
            // every missing file is named, not only the one whose download failed first
            for f in ["train-images", "train-labels", "t10k-images", "t10k-labels"] {
                assert!(msg.contains(f), "{f} not named: {msg}");
            }
            // how to get them, in the library's words (the programs add their flags: cli::data_error)
            assert!(msg.contains("KILN_DATA") && msg.contains("data::download_dataset") && !msg.contains("--"), "{msg}");
            assert_eq!(file, "train-images-idx3-ubyte.gz");
            assert_eq!(attempts.len(), 2);
            assert!(
                attempts
                    .iter()
                    .all(|a| matches!(a.error, DataError::Http { .. })),
                "{attempts:?}"
            );
            for m in &mirrors {
                assert!(
                    msg.contains(&format!("{m}train-images-idx3-ubyte.gz")),
                    "{msg}"
                );
            }
            assert!(
                msg.contains(&dir.join("train-images-idx3-ubyte.gz").display().to_string()),
                "{msg}"
            );
        }
        other => panic!("expected NotObtained, got {other:?}"),
    }
    assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
}

#[test]
fn a_failed_download_leaves_no_empty_directories() {
    let root = scratch("no-empty-dirs");
    let dir = root.join("data").join("mnist");
    let server = Server::start(HashMap::new());
    let err = Dataset::load_or_download(DatasetKind::Mnist10k, Some(&dir), &[server.base_url()], true).unwrap_err();
    assert!(matches!(err, DataError::NotObtained { .. }), "{err:?}");
    assert!(!root.join("data").exists(), "a failed download created {}", root.join("data").display());
}

#[test]
fn load_or_download_fetches_only_what_is_missing_then_loads() {
    let labels = shared_file("t10k-labels-idx1-ubyte.gz");
    let server = Server::start(HashMap::from([(
        "/files/t10k-labels-idx1-ubyte.gz".to_string(),
        Reply::Body(labels),
    )]));
    let dir = scratch("load_or_download");
    // The images are already there (un-gzipped name); only the labels must be fetched.
    let images =
        kiln::data::read_idx_bytes(&Path::new(SHARED_MNIST).join("t10k-images-idx3-ubyte.gz"))
            .expect("decompress shared MNIST images");
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).expect("write images");
    let ds = Dataset::load_or_download(
        DatasetKind::Mnist10k,
        Some(&dir),
        &[server.base_url()],
        true,
    )
    .expect("load_or_download from 127.0.0.1");
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.dir.clone()),
        (8_000, 2_000, dir.clone())
    );
    assert_eq!(
        listing(&dir),
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte.gz"]
    );
}
