//! Segments no longer on the local disk: local retention deleted them after they were archived,
//! and a read below the local log's first lsn gets them back whole from a [`ColdSegments`]
//! (the archive on object storage, `crate::archive::ArchiveSegments`). The log checks them
//! exactly as it checks its own files: the segment header, then every frame's length, CRC32C
//! and lsn, in memory.

use super::frame::{check_frame, FrameCheck, FRAME_HEADER_BYTES};
use super::segment::{decode_segment_header, SEGMENT_HEADER_BYTES};
use super::{LogError, Lsn, RawFrame};

/// A whole sealed segment fetched from where it is kept.
#[derive(Debug, Clone)]
pub struct ColdSegment {
    /// The lsn the segment is named for: its first frame.
    pub first_lsn: u64,
    /// Its last frame, as its source lists it.
    pub last_lsn: u64,
    /// The segment file's bytes (header included), already checked against the source's
    /// checksum.
    pub bytes: bytes::Bytes,
    /// Where it came from, for messages (`URL (object log/NAME)`).
    pub origin: String,
}

impl ColdSegment {
    /// The error for this downloaded segment: what failed, naming its object.
    pub(crate) fn archived_error(&self, detail: String) -> LogError {
        LogError::Archived {
            origin: self.origin.clone(),
            detail,
        }
    }
}

/// Where the segments before the local log's first lsn are kept.
pub trait ColdSegments: Send + Sync {
    /// The sealed segment holding `lsn`, whole. An error names the object and what failed
    /// (unreachable store, missing object, checksum mismatch).
    fn segment_holding(&self, lsn: u64) -> Result<ColdSegment, LogError>;

    /// The source, for messages (the storage URL).
    fn describe(&self) -> String;
}

/// The frames `after < lsn <= up_to` of a cold segment; `up_to` must not pass the segment's
/// `last_lsn`. Ends with an error, not silently, where the bytes end too early or are damaged.
pub(crate) struct ColdFrames {
    segment: ColdSegment,
    frame_bytes_max: u32,
    after: u64,
    up_to: u64,
    offset: usize,
    next_lsn: u64,
    done: bool,
}

impl ColdFrames {
    pub(crate) fn new(segment: ColdSegment, frame_bytes_max: u32, after: u64, up_to: u64) -> Self {
        let next_lsn = segment.first_lsn;
        ColdFrames {
            up_to: up_to.min(segment.last_lsn),
            segment,
            frame_bytes_max,
            after,
            offset: 0,
            next_lsn,
            done: false,
        }
    }

    fn damaged(&self, offset: usize, detail: String) -> LogError {
        self.segment
            .archived_error(format!("at byte {offset}: {detail}"))
    }

    fn check_header(&mut self) -> Result<(), LogError> {
        let Some(header) = self.segment.bytes.first_chunk::<SEGMENT_HEADER_BYTES>() else {
            return Err(self.damaged(0, "shorter than a segment header".to_owned()));
        };
        let first_lsn = decode_segment_header(header).map_err(|detail| self.damaged(0, detail))?;
        if first_lsn != self.segment.first_lsn {
            return Err(self.damaged(
                0,
                format!(
                    "the segment header records first lsn {first_lsn}, expected {}",
                    self.segment.first_lsn
                ),
            ));
        }
        self.offset = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    fn read_next(&mut self) -> Result<Option<RawFrame>, LogError> {
        if self.offset == 0 {
            self.check_header()?;
        }
        while self.next_lsn <= self.up_to {
            let offset = self.offset;
            let header = match check_frame(&self.segment.bytes[offset..], self.frame_bytes_max) {
                FrameCheck::Valid(header) if header.lsn == self.next_lsn => header,
                FrameCheck::Valid(header) => {
                    return Err(self.damaged(
                        offset,
                        format!(
                            "lsn gap: frame has lsn {}, expected {}",
                            header.lsn, self.next_lsn
                        ),
                    ))
                }
                FrameCheck::Incomplete { .. } => {
                    return Err(self.damaged(
                        offset,
                        format!(
                            "the segment ends before lsn {} (its source lists it up to lsn {})",
                            self.next_lsn, self.segment.last_lsn
                        ),
                    ))
                }
                FrameCheck::Invalid(defect) => return Err(self.damaged(offset, defect.to_string())),
            };
            // A valid frame lies entirely inside the bytes, so these ranges are in bounds.
            let end = offset + header.frame_bytes() as usize;
            self.offset = end;
            self.next_lsn += 1;
            if header.lsn <= self.after {
                continue;
            }
            return Ok(Some(RawFrame {
                lsn: Lsn(header.lsn),
                format_version: header.format_version,
                payload: self.segment.bytes[offset + FRAME_HEADER_BYTES..end].to_vec(),
            }));
        }
        Ok(None)
    }
}

impl Iterator for ColdFrames {
    type Item = Result<RawFrame, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.read_next().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}
