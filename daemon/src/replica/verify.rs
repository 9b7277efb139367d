//! The replica's first check of its local log against the archive it follows (docs/storage.md,
//! "Read replicas"): before anything is copied, every local segment file must be the archived
//! segment at the same position of the manifest (same name), every one but the last exactly as
//! long and with the same sha256, and the last no longer than the archived prefix, its bytes
//! equal to every archived part they cover (by the parts' sha256). A mismatch names the
//! segment; the follower then stops following (the archive is another log, or was restored to
//! an earlier point) and keeps serving what it holds.
//!
//! Why sha256 of every segment and not only names and lengths: another daemon's log, or this
//! log's archive restored and then rewritten, can have segments of the same names and lengths
//! (fixed-size records, the same workload) with other bytes, and only the bytes tell. It is
//! cheap here: it runs once per start, on a blocking thread, over files the start-up replay
//! has just read (so from the page cache), and sha256 (with the CPU's SHA extensions where it
//! has them) runs several times faster than that replay decodes records.

use crate::archive::manifest::{Manifest, ManifestSegment};
use crate::archive::{list_local_segments, sha256_hex, LocalSegment};
use std::path::Path;

/// Why the check did not pass.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocalLogCheck {
    /// The local log is not a prefix of the archived one; the detail names the segment.
    #[error("{0}")]
    Differs(String),
    /// A local file could not be listed or read: the next poll tries again.
    #[error("{0}")]
    Unreadable(String),
}

