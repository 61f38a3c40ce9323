//! What `GET /metrics` says, in Prometheus' text format (version 0.0.4): requests by route
//! and status, latency by route, batch sizes, GPU time per batch, queue depth, the model.
//! A few counters behind one mutex: every update is a handful of additions.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency and GPU-time buckets, seconds.
const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the batch-size buckets, images.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// A cumulative histogram with fixed buckets.
#[derive(Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (c, &b) in self.counts.iter_mut().zip(bounds) {
            *c += u64::from(v <= b);
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}", self.counts.get(i).copied().unwrap_or(0));
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch_size: Histogram,
    gpu_seconds: Histogram,
    read_seconds: Histogram,
    fields_read: u64,
    /// Name, checkpoint SHA-256, and whether its inputs are deskewed.
    model: (String, String, bool),
    reloads: BTreeMap<&'static str, u64>,
}

/// The service's counters, shared by the handlers and the GPU worker.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A request to `route` answered with `status` after `elapsed`.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.with(|m| {
            *m.requests.entry((route.to_string(), status)).or_default() += 1;
            m.latency.entry(route.to_string()).or_default().observe(SECONDS, elapsed.as_secs_f64());
        });
    }

    /// A batch of `size` images ran on the GPU in `elapsed`.
    pub fn batch(&self, size: usize, elapsed: Duration) {
        self.with(|m| {
            m.batch_size.observe(SIZES, size as f64);
            m.gpu_seconds.observe(SECONDS, elapsed.as_secs_f64());
        });
    }

    /// `fields` fields were read (segmented, their candidates classified) in `elapsed`.
    pub fn read(&self, fields: usize, elapsed: Duration) {
        self.with(|m| {
            m.fields_read += fields as u64;
            m.read_seconds.observe(SECONDS, elapsed.as_secs_f64());
        });
    }

    /// The model now served.
    pub fn set_model(&self, loaded: &super::worker::Loaded) {
        self.with(|m| m.model = (loaded.name.clone(), loaded.sha256.clone(), loaded.checkpoint.deskew));
    }

    /// How the model now served wants its inputs prepared (a request prepared while a
    /// reload swaps models is prepared for the one served when it was admitted).
    pub fn preparation(&self) -> crate::digits::predict::Preparation {
        crate::digits::predict::Preparation { deskew: self.with(|m| m.model.2) }
    }

    /// A reload ended (`ok` or `failed`).
    pub fn reload(&self, outcome: &'static str) {
        self.with(|m| *m.reloads.entry(outcome).or_default() += 1);
    }

    /// The text of `GET /metrics`, with the queue's depth now and its capacity.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        self.with(|m| {
            let mut out = String::new();
            out.push_str("# HELP kiln_requests_total HTTP requests answered, by route and status.\n# TYPE kiln_requests_total counter\n");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(out, "kiln_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
            out.push_str("# HELP kiln_request_duration_seconds Time from the request's arrival to its answer.\n# TYPE kiln_request_duration_seconds histogram\n");
            for (route, h) in &m.latency {
                h.write(&mut out, "kiln_request_duration_seconds", &format!("route=\"{route}\""), SECONDS);
            }
            out.push_str("# HELP kiln_batch_size Images per GPU batch.\n# TYPE kiln_batch_size histogram\n");
            m.batch_size.write(&mut out, "kiln_batch_size", "", SIZES);
            out.push_str("# HELP kiln_gpu_batch_seconds GPU time per batch (upload, run, readback).\n# TYPE kiln_gpu_batch_seconds histogram\n");
            m.gpu_seconds.write(&mut out, "kiln_gpu_batch_seconds", "", SECONDS);
            out.push_str("# HELP kiln_read_seconds Time per /v1/read request in the GPU worker (segmentation and classification).\n# TYPE kiln_read_seconds histogram\n");
            m.read_seconds.write(&mut out, "kiln_read_seconds", "", SECONDS);
            out.push_str("# HELP kiln_fields_read_total Fields read by /v1/read.\n# TYPE kiln_fields_read_total counter\n");
            let _ = writeln!(out, "kiln_fields_read_total {}", m.fields_read);
            out.push_str("# HELP kiln_queue_depth Requests admitted and not yet taken by the GPU worker.\n# TYPE kiln_queue_depth gauge\n");
            let _ = writeln!(out, "kiln_queue_depth {queue_depth}");
            out.push_str("# HELP kiln_queue_capacity The most requests admitted at once (--queue).\n# TYPE kiln_queue_capacity gauge\n");
            let _ = writeln!(out, "kiln_queue_capacity {queue_capacity}");
            out.push_str("# HELP kiln_reloads_total Model reloads, by outcome.\n# TYPE kiln_reloads_total counter\n");
            for (outcome, n) in &m.reloads {
                let _ = writeln!(out, "kiln_reloads_total{{outcome=\"{outcome}\"}} {n}");
            }
            out.push_str("# HELP kiln_model_info The model served: its name, the checkpoint file's SHA-256, and whether its inputs are deskewed.\n# TYPE kiln_model_info gauge\n");
            let _ = writeln!(out, "kiln_model_info{{model=\"{}\",sha256=\"{}\",deskew=\"{}\"}} 1", m.model.0, m.model.1, m.model.2);
            out
        })
    }
}
