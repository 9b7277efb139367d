//! Crash recovery: check every segment, repair a provably torn tail, refuse anything else.
//!
//! Sealed segments must be valid to the exact end of file. In the last (active) segment the first
//! bad frame is a torn tail only if no valid frame with a plausible lsn follows it anywhere in the
//! file; a valid frame after damage means acknowledged data sits behind the damage, and cutting
//! there would lose it (Protocol-Aware Recovery, FAST'18), so recovery refuses. Zeros from the
//! end of the last frame to the end of the last segment are the writer's preallocated space
//! (`active.rs`), not damage.

use super::frame::{check_frame, peek_lsn, FrameCheck, FRAME_HEADER_BYTES};
use super::index::{Mark, OffsetIndex, MARK_SPACING_BYTES};
use super::local_start::{local_start_path, read_local_start};
use super::segment::{
    decode_segment_header, list_segments, sync_dir, SegmentEntry, SEGMENT_HEADER_BYTES,
};
use super::writer::ActiveSegment;
use super::{LogError, TornTail};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

/// The state of the log after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) last_lsn: u64,
    /// The first segment's first lsn: 1 unless local retention deleted archived segments.
    pub(crate) local_first_lsn: u64,
    /// The last segment, opened for appending; `None` when the log holds no segment.
    pub(crate) active: Option<ActiveSegment>,
    pub(crate) segments: usize,
    pub(crate) frames_scanned: u64,
    pub(crate) truncated: Option<TornTail>,
}

/// Recovers the log in `dir`, which must exist, recording in `index` where frames start (every
/// [`MARK_SPACING_BYTES`] and at the end of each segment) as it scans.
pub(crate) fn recover(
    dir: &Path,
    frame_bytes_max: u32,
    index: &OffsetIndex,
) -> Result<Recovered, LogError> {
    let mut segments = list_segments(dir)?;
    let mut truncated = remove_partial_last_segment(dir, &mut segments)?;
    let local_first_lsn = local_first_lsn(dir, &segments)?;
    // A roll fsyncs the old segment before creating the new file, so when a partial new segment
    // was found, every remaining segment was sealed and must be intact to its end.
    let last_may_be_torn = truncated.is_none();

    // The segments before the last are read and scanned on worker threads, the last on this
    // one: recovery reads each segment whole, once, and judges the scans in log order below, so
    // the first problem in the log is the one reported, as a scan in order would report it.
    let sealed = &segments[..segments.len().saturating_sub(1)];
    let mut sealed_scans = scan_sealed_segments(sealed, frame_bytes_max).into_iter();
    let mut bytes = Vec::new();
    let mut last_lsn = local_first_lsn - 1;
    let mut frames_scanned = 0;
    let mut active_len_bytes = 0;
    for (position, segment) in segments.iter().enumerate() {
        let may_be_torn = last_may_be_torn && position + 1 == segments.len();
        let scan = match sealed_scans.next() {
            Some(sealed) => sealed?,
            None => {
                read_whole_file(&segment.path, &mut bytes)?;
                check_segment_header(segment, &bytes)?;
                scan_frames(&bytes, segment.first_lsn, frame_bytes_max)
            }
        };
        check_continues(segment, last_lsn)?;
        index.add_segment(segment.first_lsn);
        for &mark in &scan.marks {
            index.record(segment.first_lsn, mark);
        }
        frames_scanned += scan.frames;
        last_lsn = scan.last_lsn;
        active_len_bytes = scan.end_offset as u64;
        let Some(damage) = scan.damage else { continue };
        if !may_be_torn {
            return Err(corrupt(
                segment,
                damage.offset,
                damage.detail + " in a sealed segment",
            ));
        }
        if let Some(torn) = repair_tail(segment, &bytes, damage, last_lsn, frame_bytes_max)? {
            truncated = Some(torn);
        }
    }

    let active = match segments.last() {
        Some(last) => Some(ActiveSegment::reopen(last, active_len_bytes)?),
        None => None,
    };
    Ok(Recovered {
        last_lsn,
        local_first_lsn,
        active,
        segments: segments.len(),
        frames_scanned,
        truncated,
    })
}

