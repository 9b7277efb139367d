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
//!   cases per property (see `fuzz/README.md`). Failures proptest finds are persisted to
//!   `fuzz/proptest-regressions.txt` and replayed first on later runs.
//!
//! What every target checks: no panic, no allocation sized by an untrusted length field (a
//! counting global allocator records the largest single allocation of the test thread), and
//! errors that are errors: a damaged log either recovers exactly a prefix of what was written or
//! is refused with `LogError::Corrupt`; a JSON refusal names the field.
//!
//! `AGENTD_FUZZ_WRITE_CORPUS=1` (re)creates missing seed files of the corpus from the builders in
//! this file; it never overwrites a file.

// A global allocator is the only way to observe allocation sizes of code we do not own (serde,
// rmp-serde). The `unsafe` is confined to forwarding to `System`, unchanged.
#![allow(unsafe_code)]

use agentd::domain::dataset::{validate_meta, validate_record, FieldError};
use agentd::http::extract::parse_json;
use agentd::log::{self, LogError, LogOptions, LogReader, Lsn, RawFrame};
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
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::{json, Map, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Cases per property: `AGENTD_FUZZ_CASES` when set, else the property's CI default.
fn fuzz_config(ci_cases: u32) -> ProptestConfig {
    let cases = std::env::var("AGENTD_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(ci_cases);
    ProptestConfig {
        cases,
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

// ------------------------------------------------------------------------------------------------
// Target 1: log segment files. An encoder written from docs/log-format.md (not the daemon's), so
// these tests also check that the document is the format.

const SEGMENT_HEADER_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 20;
/// A small payload limit, so that "huge" lengths are cheap to construct and must be refused.
const FUZZ_FRAME_BYTES_MAX: u32 = 1024;
/// Largest allocation the log may make beyond what the files' own sizes explain: the reader's
/// 256 KiB buffer plus bookkeeping.
const LOG_ALLOCATION_SLACK_BYTES: usize = 256 * 1024 + 64 * 1024;

fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.seg")
}

fn segment_header(first_lsn: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    header.extend_from_slice(b"AGTDLOG\0");
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&first_lsn.to_le_bytes());
    header
}

/// CRC32C of `[0..4)` then `[8..20+len)` of a frame whose header is `frame[..20]`.
fn frame_crc(frame: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&frame[0..4]);
    let crc = crc32c::crc32c_append(crc, &frame[8..FRAME_HEADER_BYTES]);
    crc32c::crc32c_append(crc, payload)
}

fn encode_frame(out: &mut Vec<u8>, frame: &RawFrame) {
    let start = out.len();
    out.extend_from_slice(&(frame.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&frame.lsn.0.to_le_bytes());
    out.push(frame.format_version);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&frame.payload);
    let crc = frame_crc(&out[start..start + FRAME_HEADER_BYTES], &frame.payload);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Overwrites the length field of the frame at `offset`; with `fix_crc`, recomputes the CRC over
/// the new header and whatever payload bytes the file holds (as a forger would).
fn set_frame_length(bytes: &mut [u8], offset: usize, payload_len: u32, fix_crc: bool) {
    bytes[offset..offset + 4].copy_from_slice(&payload_len.to_le_bytes());
    if fix_crc {
        let payload_start = offset + FRAME_HEADER_BYTES;
        let payload_end = (payload_start as u64 + u64::from(payload_len)).min(bytes.len() as u64);
        let crc = frame_crc(
            &bytes[offset..payload_start],
            &bytes[payload_start..payload_end as usize],
        );
        bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A segment as written: its bytes and where each frame starts and ends.
#[derive(Debug, Clone)]
struct SegmentImage {
    first_lsn: u64,
    bytes: Vec<u8>,
    frames: Vec<RawFrame>,
    /// `(start, end)` byte offsets of each frame.
    spans: Vec<(usize, usize)>,
}

impl SegmentImage {
    fn new(first_lsn: u64, frames: Vec<RawFrame>) -> SegmentImage {
        let mut bytes = segment_header(first_lsn);
        let mut spans = Vec::new();
        for frame in &frames {
            let start = bytes.len();
            encode_frame(&mut bytes, frame);
            spans.push((start, bytes.len()));
        }
        SegmentImage {
            first_lsn,
            bytes,
            frames,
            spans,
        }
    }

    /// Frames that lie entirely before byte `offset`.
    fn frames_before(&self, offset: usize) -> usize {
        self.spans
            .iter()
            .take_while(|(_, end)| *end <= offset)
            .count()
    }

    /// The frame whose bytes include `offset`, if any.
    fn frame_at(&self, offset: usize) -> Option<usize> {
        self.spans
            .iter()
            .position(|&(start, end)| (start..end).contains(&offset))
    }
}

/// A whole log as written: segments in order, lsns contiguous from 1.
#[derive(Debug, Clone)]
struct LogImage {
    segments: Vec<SegmentImage>,
}

impl LogImage {
    /// Splits `frames` (payload, version) into segments of the given sizes; only the last may
    /// be empty.
    fn new(frames: Vec<(u8, Vec<u8>)>, segment_sizes: &[usize]) -> LogImage {
        let mut frames = frames
            .into_iter()
            .enumerate()
            .map(|(index, (format_version, payload))| RawFrame {
                lsn: Lsn(index as u64 + 1),
                format_version,
                payload,
            })
            .peekable();
        let mut segments = Vec::new();
        let mut next_lsn = 1;
        for (position, &size) in segment_sizes.iter().enumerate() {
            let last = position + 1 == segment_sizes.len();
            let take = if last { usize::MAX } else { size.max(1) };
            let chunk: Vec<RawFrame> = frames.by_ref().take(take).collect();
            if chunk.is_empty() && !last {
                continue;
            }
            let count = chunk.len() as u64;
            segments.push(SegmentImage::new(next_lsn, chunk));
            next_lsn += count;
        }
        LogImage { segments }
    }

    fn all_frames(&self) -> Vec<RawFrame> {
        self.segments
            .iter()
            .flat_map(|segment| segment.frames.iter().cloned())
            .collect()
    }

    fn frames_before_segment(&self, index: usize) -> usize {
        self.segments[..index]
            .iter()
            .map(|segment| segment.frames.len())
            .sum()
    }

    fn write(&self, dir: &Path) {
        for segment in &self.segments {
            std::fs::write(
                dir.join(segment_file_name(segment.first_lsn)),
                &segment.bytes,
            )
            .unwrap();
        }
    }
}

/// A temp dir on tmpfs when there is one: recovery fsyncs, and thousands of cases should not wait
/// on a disk.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("agentd-fuzz-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

fn fuzz_log_options(dir: &Path, frame_bytes_max: u32) -> LogOptions {
    let mut options = LogOptions::new(dir);
    options.frame_bytes_max = frame_bytes_max;
    options.on_fatal = Arc::new(|message: &str| panic!("fatal log error while fuzzing: {message}"));
    options
}

fn total_file_bytes(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len() as usize)
        .sum()
}

/// Frames the reader returns from the start of the log, and the error that stopped it (if any).
fn read_log(dir: &Path, frame_bytes_max: u32) -> (Vec<RawFrame>, Option<LogError>) {
    let reader = match LogReader::open(dir, frame_bytes_max) {
        Ok(reader) => reader,
        Err(error) => return (Vec::new(), Some(error)),
    };
    let mut frames = Vec::new();
    for item in reader.frames(Lsn(0), Lsn(u64::MAX)) {
        match item {
            Ok(frame) => frames.push(frame),
            Err(error) => return (frames, Some(error)),
        }
    }
    (frames, None)
}

/// What opening a damaged log did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recovery {
    /// Opened; the log now holds this many frames.
    Recovered(usize),
    /// Refused with `LogError::Corrupt`.
    Corrupt,
}

/// Reads and opens the log in `dir` and checks what holds for any bytes whatsoever:
/// - neither the reader nor recovery panics or allocates more than the files' sizes explain;
/// - recovery either succeeds or refuses with `Corrupt` (naming a file in `dir` and an offset
///   inside it), never another error;
/// - after a successful recovery, the log holds exactly the frames the reader could read before
///   (the valid prefix), reads back cleanly to its end, and a second recovery changes nothing;
/// - when `written` is known, everything read is exactly a prefix of it.
fn check_log_dir(dir: &Path, frame_bytes_max: u32, written: Option<&[RawFrame]>) -> Recovery {
    let file_bytes = total_file_bytes(dir);
    let allocation_max = 2 * file_bytes + LOG_ALLOCATION_SLACK_BYTES;

    let ((before, read_error), read_allocation) =
        largest_allocation_during(|| read_log(dir, frame_bytes_max));
    assert!(
        read_allocation <= allocation_max,
        "the reader allocated {read_allocation} bytes at once for {file_bytes} bytes of log"
    );
    if let Some(error) = &read_error {
        assert!(
            matches!(
                error,
                LogError::Unreadable { .. } | LogError::Corrupt { .. }
            ),
            "the reader failed with an unexpected error: {error}"
        );
    }
    if let Some(written) = written {
        assert!(
            before.len() <= written.len() && before[..] == written[..before.len()],
            "the reader returned frames that were never written"
        );
    }

    let sizes_before: Vec<(PathBuf, u64)> = segment_sizes(dir);
    let (opened, open_allocation) =
        largest_allocation_during(|| log::open(fuzz_log_options(dir, frame_bytes_max)));
    assert!(
        open_allocation <= allocation_max,
        "recovery allocated {open_allocation} bytes at once for {file_bytes} bytes of log"
    );
    match opened {
        Ok((log, report)) => {
            let recovered = report.last_lsn.0 as usize;
            assert_eq!(log.last_lsn(), report.last_lsn);
            drop(log);
            assert_eq!(
                recovered,
                before.len(),
                "recovery kept {recovered} frames but the reader read {} valid ones before it \
                 (stopped by {read_error:?})",
                before.len()
            );
            let (after, error) = read_log(dir, frame_bytes_max);
            assert!(
                error.is_none(),
                "a recovered log must read cleanly: {error:?}"
            );
            assert_eq!(after, before, "recovery changed the frames it kept");
            let (_log, again) = log::open(fuzz_log_options(dir, frame_bytes_max))
                .expect("a recovered log opens again");
            assert_eq!(again.last_lsn, report.last_lsn);
            assert_eq!(again.truncated, None, "a second recovery found more to cut");
            Recovery::Recovered(recovered)
        }
        Err(LogError::Corrupt {
            path,
            offset,
            detail,
        }) => {
            let size = sizes_before
                .iter()
                .find(|(segment, _)| *segment == path)
                .map(|(_, size)| *size)
                .unwrap_or_else(|| {
                    panic!("Corrupt names {} which is not a segment", path.display())
                });
            assert!(
                offset <= size,
                "Corrupt offset {offset} is past the end {size}"
            );
            assert!(!detail.is_empty());
            // Refusing must not have modified any segment that can hold a frame (a partial last
            // segment, which holds none, may have been removed before the damage was found).
            let after = segment_sizes(dir);
            for (segment, size) in sizes_before
                .iter()
                .filter(|(_, size)| *size > SEGMENT_HEADER_BYTES as u64)
            {
                assert!(
                    after.contains(&(segment.clone(), *size)),
                    "refusing modified {}",
                    segment.display()
                );
            }
            Recovery::Corrupt
        }
        Err(other) => panic!("recovery failed with a non-corruption error: {other}"),
    }
}

fn segment_sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut sizes: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.path(), entry.metadata().unwrap().len())
        })
        .collect();
    sizes.sort();
    sizes
}

