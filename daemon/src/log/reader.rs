//! Reading frames back: find the segment holding the first wanted lsn, seek to the nearest
//! frame start the offset index knows (see `index.rs`), skip the few earlier frames by their
//! header, verify the CRC of every frame returned.
//!
//! A reader never writes and may run while the writer appends; it must be asked only for lsns up
//! to the writer's durable lsn, because beyond it a frame may be half written.
//!
//! Architecture invariant: a read of frames `after < lsn <= up_to` costs the bytes of those
//! frames plus at most one mark spacing (or one group-commit batch) of skipped frames, whatever
//! the size of the segment or the log; `LogReader::bytes_read` counts it, and a test holds it.

use super::cold::ColdSegments;
use super::frame::{check_frame_parts, FrameHeader, FRAME_HEADER_BYTES};
use super::index::{Mark, OffsetIndex, MARK_SPACING_BYTES};
use super::local_start::read_local_start;
use super::segment::{decode_segment_header, list_segments, segment_path, SEGMENT_HEADER_BYTES};
use super::tiered::{Eviction, LocalTier, TieredFrames};
use super::{LogError, Lsn};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Read buffer per open segment: large enough that skipping small frames costs no syscalls.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// One frame as stored: the payload is returned undecoded, the caller owns its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Position of the frame in the log.
    pub lsn: Lsn,
    /// Format version of the payload, for the caller's decoder and upcasters.
    pub format_version: u8,
    /// The bytes given to `append`.
    pub payload: Vec<u8>,
}

/// Reads ranges of frames from a log directory. Clones share one offset index and one byte
/// counter, so every reader of a running daemon seeks with what the writer and recovery learned.
#[derive(Debug, Clone)]
pub struct LogReader {
    shared: Arc<ReaderShared>,
}

#[derive(Debug)]
struct ReaderShared {
    dir: PathBuf,
    frame_bytes_max: u32,
    index: Arc<OffsetIndex>,
    /// Bytes read from segment files by every iterator of this reader and its clones.
    bytes_read: Arc<AtomicU64>,
    /// Where the local files start and where the records before them are read from.
    tier: Arc<LocalTier>,
}

impl LogReader {
    /// Opens a reader on `dir` with an index of its own (filled as it reads). `frame_bytes_max`
    /// must be at least the writer's, since frames longer than it are reported as damage rather
    /// than read. A running daemon reads through [`super::Log::reader`] instead, whose index
    /// recovery and the writer keep complete.
    ///
    /// When local retention deleted the first segments (`local-start.json`), reads before the
    /// local log fail until [`Self::set_cold_source`] names where they are.
    pub fn open(dir: &Path, frame_bytes_max: u32) -> Result<Self, LogError> {
        let index = Arc::new(OffsetIndex::default());
        let segments = list_segments(dir)?;
        for segment in &segments {
            index.add_segment(segment.first_lsn);
        }
        let first_lsn = match (read_local_start(dir)?, segments.first()) {
            (Some(marker), Some(first)) => marker.first_lsn.min(first.first_lsn),
            (Some(marker), None) => marker.first_lsn,
            (None, _) => 1,
        };
        let tier = Arc::new(LocalTier::new(dir, first_lsn));
        Ok(Self::with_index(dir, frame_bytes_max, index, tier))
    }

    pub(crate) fn with_index(
        dir: &Path,
        frame_bytes_max: u32,
        index: Arc<OffsetIndex>,
        tier: Arc<LocalTier>,
    ) -> Self {
        LogReader {
            shared: Arc::new(ReaderShared {
                dir: dir.to_path_buf(),
                frame_bytes_max,
                index,
                bytes_read: Arc::new(AtomicU64::new(0)),
                tier,
            }),
        }
    }

    /// The first lsn held by a local segment file: 1 unless local retention deleted archived
    /// segments (their records are then read from the cold source).
    pub fn local_first_lsn(&self) -> Lsn {
        Lsn(self.shared.tier.first_lsn())
    }

    /// Where reads before [`Self::local_first_lsn`] go, for this reader, its clones and every
    /// reader of the same [`super::Log`]. Set once; later calls keep the first source.
    pub fn set_cold_source(&self, cold: Arc<dyn ColdSegments>) {
        self.shared.tier.set_cold(cold);
    }

