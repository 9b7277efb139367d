//! Reading a local segment for upload: its frames are checked by the log's own reader (header,
//! CRC and LSN of every frame, as any read of the log is), and the bytes uploaded are exactly the
//! prefix those frames occupy. Nothing here parses a frame.

use super::manifest::{segment_file_name, ManifestSegment, SEGMENT_HEADER_BYTES};
use crate::log::{LogError, LogReader, Lsn};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of a frame header before its payload (docs/log-format.md): a frame occupies this plus
/// its payload, which is how the reader's frames give the prefix length without parsing bytes.
const FRAME_HEADER_BYTES: u64 = 20;

/// A segment file of the local log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSegment {
    pub first_lsn: u64,
    pub path: PathBuf,
    /// File length when listed (the active segment's grows).
    pub len_bytes: u64,
}

/// A segment prefix read and checked, ready to upload.
#[derive(Debug, Clone)]
pub struct VerifiedSegment {
    pub entry: ManifestSegment,
    pub bytes: bytes::Bytes,
}

/// Why a segment could not be read for upload.
#[derive(Debug, thiserror::Error)]
pub enum SegmentReadError {
    #[error("cannot list the log directory {}: {source}", dir.display())]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to archive {}: {source}", path.display())]
    Frames { path: PathBuf, source: LogError },
    #[error("refusing to archive {}: {detail}", path.display())]
    Mismatch { path: PathBuf, detail: String },
}

