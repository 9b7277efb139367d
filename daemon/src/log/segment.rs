//! Segment files: naming, the 24-byte header, listing, creation and directory fsync.
//!
//! A segment is named by the first lsn it holds, so a reader finds the segment of any lsn by a
//! binary search over file names, without opening files.

use super::LogError;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes in a segment header.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 24;
/// First 8 bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"AGTDLOG\0";
/// The segment layout version this code writes and reads.
pub(crate) const SEGMENT_FORMAT_VERSION: u32 = 1;

const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_NAME_DIGITS: usize = 20;

/// A segment file found in the log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentEntry {
    /// The lsn in the file name: the first lsn the segment holds (or will hold, when empty).
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
}

/// `<first_lsn as 20-digit zero-padded decimal>.seg`: 20 digits hold any u64, and the padding
/// makes lexical order equal numeric order for humans listing the directory.
pub(crate) fn segment_file_name(first_lsn: u64) -> String {
    format!(
        "{first_lsn:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// The path of the segment whose first lsn is `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(segment_file_name(first_lsn))
}

/// Parses a segment file name. `None` when the name is not exactly 20 digits and `.seg`.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Lists the segment files of `dir`, sorted by first lsn. Files not ending in `.seg` are not part
/// of the log and are ignored; a `.seg` file with a malformed name is corruption, because the
/// name is how segments are found.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentEntry>, LogError> {
    let read_dir = std::fs::read_dir(dir).map_err(|source| LogError::io(dir, source))?;
    let mut segments = Vec::new();
    for entry in read_dir {
        let entry = entry.map_err(|source| LogError::io(dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(SEGMENT_SUFFIX) {
            continue;
        }
        let path = entry.path();
        let Some(first_lsn) = parse_segment_file_name(name) else {
            return Err(LogError::Corrupt {
                path,
                offset: 0,
                detail: format!(
                    "segment file name is not {SEGMENT_NAME_DIGITS} decimal digits and {SEGMENT_SUFFIX}"
                ),
            });
        };
        segments.push(SegmentEntry { first_lsn, path });
    }
    segments.sort_by_key(|segment| segment.first_lsn);
    Ok(segments)
}

/// The header bytes of a segment whose first lsn is `first_lsn`.
pub(crate) fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    // Bytes 12..16 are reserved and stay zero.
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    header
}

/// Checks a segment header and returns the first lsn it records; `Err` says what was found.
pub(crate) fn decode_segment_header(header: &[u8; SEGMENT_HEADER_BYTES]) -> Result<u64, String> {
    if header[0..8] != SEGMENT_MAGIC {
        return Err(format!(
            "bad segment header: magic is {:?}, expected {:?}",
            String::from_utf8_lossy(&header[0..8]),
            String::from_utf8_lossy(&SEGMENT_MAGIC)
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != SEGMENT_FORMAT_VERSION {
        return Err(format!(
            "bad segment header: format version {version}, this build reads {SEGMENT_FORMAT_VERSION}"
        ));
    }
    if header[12..16] != [0; 4] {
        return Err("bad segment header: reserved bytes are not zero".to_string());
    }
    let mut first_lsn = [0; 8];
    first_lsn.copy_from_slice(&header[16..24]);
    Ok(u64::from_le_bytes(first_lsn))
}

/// Why creating a segment failed, split the way the writer must react.
#[derive(Debug)]
pub(crate) enum CreateSegmentError {
    /// The disk is full; nothing of the new segment remains on disk.
    DiskFull,
    /// Anything else, including a failed fsync: the caller must stop.
    Fatal(String),
}

/// Creates a segment file with its header, fsyncs it and the directory, and returns it opened for
/// writing (the writer writes at positions it tracks: `active.rs`). The directory fsync makes the new name durable before any frame that depends on it.
pub(crate) fn create_segment(
    dir: &Path,
    first_lsn: u64,
) -> Result<(File, PathBuf), CreateSegmentError> {
    let path = segment_path(dir, first_lsn);
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(error) if is_disk_full(&error) => return Err(CreateSegmentError::DiskFull),
        Err(error) => {
            return Err(CreateSegmentError::Fatal(format!(
                "creating segment {}: {error}",
                path.display()
            )))
        }
    };
    if let Err(error) = file.write_all(&encode_segment_header(first_lsn)) {
        if !is_disk_full(&error) {
            return Err(CreateSegmentError::Fatal(format!(
                "writing the header of segment {}: {error}",
                path.display()
            )));
        }
        // Remove the partial file so the directory holds no segment without a header.
        drop(file);
        return match std::fs::remove_file(&path).and_then(|()| sync_dir(dir)) {
            Ok(()) => Err(CreateSegmentError::DiskFull),
            Err(remove_error) => Err(CreateSegmentError::Fatal(format!(
                "removing segment {} after a disk-full header write: {remove_error}",
                path.display()
            ))),
        };
    }
    file.sync_all()
        .and_then(|()| sync_dir(dir))
        .map_err(|error| {
            CreateSegmentError::Fatal(format!(
                "fsync of new segment {} or its directory: {error}",
                path.display()
            ))
        })?;
    Ok((file, path))
}

/// fsyncs a directory so that entries created or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// ENOSPC and EDQUOT are operating errors (the disk or the quota is full); every other write
/// error is treated as fatal.
pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        for lsn in [0, 1, 9, 10, 12345, u64::MAX] {
            let name = segment_file_name(lsn);
            assert_eq!(name.len(), 24);
            assert_eq!(parse_segment_file_name(&name), Some(lsn));
        }
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.seg.tmp",
            "000000000000000000001.seg",
            "99999999999999999999.seg", // over u64::MAX
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let header = encode_segment_header(77);
        assert_eq!(&header[0..8], b"AGTDLOG\0");
        assert_eq!(decode_segment_header(&header), Ok(77));
        let mut bad_magic = header;
        bad_magic[0] = b'X';
        assert!(decode_segment_header(&bad_magic).is_err());
        let mut bad_version = header;
        bad_version[8] = 2;
        assert!(decode_segment_header(&bad_version)
            .unwrap_err()
            .contains("format version 2"));
        let mut bad_reserved = header;
        bad_reserved[13] = 1;
        assert!(decode_segment_header(&bad_reserved).is_err());
    }
}
