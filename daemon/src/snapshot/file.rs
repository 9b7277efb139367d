//! The snapshot file: the sequencer's in-memory state as of one LSN, so a restart loads it and
//! replays only the log after that LSN instead of the whole log.
//!
//! A snapshot is a cache. It is rebuilt from the log whenever it is missing, damaged, of another
//! format version, or of another log, and nothing is ever decided from a snapshot that a replay
//! of the log would decide differently: the file says which log record it follows (LSN and the
//! sha256 of that record's payload), and [`load_newest`] returns only one the caller accepts.
//!
//! # Format
//!
//! One file per snapshot, `sequencer-<lsn, 20 digits>.snap`, in [`SNAPSHOT_DIR`]. All integers
//! are little-endian.
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic "AGDSNAP1"
//!      8      4  format version, u32 (SNAPSHOT_FORMAT_VERSION)
//!     12      8  lsn, u64: the last log record the state has applied
//!     20     32  sha256 of the payload of the log record at lsn (all zeros for lsn 0, an empty
//!                log): the log's identity, so a snapshot of another log, or of this log before
//!                it was cut back and written again, does not load
//!     52      8  body length in bytes, u64
//!     60      4  CRC32C of the body, u32
//!     64      4  CRC32C of bytes 0..64, u32
//!     68      -  body: the state as MessagePack, structs as arrays (`rmp_serde::encode::write`);
//!                types defined in the schemas inside it as named MessagePack (`crate::export::named_encoding`)
//! ```
//!
//! The file is exactly 68 + body length bytes. The body encodes the daemon's state types
//! (`QueueState`, `FactIndex`, `ExportLedger` and what they hold) as they are, so a change of
//! shape *or meaning* of any of them must bump [`SNAPSHOT_FORMAT_VERSION`]: old snapshots are
//! then skipped and rebuilt from the log. A shape change the version does not follow is caught
//! by the `format_fingerprint` test of `file_tests.rs`; a change of meaning only by review.
//!
//! # Writing
//!
//! One writer per directory. [`write_snapshot`] writes a temp file, fsyncs it, renames it into
//! place and fsyncs the directory, so a crash leaves either the previous files or the new one
//! complete (a stray temp file is removed by the next write). It then keeps [`SNAPSHOTS_KEPT`]
//! files: the new one and the newest older one, in case the new one is found damaged; a
//! snapshot with a higher LSN than the new one is of a log that was cut back (or of another
//! log) and is removed too.

use crate::log::{LogReader, Lsn};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where the snapshots live, under the directory of derived state.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// The first 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"AGDSNAP1";

/// The version of the body's encoding. Bump it whenever a type serialized into the body (see the
/// module doc) changes shape or meaning; files of another version are skipped, never upcast: the
/// log rebuilds them.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Snapshot files kept after a write: the new one and one older, in case the new one is damaged.
pub const SNAPSHOTS_KEPT: usize = 2;

/// Bytes before the body.
pub const SNAPSHOT_HEADER_BYTES: usize = 68;

/// The identity of the empty log (LSN 0 has no record to hash).
pub const EMPTY_LOG_RECORD_SHA256: [u8; 32] = [0; 32];

/// A state a snapshot holds. `after_load` restores what the encoding cannot carry (allocations
/// shared between entries); [`load_newest`] calls it on every state it returns, so a caller can
/// not forget it. A struct wrapping several states calls each part's.
pub trait SnapshotState: Serialize + DeserializeOwned {
    fn after_load(&mut self);
}

/// A snapshot that loaded.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The last log record the state has applied: replay from the record after it.
    pub lsn: Lsn,
    pub state: T,
    pub path: PathBuf,
    /// Size of the file.
    pub bytes: u64,
}

/// What stops a snapshot from being written, or the directory from being read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path}: encoding the state: {source}")]
    Encode {
        path: PathBuf,
        source: rmp_serde::encode::Error,
    },
}

