//! The archive's checksum manifest, `<url>/log/manifest.json`: every archived segment object
//! with its LSN range, byte length and sha256. It is uploaded after the segment objects it
//! names, so every entry points at an object that is complete; restore trusts nothing else.
//!
//! Why this type lives here and not in `agentd-schemas`: it is neither a log record, a stored
//! projection value nor an HTTP body, but a file only the archiver writes and restore reads; its
//! format is pinned by the unit tests below and drawn in docs/storage.md.

use serde::{Deserialize, Serialize};

/// The manifest's object name under `<url>/log/`.
pub const MANIFEST_NAME: &str = "manifest.json";
/// `format` of a manifest, so a stray JSON file is not mistaken for one.
pub const MANIFEST_FORMAT: &str = "agentd-log-archive";
/// The one manifest version this daemon writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes of a segment header (docs/log-format.md): an archived segment is at least this.
pub const SEGMENT_HEADER_BYTES: u64 = 24;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// Last LSN in the archive: the last entry's `last_lsn` (0 when empty).
    pub last_lsn: u64,
    /// Archived segments in LSN order, contiguous from lsn 1.
    pub segments: Vec<ManifestSegment>,
}

/// One archived segment object, `<url>/log/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSegment {
    /// The segment file name, `<first_lsn as 20 digits>.seg`, also the object's name.
    pub name: String,
    pub first_lsn: u64,
    /// Last frame the archived bytes hold.
    pub last_lsn: u64,
    /// Bytes of the archived prefix: the first `bytes` bytes of the object are the segment up to
    /// `last_lsn` (the object may be longer when an upload of a later prefix has just landed).
    pub bytes: u64,
    /// sha256 of those bytes, lowercase hex.
    pub sha256: String,
    /// True once the segment was rolled: its object is final. False for the active segment's
    /// durable prefix, which the next pass replaces with a longer one.
    pub sealed: bool,
}

/// A manifest that cannot be trusted, or an entry that does not continue it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the archive manifest is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the archive manifest is invalid: {0}")]
    Invalid(String),
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            version: MANIFEST_VERSION,
            last_lsn: 0,
            segments: Vec::new(),
        }
    }
}

/// `<first_lsn as 20 zero-padded digits>.seg`, as the log names segment files.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.seg")
}

impl Manifest {
    /// Parses and checks a downloaded manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The manifest as uploaded: pretty JSON, so an operator can read it.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// The entry of the segment starting at `first_lsn`.
    pub fn entry(&self, first_lsn: u64) -> Option<&ManifestSegment> {
        self.segments
            .iter()
            .find(|segment| segment.first_lsn == first_lsn)
    }

    /// Adds `entry`, or replaces the last entry when it is a longer prefix (or the sealed whole)
    /// of the same segment. Refuses anything that would break the manifest's invariants, so a
    /// bug cannot upload a manifest restore would refuse.
    pub fn record(&mut self, entry: ManifestSegment) -> Result<(), ManifestError> {
        let mut next = self.clone();
        match next.segments.last() {
            Some(last) if last.first_lsn == entry.first_lsn => {
                if last.sealed || entry.last_lsn < last.last_lsn {
                    return Err(ManifestError::Invalid(format!(
                        "{} would replace an archived entry ending at lsn {} with one ending at lsn {}",
                        entry.name, last.last_lsn, entry.last_lsn
                    )));
                }
                next.segments.pop();
            }
            _ => {}
        }
        next.last_lsn = entry.last_lsn;
        next.segments.push(entry);
        next.check()?;
        *self = next;
        Ok(())
    }