    /// Deletes the oldest local segment (named `first_lsn`; the log goes on in the segment named
    /// `next_first_lsn`, which must exist), after recording durably that the local log starts
    /// at `next_first_lsn` and the earlier records are archived at `archive_url`. Refused
    /// ([`Eviction::InUse`]) while a read of this process may still open it. The caller
    /// (`archive::retention`) checked the archive holds it with the same sha256.
    pub fn evict_oldest_segment(
        &self,
        first_lsn: Lsn,
        next_first_lsn: Lsn,
        archive_url: &str,
    ) -> Result<Eviction, LogError> {
        self.shared
            .tier
            .evict_oldest(first_lsn.0, next_first_lsn.0, archive_url)
    }

    /// The directory this reader reads.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The largest payload this reader trusts.
    pub fn frame_bytes_max(&self) -> u32 {
        self.shared.frame_bytes_max
    }

    /// Bytes read from segment files so far by this reader and its clones (headers, skipped
    /// frames and read-ahead included): what reading has cost, for metrics and tests.
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Relaxed)
    }

    /// Frames with `after < lsn <= up_to`, in order, each CRC-checked. The iteration ends early,
    /// without an error, where the log ends. `up_to` must not exceed the durable lsn while a writer
    /// runs. After the first error the iterator ends. Frames before the local log's first lsn
    /// come from the cold source (the archive), checked the same way.
    pub fn frames(
        &self,
        after: Lsn,
        up_to: Lsn,
    ) -> impl Iterator<Item = Result<RawFrame, LogError>> + Send + 'static {
        let reader = self.clone();
        TieredFrames::new(
            self.shared.tier.clone(),
            self.shared.frame_bytes_max,
            after.0,
            up_to.0,
            move |after, up_to| Box::new(reader.local_frames(Lsn(after), Lsn(up_to))) as _,
        )
    }

    /// [`Self::frames`] from the local segment files only.
    fn local_frames(&self, after: Lsn, up_to: Lsn) -> Frames {
        let mut frames = Frames {
            shared: self.shared.clone(),
            after: after.0,
            up_to: up_to.0,
            next_lsn: 0,
            start: None,
            end: None,
            segment: None,
            pending_error: None,
            done: after >= up_to,
        };
        if !frames.done {
            match self.start_segment(after.0.saturating_add(1)) {
                Ok(Some(first_lsn)) => {
                    let start = self.shared.index.start_for(first_lsn, after.0 + 1);
                    frames.next_lsn = start.lsn;
                    frames.start = Some((first_lsn, start.offset));
                    frames.end = self.durable_end(up_to);
                }
                Ok(None) => frames.done = true,
                Err(error) => frames.pending_error = Some(error),
            }
        }
        frames
    }

    /// The segment (by first lsn) and byte offset where frame `up_to` ends, if the index has a
    /// mark exactly there (the writer records one at the end of every durable run).
    pub(crate) fn durable_end(&self, up_to: Lsn) -> Option<(u64, u64)> {
        let next = up_to.0.checked_add(1)?;
        let index = &self.shared.index;
        let segment = index.segment_holding(next)?;
        let mark = index.start_for(segment, next);
        (mark.lsn == next).then_some((segment, mark.offset))
    }

    /// The first lsn of the segment holding `lsn` (or the last segment, if `lsn` is past it).
    /// Segments created after the index last heard of one are found by name while reading.
    fn start_segment(&self, lsn: u64) -> Result<Option<u64>, LogError> {
        let index = &self.shared.index;
        if let Some(first_lsn) = index.segment_holding(lsn) {
            return Ok(Some(first_lsn));
        }
        // Nothing known at or before `lsn`: the log may have been empty when this reader opened.
        for segment in list_segments(&self.shared.dir)? {
            index.add_segment(segment.first_lsn);
        }
        Ok(index.segment_holding(lsn))
    }
}