/// Judges the damage found in the last segment: the writer's preallocated zeros (nothing to
/// do), a torn tail (cut, and reported), or damage with acknowledged frames behind it (refused).
fn repair_tail(
    segment: &SegmentEntry,
    bytes: &[u8],
    damage: Damage,
    last_lsn: u64,
    frame_bytes_max: u32,
) -> Result<Option<TornTail>, LogError> {
    if is_preallocated(&bytes[damage.offset..]) {
        // Zeros the writer wrote ahead of its last frame (`active.rs`): no frame was ever
        // there, so nothing is cut; the writer goes on overwriting them.
        return Ok(None);
    }
    if let Some(later_lsn) = damage.valid_frame_lsn.filter(|&lsn| lsn > last_lsn) {
        return Err(corrupt(
            segment,
            damage.offset,
            format!(
                "{} (frames from lsn {} to {} are missing)",
                damage.detail,
                last_lsn + 1,
                later_lsn - 1
            ),
        ));
    }
    if let Some((position, lsn)) =
        find_later_valid_frame(bytes, damage.offset, last_lsn, frame_bytes_max)
    {
        return Err(corrupt(
            segment,
            damage.offset,
            format!(
                "{}, but a valid frame with lsn {lsn} follows at byte {position}",
                damage.detail
            ),
        ));
    }
    truncate_torn_tail(segment, bytes, damage).map(Some)
}

/// Where the local log must start: lsn 1, unless `local-start.json` records that local
/// retention deleted the segments before its lsn after archiving them. The first segment may
/// then start at or before that lsn (a crash between writing the marker and deleting the
/// segments leaves them), never after it: that is a missing segment, refused as without a marker.
fn local_first_lsn(dir: &Path, segments: &[SegmentEntry]) -> Result<u64, LogError> {
    let Some(marker) = read_local_start(dir)? else {
        return Ok(1);
    };
    match segments.first() {
        Some(first) if first.first_lsn <= marker.first_lsn => Ok(first.first_lsn),
        Some(first) => Err(corrupt(
            first,
            0,
            format!(
                "lsn gap: the first segment starts at lsn {} but local-start.json says the local log starts at lsn {} (the records before it are archived at {}); a segment is missing",
                first.first_lsn, marker.first_lsn, marker.archive_url
            ),
        )),
        None => Err(LogError::Corrupt {
            path: local_start_path(dir),
            offset: 0,
            detail: format!(
                "the log holds no segment, but local-start.json says it starts at lsn {} (the records before it are archived at {}); restore it with agentd restore",
                marker.first_lsn, marker.archive_url
            ),
        }),
    }
}

/// A last segment shorter than its header (or a header that never reached the disk: all zeros) is
/// what a crash while rolling leaves. It holds no frame, so removing it loses nothing.
fn remove_partial_last_segment(
    dir: &Path,
    segments: &mut Vec<SegmentEntry>,
) -> Result<Option<TornTail>, LogError> {
    let Some(last) = segments.last() else {
        return Ok(None);
    };
    let len_bytes = std::fs::metadata(&last.path)
        .map_err(|source| LogError::io(&last.path, source))?
        .len();
    if len_bytes > SEGMENT_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    read_whole_file(&last.path, &mut bytes)?;
    let partial = bytes.len() < SEGMENT_HEADER_BYTES || bytes.iter().all(|&b| b == 0);
    if !partial {
        return Ok(None);
    }
    std::fs::remove_file(&last.path).map_err(|source| LogError::io(&last.path, source))?;
    sync_dir(dir).map_err(|source| LogError::io(dir, source))?;
    let torn = TornTail {
        path: last.path.clone(),
        offset: 0,
        bytes_removed: bytes.len() as u64,
        reason: format!(
            "partial segment header ({} of {SEGMENT_HEADER_BYTES} bytes; crash while rolling): \
             file removed",
            bytes.len()
        ),
    };
    tracing::warn!(path = %torn.path.display(), reason = %torn.reason, "log: removed a torn segment");
    segments.pop();
    Ok(Some(torn))
}

/// A sealed segment as its scanning thread left it: its frames, or why the file could not be
/// read or its header is not valid.
type SealedScan = Result<SegmentScan, LogError>;

/// Most threads recovery scans sealed segments on; each holds one segment (at most
/// `segment_bytes_max`, 64 MiB by default) in memory.
const SCAN_THREADS_MAX: usize = 4;