/// Checks every segment file in `log_dir` against `manifest` (blocking: lists the directory
/// once and reads every segment but the last whole, one at a time).
pub(super) fn check_local_log(log_dir: &Path, manifest: &Manifest) -> Result<(), LocalLogCheck> {
    let local = list_local_segments(log_dir)
        .map_err(|error| LocalLogCheck::Unreadable(error.to_string()))?;
    compare_layout(&local, manifest).map_err(LocalLogCheck::Differs)?;
    let last_position = local.len().saturating_sub(1);
    for (position, (segment, entry)) in local.iter().zip(&manifest.segments).enumerate() {
        if position < last_position {
            let sha256 = file_sha256(segment, 0, segment.len_bytes)?;
            if sha256 != entry.sha256 {
                return Err(differs(segment, entry, "has other bytes (sha256 differs)"));
            }
            continue;
        }
        let pieces = if entry.sealed {
            vec![entry.whole_prefix_part()]
        } else {
            entry.parts.clone()
        };
        for piece in pieces.iter().filter(|piece| piece.to <= segment.len_bytes) {
            if file_sha256(segment, piece.from, piece.to)? != piece.sha256 {
                return Err(differs(
                    segment,
                    entry,
                    &format!(
                        "has other bytes in {}..{} (object log/{})",
                        piece.from, piece.to, piece.object
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Names and lengths only (no IO): local segment `i` is the manifest's segment `i` (both
/// start at lsn 1), every local segment but the last is as long as the archived one, and the
/// last is no longer than the archived prefix. Segments are compared in order first, so the
/// error names the first one that differs, then the count.
fn compare_layout(local: &[LocalSegment], manifest: &Manifest) -> Result<(), String> {
    let last_position = local.len().saturating_sub(1);
    for (position, (segment, entry)) in local.iter().zip(&manifest.segments).enumerate() {
        if segment.first_lsn != entry.first_lsn {
            return Err(format!(
                "local segment {} is where the archive has {}",
                segment.path.display(),
                entry.name
            ));
        }
        let (is_last, len) = (position == last_position, segment.len_bytes);
        if !is_last && len != entry.bytes {
            return Err(differs(segment, entry, &format!("is {len} bytes")).to_string());
        }
        if is_last && len > entry.bytes {
            return Err(differs(
                segment,
                entry,
                &format!("is {len} bytes (was the archive restored to an earlier point, or is it another daemon's?)"),
            )
            .to_string());
        }
    }
    if local.len() > manifest.segments.len() {
        return Err(format!(
            "the local log has {} segment files, the archive {} (the first one the archive lacks is {})",
            local.len(),
            manifest.segments.len(),
            local[manifest.segments.len()].path.display()
        ));
    }
    Ok(())
}

fn differs(segment: &LocalSegment, entry: &ManifestSegment, what: &str) -> LocalLogCheck {
    LocalLogCheck::Differs(format!(
        "local segment {} {what}; the archive's {} is {} bytes, lsns {} to {}",
        segment.path.display(),
        entry.name,
        entry.bytes,
        entry.first_lsn,
        entry.last_lsn
    ))
}

/// sha256 of bytes `from..to` of a local segment file (at most `[log] segment_bytes_max`).
fn file_sha256(segment: &LocalSegment, from: u64, to: u64) -> Result<String, LocalLogCheck> {
    let unreadable = |error: std::io::Error| {
        LocalLogCheck::Unreadable(format!("cannot read {}: {error}", segment.path.display()))
    };
    let bytes = std::fs::read(&segment.path).map_err(unreadable)?;
    let range = usize::try_from(from).unwrap_or(usize::MAX)..usize::try_from(to).unwrap_or(0);
    let piece = bytes.get(range).ok_or_else(|| {
        LocalLogCheck::Unreadable(format!(
            "{} is {} bytes, shorter than {to}",
            segment.path.display(),
            bytes.len()
        ))
    })?;
    Ok(sha256_hex(piece))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::ManifestPart;
    use std::path::PathBuf;

    fn entry(first_lsn: u64, last_lsn: u64, bytes: u64, sealed: bool) -> ManifestSegment {
        ManifestSegment {
            name: format!("{first_lsn:020}.seg"),
            first_lsn,
            last_lsn,
            bytes,
            sha256: "0".repeat(64),
            sealed,
            parts: if sealed {
                Vec::new()
            } else {
                vec![ManifestPart {
                    object: format!("{first_lsn:020}.seg.part-0-{bytes}"),
                    from: 0,
                    to: bytes,
                    sha256: "0".repeat(64),
                }]
            },
        }
    }

    fn manifest(segments: Vec<ManifestSegment>) -> Manifest {
        Manifest {
            format: crate::archive::manifest::MANIFEST_FORMAT.to_owned(),
            version: crate::archive::manifest::MANIFEST_VERSION,
            last_lsn: segments.last().map_or(0, |segment| segment.last_lsn),
            segments,
        }
    }

    fn local(first_lsn: u64, len_bytes: u64) -> LocalSegment {
        LocalSegment {
            first_lsn,
            path: PathBuf::from(format!("/d/log/{first_lsn:020}.seg")),
            len_bytes,
        }
    }

    fn archive() -> Manifest {
        manifest(vec![
            entry(1, 9, 4000, true),
            entry(10, 19, 4010, true),
            entry(20, 25, 900, false),
        ])
    }

    #[test]
    fn a_prefix_of_the_archived_layout_passes() {
        let archive = archive();
        for held in [
            vec![local(1, 4000), local(10, 4010), local(20, 900)],
            vec![local(1, 4000), local(10, 4010), local(20, 24)],
            vec![local(1, 4000), local(10, 3000)],
            vec![local(1, 24)],
        ] {
            assert_eq!(compare_layout(&held, &archive), Ok(()), "{held:?}");
        }
    }

    #[test]
    fn a_sealed_segment_of_another_length_is_named() {
        let error = compare_layout(&[local(1, 3999), local(10, 50)], &archive()).unwrap_err();
        assert!(
            error.contains("/d/log/00000000000000000001.seg is 3999 bytes"),
            "{error}"
        );
        assert!(
            error.contains("00000000000000000001.seg is 4000 bytes, lsns 1 to 9"),
            "{error}"
        );
        // Named before the count: a longer local log whose first segment already differs.
        let longer = [
            local(1, 3999),
            local(10, 4010),
            local(20, 900),
            local(26, 9),
        ];
        let error = compare_layout(&longer, &archive()).unwrap_err();
        assert!(
            error.contains("/d/log/00000000000000000001.seg is 3999 bytes"),
            "{error}"
        );
    }

    #[test]
    fn a_segment_the_archive_does_not_have_there_is_named() {
        let error = compare_layout(&[local(1, 4000), local(12, 50)], &archive()).unwrap_err();
        assert!(
            error.contains(
                "00000000000000000012.seg is where the archive has 00000000000000000010.seg"
            ),
            "{error}"
        );
        let error = compare_layout(
            &[
                local(1, 4000),
                local(10, 4010),
                local(20, 900),
                local(26, 40),
            ],
            &archive(),
        )
        .unwrap_err();
        assert!(error.contains("4 segment files, the archive 3"), "{error}");
        assert!(error.contains("00000000000000000026.seg"), "{error}");
    }

    #[test]
    fn a_last_segment_longer_than_the_archived_prefix_is_named() {
        let error = compare_layout(&[local(1, 4000), local(10, 4011)], &archive()).unwrap_err();
        assert!(
            error.contains("00000000000000000010.seg is 4011 bytes"),
            "{error}"
        );
    }
}
