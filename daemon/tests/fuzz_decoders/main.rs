//! Fuzzing of every decoder that reads bytes agentd did not just produce itself: log segment files
//! (frames, recovery, the reader), log record payloads (`decode_record`), and the JSON that clients
//! send (`parse_json`, dataset `validate_record` / `validate_meta`).
//!
//! Each target has two halves:
//! - a **corpus** under `fuzz/corpus/<target>/`, replayed on every run. A file's name starts with
//!   the outcome it must have (`ok-3.`, `corrupt.`, `err.tags[1].` ...), so the replay is a
//!   deterministic regression suite, and a crashing input found later is kept by dropping it in.
//! - **properties** run by proptest on arbitrary bytes and on mutations of valid inputs. The
//!   default case counts keep this whole target well under a minute; `AGENTD_FUZZ_CASES=n` runs `n`
//!   cases per property, and `AGENTD_FUZZ_SEED=random` draws new cases instead of the fixed
//!   seed's (see `fuzz/README.md`). Failures proptest finds are persisted to
//!   `fuzz/proptest-regressions.txt` and replayed first on later runs.
//!
//! What every target checks: no panic, no allocation sized by an untrusted length field (a
//! counting global allocator records the largest single allocation of the test thread), and
//! errors that are errors: a damaged log either recovers exactly a prefix of what was written or
//! is refused with `LogError::Corrupt`; a JSON refusal names the field.
//!
//! `AGENTD_FUZZ_WRITE_CORPUS=1` (re)creates missing seed files of the corpus from the builders in
//! this file; it never overwrites a file.
//!
//! One test binary, one module per target: `segments` (log segment files), `records` (record
//! payloads), `json` (JSON from clients); this file holds what they share (the allocation
//! tracker, the corpus and the proptest configuration).

// A global allocator is the only way to observe allocation sizes of code we do not own (serde,
// rmp-serde). The `unsafe` is confined to forwarding to `System`, unchanged.
#![allow(unsafe_code)]

use agentd::fuzz_api::log::{self, LogError, LogOptions, LogReader, Lsn, RawFrame};
use agentd::fuzz_api::parse_json;
use agentd::fuzz_api::{validate_meta, validate_record, FieldError};
use agentd_schemas::api::{
    BatchSubmitRequest, CompleteManyRequest, CompleteRequest, FailRequest, LeaseRequest,
    SubmitJobRequest,
};
use agentd_schemas::domain_api::{
    IngestRecordsRequest, RecordStepRequest, RewardRequest, SandboxResultRequest,
    StateUpdateRequest,
};
use agentd_schemas::events::{decode_record, encode_record, LogRecord, RECORD_FORMAT_VERSION};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, RngSeed};
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod json;
mod records;
mod segments;

// ------------------------------------------------------------------------------------------------
// Allocation accounting

/// Forwards to `System` and remembers, per thread, the largest single allocation requested. The
/// size is noted before the request is forwarded, so an allocation sized by a hostile length field
/// is caught even when lazy overcommit would let it "succeed" without touching memory.
struct LargestAllocationTracker;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(bytes: usize) {
    // `try_with`: the slot may already be gone while the thread is being torn down.
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|largest| {
        if bytes > largest.get() {
            largest.set(bytes);
        }
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for LargestAllocationTracker {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocationTracker = LargestAllocationTracker;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION_BYTES.with(|largest| largest.set(0));
    let result = f();
    let largest = LARGEST_ALLOCATION_BYTES.with(Cell::get);
    (result, largest)
}

// ------------------------------------------------------------------------------------------------
// Configuration

/// Where proptest keeps failing cases, replayed first on every later run. In the repository so a
/// failure found on one machine is a regression test on all.
const REGRESSIONS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fuzz/proptest-regressions.txt"
);

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The seed of the default pass, so CI draws the same cases on every run: a failure there is
/// reproducible, and a red CI is never a roll of the dice. Exploration draws new cases with
/// `AGENTD_FUZZ_SEED=random` (or any number), see `fuzz/README.md`.
const DEFAULT_FUZZ_SEED: u64 = 0x6167_656e_7464;

/// Cases per property: `AGENTD_FUZZ_CASES` when set, else the property's CI default. The seed:
/// `AGENTD_FUZZ_SEED` (`random` or a number) when set, else [`DEFAULT_FUZZ_SEED`].
fn fuzz_config(ci_cases: u32) -> ProptestConfig {
    let cases = std::env::var("AGENTD_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(ci_cases);
    let rng_seed = match std::env::var("AGENTD_FUZZ_SEED").ok().as_deref() {
        None => RngSeed::Fixed(DEFAULT_FUZZ_SEED),
        Some("random") => RngSeed::Random,
        Some(text) => RngSeed::Fixed(text.parse().unwrap_or_else(|_| {
            panic!("AGENTD_FUZZ_SEED={text:?}: expected `random` or a number")
        })),
    };
    ProptestConfig {
        cases,
        rng_seed,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS_FILE))),
        // Shrinking a failure of a file-backed case is cheap, but keep a bound so a long run that
        // finds something reports it in minutes.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// The corpus files of `target`, sorted, as (file name, bytes). Creates the seed files first when
/// `AGENTD_FUZZ_WRITE_CORPUS` is set.
fn corpus(target: &str, seeds: impl FnOnce() -> Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    if std::env::var_os("AGENTD_FUZZ_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            let path = dir.join(&name);
            if !path.exists() {
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("corpus {} is missing: {error}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .filter(|(name, _)| !name.starts_with('.') && name != "README.md")
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// The part of a corpus file name before the first `.`: the outcome it must have.
fn expectation(name: &str) -> &str {
    name.split('.').next().unwrap_or_default()
}