/// Reads and scans `sealed`, in order of the result, on as many threads as there are cores (at
/// most [`SCAN_THREADS_MAX`]): checking the CRC of every frame is most of a restart's time when
/// the sequencer state comes from a snapshot, and each segment is checked on its own.
fn scan_sealed_segments(sealed: &[SegmentEntry], frame_bytes_max: u32) -> Vec<SealedScan> {
    let scan_one = |segment: &SegmentEntry, bytes: &mut Vec<u8>| -> SealedScan {
        read_whole_file(&segment.path, bytes)?;
        check_segment_header(segment, bytes)?;
        Ok(scan_frames(bytes, segment.first_lsn, frame_bytes_max))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(SCAN_THREADS_MAX)
        .min(sealed.len());
    if threads <= 1 {
        let mut bytes = Vec::new();
        return sealed
            .iter()
            .map(|segment| scan_one(segment, &mut bytes))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut scans: Vec<Option<SealedScan>> = sealed.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut bytes = Vec::new();
                    let mut done = Vec::new();
                    loop {
                        let position = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(segment) = sealed.get(position) else {
                            return done;
                        };
                        done.push((position, scan_one(segment, &mut bytes)));
                    }
                })
            })
            .collect();
        for worker in workers {
            // A scan does not panic (it only slices within bounds); if one did, recovery must
            // not go on as if its segments were checked.
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (position, scan) in done {
                scans[position] = Some(scan);
            }
        }
    });
    scans
        .into_iter()
        .map(|scan| scan.expect("every position below the count is taken by one worker"))
        .collect()
}

/// Checks that a segment's header is valid and names the file's first lsn.
fn check_segment_header(segment: &SegmentEntry, bytes: &[u8]) -> Result<(), LogError> {
    let Some(header) = bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
        return Err(corrupt(
            segment,
            0,
            format!(
                "bad segment header: file is {} bytes, shorter than the {SEGMENT_HEADER_BYTES}-byte header",
                bytes.len()
            ),
        ));
    };
    let header_first_lsn =
        decode_segment_header(header).map_err(|detail| corrupt(segment, 0, detail))?;
    if header_first_lsn != segment.first_lsn {
        return Err(corrupt(
            segment,
            0,
            format!(
                "bad segment header: it records first lsn {header_first_lsn} but the file is named for {}",
                segment.first_lsn
            ),
        ));
    }
    Ok(())
}

/// Checks that a segment starts where the previous one ended.
fn check_continues(segment: &SegmentEntry, previous_last_lsn: u64) -> Result<(), LogError> {
    let expected_first_lsn = previous_last_lsn + 1;
    if segment.first_lsn != expected_first_lsn {
        return Err(corrupt(
            segment,
            0,
            format!(
                "lsn gap: segment starts at lsn {} but the log continues at lsn {expected_first_lsn} \
                 (a segment is missing or misnamed)",
                segment.first_lsn
            ),
        ));
    }
    Ok(())
}

/// The valid prefix of a segment and what stopped the scan.
#[derive(Debug)]
struct SegmentScan {
    /// Byte offset just after the last valid frame.
    end_offset: usize,
    /// Lsn of the last valid frame, or `first_lsn - 1` when there is none.
    last_lsn: u64,
    frames: u64,
    damage: Option<Damage>,
    /// Frame starts every [`MARK_SPACING_BYTES`], then the end of the valid prefix.
    marks: Vec<Mark>,
}

#[derive(Debug)]
struct Damage {
    offset: usize,
    detail: String,
    /// Set when the frame at `offset` is itself valid but carries an unexpected lsn.
    valid_frame_lsn: Option<u64>,
}