/// The log's segment files (`<20 digits>.seg`) in LSN order. Other files are not the log's.
pub fn list_local_segments(dir: &Path) -> Result<Vec<LocalSegment>, SegmentReadError> {
    let list_error = |source| SegmentReadError::List {
        dir: dir.to_path_buf(),
        source,
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let name = entry.file_name();
        let Some(first_lsn) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let len_bytes = entry.metadata().map_err(list_error)?.len();
        segments.push(LocalSegment {
            first_lsn,
            path: entry.path(),
            len_bytes,
        });
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// The first lsn a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    let lsn = digits.parse().ok()?;
    (digits.len() == 20 && segment_file_name(lsn) == name).then_some(lsn)
}

/// Reads `segment` up to the end of frame `last_lsn`, every frame checked by `reader`. `sealed`:
/// the file must end exactly there (a rolled segment holds nothing more).
pub fn read_verified(
    reader: &LogReader,
    segment: &LocalSegment,
    last_lsn: u64,
    sealed: bool,
) -> Result<VerifiedSegment, SegmentReadError> {
    let path = &segment.path;
    let mismatch = |detail: String| SegmentReadError::Mismatch {
        path: path.clone(),
        detail,
    };
    let mut prefix_bytes = SEGMENT_HEADER_BYTES;
    let mut seen_last = segment.first_lsn - 1;
    for frame in reader.frames(Lsn(segment.first_lsn - 1), Lsn(last_lsn)) {
        let frame = frame.map_err(|source| SegmentReadError::Frames {
            path: path.clone(),
            source,
        })?;
        prefix_bytes += FRAME_HEADER_BYTES + frame.payload.len() as u64;
        seen_last = frame.lsn.0;
    }
    if seen_last != last_lsn {
        return Err(mismatch(format!(
            "its frames end at lsn {seen_last}, expected lsn {last_lsn}"
        )));
    }
    let mut file = std::fs::File::open(path).map_err(|source| SegmentReadError::Read {
        path: path.clone(),
        source,
    })?;
    let file_len = file
        .metadata()
        .map_err(|source| SegmentReadError::Read {
            path: path.clone(),
            source,
        })?
        .len();
    if sealed && file_len != prefix_bytes {
        return Err(mismatch(format!(
            "the sealed segment is {file_len} bytes but its frames end at byte {prefix_bytes}"
        )));
    }
    let mut bytes = vec![0; prefix_bytes as usize];
    file.read_exact(&mut bytes)
        .map_err(|source| SegmentReadError::Read {
            path: path.clone(),
            source,
        })?;
    Ok(VerifiedSegment {
        entry: ManifestSegment {
            name: segment_file_name(segment.first_lsn),
            first_lsn: segment.first_lsn,
            last_lsn,
            bytes: prefix_bytes,
            sha256: sha256_hex(&bytes),
            sealed,
            parts: Vec::new(),
        },
        bytes: bytes::Bytes::from(bytes),
    })
}

/// The frames of one segment that became durable after a known position, read for upload.
#[derive(Debug, Clone)]
pub struct NewFrames {
    /// Byte offset the frames end at (the segment's prefix length after them).
    pub end_bytes: u64,
    /// Last frame read (`after_lsn` when none).
    pub last_lsn: u64,
    /// True when the log goes on in the next segment: this one ends at `end_bytes`, for good.
    pub sealed: bool,
    /// The segment's bytes from the known position to `end_bytes`.
    pub bytes: bytes::Bytes,
}

/// Reads the frames of segment `path` (named `segment_first_lsn`) after frame `after_lsn`, which
/// ends at byte `after_bytes` (0: nothing archived yet, the header comes with the first frames),
/// up to `durable_lsn`, every frame checked by `reader`. No directory listing: a frame belongs
/// to this segment when it fits in the file as it stands after `durable_lsn` was read (every
/// durable frame of a segment is inside it by then); the first durable frame that does not fit
/// is in the next segment, so this one was rolled and must end exactly there.
pub fn read_new_frames(
    reader: &LogReader,
    segment_first_lsn: u64,
    path: &Path,
    after_bytes: u64,
    after_lsn: u64,
    durable_lsn: u64,
) -> Result<NewFrames, SegmentReadError> {
    let read_error = |source| SegmentReadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let file_len = file.metadata().map_err(read_error)?.len();
    let mut end_bytes = after_bytes.max(SEGMENT_HEADER_BYTES);
    let mut last_lsn = after_lsn;
    let mut sealed = false;
    for frame in reader.frames(Lsn(after_lsn), Lsn(durable_lsn)) {
        let frame = frame.map_err(|source| SegmentReadError::Frames {
            path: path.to_path_buf(),
            source,
        })?;
        let frame_bytes = FRAME_HEADER_BYTES + frame.payload.len() as u64;
        if end_bytes + frame_bytes > file_len {
            sealed = true;
            break;
        }
        end_bytes += frame_bytes;
        last_lsn = frame.lsn.0;
    }
    let mismatch = |detail: String| SegmentReadError::Mismatch {
        path: path.to_path_buf(),
        detail,
    };
    if sealed && file_len != end_bytes {
        return Err(mismatch(format!(
            "the log went on in the next segment, but this one is {file_len} bytes and its frames end at byte {end_bytes}"
        )));
    }
    if last_lsn < segment_first_lsn {
        return Err(mismatch(format!(
            "it holds no durable frame (the log went on at lsn {})",
            last_lsn + 1
        )));
    }
    let start = if after_bytes == 0 { 0 } else { after_bytes };
    let mut bytes = vec![0; (end_bytes - start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start).map_err(read_error)?;
    Ok(NewFrames {
        end_bytes,
        last_lsn,
        sealed,
        bytes: bytes::Bytes::from(bytes),
    })
}

/// Bytes `from..to` of a local segment file (already checked frame by frame when first read).
pub fn read_range(path: &Path, from: u64, to: u64) -> Result<bytes::Bytes, SegmentReadError> {
    let read_error = |source| SegmentReadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = vec![0; (to - from) as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, from).map_err(read_error)?;
    Ok(bytes::Bytes::from(bytes))
}

/// Lowercase hex sha256, as the manifest stores it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{self, LogOptions};

    /// A log of `frames` small frames over segments of at most `segment_bytes_max`.
    async fn write_log(dir: &Path, frames: u64, segment_bytes_max: u64) -> LogReader {
        let mut options = LogOptions::new(dir);
        options.segment_bytes_max = segment_bytes_max;
        let (log, _) = log::open(options).unwrap();
        let reader = log.reader();
        let writer = log.start_writer();
        for lsn in 1..=frames {
            writer
                .append(Lsn(lsn), 1, format!("payload {lsn}").into_bytes())
                .await
                .unwrap();
        }
        writer.shutdown().await;
        reader
    }

    #[tokio::test]
    async fn sealed_and_active_prefixes_are_read_to_their_last_frame() {
        let dir = tempfile::tempdir().unwrap();
        let reader = write_log(dir.path(), 10, 150).await;
        let segments = list_local_segments(dir.path()).unwrap();
        assert!(segments.len() >= 3, "{segments:?}");
        let first = &segments[0];
        let sealed = read_verified(&reader, first, segments[1].first_lsn - 1, true).unwrap();
        assert_eq!(sealed.entry.bytes, first.len_bytes);
        assert_eq!(sealed.bytes, std::fs::read(&first.path).unwrap());
        assert_eq!(
            sealed.entry.sha256,
            sha256_hex(&std::fs::read(&first.path).unwrap())
        );
        let last = segments.last().unwrap();
        let whole = read_verified(&reader, last, 10, false).unwrap();
        assert_eq!(whole.entry.bytes, last.len_bytes);
        if last.first_lsn < 10 {
            let part = read_verified(&reader, last, 9, false).unwrap();
            assert!(part.entry.bytes < whole.entry.bytes);
            assert_eq!(part.bytes[..], whole.bytes[..part.bytes.len()]);
        }
        let error = read_verified(&reader, last, 11, false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("frames end at lsn 10, expected lsn 11"),
            "{error}"
        );
    }

    /// Reading on from a known position, as each pass does, gives the same bytes as reading the
    /// whole segment, and a roll is seen without listing the directory.
    #[tokio::test]
    async fn new_frames_continue_a_prefix_and_see_the_roll() {
        let dir = tempfile::tempdir().unwrap();
        let reader = write_log(dir.path(), 10, 150).await;
        let segments = list_local_segments(dir.path()).unwrap();
        let first = &segments[0];
        let whole = std::fs::read(&first.path).unwrap();
        let head = read_new_frames(&reader, 1, &first.path, 0, 0, 1).unwrap();
        assert!(!head.sealed);
        assert_eq!(head.last_lsn, 1);
        assert_eq!(head.bytes[..], whole[..head.end_bytes as usize]);
        let rest = read_new_frames(&reader, 1, &first.path, head.end_bytes, 1, 10).unwrap();
        assert!(
            rest.sealed,
            "frame {} is in the next segment",
            rest.last_lsn + 1
        );
        assert_eq!(rest.last_lsn, segments[1].first_lsn - 1);
        assert_eq!(rest.end_bytes, whole.len() as u64);
        assert_eq!(rest.bytes[..], whole[head.end_bytes as usize..]);
        let last = segments.last().unwrap();
        let tail = read_new_frames(
            &reader,
            last.first_lsn,
            &last.path,
            0,
            last.first_lsn - 1,
            10,
        )
        .unwrap();
        assert!(!tail.sealed);
        assert_eq!((tail.last_lsn, tail.end_bytes), (10, last.len_bytes));
    }

    #[tokio::test]
    async fn a_damaged_frame_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let reader = write_log(dir.path(), 3, 1 << 20).await;
        let segment = list_local_segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&segment.path).unwrap();
        bytes[24 + 20 + 2] ^= 0xff;
        std::fs::write(&segment.path, &bytes).unwrap();
        let error = read_verified(&reader, &segment, 3, false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("refusing to archive"), "{error}");
        assert!(error.contains("00000000000000000001.seg"), "{error}");
    }

    #[test]
    fn only_segment_names_are_segments() {
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.tmp"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
    }
}