/// The iterator behind [`LogReader::frames`]. It walks segments by name: the segment after the one
/// ending at lsn `n` is named `n + 1`.
struct Frames {
    shared: Arc<ReaderShared>,
    after: u64,
    up_to: u64,
    /// The lsn the next frame in the file must carry.
    next_lsn: u64,
    /// Segment and byte offset of the first frame to read, taken from the index; used once.
    start: Option<(u64, u64)>,
    /// Segment and byte offset where frame `up_to` ends, when the index knows it (a reader
    /// following the durable tail): reads of that segment stop there instead of reading ahead
    /// into the zeros the writer preallocates after its last frame.
    end: Option<(u64, u64)>,
    segment: Option<OpenSegment>,
    pending_error: Option<LogError>,
    done: bool,
}

struct OpenSegment {
    first_lsn: u64,
    path: PathBuf,
    reader: BufReader<CountedFile>,
    offset: u64,
    /// Length when opened: frames up to the durable lsn were all inside it by then.
    len_bytes: u64,
    /// Offset of the last mark this iterator knows in this segment, so it records a new one
    /// only every [`MARK_SPACING_BYTES`].
    last_mark_offset: u64,
}

impl Iterator for Frames {
    type Item = Result<RawFrame, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.pending_error.take() {
            self.done = true;
            return Some(Err(error));
        }
        if self.done {
            return None;
        }
        match self.read_next() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                self.segment = None; // Not at a frame boundary: nothing to record on drop.
                Some(Err(error))
            }
        }
    }
}

impl Drop for Frames {
    /// Leaves where this read ended in the index, so the next read from here seeks straight to it
    /// (the writer records the same for a running daemon; this serves readers of a closed log).
    fn drop(&mut self) {
        if let Some(segment) = &self.segment {
            self.shared.index.record(
                segment.first_lsn,
                Mark {
                    lsn: self.next_lsn,
                    offset: segment.offset,
                },
            );
        }
    }
}

impl Frames {
    /// The byte offset reads of segment `first_lsn` stop at, if known.
    fn end_in(&self, first_lsn: u64) -> Option<u64> {
        self.end
            .filter(|&(segment, _)| segment == first_lsn)
            .map(|(_, offset)| offset)
    }

    fn read_next(&mut self) -> Result<Option<RawFrame>, LogError> {
        while self.next_lsn <= self.up_to {
            if self.segment.is_none() {
                self.segment = match self.start.take() {
                    Some((first_lsn, offset)) => open_segment(
                        &self.shared,
                        (first_lsn, self.end_in(first_lsn)),
                        offset,
                        self.next_lsn,
                    )?,
                    // The segment after the one that ended at lsn `n` is named `n + 1`.
                    None => open_segment(
                        &self.shared,
                        (self.next_lsn, self.end_in(self.next_lsn)),
                        SEGMENT_HEADER_BYTES as u64,
                        self.next_lsn,
                    )?,
                };
            }
            let Some(segment) = self.segment.as_mut() else {
                return Ok(None); // No such segment: the log ends here.
            };
            if segment.offset == segment.len_bytes {
                if segment.first_lsn == self.next_lsn {
                    return Ok(None); // An empty segment: only the last one can be empty.
                }
                // End of this segment; the next one, if any, is named by the next lsn.
                self.segment = None;
                continue;
            }
            let frame_offset = segment.offset;
            let (header_bytes, header) = read_frame_header(segment, self.shared.frame_bytes_max)?;
            if header_bytes == [0; FRAME_HEADER_BYTES] {
                // The zeros a writer preallocates after its last frame, left by one that did
                // not stop cleanly (`active.rs`): the log ends here (no frame has lsn 0).
                return Ok(None);
            }
            if header.lsn != self.next_lsn {
                return Err(unreadable(
                    segment,
                    frame_offset,
                    format!(
                        "lsn gap: frame has lsn {}, expected {}",
                        header.lsn, self.next_lsn
                    ),
                ));
            }
            if frame_offset - segment.last_mark_offset >= MARK_SPACING_BYTES {
                segment.last_mark_offset = frame_offset;
                self.shared.index.record(
                    segment.first_lsn,
                    Mark {
                        lsn: header.lsn,
                        offset: frame_offset,
                    },
                );
            }
            self.next_lsn += 1;
            if header.lsn <= self.after {
                skip_payload(segment, header.payload_len)?;
                continue;
            }
            return read_payload(segment, frame_offset, &header_bytes, header).map(Some);
        }
        Ok(None)
    }
}

