//! Target 1: log segment files (frames, recovery, the reader).

use super::*;

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
        (
            "ok-3.trailing_zeros_shorter_than_a_frame_header.seg".to_string(),
            [three.bytes.clone(), vec![0; 5]].concat(),
        ),
        (
            // The second frame's payload is empty, so its first header bytes (the length) are
            // zeros: torn there, the tail is indistinguishable from preallocated zeros.
            "ok-1.torn_in_the_zero_length_of_an_empty_frame.seg".to_string(),
            three.bytes[..second_start + 3].to_vec(),
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