fn scan_frames(bytes: &[u8], first_lsn: u64, frame_bytes_max: u32) -> SegmentScan {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected_lsn = first_lsn;
    let mut frames = 0;
    let mut marks = Vec::new();
    let mut last_mark_offset = offset;
    let damage = loop {
        if offset == bytes.len() {
            break None;
        }
        let (detail, valid_frame_lsn) = match check_frame(&bytes[offset..], frame_bytes_max) {
            FrameCheck::Valid(header) if header.lsn == expected_lsn => {
                if offset - last_mark_offset >= MARK_SPACING_BYTES as usize {
                    last_mark_offset = offset;
                    marks.push(Mark {
                        lsn: expected_lsn,
                        offset: offset as u64,
                    });
                }
                // A valid frame lies entirely inside `bytes`, so this cannot pass the end.
                offset += header.frame_bytes() as usize;
                expected_lsn += 1;
                frames += 1;
                continue;
            }
            FrameCheck::Valid(header) => (
                format!("lsn gap: frame has lsn {}, expected {expected_lsn}", header.lsn),
                Some(header.lsn),
            ),
            FrameCheck::Incomplete {
                available_bytes,
                needed_bytes,
            } => (
                format!(
                    "incomplete frame: it needs {needed_bytes} bytes but the file ends after {available_bytes}"
                ),
                None,
            ),
            FrameCheck::Invalid(defect) => (defect.to_string(), None),
        };
        break Some(Damage {
            offset,
            detail,
            valid_frame_lsn,
        });
    };
    marks.push(Mark {
        lsn: expected_lsn,
        offset: offset as u64,
    });
    SegmentScan {
        end_offset: offset,
        last_lsn: expected_lsn - 1,
        frames,
        damage,
        marks,
    }
}

/// Scans forward byte by byte from just after `damage_offset` for a valid frame whose lsn could
/// belong after `last_good_lsn`. Frames between the damage and a position `p` take at least
/// `FRAME_HEADER_BYTES` each, which bounds the plausible lsn there; that cheap filter on the
/// header keeps the CRC off almost every position.
fn find_later_valid_frame(
    bytes: &[u8],
    damage_offset: usize,
    last_good_lsn: u64,
    frame_bytes_max: u32,
) -> Option<(usize, u64)> {
    let mut position = damage_offset + 1;
    while let Some(header) = bytes
        .get(position..)
        .and_then(|rest| rest.first_chunk::<FRAME_HEADER_BYTES>())
    {
        let lsn = peek_lsn(header);
        let frames_between_max = ((position - damage_offset) / FRAME_HEADER_BYTES) as u64;
        let lsn_max = last_good_lsn
            .saturating_add(1)
            .saturating_add(frames_between_max);
        if lsn > last_good_lsn && lsn <= lsn_max {
            if let FrameCheck::Valid(frame) = check_frame(&bytes[position..], frame_bytes_max) {
                return Some((position, frame.lsn));
            }
        }
        position += 1;
    }
    None
}

/// Cuts the last segment at the end of its last good frame and makes the cut durable.
/// True for the zeros a writer preallocates after its last frame: only zero bytes, up to the end
/// of the file. A torn write that left any of its bytes is not all zeros, so it is still cut as
/// a torn tail (a write none of whose bytes landed left nothing to cut).
fn is_preallocated(tail: &[u8]) -> bool {
    tail.iter().all(|&byte| byte == 0)
}

fn truncate_torn_tail(
    segment: &SegmentEntry,
    bytes: &[u8],
    damage: Damage,
) -> Result<TornTail, LogError> {
    let file = OpenOptions::new()
        .write(true)
        .open(&segment.path)
        .map_err(|source| LogError::io(&segment.path, source))?;
    file.set_len(damage.offset as u64)
        .and_then(|()| file.sync_all())
        .map_err(|source| LogError::io(&segment.path, source))?;
    let torn = TornTail {
        path: segment.path.clone(),
        offset: damage.offset as u64,
        bytes_removed: (bytes.len() - damage.offset) as u64,
        reason: damage.detail,
    };
    tracing::warn!(
        path = %torn.path.display(),
        offset = torn.offset,
        bytes_removed = torn.bytes_removed,
        reason = %torn.reason,
        "log: truncated a torn tail (frames that were never acknowledged)"
    );
    Ok(torn)
}

fn read_whole_file(path: &Path, bytes: &mut Vec<u8>) -> Result<(), LogError> {
    bytes.clear();
    File::open(path)
        .and_then(|mut file| file.read_to_end(bytes))
        .map_err(|source| LogError::io(path, source))?;
    Ok(())
}

fn corrupt(segment: &SegmentEntry, offset: usize, detail: String) -> LogError {
    LogError::Corrupt {
        path: segment.path.clone(),
        offset: offset as u64,
        detail,
    }
}