/// Writes `state`, as of `lsn` whose record's payload hashes to `record_sha256`, as a new
/// snapshot in `dir` (created if missing), then removes older snapshots past [`SNAPSHOTS_KEPT`],
/// newer ones and stray temp files. Returns the new file's path.
pub fn write_snapshot<T: Serialize>(
    dir: &Path,
    lsn: Lsn,
    record_sha256: [u8; 32],
    state: &T,
) -> Result<PathBuf, SnapshotError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let path = dir.join(file_name(lsn));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", file_name(lsn)));
    write_temp(&temp, lsn, &record_sha256, state)?;
    fs::rename(&temp, &path).map_err(io_error(&temp))?;
    // The rename is durable only once the directory entry is.
    crate::log::sync_dir(dir).map_err(io_error(dir))?;
    prune(dir, lsn).map_err(io_error(dir))?;
    Ok(path)
}

/// Loads the newest snapshot in `dir` that is intact, of this format version, and accepted by
/// `accept(lsn, record_sha256)` (the caller checks that its log holds a record at `lsn` with that
/// payload hash), trying older ones after each that is not, with a warning naming the file and
/// why. `None` when none loads or `dir` does not exist; an error only when `dir` cannot be read.
pub fn load_newest<T: SnapshotState>(
    dir: &Path,
    accept: impl Fn(Lsn, &[u8; 32]) -> bool,
) -> Result<Option<Loaded<T>>, SnapshotError> {
    let snapshots = match list_snapshots(dir) {
        Ok(snapshots) => snapshots,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for (name_lsn, path) in snapshots.into_iter().rev() {
        match load_file(&path, name_lsn, &accept) {
            Ok(loaded) => return Ok(Some(loaded)),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "snapshot skipped; the log rebuilds it");
            }
        }
    }
    Ok(None)
}

/// The identity of the log at `lsn`: the sha256 of the payload of its record at `lsn`
/// ([`EMPTY_LOG_RECORD_SHA256`] for LSN 0). `None` when that record cannot be read (past the
/// end, damaged, or below the local log with no archive).
pub fn record_sha256(reader: &LogReader, lsn: Lsn) -> Option<[u8; 32]> {
    if lsn == Lsn::ZERO {
        return Some(EMPTY_LOG_RECORD_SHA256);
    }
    let frame = reader.frames(Lsn(lsn.0 - 1), lsn).next()?.ok()?;
    (frame.lsn == lsn).then(|| Sha256::digest(&frame.payload).into())
}

const FILE_PREFIX: &str = "sequencer-";
const FILE_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

fn file_name(lsn: Lsn) -> String {
    format!("{FILE_PREFIX}{:020}{FILE_SUFFIX}", lsn.0)
}

/// The LSN a snapshot file name stands for; `None` for any other name (temp files included).
fn parse_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// The snapshot files in `dir`, oldest first.
fn list_snapshots(dir: &Path) -> io::Result<Vec<(Lsn, PathBuf)>> {
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_file_name) {
            snapshots.push((lsn, entry.path()));
        }
    }
    snapshots.sort();
    Ok(snapshots)
}

/// Streams the body to the file behind a placeholder header, then writes the header, which
/// needs the body's length and CRC: the body is never held in memory whole.
fn write_temp<T: Serialize>(
    temp: &Path,
    lsn: Lsn,
    record_sha256: &[u8; 32],
    state: &T,
) -> Result<(), SnapshotError> {
    let io_error = |source| SnapshotError::Io {
        path: temp.to_path_buf(),
        source,
    };
    let mut file = File::create(temp).map_err(io_error)?;
    file.write_all(&[0; SNAPSHOT_HEADER_BYTES])
        .map_err(io_error)?;
    // The checksum under the buffer sees large writes, not the encoder's many small ones.
    let mut body = BufWriter::with_capacity(
        1 << 20,
        Crc32cWriter {
            inner: file,
            crc: 0,
            bytes: 0,
        },
    );
    rmp_serde::encode::write(&mut body, state).map_err(|source| SnapshotError::Encode {
        path: temp.to_path_buf(),
        source,
    })?;
    let body = body
        .into_inner()
        .map_err(|error| io_error(error.into_error()))?;
    let header = Header {
        version: SNAPSHOT_FORMAT_VERSION,
        lsn,
        record_sha256: *record_sha256,
        body_bytes: body.bytes,
        body_crc: body.crc,
    }
    .encode();
    let mut file = body.inner;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    file.write_all(&header).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Removes stray temp files, snapshots newer than `written` (of a log that was cut back, or of
/// another log: this writer's state at `written` is the truth) and all but the newest
/// [`SNAPSHOTS_KEPT`] of the rest.
fn prune(dir: &Path, written: Lsn) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(FILE_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            remove_if_present(&entry.path())?;
        }
    }
    let snapshots = list_snapshots(dir)?;
    let kept_from = snapshots
        .iter()
        .filter(|(lsn, _)| *lsn <= written)
        .count()
        .saturating_sub(SNAPSHOTS_KEPT);
    for (index, (lsn, path)) in snapshots.iter().enumerate() {
        if index < kept_from || *lsn > written {
            remove_if_present(path)?;
        }
    }
    Ok(())
}

