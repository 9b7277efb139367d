//! Reading frames back: find the segment by binary search on segment names, skip earlier frames by
//! their header, verify the CRC of every frame returned.
//!
//! A reader never writes and may run while the writer appends; it must be asked only for lsns up
//! to the writer's durable lsn, because beyond it a frame may be half written.

use super::frame::{check_frame_parts, FrameHeader, FRAME_HEADER_BYTES};
use super::segment::{decode_segment_header, list_segments, segment_path, SEGMENT_HEADER_BYTES};
use super::{LogError, Lsn};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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

/// Reads ranges of frames from a log directory.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    frame_bytes_max: u32,
    /// First lsns of the known segments, sorted. Refreshed from the directory when a read starts
    /// in the last known segment, since the writer may have rolled since.
    segment_first_lsns: Mutex<Vec<u64>>,
}

impl LogReader {
    /// Opens a reader on `dir`. `frame_bytes_max` must be at least the writer's, since frames
    /// longer than it are reported as damage rather than read.
    pub fn open(dir: &Path, frame_bytes_max: u32) -> Result<Self, LogError> {
        let segment_first_lsns = list_segment_first_lsns(dir)?;
        Ok(LogReader {
            dir: dir.to_path_buf(),
            frame_bytes_max,
            segment_first_lsns: Mutex::new(segment_first_lsns),
        })
    }

    /// Frames with `after < lsn <= up_to`, in order, each CRC-checked. The iteration ends early,
    /// without an error, where the log ends. `up_to` must not exceed the durable lsn while a writer
    /// runs. After the first error the iterator ends.
    pub fn frames(
        &self,
        after: Lsn,
        up_to: Lsn,
    ) -> impl Iterator<Item = Result<RawFrame, LogError>> {
        let mut frames = Frames {
            dir: self.dir.clone(),
            frame_bytes_max: self.frame_bytes_max,
            after: after.0,
            up_to: up_to.0,
            next_lsn: 0,
            segment: None,
            pending_error: None,
            done: after >= up_to,
        };
        if !frames.done {
            match self.start_segment(after.0.saturating_add(1)) {
                Ok(Some(first_lsn)) => frames.next_lsn = first_lsn,
                Ok(None) => frames.done = true,
                Err(error) => frames.pending_error = Some(error),
            }
        }
        frames
    }

    /// The first lsn of the segment holding `lsn` (or the last segment, if `lsn` is past it).
    fn start_segment(&self, lsn: u64) -> Result<Option<u64>, LogError> {
        let mut known = self
            .segment_first_lsns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut index = known.partition_point(|&first_lsn| first_lsn <= lsn);
        if index >= known.len() {
            // `lsn` may be in a segment created after the last listing.
            *known = list_segment_first_lsns(&self.dir)?;
            index = known.partition_point(|&first_lsn| first_lsn <= lsn);
        }
        Ok(index.checked_sub(1).map(|found| known[found]))
    }
}

fn list_segment_first_lsns(dir: &Path) -> Result<Vec<u64>, LogError> {
    Ok(list_segments(dir)?
        .into_iter()
        .map(|segment| segment.first_lsn)
        .collect())
}

/// The iterator behind [`LogReader::frames`]. It walks segments by name: the segment after the one
/// ending at lsn `n` is named `n + 1`.
struct Frames {
    dir: PathBuf,
    frame_bytes_max: u32,
    after: u64,
    up_to: u64,
    /// The lsn the next frame in the file must carry.
    next_lsn: u64,
    segment: Option<OpenSegment>,
    pending_error: Option<LogError>,
    done: bool,
}

struct OpenSegment {
    first_lsn: u64,
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    /// Length when opened: frames up to the durable lsn were all inside it by then.
    len_bytes: u64,
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
                Some(Err(error))
            }
        }
    }
}

impl Frames {
    fn read_next(&mut self) -> Result<Option<RawFrame>, LogError> {
        while self.next_lsn <= self.up_to {
            if self.segment.is_none() {
                // The segment after the one that ended at lsn `n` is named `n + 1`.
                self.segment = open_segment(&self.dir, self.next_lsn)?;
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
            let (header_bytes, header) = read_frame_header(segment, self.frame_bytes_max)?;
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

fn open_segment(dir: &Path, first_lsn: u64) -> Result<Option<OpenSegment>, LogError> {
    let path = segment_path(dir, first_lsn);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LogError::Io { path, source }),
    };
    let len_bytes = match file.metadata() {
        Ok(metadata) => metadata.len(),
        Err(source) => return Err(LogError::Io { path, source }),
    };
    let mut segment = OpenSegment {
        first_lsn,
        path,
        reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
        offset: 0,
        len_bytes,
    };
    let mut header = [0; SEGMENT_HEADER_BYTES];
    read_exact(&mut segment, &mut header, 0, "segment header")?;
    let header_first_lsn =
        decode_segment_header(&header).map_err(|detail| unreadable(&segment, 0, detail))?;
    if header_first_lsn != first_lsn {
        return Err(unreadable(
            &segment,
            0,
            format!("segment header records first lsn {header_first_lsn}, expected {first_lsn}"),
        ));
    }
    Ok(Some(segment))
}

fn read_frame_header(
    segment: &mut OpenSegment,
    frame_bytes_max: u32,
) -> Result<([u8; FRAME_HEADER_BYTES], FrameHeader), LogError> {
    let frame_offset = segment.offset;
    let mut bytes = [0; FRAME_HEADER_BYTES];
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
