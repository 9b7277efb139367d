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
/// The manifest version this daemon writes. Version 1 (no `parts`: an unsealed segment's object
/// `<name>` held its prefix) is still read, and upcast on reading.
pub const MANIFEST_VERSION: u32 = 2;
/// The first manifest version, read and upcast to [`MANIFEST_VERSION`].
const MANIFEST_VERSION_1: u32 = 1;
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
    /// True once the segment was rolled: its object `<name>` is final and whole. False for the
    /// active segment's durable prefix, which is held by `parts` instead.
    pub sealed: bool,
    /// An unsealed segment's prefix as immutable chunk objects, in byte order, contiguous from
    /// byte 0 to `bytes`. Empty (and not written) for a sealed segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ManifestPart>,
}

/// One chunk of an unsealed segment: bytes `from..to` of the segment are the first `to - from`
/// bytes of the object `<url>/log/<object>` (chunks are written exactly that long; an object
/// upcast from a version 1 manifest may be longer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPart {
    /// Object name under `log/`: `<segment name>.part-<from>-<to>` (or the segment name itself
    /// for a prefix archived whole by an older daemon or before a restore).
    pub object: String,
    pub from: u64,
    pub to: u64,
    /// sha256 of the bytes `from..to`, lowercase hex.
    pub sha256: String,
}

impl ManifestPart {
    /// Bytes of the segment this part holds.
    pub fn len_bytes(&self) -> u64 {
        self.to - self.from
    }
}