/// A file another cleanup already removed is not an error.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Why a snapshot file was skipped.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("cannot read it: {0}")]
    Read(#[from] io::Error),
    #[error("shorter than its header")]
    Short,
    #[error("not a snapshot file (bad magic)")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("format version {found}, this build reads {SNAPSHOT_FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("its name says lsn {name}, its header {header}")]
    NameLsn { name: Lsn, header: Lsn },
    #[error("the header says {header} body bytes, the file holds {file}")]
    Length { header: u64, file: u64 },
    #[error("body checksum mismatch")]
    BodyCrc,
    #[error("not of this log (no record at lsn {lsn} with the payload hash it names)")]
    OtherLog { lsn: Lsn },
    #[error("body does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

fn load_file<T: SnapshotState>(
    path: &Path,
    name_lsn: Lsn,
    accept: &impl Fn(Lsn, &[u8; 32]) -> bool,
) -> Result<Loaded<T>, Rejected> {
    let bytes = fs::read(path)?;
    let header = Header::decode(&bytes)?;
    if header.lsn != name_lsn {
        return Err(Rejected::NameLsn {
            name: name_lsn,
            header: header.lsn,
        });
    }
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if body.len() as u64 != header.body_bytes {
        return Err(Rejected::Length {
            header: header.body_bytes,
            file: body.len() as u64,
        });
    }
    if crc32c::crc32c(body) != header.body_crc {
        return Err(Rejected::BodyCrc);
    }
    // Before decoding: a snapshot of another log costs no decode.
    if !accept(header.lsn, &header.record_sha256) {
        return Err(Rejected::OtherLog { lsn: header.lsn });
    }
    let mut state: T = rmp_serde::from_slice(body)?;
    state.after_load();
    Ok(Loaded {
        lsn: header.lsn,
        state,
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
    })
}

/// The fields of the header after the magic (the header checksum is computed, not stored here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    version: u32,
    lsn: Lsn,
    record_sha256: [u8; 32],
    body_bytes: u64,
    body_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES] {
        let mut bytes = [0; SNAPSHOT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        bytes[8..12].copy_from_slice(&self.version.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.lsn.0.to_le_bytes());
        bytes[20..52].copy_from_slice(&self.record_sha256);
        bytes[52..60].copy_from_slice(&self.body_bytes.to_le_bytes());
        bytes[60..64].copy_from_slice(&self.body_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&bytes[0..64]);
        bytes[64..68].copy_from_slice(&header_crc.to_le_bytes());
        bytes
    }

    /// Checks magic, header CRC and version, in that order: a damaged version field is reported
    /// as damage, not as another version.
    fn decode(file: &[u8]) -> Result<Header, Rejected> {
        let bytes = file.get(..SNAPSHOT_HEADER_BYTES).ok_or(Rejected::Short)?;
        if bytes[0..8] != SNAPSHOT_MAGIC {
            return Err(Rejected::Magic);
        }
        if crc32c::crc32c(&bytes[0..64]) != le_u32(&bytes[64..68]) {
            return Err(Rejected::HeaderCrc);
        }
        let version = le_u32(&bytes[8..12]);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(Rejected::Version { found: version });
        }
        let mut record_sha256 = [0; 32];
        record_sha256.copy_from_slice(&bytes[20..52]);
        Ok(Header {
            version,
            lsn: Lsn(le_u64(&bytes[12..20])),
            record_sha256,
            body_bytes: le_u64(&bytes[52..60]),
            body_crc: le_u32(&bytes[60..64]),
        })
    }
}

/// `bytes` is a 4-byte slice of the fixed header.
fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("a 4-byte header field"))
}

/// `bytes` is an 8-byte slice of the fixed header.
fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("an 8-byte header field"))
}

/// Counts and checksums the body as it is written.
struct Crc32cWriter<W> {
    inner: W,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for Crc32cWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
