//! `local-start.json` in the log directory: where the local log starts once local retention
//! deleted archived segments, and the archive that holds the records before it.
//!
//! Recovery accepts a log whose first segment does not start at lsn 1 only when this file says
//! the earlier records are archived; without it a missing first segment is corruption, as it
//! always was. The file is written (temp file, fsync, rename, directory fsync) *before* the
//! segments it covers are deleted, so a crash in between leaves a log that still starts at or
//! before the recorded lsn, which recovery accepts.
//!
//! Why this type lives here and not in `agentd-schemas`: it is neither a log record, a stored
//! projection value nor an HTTP body, but a file only the log writes and reads back.

use super::segment::sync_dir;
use super::LogError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The marker's file name; it does not end in `.seg`, so it is not mistaken for a segment.
pub const LOCAL_START_FILE: &str = "local-start.json";
/// `format` of the marker, so a stray JSON file is not mistaken for one.
const LOCAL_START_FORMAT: &str = "agentd-log-local-start";
/// The marker version this code writes and reads.
const LOCAL_START_VERSION: u32 = 1;

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalStart {
    /// Always [`LOCAL_START_FORMAT`].
    format: String,
    /// Always [`LOCAL_START_VERSION`].
    version: u32,
    /// Every record before this lsn was deleted locally after it was archived.
    pub first_lsn: u64,
    /// The storage URL whose `log/` holds the records before `first_lsn`.
    pub archive_url: String,
}

impl LocalStart {
    /// A marker saying the records before `first_lsn` are archived at `archive_url`.
    pub fn new(first_lsn: u64, archive_url: &str) -> LocalStart {
        LocalStart {
            format: LOCAL_START_FORMAT.to_owned(),
            version: LOCAL_START_VERSION,
            first_lsn,
            archive_url: archive_url.to_owned(),
        }
    }
}

/// The marker's path in the log directory `dir`.
pub fn local_start_path(dir: &Path) -> PathBuf {
    dir.join(LOCAL_START_FILE)
}

/// Reads the marker of the log in `dir`; `None` when there is none (the whole log is local).
/// An unreadable or malformed marker is corruption: guessing would either refuse a good log or
/// accept one whose first segment was lost.
pub fn read_local_start(dir: &Path) -> Result<Option<LocalStart>, LogError> {
    let path = local_start_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LogError::Io { path, source }),
    };
    let corrupt = |detail: String| LogError::Corrupt {
        path: path.clone(),
        offset: 0,
        detail,
    };
    let marker: LocalStart = serde_json::from_slice(&bytes)
        .map_err(|error| corrupt(format!("the local-start marker is not valid: {error}")))?;
    if marker.format != LOCAL_START_FORMAT || marker.version != LOCAL_START_VERSION {
        return Err(corrupt(format!(
            "the local-start marker has format {:?} version {}, this build reads {LOCAL_START_FORMAT:?} version {LOCAL_START_VERSION}",
            marker.format, marker.version
        )));
    }
    if marker.first_lsn == 0 {
        return Err(corrupt("the local-start marker names lsn 0".to_owned()));
    }
    Ok(Some(marker))
}

/// Replaces the marker durably: temp file, fsync, rename, directory fsync. Only then may the
/// segments before `marker.first_lsn` be deleted.
pub fn write_local_start(dir: &Path, marker: &LocalStart) -> Result<(), LogError> {
    let path = local_start_path(dir);
    let temp = dir.join(format!("{LOCAL_START_FILE}.tmp"));
    // Serializing plain strings and integers cannot fail.
    let mut text = serde_json::to_vec_pretty(marker).unwrap_or_default();
    text.push(b'\n');
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogError::Io { path, source }
    };
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(&text).map_err(io(&temp))?;
    file.sync_all().map_err(io(&temp))?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(io(&path))?;
    sync_dir(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_refuses_what_it_cannot_trust() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_local_start(dir.path()).unwrap(), None);
        let marker = LocalStart::new(1532, "file:///backups/agentd");
        write_local_start(dir.path(), &marker).unwrap();
        assert_eq!(read_local_start(dir.path()).unwrap(), Some(marker));
        std::fs::write(local_start_path(dir.path()), b"{\"first_lsn\": 3}").unwrap();
        let error = read_local_start(dir.path()).unwrap_err().to_string();
        assert!(error.contains("local-start marker is not valid"), "{error}");
        let zero = LocalStart::new(0, "file:///x");
        std::fs::write(
            local_start_path(dir.path()),
            serde_json::to_vec(&zero).unwrap(),
        )
        .unwrap();
        let error = read_local_start(dir.path()).unwrap_err().to_string();
        assert!(error.contains("names lsn 0"), "{error}");
    }
}