/// A segment file whose reads add to the reader's byte counter.
/// Reads stop at `limit` (the end of the frames wanted, when known) as at the end of the file.
struct CountedFile {
    file: File,
    bytes_read: Arc<AtomicU64>,
    position: u64,
    limit: u64,
}

impl Read for CountedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = usize::try_from(self.limit.saturating_sub(self.position)).unwrap_or(usize::MAX);
        let wanted = buf.len().min(room);
        let read = self.file.read(&mut buf[..wanted])?;
        self.position += read as u64;
        self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

impl Seek for CountedFile {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.position = self.file.seek(position)?;
        Ok(self.position)
    }
}

/// Opens the segment named `first_lsn`, checks its header and positions it at `offset`, where the
/// frame `lsn_at_offset` starts; reads stop at `end` when given. `Ok(None)` when there is no such
/// segment.
fn open_segment(
    shared: &ReaderShared,
    (first_lsn, end): (u64, Option<u64>),
    offset: u64,
    lsn_at_offset: u64,
) -> Result<Option<OpenSegment>, LogError> {
    let path = segment_path(&shared.dir, first_lsn);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LogError::Io { path, source }),
    };
    let len_bytes = match file.metadata() {
        Ok(metadata) => metadata.len().min(end.unwrap_or(u64::MAX)),
        Err(source) => return Err(LogError::Io { path, source }),
    };
    shared.index.add_segment(first_lsn);
    let file = CountedFile {
        file,
        bytes_read: shared.bytes_read.clone(),
        position: 0,
        limit: len_bytes,
    };
    let mut segment = OpenSegment {
        first_lsn,
        path,
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        offset: 0,
        len_bytes,
        last_mark_offset: offset,
    };
    let header = read_segment_header(&mut segment)?;
    let header_first_lsn =
        decode_segment_header(&header).map_err(|detail| unreadable(&segment, 0, detail))?;
    if header_first_lsn != first_lsn {
        return Err(unreadable(
            &segment,
            0,
            format!("segment header records first lsn {header_first_lsn}, expected {first_lsn}"),
        ));
    }
    if offset > segment.len_bytes {
        return Err(unreadable(
            &segment,
            offset,
            format!(
                "the offset index places lsn {lsn_at_offset} at byte {offset}, past the end of                  the file ({} bytes)",
                segment.len_bytes
            ),
        ));
    }
    if offset != segment.offset {
        segment
            .reader
            .seek(SeekFrom::Start(offset))
            .map_err(|source| LogError::Io {
                path: segment.path.clone(),
                source,
            })?;
        segment.offset = offset;
    }
    Ok(Some(segment))
}

/// Reads the segment header with one small `pread`-sized read, so a reader that then seeks deep
/// into the file does not first fill its buffer from the start.
fn read_segment_header(segment: &mut OpenSegment) -> Result<[u8; SEGMENT_HEADER_BYTES], LogError> {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        let outcome = segment.reader.get_mut().read(&mut header[filled..]);
        match outcome {
            Ok(0) => {
                return Err(unreadable(
                    segment,
                    0,
                    "incomplete segment header: the file ends first".to_string(),
                ))
            }
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(LogError::Io {
                    path: segment.path.clone(),
                    source,
                })
            }
        }
    }
    segment.offset = SEGMENT_HEADER_BYTES as u64;
    Ok(header)
}