/// One change to one segment of a valid log.
#[derive(Debug, Clone)]
enum Mutation {
    /// Cut the file at this offset.
    Truncate(Index),
    /// Flip one bit anywhere in the file.
    FlipBit(Index, u8),
    /// Put a length field on a frame that no reader may trust; with `fix_crc` the CRC is
    /// recomputed so only the length check can catch it.
    HugeLength {
        frame: Index,
        payload_len: u32,
        fix_crc: bool,
    },
    /// Insert bytes at an offset.
    Insert(Index, Vec<u8>),
    /// Overwrite bytes at an offset.
    Overwrite(Index, Vec<u8>),
    /// Copy a frame right after itself (a stale duplicate).
    DuplicateFrame(Index),
    /// Remove a frame's bytes.
    RemoveFrame(Index),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let huge_len = prop_oneof![
        Just(u32::MAX),
        Just(FUZZ_FRAME_BYTES_MAX + 1),
        Just(1 << 31),
        (FUZZ_FRAME_BYTES_MAX + 1)..=u32::MAX,
    ];
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), huge_len, any::<bool>()).prop_map(|(frame, payload_len, fix_crc)| {
            Mutation::HugeLength {
                frame,
                payload_len,
                fix_crc,
            }
        }),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..48))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(at, bytes)| Mutation::Overwrite(at, bytes)),
        any::<Index>().prop_map(Mutation::DuplicateFrame),
        any::<Index>().prop_map(Mutation::RemoveFrame),
    ]
}

/// Applies `mutation` to `segment` and returns the outcome it must have, for the segment being
/// the last (active) one or a sealed one. `None` means "no exact expectation" (the generic checks
/// still apply), and for a mutation that changed nothing.
fn apply_mutation(
    segment: &mut SegmentImage,
    is_last: bool,
    frames_before_segment: usize,
    total_frames: usize,
    mutation: &Mutation,
) -> Option<Recovery> {
    let original = segment.bytes.clone();
    let len = original.len();
    let frames = segment.frames.len();
    // What recovery must do to a segment damaged at the start of frame `index` (or inside it),
    // when the bytes after the damage hold no valid frame other than later original frames.
    let damaged_frame = |index: usize| -> Recovery {
        if !is_last || index + 1 < frames {
            Recovery::Corrupt
        } else {
            Recovery::Recovered(frames_before_segment + index)
        }
    };
    let expected = match mutation {
        Mutation::Truncate(at) => {
            let cut = at.index(len + 1);
            segment.bytes.truncate(cut);
            if cut == len {
                return Some(Recovery::Recovered(total_frames));
            }
            if !is_last {
                Some(Recovery::Corrupt)
            } else if cut < SEGMENT_HEADER_BYTES {
                // A partial header is what a crash while rolling leaves: the file is removed.
                Some(Recovery::Recovered(frames_before_segment))
            } else {
                Some(Recovery::Recovered(
                    frames_before_segment + segment.frames_before(cut),
                ))
            }
        }
        Mutation::FlipBit(at, bit) => {
            let position = at.index(len);
            segment.bytes[position] ^= 1 << bit;
            match segment.frame_at(position) {
                None => Some(Recovery::Corrupt), // the segment header
                Some(index) => Some(damaged_frame(index)),
            }
        }
        Mutation::HugeLength {
            frame,
            payload_len,
            fix_crc,
        } => {
            if frames == 0 {
                return None;
            }
            let index = frame.index(frames);
            let (start, _) = segment.spans[index];
            set_frame_length(&mut segment.bytes, start, *payload_len, *fix_crc);
            Some(damaged_frame(index))
        }
        Mutation::Insert(at, inserted) => {
            let position = at.index(len + 1);
            segment
                .bytes
                .splice(position..position, inserted.iter().copied());
            if position < SEGMENT_HEADER_BYTES {
                None
            } else if !is_last {
                Some(Recovery::Corrupt)
            } else if segment.spans.iter().any(|&(start, _)| start >= position) {
                // An original frame follows the garbage: not a torn tail.
                Some(Recovery::Corrupt)
            } else {
                Some(Recovery::Recovered(
                    frames_before_segment + segment.frames_before(position),
                ))
            }
        }
        Mutation::Overwrite(at, replacement) => {
            let position = at.index(len);
            let end = (position + replacement.len()).min(len);
            segment.bytes[position..end].copy_from_slice(&replacement[..end - position]);
            None
        }
        Mutation::DuplicateFrame(frame) => {
            if frames == 0 {
                return None;
            }
            let index = frame.index(frames);
            let (start, end) = segment.spans[index];
            let copy = original[start..end].to_vec();
            segment.bytes.splice(end..end, copy);
            if is_last && index + 1 == frames {
                // A stale copy at the very end is garbage after the last frame: a torn tail.
                Some(Recovery::Recovered(total_frames))
            } else {
                Some(Recovery::Corrupt)
            }
        }
        Mutation::RemoveFrame(frame) => {
            if frames == 0 {
                return None;
            }
            let index = frame.index(frames);
            let (start, end) = segment.spans[index];
            segment.bytes.drain(start..end);
            if is_last && index + 1 == frames {
                Some(Recovery::Recovered(frames_before_segment + index))
            } else {
                // Frames after the gap carry lsns that skip the removed one: missing frames.
                Some(Recovery::Corrupt)
            }
        }
    };
    if segment.bytes == original {
        return Some(Recovery::Recovered(total_frames));
    }
    expected
}

fn frames_strategy() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..96)),
        0..10,
    )
}

fn segment_sizes_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..5, 1..4)
}