/// `<segment name>.part-<from>-<to>`: a chunk object's name says which bytes it holds.
pub fn part_object_name(segment_name: &str, from: u64, to: u64) -> String {
    format!("{segment_name}.part-{from}-{to}")
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
    /// Parses and checks a downloaded manifest; a version 1 manifest is upcast (its unsealed
    /// segment becomes one part: the prefix of the object named like the segment).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let mut manifest: Manifest = serde_json::from_slice(bytes)?;
        if manifest.format == MANIFEST_FORMAT && manifest.version == MANIFEST_VERSION_1 {
            if manifest
                .segments
                .iter()
                .any(|segment| !segment.parts.is_empty())
            {
                return Err(ManifestError::Invalid(
                    "a version 1 manifest has no parts".to_owned(),
                ));
            }
            manifest.version = MANIFEST_VERSION;
            for segment in manifest.segments.iter_mut().filter(|s| !s.sealed) {
                segment.parts = vec![segment.whole_prefix_part()];
            }
        }
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

    /// The entry of the last segment, mutable (a restored log goes on in it).
    pub fn last_entry_mut(&mut self) -> Option<&mut ManifestSegment> {
        self.segments.last_mut()
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
            } else if !is_sha256_hex(&segment.sha256) {
                Some(format!("has a malformed sha256 {:?}", segment.sha256))
            } else {
                segment.parts_problem()
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

impl ManifestSegment {
    /// The segment's archived prefix as held by the object named like the segment.
    pub fn whole_prefix_part(&self) -> ManifestPart {
        ManifestPart {
            object: self.name.clone(),
            from: 0,
            to: self.bytes,
            sha256: self.sha256.clone(),
        }
    }

    /// Objects this entry names: the segment object when sealed, else its parts.
    pub fn objects(&self) -> Vec<&str> {
        if self.sealed {
            vec![self.name.as_str()]
        } else {
            self.parts.iter().map(|part| part.object.as_str()).collect()
        }
    }

    /// Sealed: no parts. Unsealed: parts contiguous from byte 0 to `bytes`, each named for this
    /// segment, with a well-formed digest.
    fn parts_problem(&self) -> Option<String> {
        if self.sealed {
            return (!self.parts.is_empty()).then(|| "is sealed but lists parts".to_owned());
        }
        let mut expected_from = 0;
        for part in &self.parts {
            let problem = if part.from != expected_from || part.to <= part.from {
                Some(format!(
                    "covers bytes {} to {} but the segment continues at byte {expected_from}",
                    part.from, part.to
                ))
            } else if part.object != self.name
                && part.object != part_object_name(&self.name, part.from, part.to)
            {
                Some(format!(
                    "is not named {}",
                    part_object_name(&self.name, part.from, part.to)
                ))
            } else if !is_sha256_hex(&part.sha256) {
                Some(format!("has a malformed sha256 {:?}", part.sha256))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Some(format!("part {} {problem}", part.object));
            }
            expected_from = part.to;
        }
        (expected_from != self.bytes).then(|| {
            format!(
                "is {} bytes but its parts end at byte {expected_from}",
                self.bytes
            )
        })
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first_lsn: u64, last_lsn: u64, sealed: bool) -> ManifestSegment {
        let mut entry = ManifestSegment {
            name: segment_file_name(first_lsn),
            first_lsn,
            last_lsn,
            bytes: 24 + 30 * (last_lsn + 1).saturating_sub(first_lsn),
            sha256: "ab".repeat(32),
            sealed,
            parts: Vec::new(),
        };
        if !sealed {
            entry.parts = vec![ManifestPart {
                object: part_object_name(&entry.name, 0, entry.bytes),
                ..entry.whole_prefix_part()
            }];
        }
        entry
    }

    #[test]
    fn the_json_shape_is_pinned() {
        let mut manifest = Manifest::default();
        manifest.record(entry(1, 2, true)).unwrap();
        let text = String::from_utf8(manifest.to_json()).unwrap();
        let expected = format!(
            r#"{{
  "format": "agentd-log-archive",
  "version": 2,
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
    fn an_unsealed_segment_is_its_parts_in_byte_order() {
        let mut manifest = Manifest::default();
        let mut active = entry(1, 3, false);
        active.parts = vec![
            ManifestPart {
                object: part_object_name(&active.name, 0, 50),
                from: 0,
                to: 50,
                sha256: "cd".repeat(32),
            },
            ManifestPart {
                object: part_object_name(&active.name, 50, active.bytes),
                from: 50,
                to: active.bytes,
                sha256: "ef".repeat(32),
            },
        ];
        manifest.record(active.clone()).unwrap();
        let text = String::from_utf8(manifest.to_json()).unwrap();
        assert!(
            text.contains(r#""object": "00000000000000000001.seg.part-50-114""#),
            "{text}"
        );
        assert_eq!(Manifest::from_json(text.as_bytes()).unwrap(), manifest);
        let mut gap = active.clone();
        gap.parts[1].from = 51;
        let error = Manifest::default().record(gap).unwrap_err().to_string();
        assert!(error.contains("continues at byte 50"), "{error}");
        let mut short = active.clone();
        short.bytes += 1;
        let error = Manifest::default().record(short).unwrap_err().to_string();
        assert!(error.contains("parts end at byte 114"), "{error}");
        let mut misnamed = active.clone();
        misnamed.parts[1].object = "other".into();
        assert!(Manifest::default().record(misnamed).is_err());
        let mut sealed_with_parts = active;
        sealed_with_parts.sealed = true;
        let error = Manifest::default()
            .record(sealed_with_parts)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sealed but lists parts"), "{error}");
    }

    /// Version 1 (written before chunked uploads): the unsealed segment's object held its prefix.
    #[test]
    fn a_version_1_manifest_is_upcast() {
        let sha = "ab".repeat(32);
        let v1 = format!(
            r#"{{"format":"agentd-log-archive","version":1,"last_lsn":5,"segments":[
            {{"name":"00000000000000000001.seg","first_lsn":1,"last_lsn":3,"bytes":84,"sha256":"{sha}","sealed":true}},
            {{"name":"00000000000000000004.seg","first_lsn":4,"last_lsn":5,"bytes":64,"sha256":"{sha}","sealed":false}}]}}"#
        );
        let manifest = Manifest::from_json(v1.as_bytes()).unwrap();
        assert_eq!(manifest.version, 2);
        assert!(manifest.segments[0].parts.is_empty());
        assert_eq!(
            manifest.segments[1].parts,
            vec![ManifestPart {
                object: "00000000000000000004.seg".into(),
                from: 0,
                to: 64,
                sha256: sha.clone()
            }]
        );
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