fn read_frame_header(
    segment: &mut OpenSegment,
    frame_bytes_max: u32,
) -> Result<([u8; FRAME_HEADER_BYTES], FrameHeader), LogError> {
    let frame_offset = segment.offset;
    let mut bytes = [0; FRAME_HEADER_BYTES];
    let left = segment.len_bytes.saturating_sub(frame_offset);
    if left < FRAME_HEADER_BYTES as u64 {
        // The file ends inside a header. Zeros there are preallocated space cut short (or a torn
        // frame whose written bytes were zeros, never acknowledged): recovery keeps them as no
        // frame (`recovery::is_preallocated`), so they read as the all-zero header, the log's end.
        let tail = &mut bytes[..left as usize];
        read_exact(segment, tail, frame_offset, "frame header")?;
        if tail.iter().all(|&byte| byte == 0) {
            return Ok((bytes, FrameHeader::parse(&bytes)));
        }
        return Err(unreadable(
            segment,
            frame_offset,
            "incomplete frame header: the file ends first".to_string(),
        ));
    }
    read_exact(segment, &mut bytes, frame_offset, "frame header")?;
    let header = FrameHeader::parse(&bytes);
    if header.payload_len > frame_bytes_max {
        return Err(unreadable(
            segment,
            frame_offset,
            format!(
                "frame length {} is over the maximum {frame_bytes_max}",
                header.payload_len
            ),
        ));
    }
    if frame_offset + header.frame_bytes() > segment.len_bytes {
        return Err(unreadable(
            segment,
            frame_offset,
            format!(
                "incomplete frame of {} bytes: the file ends at byte {} (read beyond the durable \
                 lsn, or damage)",
                header.frame_bytes(),
                segment.len_bytes
            ),
        ));
    }
    Ok((bytes, header))
}

fn skip_payload(segment: &mut OpenSegment, payload_len: u32) -> Result<(), LogError> {
    // `seek_relative` keeps the buffer when the target is inside it, so skipping small frames
    // costs no syscall.
    segment
        .reader
        .seek_relative(i64::from(payload_len))
        .map_err(|source| LogError::Io {
            path: segment.path.clone(),
            source,
        })?;
    segment.offset += u64::from(payload_len);
    Ok(())
}

fn read_payload(
    segment: &mut OpenSegment,
    frame_offset: u64,
    header_bytes: &[u8; FRAME_HEADER_BYTES],
    header: FrameHeader,
) -> Result<RawFrame, LogError> {
    // The length was checked against `frame_bytes_max` and the file length before this.
    let mut payload = vec![0; header.payload_len as usize];
    read_exact(segment, &mut payload, frame_offset, "frame payload")?;
    check_frame_parts(header_bytes, &payload)
        .map_err(|defect| unreadable(segment, frame_offset, defect.to_string()))?;
    Ok(RawFrame {
        lsn: Lsn(header.lsn),
        format_version: header.format_version,
        payload,
    })
}

fn read_exact(
    segment: &mut OpenSegment,
    bytes: &mut [u8],
    item_offset: u64,
    what: &str,
) -> Result<(), LogError> {
    match segment.reader.read_exact(bytes) {
        Ok(()) => {
            segment.offset += bytes.len() as u64;
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Err(unreadable(
            segment,
            item_offset,
            format!("incomplete {what}: the file ends first"),
        )),
        Err(source) => Err(LogError::Io {
            path: segment.path.clone(),
            source,
        }),
    }
}

fn unreadable(segment: &OpenSegment, offset: u64, detail: String) -> LogError {
    LogError::Unreadable {
        path: segment.path.clone(),
        offset,
        detail,
    }
}

/// Where records are read back from: every replay (`crate::replay`) goes through this trait.
/// [`LogReader`] is the log as one source whatever tier holds a frame: the local segment files
/// from [`LogReader::local_first_lsn`] on, and below it the segments local retention deleted,
/// read back from the archive (`tiered.rs`, `cold.rs`), so no projection knows the difference.
pub trait LogSource: Sync {
    /// Frames with `after < lsn <= up_to`, in order, each CRC-checked; the iteration ends early,
    /// without an error, where the source ends, and after the first error.
    fn frames_in(
        &self,
        after: Lsn,
        up_to: Lsn,
    ) -> Box<dyn Iterator<Item = Result<RawFrame, LogError>> + Send + '_>;
}

impl LogSource for LogReader {
    fn frames_in(
        &self,
        after: Lsn,
        up_to: Lsn,
    ) -> Box<dyn Iterator<Item = Result<RawFrame, LogError>> + Send + '_> {
        Box::new(self.frames(after, up_to))
    }
}