proptest! {
    #![proptest_config(fuzz_config(4000))]

    /// A valid log with one mutation in one of its segments: recovery keeps exactly the frames
    /// before the damage when the damage is a torn tail of the last segment, and refuses to start
    /// in every other case; nothing read is ever something that was not written.
    #[test]
    fn mutated_logs_recover_a_prefix_or_are_refused(
        frames in frames_strategy(),
        sizes in segment_sizes_strategy(),
        target in any::<Index>(),
        mutation in mutation_strategy(),
    ) {
        let mut image = LogImage::new(frames, &sizes);
        let written = image.all_frames();
        let segment_index = target.index(image.segments.len());
        let is_last = segment_index + 1 == image.segments.len();
        let frames_before_segment = image.frames_before_segment(segment_index);
        let expected = apply_mutation(
            &mut image.segments[segment_index],
            is_last,
            frames_before_segment,
            written.len(),
            &mutation,
        );
        let dir = scratch_dir();
        image.write(dir.path());
        let outcome = check_log_dir(dir.path(), FUZZ_FRAME_BYTES_MAX, Some(&written));
        if let Some(expected) = expected {
            prop_assert_eq!(outcome, expected);
        }
    }

    /// Arbitrary bytes after a valid segment header (and, half of the time, a valid prefix of
    /// frames), and arbitrary bytes as a whole segment file.
    #[test]
    fn arbitrary_segment_bytes_never_panic(
        frames in frames_strategy(),
        garbage in prop::collection::vec(any::<u8>(), 0..600),
        keep_header in any::<bool>(),
    ) {
        let dir = scratch_dir();
        let bytes = if keep_header {
            let mut bytes = SegmentImage::new(1, frames.iter().enumerate().map(|(index, (version, payload))| RawFrame {
                lsn: Lsn(index as u64 + 1),
                format_version: *version,
                payload: payload.clone(),
            }).collect()).bytes;
            bytes.extend_from_slice(&garbage);
            bytes
        } else {
            garbage
        };
        std::fs::write(dir.path().join(segment_file_name(1)), &bytes).unwrap();
        check_log_dir(dir.path(), FUZZ_FRAME_BYTES_MAX, None);
    }

    /// Every range of a valid multi-segment log reads back exactly.
    #[test]
    fn reader_ranges_are_exact(
        frames in frames_strategy(),
        sizes in segment_sizes_strategy(),
        after in 0u64..14,
        span in 0u64..14,
    ) {
        let image = LogImage::new(frames, &sizes);
        let written = image.all_frames();
        let dir = scratch_dir();
        image.write(dir.path());
        let reader = LogReader::open(dir.path(), FUZZ_FRAME_BYTES_MAX).unwrap();
        let up_to = after + span;
        let read: Vec<RawFrame> = reader
            .frames(Lsn(after), Lsn(up_to))
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<RawFrame> = written
            .iter()
            .filter(|frame| frame.lsn.0 > after && frame.lsn.0 <= up_to)
            .cloned()
            .collect();
        prop_assert_eq!(read, expected);
    }
}

proptest! {
    #![proptest_config(fuzz_config(100_000))]

    /// The frame decoder alone, without IO, on arbitrary bytes and on valid frames with arbitrary
    /// trailing bytes or damage: a frame it accepts re-encodes to exactly the bytes it read.
    #[test]
    fn frame_decoder_accepts_only_exact_frames(
        lsn in any::<u64>(),
        version in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        trailing in prop::collection::vec(any::<u8>(), 0..40),
        cut in any::<Index>(),
        flip in proptest::option::of((any::<Index>(), 0u8..8)),
        frame_bytes_max in prop_oneof![Just(FUZZ_FRAME_BYTES_MAX), 1u32..300, Just(u32::MAX)],
    ) {
        let frame = RawFrame { lsn: Lsn(lsn), format_version: version, payload };
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, &frame);
        let frame_len = bytes.len();
        bytes.extend_from_slice(&trailing);
        if let Some((at, bit)) = flip {
            let position = at.index(bytes.len());
            bytes[position] ^= 1 << bit;
        }
        let cut = cut.index(bytes.len() + 1);
        let input = &bytes[..cut];
        let (decoded, allocation) = largest_allocation_during(|| {
            log::decode_frame_for_fuzzing(input, frame_bytes_max)
        });
        prop_assert!(allocation <= input.len() + 1024, "allocated {} bytes", allocation);
        let payload_fits = frame.payload.len() as u64 <= u64::from(frame_bytes_max);
        let flipped_inside_frame = flip.is_some_and(|(at, _)| at.index(frame_len + trailing.len()) < frame_len);
        match decoded {
            Ok(Some(got)) => {
                prop_assert!(got.payload.len() as u64 <= u64::from(frame_bytes_max));
                let mut again = Vec::new();
                encode_frame(&mut again, &got);
                prop_assert_eq!(&again[..], &input[..again.len()]);
                prop_assert!(!flipped_inside_frame, "a flipped bit went unnoticed");
                prop_assert_eq!(got, frame.clone());
            }
            Ok(None) => prop_assert!(cut < frame_len || flipped_inside_frame),
            Err(detail) => {
                prop_assert!(!detail.is_empty());
                prop_assert!(flipped_inside_frame || !payload_fits, "{}", detail);
            }
        }
        if !flipped_inside_frame && cut >= frame_len && payload_fits {
            prop_assert_eq!(
                log::decode_frame_for_fuzzing(input, frame_bytes_max),
                Ok(Some(frame.clone()))
            );
        }
    }

    #[test]
    fn frame_decoder_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let (decoded, allocation) = largest_allocation_during(|| {
            log::decode_frame_for_fuzzing(&bytes, FUZZ_FRAME_BYTES_MAX)
        });
        prop_assert!(allocation <= bytes.len() + 1024);
        if let Ok(Some(frame)) = decoded {
            let mut again = Vec::new();
            encode_frame(&mut again, &frame);
            prop_assert_eq!(&again[..], &bytes[..again.len()]);
        }
    }
}

/// Length fields from a small overrun to `u32::MAX`, with and without a matching CRC, in the
/// only frame, a middle frame and the last frame, under the default 16 MiB `frame_bytes_max`
/// and a small one: never an allocation sized by the field. Lengths within `frame_bytes_max`
/// but past the end of the file are caught by the file length, before any allocation, too.
#[test]
fn huge_length_fields_never_size_an_allocation() {
    let frame_maxes = [FUZZ_FRAME_BYTES_MAX, log::FRAME_BYTES_MAX_DEFAULT];
    let lengths = [
        FUZZ_FRAME_BYTES_MAX + 1,
        1 << 20,
        log::FRAME_BYTES_MAX_DEFAULT,
        log::FRAME_BYTES_MAX_DEFAULT + 1,
        1 << 31,
        u32::MAX - 20,
        u32::MAX,
    ];
    for frame_bytes_max in frame_maxes {
        for payload_len in lengths {
            for fix_crc in [false, true] {
                for (frames, damaged) in [(1usize, 0usize), (3, 1), (3, 2)] {
                    let image = LogImage::new(
                        (0..frames).map(|n| (1, vec![n as u8; 10])).collect(),
                        &[frames],
                    );
                    let written = image.all_frames();
                    let mut segment = image.segments[0].clone();
                    let (start, _) = segment.spans[damaged];
                    set_frame_length(&mut segment.bytes, start, payload_len, fix_crc);
                    let dir = scratch_dir();
                    std::fs::write(dir.path().join(segment_file_name(1)), &segment.bytes).unwrap();
                    let ((frames_read, error), allocation) =
                        largest_allocation_during(|| read_log(dir.path(), frame_bytes_max));
                    assert!(
                        allocation <= LOG_ALLOCATION_SLACK_BYTES,
                        "reader: length {payload_len} made an allocation of {allocation} bytes"
                    );
                    assert_eq!(frames_read, written[..damaged]);
                    assert!(
                        matches!(error, Some(LogError::Unreadable { .. })),
                        "{error:?}"
                    );
                    let expected = if damaged + 1 == frames {
                        Recovery::Recovered(damaged)
                    } else {
                        Recovery::Corrupt
                    };
                    assert_eq!(
                        check_log_dir(dir.path(), frame_bytes_max, Some(&written)),
                        expected,
                        "length {payload_len}, fix_crc {fix_crc}, frame {damaged} of {frames}, \
                         frame_bytes_max {frame_bytes_max}"
                    );
                }
            }
        }
    }
}

