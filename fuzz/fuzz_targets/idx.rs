//! Fuzzes the IDX byte parsers (gzip detection and decoding, image and label headers).
//!
//! Run: `cargo +nightly fuzz run idx fuzz/corpus/idx` from the crate root (seed corpus
//! written by `fuzz/make_corpus.py`). The same body runs as a seeded mutation loop in
//! `tests/layer_digits/data_idx.rs` (`fuzz_corpus_mutations_never_panic`) on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Errors are the expected outcome for most inputs; only a panic is a finding.
    let _ = kiln::data::idx::fuzz_one(data);
});