    /// The invariants restore relies on: format, names, contiguous LSNs from 1, only the last
    /// segment unsealed, plausible sizes and digests.
    pub fn check(&self) -> Result<(), ManifestError> {
        let invalid = |detail: String| Err(ManifestError::Invalid(detail));
        if self.format != MANIFEST_FORMAT || self.version != MANIFEST_VERSION {
            return invalid(format!(
                "format {:?} version {} (expected {MANIFEST_FORMAT:?} version {MANIFEST_VERSION})",
                self.format, self.version
            ));
        }
        let mut expected_first_lsn = 1;
        for (position, segment) in self.segments.iter().enumerate() {
            let is_last = position + 1 == self.segments.len();
            let problem = if segment.first_lsn != expected_first_lsn {
                Some(format!(
                    "starts at lsn {} but the archive continues at lsn {expected_first_lsn}",
                    segment.first_lsn
                ))
            } else if segment.name != segment_file_name(segment.first_lsn) {
                Some(format!(
                    "is not named {}",
                    segment_file_name(segment.first_lsn)
                ))
            } else if segment.last_lsn < segment.first_lsn {
                Some(format!("holds no frame (last lsn {})", segment.last_lsn))
            } else if !segment.sealed && !is_last {
                Some("is unsealed but is not the last segment".to_owned())
            } else if segment.bytes < SEGMENT_HEADER_BYTES {
                Some(format!(
                    "is {} bytes, shorter than a segment header",
                    segment.bytes
                ))
            } else if segment.sha256.len() != 64
                || !segment
                    .sha256
                    .bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
            {
                Some(format!("has a malformed sha256 {:?}", segment.sha256))
            } else {
                None
            };
            if let Some(problem) = problem {
                return invalid(format!("segment {} {problem}", segment.name));
            }
            expected_first_lsn = segment.last_lsn + 1;
        }
        if self.last_lsn != expected_first_lsn - 1 {
            return invalid(format!(
                "last_lsn is {} but the segments end at lsn {}",
                self.last_lsn,
                expected_first_lsn - 1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first_lsn: u64, last_lsn: u64, sealed: bool) -> ManifestSegment {
        ManifestSegment {
            name: segment_file_name(first_lsn),
            first_lsn,
            last_lsn,
            bytes: 24 + 30 * (last_lsn + 1).saturating_sub(first_lsn),
            sha256: "ab".repeat(32),
            sealed,
        }
    }

    #[test]
    fn the_json_shape_is_pinned() {
        let mut manifest = Manifest::default();
        manifest.record(entry(1, 2, true)).unwrap();
        let text = String::from_utf8(manifest.to_json()).unwrap();
        let expected = format!(
            r#"{{
  "format": "agentd-log-archive",
  "version": 1,
  "last_lsn": 2,
  "segments": [
    {{
      "name": "00000000000000000001.seg",
      "first_lsn": 1,
      "last_lsn": 2,
      "bytes": 84,
      "sha256": "{}",
      "sealed": true
    }}
  ]
}}
"#,
            "ab".repeat(32)
        );
        assert_eq!(text, expected);
        assert_eq!(Manifest::from_json(text.as_bytes()).unwrap(), manifest);
    }

    #[test]
    fn the_active_prefix_grows_then_seals_and_the_next_segment_follows() {
        let mut manifest = Manifest::default();
        manifest.record(entry(1, 3, false)).unwrap();
        manifest.record(entry(1, 5, false)).unwrap();
        assert_eq!(manifest.segments.len(), 1);
        manifest.record(entry(1, 7, true)).unwrap();
        manifest.record(entry(8, 8, false)).unwrap();
        assert_eq!(manifest.last_lsn, 8);
        assert_eq!(manifest.entry(8).unwrap().name, "00000000000000000008.seg");
        // A sealed segment is final; a shorter prefix would lose archived frames.
        let error = manifest.record(entry(8, 7, false)).unwrap_err().to_string();
        assert!(
            error.contains("ending at lsn 8 with one ending at lsn 7"),
            "{error}"
        );
        let mut sealed = Manifest::default();
        sealed.record(entry(1, 7, true)).unwrap();
        assert!(sealed.record(entry(1, 9, true)).is_err());
    }

    #[test]
    fn gaps_bad_names_and_unsealed_middles_are_refused() {
        let mut manifest = Manifest::default();
        let error = manifest.record(entry(2, 3, true)).unwrap_err().to_string();
        assert!(error.contains("continues at lsn 1"), "{error}");
        manifest.record(entry(1, 3, false)).unwrap();
        let error = manifest.record(entry(4, 6, true)).unwrap_err().to_string();
        assert!(error.contains("unsealed but is not the last"), "{error}");
        let mut renamed = manifest.clone();
        renamed.segments[0].name = "1.seg".into();
        assert!(renamed
            .check()
            .unwrap_err()
            .to_string()
            .contains("is not named"));
        let mut bad_digest = manifest.clone();
        bad_digest.segments[0].sha256 = "XYZ".into();
        assert!(bad_digest
            .check()
            .unwrap_err()
            .to_string()
            .contains("malformed sha256"));
        let mut bad_last = manifest.clone();
        bad_last.last_lsn = 9;
        assert!(bad_last
            .check()
            .unwrap_err()
            .to_string()
            .contains("end at lsn 3"));
        let error = Manifest::from_json(br#"{"format":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not valid JSON of the expected shape"),
            "{error}"
        );
        let other = br#"{"format":"other","version":1,"last_lsn":0,"segments":[]}"#;
        assert!(Manifest::from_json(other)
            .unwrap_err()
            .to_string()
            .contains("format \"other\""));
    }
}