/// Seeds of the segment corpus: the interesting shapes, each named by its outcome.
fn segment_seeds() -> Vec<(String, Vec<u8>)> {
    let three = SegmentImage::new(
        1,
        vec![
            RawFrame {
                lsn: Lsn(1),
                format_version: 1,
                payload: b"hi".to_vec(),
            },
            RawFrame {
                lsn: Lsn(2),
                format_version: 1,
                payload: Vec::new(),
            },
            RawFrame {
                lsn: Lsn(3),
                format_version: 2,
                payload: vec![0x93, 1, 2, 3],
            },
        ],
    );
    let (second_start, second_end) = three.spans[1];
    let (third_start, _) = three.spans[2];
    let mut seeds = vec![
        ("ok-0.header_only.seg".to_string(), segment_header(1)),
        ("ok-3.three_frames.seg".to_string(), three.bytes.clone()),
        ("ok-0.empty_file.seg".to_string(), Vec::new()),
        (
            "ok-0.partial_header.seg".to_string(),
            segment_header(1)[..11].to_vec(),
        ),
        (
            "ok-0.zeroed_header.seg".to_string(),
            vec![0; SEGMENT_HEADER_BYTES],
        ),
        (
            "ok-2.torn_last_frame.seg".to_string(),
            three.bytes[..three.bytes.len() - 1].to_vec(),
        ),
        (
            "ok-2.torn_in_last_header.seg".to_string(),
            three.bytes[..third_start + 7].to_vec(),
        ),
        (
            "ok-3.trailing_zeros.seg".to_string(),
            [three.bytes.clone(), vec![0; 100]].concat(),
        ),
        ("corrupt.bad_magic.seg".to_string(), {
            let mut bytes = three.bytes.clone();
            bytes[0] = b'X';
            bytes
        }),
        ("corrupt.wrong_first_lsn.seg".to_string(), {
            let mut bytes = three.bytes.clone();
            bytes[16] = 2;
            bytes
        }),
        ("corrupt.bit_flip_in_middle_frame.seg".to_string(), {
            let mut bytes = three.bytes.clone();
            bytes[second_start + 9] ^= 0x10;
            bytes
        }),
        ("corrupt.missing_middle_frame.seg".to_string(), {
            let mut bytes = three.bytes.clone();
            bytes.drain(second_start..second_end);
            bytes
        }),
        ("corrupt.reserved_not_zero.seg".to_string(), {
            let mut bytes = three.bytes.clone();
            bytes[second_start + 17] = 1;
            bytes
        }),
    ];
    for (name, payload_len, fix_crc) in [
        ("u32_max", u32::MAX, false),
        ("u32_max_crc_fixed", u32::MAX, true),
        ("two_gib", 1 << 31, true),
        ("just_over_max", FUZZ_FRAME_BYTES_MAX + 1, true),
        ("past_end_of_file", 900, true),
    ] {
        let mut middle = three.bytes.clone();
        set_frame_length(&mut middle, second_start, payload_len, fix_crc);
        seeds.push((
            format!("corrupt.huge_length_{name}_middle_frame.seg"),
            middle,
        ));
        let mut last = three.bytes.clone();
        set_frame_length(&mut last, third_start, payload_len, fix_crc);
        seeds.push((format!("ok-2.huge_length_{name}_last_frame.seg"), last));
    }
    seeds
}

/// Replays `fuzz/corpus/segment/`: each file is the only segment of a log, named by its
/// outcome (`ok-<frames>.` or `corrupt.`); other names only get the generic checks.
#[test]
fn segment_corpus_replays() {
    for (name, bytes) in corpus("segment", segment_seeds) {
        let dir = scratch_dir();
        std::fs::write(dir.path().join(segment_file_name(1)), &bytes).unwrap();
        let outcome = check_log_dir(dir.path(), FUZZ_FRAME_BYTES_MAX, None);
        let expected = match expectation(&name) {
            "corrupt" => Some(Recovery::Corrupt),
            other => other
                .strip_prefix("ok-")
                .and_then(|frames| frames.parse().ok())
                .map(Recovery::Recovered),
        };
        if let Some(expected) = expected {
            assert_eq!(outcome, expected, "corpus file segment/{name}");
        }
    }
}

/// Seeds of the frame corpus: decoded without IO with `FUZZ_FRAME_BYTES_MAX`.
fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut valid = Vec::new();
    encode_frame(
        &mut valid,
        &RawFrame {
            lsn: Lsn(1),
            format_version: 1,
            payload: b"hi".to_vec(),
        },
    );
    let mut seeds = vec![
        ("valid.docs_example.bin".to_string(), valid.clone()),
        ("incomplete.empty.bin".to_string(), Vec::new()),
        (
            "incomplete.header_only.bin".to_string(),
            valid[..FRAME_HEADER_BYTES].to_vec(),
        ),
        (
            "incomplete.one_byte_short.bin".to_string(),
            valid[..valid.len() - 1].to_vec(),
        ),
        ("invalid.crc_flipped.bin".to_string(), {
            let mut bytes = valid.clone();
            bytes[5] ^= 1;
            bytes
        }),
    ];
    for (name, payload_len) in [
        ("u32_max", u32::MAX),
        ("two_gib", 1 << 31),
        ("max_plus_one", FUZZ_FRAME_BYTES_MAX + 1),
    ] {
        for fix_crc in [false, true] {
            let mut bytes = valid.clone();
            set_frame_length(&mut bytes, 0, payload_len, fix_crc);
            let suffix = if fix_crc { "_crc_fixed" } else { "" };
            seeds.push((format!("invalid.length_{name}{suffix}.bin"), bytes));
        }
    }
    let mut at_max = Vec::new();
    encode_frame(
        &mut at_max,
        &RawFrame {
            lsn: Lsn(7),
            format_version: 9,
            payload: vec![0xAB; FUZZ_FRAME_BYTES_MAX as usize],
        },
    );
    seeds.push(("valid.payload_at_max.bin".to_string(), at_max));
    seeds
}

#[test]
fn frame_corpus_replays() {
    for (name, bytes) in corpus("frame", frame_seeds) {
        let (decoded, allocation) = largest_allocation_during(|| {
            log::decode_frame_for_fuzzing(&bytes, FUZZ_FRAME_BYTES_MAX)
        });
        assert!(
            allocation <= bytes.len() + 1024,
            "frame/{name}: allocated {allocation} bytes"
        );
        let outcome = match &decoded {
            Ok(Some(_)) => "valid",
            Ok(None) => "incomplete",
            Err(_) => "invalid",
        };
        let expected = expectation(&name);
        if matches!(expected, "valid" | "incomplete" | "invalid") {
            assert_eq!(outcome, expected, "corpus file frame/{name}: {decoded:?}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Target 2: log record payloads (`decode_record`).

/// Largest allocation a record decode may make for an input of `len` bytes: serde's
/// `size_hint::cautious` caps a pre-allocation from a sequence header at 1 MiB; strings are
/// copied from the input, so they are at most its length.
fn record_allocation_max(len: usize) -> usize {
    (1024 * 1024).max(2 * len) + 4096
}

/// Decodes `payload` and checks what must hold for any bytes: no oversized allocation, and a
/// record that decodes re-encodes to bytes that decode to the same record.
fn check_record(format_version: u8, payload: &[u8]) -> bool {
    let (decoded, allocation) =
        largest_allocation_during(|| decode_record(format_version, payload));
    assert!(
        allocation <= record_allocation_max(payload.len()),
        "decoding {} bytes allocated {allocation} bytes at once",
        payload.len()
    );
    match decoded {
        Ok(record) => {
            let encoded = encode_record(&record);
            let again = decode_record(RECORD_FORMAT_VERSION, &encoded)
                .expect("a decoded record re-encodes to a decodable one");
            assert_eq!(encode_record(&again), encoded, "re-encoding is not stable");
            true
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            false
        }
    }
}

/// Valid encodings to mutate: the `migrations/` fixtures (one record per event type, exactly as
/// the daemon writes them) and the record corpus.
fn record_seed_payloads() -> Vec<Vec<u8>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/fixtures/v1");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "msgpack"))
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    seeds.sort();
    seeds.extend(
        corpus("record", record_seeds)
            .into_iter()
            .filter(|(name, _)| expectation(name) == "ok")
            .map(|(_, bytes)| bytes),
    );
    assert!(seeds.len() >= 16, "expected a fixture per event type");
    seeds
}

/// MessagePack headers that claim far more than any input holds: str32, bin32, array32, map32,
/// ext32, each with a 4 GiB length and nothing after it.
const HOSTILE_MSGPACK_HEADERS: &[(&str, &[u8])] = &[
    ("str32_4gib", &[0xdb, 0xff, 0xff, 0xff, 0xff]),
    ("bin32_4gib", &[0xc6, 0xff, 0xff, 0xff, 0xff]),
    ("array32_4g_items", &[0xdd, 0xff, 0xff, 0xff, 0xff]),
    ("map32_4g_entries", &[0xdf, 0xff, 0xff, 0xff, 0xff]),
    ("ext32_4gib", &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ("array16_65k_items", &[0xdc, 0xff, 0xff]),
    ("str8_255", &[0xd9, 0xff]),
];

/// MessagePack fixstr (up to 31 bytes).
fn fixstr(text: &[u8]) -> Vec<u8> {
    assert!(text.len() < 32);
    let mut out = vec![0xa0 | text.len() as u8];
    out.extend_from_slice(text);
    out
}

/// `{"ts_ms": 1, "actor": nil, "events": [{tag: {field: value, ...}}]}` from encoded values.
fn one_event_record(tag: &[u8], fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![0x83];
    out.extend(fixstr(b"ts_ms"));
    out.push(0x01);
    out.extend(fixstr(b"actor"));
    out.push(0xc0);
    out.extend(fixstr(b"events"));
    out.extend([0x91, 0x81]);
    out.extend(fixstr(tag));
    out.push(0x80 | fields.len() as u8);
    for (name, value) in fields {
        out.extend(fixstr(name));
        out.extend_from_slice(value);
    }
    out
}

fn record_seeds() -> Vec<(String, Vec<u8>)> {
    let record = LogRecord {
        ts_ms: 1_700_000_000_000,
        actor: Some("box-3".into()),
        events: vec![
            agentd_schemas::events::Event::QueuePaused { queue: "q".into() },
            agentd_schemas::events::Event::JobCancelled {
                job_id: agentd_schemas::JobId(7),
            },
        ],
    };
    let valid = encode_record(&record);
    let mut seeds = vec![
        (
            "ok.two_events_with_actor.msgpack".to_string(),
            valid.clone(),
        ),
        ("err.empty.msgpack".to_string(), Vec::new()),
        (
            "err.truncated.msgpack".to_string(),
            valid[..valid.len() / 2].to_vec(),
        ),
        ("err.nil.msgpack".to_string(), vec![0xc0]),
        (
            "ok.hand_encoded_cancel.msgpack".to_string(),
            one_event_record(b"job_cancelled.v1", &[(b"job_id", &fixstr(b"job_7"))]),
        ),
        (
            "err.job_id_without_digits.msgpack".to_string(),
            one_event_record(b"job_cancelled.v1", &[(b"job_id", &fixstr(b"job_"))]),
        ),
        (
            "err.deep_nesting_in_internally_tagged_enum.msgpack".to_string(),
            {
                // `after` of job_failed is an internally tagged enum, which serde buffers as
                // `Content` before it sees the tag: {"next": "dead", "x": {"x": {"x": ...}}}.
                let mut after = vec![0x82];
                after.extend(fixstr(b"next"));
                after.extend(fixstr(b"dead"));
                for _ in 0..5_000 {
                    after.extend([0xa1, b'x', 0x81]);
                }
                after.extend([0xa1, b'x', 0xc0]);
                one_event_record(b"job_failed.v1", &[(b"after", &after)])
            },
        ),
        ("err.deep_nesting_in_unknown_field.msgpack".to_string(), {
            // {"ts_ms": 1, "zz": [[[[...]]]] (5 000 deep), ...}: the depth limit must stop
            // it (at 32 levels) before the stack does.
            let mut bytes = vec![0x83, 0xa5];
            bytes.extend_from_slice(b"ts_ms");
            bytes.push(0x01);
            bytes.extend_from_slice(&[0xa2, b'z', b'z']);
            bytes.extend(std::iter::repeat_n(0x91, 5_000));
            bytes.push(0xc0);
            bytes
        }),
    ];
    for (name, header) in HOSTILE_MSGPACK_HEADERS {
        seeds.push((format!("err.{name}_alone.msgpack"), header.to_vec()));
        // The same header where the events array belongs: `{"ts_ms":1,"actor":nil,"events":H}`.
        let mut in_events = vec![0x83, 0xa5];
        in_events.extend_from_slice(b"ts_ms");
        in_events.push(0x01);
        in_events.push(0xa5);
        in_events.extend_from_slice(b"actor");
        in_events.push(0xc0);
        in_events.push(0xa6);
        in_events.extend_from_slice(b"events");
        in_events.extend_from_slice(header);
        seeds.push((format!("err.{name}_as_events.msgpack"), in_events));
        // And as the value of a string field inside an event.
        let mut in_string = vec![0x83, 0xa5];
        in_string.extend_from_slice(b"ts_ms");
        in_string.push(0x01);
        in_string.push(0xa5);
        in_string.extend_from_slice(b"actor");
        in_string.extend_from_slice(header);
        seeds.push((format!("err.{name}_as_actor.msgpack"), in_string));
    }
    seeds
}

/// Stack of the thread the record corpus is decoded on: that of the tokio blocking threads the
/// daemon decodes on (2 MiB). `decode_record` stops nesting at `MAX_RECORD_DEPTH` (32 levels), so
/// even a debug build stays far inside it (at rmp-serde's default of 1024 a debug build needed
/// 4-8 MiB; see fuzz/README.md).
const DECODE_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Replays `fuzz/corpus/record/` (payloads of format version 1): `ok.` must decode, `err.`
/// must not, without overflowing the stack of the thread the daemon decodes on.
#[test]
fn record_corpus_replays() {
    let files = corpus("record", record_seeds);
    std::thread::Builder::new()
        .stack_size(DECODE_STACK_BYTES)
        .spawn(move || {
            for (name, bytes) in files {
                let decoded = check_record(RECORD_FORMAT_VERSION, &bytes);
                match expectation(&name) {
                    "ok" => assert!(decoded, "corpus file record/{name} must decode"),
                    "err" => assert!(!decoded, "corpus file record/{name} must not decode"),
                    _ => {}
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A hostile length header anywhere in a valid record: fails (or decodes what fits) without an
/// allocation sized by the header.
#[test]
fn hostile_msgpack_headers_at_every_position_fail_fast() {
    for seed in record_seed_payloads() {
        for (name, header) in HOSTILE_MSGPACK_HEADERS {
            for position in 0..=seed.len() {
                for replace in [false, true] {
                    let mut bytes = seed.clone();
                    let end = if replace {
                        (position + header.len()).min(bytes.len())
                    } else {
                        position
                    };
                    bytes.splice(position..end, header.iter().copied());
                    let (_, allocation) =
                        largest_allocation_during(|| decode_record(RECORD_FORMAT_VERSION, &bytes));
                    assert!(
                        allocation <= record_allocation_max(bytes.len()),
                        "{name} at byte {position} allocated {allocation} bytes"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config(50_000))]

    #[test]
    fn records_from_arbitrary_bytes(
        format_version in prop_oneof![Just(RECORD_FORMAT_VERSION), any::<u8>()],
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let decoded = check_record(format_version, &payload);
        if format_version != RECORD_FORMAT_VERSION {
            prop_assert!(!decoded, "a record of an unknown format version decoded");
        }
    }

    /// Valid records with bytes flipped, replaced, inserted or cut.
    #[test]
    fn mutated_records(
        seed in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let seeds = record_seeds_cached();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for (at, byte, kind) in edits {
            let position = at.index(bytes.len() + 1);
            match kind {
                0 if position < bytes.len() => bytes[position] ^= byte | 1,
                1 if position < bytes.len() => bytes[position] = byte,
                2 => bytes.insert(position, byte),
                _ => bytes.truncate(position),
            }
        }
        check_record(RECORD_FORMAT_VERSION, &bytes);
    }
}

fn record_seeds_cached() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(record_seed_payloads)
}

// ------------------------------------------------------------------------------------------------
// Target 3: JSON from clients: `validate_record`, `validate_meta` and `parse_json`.

const RECORD_FIELDS: &[&str] = &["instruction", "pre", "post", "language", "tags", "metadata"];
const META_FIELDS: &[&str] = &[
    "source",
    "version",
    "license",
    "downloaded_at",
    "sha256",
    "num_records",
    "url",
];

/// Checks that a refusal names the field that caused it: `$` for a non-object, the
/// alphabetically first unknown key when there is one (checked first), else a known field or an
/// element of `tags`.
fn check_field_error(value: &Value, error: &FieldError, known: &[&str]) {
    // An empty field name only ever means the unknown key `""` (whose message then reads
    // `: is not a known field`; see fuzz/README.md).
    assert!(
        !error.field.is_empty() || value.get("").is_some(),
        "an error without a field: {error:?}"
    );
    assert!(
        !error.message.is_empty(),
        "an error without a message: {error:?}"
    );
    assert!(
        error.to_string().starts_with(&error.field),
        "the message does not start with the field: {error}"
    );
    let Some(object) = value.as_object() else {
        assert_eq!(error.field, "$", "a non-object must be refused as a whole");
        return;
    };
    let first_unknown = object
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .min();
    match first_unknown {
        Some(key) => assert_eq!(
            &error.field, key,
            "unknown fields are refused first, by name"
        ),
        None => {
            let base = error.field.split('[').next().unwrap_or_default();
            assert!(
                known.contains(&base),
                "{error:?} names no field of the value"
            );
            if let Some(index) = error
                .field
                .strip_prefix("tags[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                let index: usize = index.parse().expect("tags[<n>]");
                let tags = object["tags"]
                    .as_array()
                    .expect("tags[n] names an array element");
                assert!(index < tags.len());
            }
        }
    }
}

fn check_record_value(value: &Value) -> Result<(), FieldError> {
    let (validated, allocation) = largest_allocation_during(|| validate_record(value));
    let input_bytes = value.to_string().len();
    assert!(
        allocation <= 4 * input_bytes + 64 * 1024,
        "validation allocated {allocation} bytes"
    );
    match validated {
        Ok(record) => {
            let object = value.as_object().expect("only an object validates");
            assert_eq!(object["instruction"], record.instruction.as_str());
            assert_eq!(object["pre"], record.pre.as_str());
            assert_eq!(object["post"], record.post.as_str());
            assert_eq!(object["language"], record.language.as_str());
            let tags: Vec<Value> = record
                .tags
                .iter()
                .map(|tag| Value::from(tag.as_str()))
                .collect();
            assert_eq!(
                object
                    .get("tags")
                    .filter(|tags| !tags.is_null())
                    .cloned()
                    .unwrap_or(json!([])),
                Value::Array(tags)
            );
            let metadata: Value =
                serde_json::from_str(&record.metadata_json).expect("metadata_json is JSON");
            // Exact, floats included: the workspace enables `serde_json/float_roundtrip`
            // (without it some floats came back a few ulps off; see fuzz/README.md).
            let given = object
                .get("metadata")
                .filter(|m| !m.is_null())
                .cloned()
                .unwrap_or(json!({}));
            assert_eq!(
                given, metadata,
                "metadata_json {} does not hold the metadata given",
                record.metadata_json
            );
            Ok(())
        }
        Err(error) => {
            check_field_error(value, &error, RECORD_FIELDS);
            Err(error)
        }
    }
}

fn check_meta_value(value: &Value) -> Result<(), FieldError> {
    match validate_meta(value) {
        Ok(meta) => {
            let object = value.as_object().expect("only an object validates");
            assert_eq!(object["source"], meta.source.as_str());
            assert_eq!(object["version"], meta.version.as_str());
            assert_eq!(object["num_records"], meta.num_records);
            assert_eq!(meta.sha256.len(), 64);
            Ok(())
        }
        Err(error) => {
            check_field_error(value, &error, META_FIELDS);
            Err(error)
        }
    }
}

/// Strings that probe the checks: boundaries of the length limits, blanks, surrounding and
/// inner whitespace, control characters, multi-byte characters, JSON-looking text.
fn tricky_string() -> impl Strategy<Value = String> {
    let lengths = prop_oneof![
        0usize..4,
        Just(63usize),
        Just(64),
        Just(65),
        Just(127),
        Just(128),
        Just(129),
        Just(255),
        Just(256),
        Just(257),
        Just(2048),
        Just(2049),
    ];
    let unit = prop_oneof![
        Just("a"),
        Just("é"),
        Just("日"),
        Just(" "),
        Just("\t"),
        Just("\u{1}"),
        Just("\u{7f}"),
        Just("\n"),
        Just("0"),
        Just("-"),
        Just("("),
    ];
    prop_oneof![
        "\\PC{0,24}",
        ".{0,8}",
        (lengths, unit).prop_map(|(count, unit)| unit.repeat(count)),
        Just("MIT".to_string()),
        Just("Apache-2.0 OR MIT".to_string()),
        Just("(MIT".to_string()),
        Just("MIT AND".to_string()),
        Just("2024-02-29T23:59:60.123456789+14:00".to_string()),
        Just("2023-02-29T00:00:00Z".to_string()),
        Just("https://example.com/x".to_string()),
        Just("a".repeat(64)),
        Just("0".repeat(64)),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(
            |number| serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
        ),
        tricky_string().prop_map(Value::String),
    ]
}

fn json_key(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_string),
        1 => "\\PC{0,12}",
        1 => Just("licence".to_string()),
    ]
}

fn arbitrary_json(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((json_key(known), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn non_blank_text(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('é'),
            Just('日'),
            Just('_'),
            Just('9')
        ],
        1..=max_chars.min(40),
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn valid_record() -> impl Strategy<Value = Value> {
    (
        non_blank_text(40),
        "\\PC{0,40}",
        "\\PC{0,40}",
        non_blank_text(64),
        proptest::option::of(prop::collection::vec(non_blank_text(128), 0..6)),
        proptest::option::of(arbitrary_json(&["tests", "smell", "provenance"])),
    )
        .prop_map(|(instruction, pre, post, language, tags, metadata)| {
            let mut object = json!({
                "instruction": instruction,
                "pre": pre,
                "post": post,
                "language": language,
            });
            if let Some(tags) = tags {
                object["tags"] = json!(tags);
            }
            if let Some(Value::Object(metadata)) = metadata {
                object["metadata"] = Value::Object(metadata);
            }
            object
        })
}

fn valid_meta() -> impl Strategy<Value = Value> {
    (
        non_blank_text(128),
        non_blank_text(128),
        prop::sample::select(
            &[
                "MIT",
                "Apache-2.0 OR MIT",
                "(MIT AND BSD-3-Clause) OR GPL-2.0-or-later WITH Classpath-exception-2.0",
                "CC-BY-4.0",
            ][..],
        ),
        prop::sample::select(
            &[
                "2024-05-01T12:00:00Z",
                "2024-02-29T23:59:60.5+01:00",
                "1999-12-31t00:00:00-12:00",
            ][..],
        ),
        "[0-9a-fA-F]{64}",
        any::<u64>(),
        proptest::option::of(Just("https://example.com/data.jsonl")),
    )
        .prop_map(
            |(source, version, license, downloaded_at, sha256, num_records, url)| {
                let mut object = json!({
                    "source": source,
                    "version": version,
                    "license": license,
                    "downloaded_at": downloaded_at,
                    "sha256": sha256,
                    "num_records": num_records,
                });
                if let Some(url) = url {
                    object["url"] = json!(url);
                }
                object
            },
        )
}

/// One change to a valid object, with what it may do: `Ok(())` when it must stay valid,
/// `Err(fields)` when it must be refused naming one of `fields`, `None` when either is fine
/// provided a refusal names the changed field.
#[derive(Debug, Clone)]
enum Perturbation {
    None,
    Remove(Index),
    SetNull(Index),
    Replace(Index, Value),
    ReplaceString(Index, String),
    EditString(Index, Index, char),
    AddUnknown(String, Value),
}

fn perturbation(known: &'static [&'static str]) -> impl Strategy<Value = Perturbation> {
    prop_oneof![
        1 => Just(Perturbation::None),
        1 => any::<Index>().prop_map(Perturbation::Remove),
        1 => any::<Index>().prop_map(Perturbation::SetNull),
        2 => (any::<Index>(), arbitrary_json(known)).prop_map(|(at, value)| Perturbation::Replace(at, value)),
        3 => (any::<Index>(), tricky_string()).prop_map(|(at, text)| Perturbation::ReplaceString(at, text)),
        3 => (any::<Index>(), any::<Index>(), any::<char>()).prop_map(|(at, position, c)| Perturbation::EditString(at, position, c)),
        1 => ("[a-z_]{1,12}", json_leaf()).prop_map(|(key, value)| Perturbation::AddUnknown(key, value)),
    ]
}

/// Applies `change` to `value` (a valid object) and says which field, if any, it touched.
enum Touched {
    Nothing,
    Field(String),
    Unknown(String),
}

fn perturb(value: &mut Value, change: &Perturbation, known: &[&str]) -> Touched {
    let object = value.as_object_mut().expect("a valid value is an object");
    let mut present: Vec<String> = object.keys().cloned().collect();
    present.sort();
    let pick = |at: &Index| present[at.index(present.len())].clone();
    match change {
        Perturbation::None => Touched::Nothing,
        Perturbation::Remove(at) => {
            let field = pick(at);
            object.remove(&field);
            Touched::Field(field)
        }
        Perturbation::SetNull(at) => {
            let field = pick(at);
            object.insert(field.clone(), Value::Null);
            Touched::Field(field)
        }
        Perturbation::Replace(at, replacement) => {
            let field = pick(at);
            object.insert(field.clone(), replacement.clone());
            Touched::Field(field)
        }
        Perturbation::ReplaceString(at, text) => {
            let field = pick(at);
            object.insert(field.clone(), Value::String(text.clone()));
            Touched::Field(field)
        }
        Perturbation::EditString(at, position, c) => {
            let field = pick(at);
            if let Some(Value::String(text)) = object.get_mut(&field) {
                let mut chars: Vec<char> = text.chars().collect();
                let position = position.index(chars.len() + 1);
                if position < chars.len() {
                    chars[position] = *c;
                } else {
                    chars.push(*c);
                }
                *text = chars.into_iter().collect();
            }
            Touched::Field(field)
        }
        Perturbation::AddUnknown(key, extra) => {
            if known.contains(&key.as_str()) {
                return Touched::Nothing;
            }
            object.insert(key.clone(), extra.clone());
            Touched::Unknown(key.clone())
        }
    }
}

fn check_perturbed(outcome: Result<(), FieldError>, touched: Touched) -> Result<(), TestCaseError> {
    match (touched, outcome) {
        (Touched::Nothing, outcome) => {
            prop_assert!(outcome.is_ok(), "a valid value was refused: {:?}", outcome)
        }
        (Touched::Unknown(key), outcome) => {
            prop_assert_eq!(outcome.map_err(|error| error.field), Err(key))
        }
        (Touched::Field(field), Err(error)) => prop_assert!(
            error.field == field || error.field.starts_with(&format!("{field}[")),
            "changing {} was refused naming {:?}",
            field,
            error
        ),
        // Removing an optional field, or a replacement the checks accept, keeps it valid; the
        // callers check separately that a removed required field is refused.
        (Touched::Field(_), Ok(())) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config(10_000))]

    #[test]
    fn dataset_records_from_arbitrary_json(value in arbitrary_json(RECORD_FIELDS)) {
        let _ = check_record_value(&value);
    }

    #[test]
    fn dataset_metas_from_arbitrary_json(value in arbitrary_json(META_FIELDS)) {
        let _ = check_meta_value(&value);
    }

    /// A valid record with one change: a removed required field or a null one is refused by
    /// name, an unknown field is refused by name, anything else is accepted or refused naming the
    /// changed field.
    #[test]
    fn perturbed_dataset_records(mut value in valid_record(), change in perturbation(RECORD_FIELDS)) {
        let touched = perturb(&mut value, &change, RECORD_FIELDS);
        let required = ["instruction", "pre", "post", "language"];
        if let (Perturbation::Remove(_) | Perturbation::SetNull(_), Touched::Field(field)) = (&change, &touched) {
            if required.contains(&field.as_str()) {
                prop_assert_eq!(check_record_value(&value).map_err(|error| error.field), Err(field.clone()));
            }
        }
        check_perturbed(check_record_value(&value), touched)?;
    }

    #[test]
    fn perturbed_dataset_metas(mut value in valid_meta(), change in perturbation(META_FIELDS)) {
        let touched = perturb(&mut value, &change, META_FIELDS);
        let required = ["source", "version", "license", "downloaded_at", "sha256", "num_records"];
        if let (Perturbation::Remove(_) | Perturbation::SetNull(_), Touched::Field(field)) = (&change, &touched) {
            if required.contains(&field.as_str()) {
                prop_assert_eq!(check_meta_value(&value).map_err(|error| error.field), Err(field.clone()));
            }
        }
        check_perturbed(check_meta_value(&value), touched)?;
    }
}

/// Parses `bytes` as the request body of every JSON endpoint and checks the error shape: 400
/// `invalid_json` for text that is not JSON, 422 `invalid_request` for JSON of the wrong shape,
/// a message that says it is about the request body. Returns which types accepted it.
fn check_http_body(bytes: &[u8]) -> Vec<&'static str> {
    fn one<T: serde::de::DeserializeOwned>(
        name: &'static str,
        bytes: &[u8],
        accepted: &mut Vec<&'static str>,
    ) {
        let (parsed, allocation) = largest_allocation_during(|| parse_json::<T>(bytes));
        assert!(
            allocation <= 8 * bytes.len() + 64 * 1024,
            "{name}: parsing {} bytes allocated {allocation} bytes at once",
            bytes.len()
        );
        match parsed {
            Ok(_) => accepted.push(name),
            Err(error) => {
                let shape = (error.status().as_u16(), error.code.as_str());
                assert!(
                    shape == (400, "invalid_json") || shape == (422, "invalid_request"),
                    "{name}: unexpected error shape {shape:?}: {}",
                    error.message
                );
                assert!(
                    error.message.starts_with("request body"),
                    "{name}: {}",
                    error.message
                );
                // serde_json names a missing or unknown field, but for a value of the wrong type
                // it gives only the position (see fuzz/README.md); every error has one of them.
                assert!(
                    bytes.is_empty() || error.message.contains(" at line "),
                    "{name}: an error that names neither a field nor a position: {}",
                    error.message
                );
            }
        }
    }
    let mut accepted = Vec::new();
    one::<SubmitJobRequest>("submit_job", bytes, &mut accepted);
    one::<BatchSubmitRequest>("batch_submit", bytes, &mut accepted);
    one::<LeaseRequest>("lease", bytes, &mut accepted);
    one::<CompleteRequest>("complete", bytes, &mut accepted);
    one::<CompleteManyRequest>("complete_many", bytes, &mut accepted);
    one::<FailRequest>("fail", bytes, &mut accepted);
    one::<IngestRecordsRequest>("ingest_records", bytes, &mut accepted);
    one::<StateUpdateRequest>("state_update", bytes, &mut accepted);
    one::<RecordStepRequest>("record_step", bytes, &mut accepted);
    one::<SandboxResultRequest>("sandbox_result", bytes, &mut accepted);
    one::<RewardRequest>("reward", bytes, &mut accepted);
    one::<Value>("dataset_meta", bytes, &mut accepted);
    // The ingest endpoint validates each record of an accepted batch; the meta endpoint the body.
    if let Ok(request) = serde_json::from_slice::<IngestRecordsRequest>(bytes) {
        for record in &request.records {
            let _ = check_record_value(record);
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let _ = check_meta_value(&value);
    }
    accepted
}

fn http_body_seeds() -> Vec<(String, Vec<u8>)> {
    let bodies: Vec<(&str, Value)> = vec![
        ("submit_job.ok.minimal", json!({"queue": "q", "kind": "k"})),
        (
            "submit_job.ok.full",
            json!({"queue": "q", "kind": "k", "payload": {"n": [1, 2.5, null]}, "priority": -3, "delay_ms": 10, "max_attempts": 5, "lease_ttl_ms": 1500, "tags": {"gpu": "a100"}, "task_id": "t-1", "idempotency_key": "abc"}),
        ),
        (
            "submit_job.invalid_request.queue_is_a_number",
            json!({"queue": 1, "kind": "k"}),
        ),
        (
            "submit_job.invalid_request.priority_too_big",
            json!({"queue": "q", "kind": "k", "priority": 1u64 << 40}),
        ),
        (
            "batch_submit.ok.two",
            json!({"jobs": [{"queue": "q", "kind": "k"}, {"queue": "r", "kind": "k"}]}),
        ),
        (
            "batch_submit.invalid_request.unknown_field",
            json!({"jobs": [], "job": []}),
        ),
        (
            "lease.ok.full",
            json!({"worker_id": "w", "queues": ["q"], "tags": {"a": "b"}, "max_jobs": 10, "wait_ms": 100}),
        ),
        ("complete.ok.result", json!({"result": {"ok": true}})),
        (
            "complete_many.ok.one",
            json!({"completions": [{"lease_id": "lease_1", "result": 1}]}),
        ),
        (
            "complete_many.invalid_request.bad_lease_id",
            json!({"completions": [{"lease_id": "lease_x"}]}),
        ),
        (
            "fail.ok.retryable",
            json!({"error": "boom", "retryable": true}),
        ),
        (
            "ingest_records.ok.two_records",
            json!({"first_index": 3, "records": [
                {"instruction": "fix it", "pre": "a", "post": "b", "language": "rust", "tags": ["x"], "metadata": {"z": 1, "a": [true]}},
                {"instruction": " ", "pre": "", "post": "", "language": "Go"}
            ]}),
        ),
        (
            "state_update.ok.goals",
            json!({"goals": ["g"], "next_focus": "f", "lease_id": "lease_9"}),
        ),
        (
            "record_step.ok.pattern",
            json!({"step": 1, "model": "m", "policy_version": "p", "action": {"kind": "pattern", "language": "rust", "pattern": "$A", "rewrite": "$A"}, "sampling": {"temperature": 0.7}}),
        ),
        (
            "record_step.invalid_request.unknown_action",
            json!({"step": 1, "model": "m", "policy_version": "p", "action": {"kind": "nope"}}),
        ),
        (
            "sandbox_result.ok.ok",
            json!({"exit_code": 0, "outcome": "ok", "stdout": "s", "duration_ms": 5}),
        ),
        (
            "reward.ok.rule",
            json!({"value": 0.5, "verified": true, "components": {"tests": 1.0}, "source": "rule"}),
        ),
        (
            "dataset_meta.ok.meta",
            json!({"source": "s", "version": "v1", "license": "MIT", "downloaded_at": "2024-05-01T12:00:00Z", "sha256": "0".repeat(64), "num_records": 2, "url": "https://example.com/x"}),
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = bodies
        .into_iter()
        .map(|(name, body)| (format!("{name}.json"), body.to_string().into_bytes()))
        .collect();
    seeds.extend([
        ("submit_job.invalid_json.empty.json".to_string(), Vec::new()),
        (
            "submit_job.invalid_json.truncated.json".to_string(),
            br#"{"queue": "q", "ki"#.to_vec(),
        ),
        (
            "submit_job.invalid_json.not_utf8.json".to_string(),
            b"{\"queue\": \"\xff\xfe\"}".to_vec(),
        ),
        ("submit_job.invalid_json.deep_nesting.json".to_string(), {
            let mut text = br#"{"queue": "q", "kind": "k", "payload": "#.to_vec();
            text.extend(std::iter::repeat_n(b'[', 5_000));
            text
        }),
        (
            "submit_job.invalid_json.trailing_garbage.json".to_string(),
            br#"{"queue": "q", "kind": "k"} x"#.to_vec(),
        ),
        (
            "submit_job.invalid_request.top_level_array.json".to_string(),
            b"[1, 2]".to_vec(),
        ),
    ]);
    seeds
}

/// Replays `fuzz/corpus/http_body/`: `<type>.<outcome>.<what>.json`, where outcome is `ok`,
/// `invalid_json` or `invalid_request` for parsing as `<type>`.
#[test]
fn http_body_corpus_replays() {
    for (name, bytes) in corpus("http_body", http_body_seeds) {
        let accepted = check_http_body(&bytes);
        let mut parts = name.split('.');
        let (Some(target), Some(outcome)) = (parts.next(), parts.next()) else {
            continue;
        };
        let outcome_of = |kind: &str| match kind {
            "ok" => Some(true),
            "invalid_json" | "invalid_request" => Some(false),
            _ => None,
        };
        if let Some(ok) = outcome_of(outcome) {
            assert_eq!(
                accepted.contains(&target),
                ok,
                "corpus file http_body/{name}: accepted by {accepted:?}"
            );
        }
        if outcome == "invalid_json" || outcome == "invalid_request" {
            let error = match target {
                "submit_job" => parse_json::<SubmitJobRequest>(&bytes).err(),
                "batch_submit" => parse_json::<BatchSubmitRequest>(&bytes).err(),
                "complete_many" => parse_json::<CompleteManyRequest>(&bytes).err(),
                "record_step" => parse_json::<RecordStepRequest>(&bytes).err(),
                _ => None,
            };
            if let Some(error) = error {
                assert_eq!(
                    error.code.as_str(),
                    outcome,
                    "corpus file http_body/{name}: {}",
                    error.message
                );
            }
        }
    }
}

/// Replays `fuzz/corpus/dataset_record/` and `dataset_meta/`: `ok.<what>.json` must validate,
/// `err.<field>.<what>.json` must be refused naming `<field>`.
#[test]
fn dataset_corpus_replays() {
    for (target, seeds, check) in [
        (
            "dataset_record",
            dataset_record_seeds as fn() -> Vec<(String, Vec<u8>)>,
            check_record_value as fn(&Value) -> Result<(), FieldError>,
        ),
        ("dataset_meta", dataset_meta_seeds, check_meta_value),
    ] {
        for (name, bytes) in corpus(target, seeds) {
            let value: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|error| panic!("corpus file {target}/{name} is not JSON: {error}"));
            let outcome = check(&value);
            let mut parts = name.split('.');
            match (parts.next(), parts.next()) {
                (Some("ok"), _) => {
                    assert!(outcome.is_ok(), "corpus file {target}/{name}: {outcome:?}")
                }
                (Some("err"), Some(field)) => assert_eq!(
                    outcome.map_err(|error| error.field),
                    Err(field.to_string()),
                    "corpus file {target}/{name}"
                ),
                _ => {}
            }
        }
    }
}

fn dataset_record_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = json!({"instruction": "fix the bug", "pre": "a", "post": "b", "language": "rust", "tags": ["x", "y"], "metadata": {"b": 1, "a": {"c": [null]}}});
    let with = |field: &str, value: Value| {
        let mut record = valid.clone();
        record[field] = value;
        record
    };
    let cases: Vec<(&str, Value)> = vec![
        ("ok.full", valid.clone()),
        (
            "ok.minimal",
            json!({"instruction": "i", "pre": "", "post": "", "language": "Go"}),
        ),
        ("ok.nulls_for_optional", with("tags", Value::Null)),
        ("ok.64_tags", with("tags", json!(vec!["t"; 64]))),
        (
            "ok.language_64_chars",
            with("language", json!("é".repeat(64))),
        ),
        ("err.$.array", json!([1, 2])),
        ("err.$.string", json!("record")),
        ("err..empty_unknown_key", json!({"": null})),
        ("err.instruction.blank", with("instruction", json!(" \t\n"))),
        (
            "err.instruction.missing",
            json!({"pre": "", "post": "", "language": "Go"}),
        ),
        ("err.licence.unknown_field_first", {
            let mut record = with("instruction", json!(1));
            record["licence"] = json!("MIT");
            record
        }),
        ("err.pre.number", with("pre", json!(3))),
        (
            "err.language.65_chars",
            with("language", json!("é".repeat(65))),
        ),
        ("err.tags.65_tags", with("tags", json!(vec!["t"; 65]))),
        ("err.tags[1].blank_tag", with("tags", json!(["ok", "  "]))),
        (
            "err.tags[0].129_chars",
            with("tags", json!(["x".repeat(129)])),
        ),
        ("err.tags.object", with("tags", json!({"a": "b"}))),
        ("err.metadata.array", with("metadata", json!([1]))),
    ];
    cases
        .into_iter()
        .map(|(name, value)| (format!("{name}.json"), value.to_string().into_bytes()))
        .collect()
}

fn dataset_meta_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = json!({"source": "commitpack", "version": "2024-05", "license": "(MIT AND BSD-3-Clause) OR Apache-2.0 WITH LLVM-exception", "downloaded_at": "2024-02-29T23:59:60.123+05:30", "sha256": "A".repeat(64), "num_records": 0, "url": "https://example.com/x"});
    let with = |field: &str, value: Value| {
        let mut meta = valid.clone();
        meta[field] = value;
        meta
    };
    let cases: Vec<(&str, Value)> = vec![
        ("ok.full", valid.clone()),
        ("ok.url_null", with("url", Value::Null)),
        ("err.$.null", Value::Null),
        ("err.source.leading_space", with("source", json!(" s"))),
        ("err.source.control_char", with("source", json!("a\u{1}b"))),
        (
            "err.version.129_chars",
            with("version", json!("v".repeat(129))),
        ),
        ("err.license.unbalanced", with("license", json!("(MIT"))),
        (
            "err.license.dangling_operator",
            with("license", json!("MIT AND")),
        ),
        (
            "err.license.deep_parentheses",
            with(
                "license",
                json!(format!("{}MIT{}", "(".repeat(120), ")".repeat(121))),
            ),
        ),
        (
            "err.downloaded_at.no_zone",
            with("downloaded_at", json!("2024-05-01T12:00:00")),
        ),
        (
            "err.downloaded_at.feb_29_non_leap",
            with("downloaded_at", json!("2023-02-29T00:00:00Z")),
        ),
        (
            "err.downloaded_at.multibyte",
            with("downloaded_at", json!("2024-05-01T12:00:00é")),
        ),
        (
            "err.sha256.63_digits",
            with("sha256", json!("a".repeat(63))),
        ),
        ("err.num_records.negative", with("num_records", json!(-1))),
        ("err.num_records.float", with("num_records", json!(1.5))),
        ("err.url.no_scheme", with("url", json!("example.com"))),
        ("err.url.space", with("url", json!("https://exa mple.com"))),
        ("err.extra.unknown_field", with("extra", json!(1))),
    ];
    cases
        .into_iter()
        .map(|(name, value)| (format!("{name}.json"), value.to_string().into_bytes()))
        .collect()
}

fn http_seed_bodies() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        corpus("http_body", http_body_seeds)
            .into_iter()
            .map(|(_, bytes)| bytes)
            .filter(|bytes| bytes.len() < 4096)
            .collect()
    })
}

proptest! {
    #![proptest_config(fuzz_config(10_000))]

    #[test]
    fn http_bodies_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_http_body(&bytes);
    }

    #[test]
    fn http_bodies_from_arbitrary_json(value in arbitrary_json(&["queue", "kind", "payload", "jobs", "worker_id", "queues", "records", "first_index", "result", "error", "completions", "lease_id", "step", "action", "kind", "outcome", "value", "verified", "source"])) {
        check_http_body(value.to_string().as_bytes());
    }

    /// Valid bodies with bytes changed, inserted or cut: the JSON text mutations a broken
    /// client or an attacker would send.
    #[test]
    fn mutated_http_bodies(
        seed in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), prop_oneof![any::<u8>(), prop::sample::select(&b"{}[]\",:0-e.\\ntu"[..])], 0u8..3), 1..5),
    ) {
        let seeds = http_seed_bodies();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for (at, byte, kind) in edits {
            let position = at.index(bytes.len() + 1);
            match kind {
                0 if position < bytes.len() => bytes[position] = byte,
                1 => bytes.insert(position, byte),
                _ => bytes.truncate(position),
            }
        }
        check_http_body(&bytes);
    }
}
