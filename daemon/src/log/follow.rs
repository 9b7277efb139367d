//! A log that grows by bytes copied from another log, not by appends: a read replica's local
//! copy of the primary's archived log (`replica/`). The copied bytes are checked here, frame by
//! frame (CRC, contiguous LSNs, whole frames, a segment header naming its first LSN), before
//! they touch a segment file; then they are written, made durable and told to the offset index.
//! The caller publishes the durable LSN ([`FollowedLog::publish_durable`]) once it has applied
//! the new records to what must lead the projector (a replica's queue state), so readers and
//! the projector never see anything half written.
//!
//! Architecture invariant: a followed log holds only bytes of the log it copies, laid out in the
//! same segment files, so it is byte-identical to a prefix of it. Its [`LogWriter`] never
//! writes: every append answers [`AppendError::Closed`](super::AppendError::Closed).

use super::frame::{check_frame, FrameCheck};
use super::index::{Mark, OffsetIndex};
use super::segment::{decode_segment_header, segment_path, sync_dir, SEGMENT_HEADER_BYTES};
use super::writer::{LogWriter, StatsCounters, WriterShared};
use super::{Log, LogError, Lsn};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// The local copy of a followed log: where its last segment ends.
pub struct FollowedLog {
    dir: PathBuf,
    frame_bytes_max: u32,
    index: Arc<OffsetIndex>,
    /// The last segment: appended to until the copied log rolls.
    active_first_lsn: u64,
    active_len_bytes: u64,
    last_lsn: u64,
    shared: Arc<WriterShared>,
}

/// Why copied bytes were refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The bytes are not the frames that must come next: damage, or another log.
    #[error("{detail}")]
    NotTheNextFrames { detail: String },
    #[error(transparent)]
    Log(#[from] LogError),
}

impl Log {
    /// Turns a recovered log into one that grows by copied bytes. The returned writer serves
    /// readers of the durable LSN (HTTP, the projector) and refuses every append.
    ///
    /// Preallocated zeros a primary's writer left after the last frame (a crash) are cut first:
    /// copied frames go at the end of the last frame, and a segment followed by another must
    /// end exactly there.
    pub fn into_followed(mut self) -> Result<(FollowedLog, LogWriter), LogError> {
        self.active.trim().map_err(|detail| LogError::Io {
            path: self.active.path.clone(),
            source: std::io::Error::other(detail),
        })?;
        let (commands, refused) = mpsc::channel(1);
        // Dropping the receiver closes the channel: appends and shutdowns answer at once.
        drop(refused);
        let (durable_watch, _) = watch::channel(self.last_lsn);
        let (exited, _) = watch::channel(true);
        let shared = Arc::new(WriterShared {
            durable_lsn: AtomicU64::new(self.last_lsn.0),
            durable_watch,
            stats: StatsCounters::default(),
            thread: Mutex::new(None),
            exited,
        });
        let writer = LogWriter {
            commands,
            shared: shared.clone(),
            frame_bytes_max: self.options.frame_bytes_max,
        };
        let followed = FollowedLog {
            dir: self.options.dir,
            frame_bytes_max: self.options.frame_bytes_max,
            index: self.index,
            active_first_lsn: self.active.first_lsn,
            active_len_bytes: self.active.len_bytes,
            last_lsn: self.last_lsn.0,
            shared,
        };
        Ok((followed, writer))
    }
}

impl FollowedLog {
    /// The last durable frame of the local copy.
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.last_lsn)
    }

    /// The first LSN of the last segment (its file name) and its length in bytes.
    pub fn active_segment(&self) -> (u64, u64) {
        (self.active_first_lsn, self.active_len_bytes)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `from..to` of the segment named `first_lsn` (bytes already held, to compare them
    /// with the copied log's).
    pub fn read_local(&self, first_lsn: u64, from: u64, to: u64) -> Result<Vec<u8>, LogError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = segment_path(&self.dir, first_lsn);
        let io = |source| LogError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        file.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut bytes = vec![0; to.saturating_sub(from) as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// Appends `bytes`, whole frames following the last one, to the last segment and makes them
    /// durable. Returns the new last LSN (published by [`Self::publish_durable`]).
    pub fn extend(&mut self, bytes: &[u8]) -> Result<Lsn, FollowError> {
        let path = segment_path(&self.dir, self.active_first_lsn);
        let last_lsn = check_frames(bytes, self.last_lsn, self.frame_bytes_max, &path)?;
        if bytes.is_empty() {
            return Ok(Lsn(self.last_lsn));
        }
        // At the end of the last frame, not of the file: a segment a primary's writer left
        // after a crash may end in preallocated zeros (`active.rs`).
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| LogError::io(&path, source))?;
        write_durably(file, bytes, self.active_len_bytes, &path)?;
        self.active_len_bytes += bytes.len() as u64;
        self.advance(last_lsn);
        Ok(Lsn(last_lsn))
    }

    /// Creates the segment that follows the last one with `bytes` (its header and whole frames
    /// following the last one) and makes it durable. Returns the new last LSN.
    pub fn start_segment(&mut self, bytes: &[u8]) -> Result<Lsn, FollowError> {
        let first_lsn = self.last_lsn + 1;
        let path = segment_path(&self.dir, first_lsn);
        let header = bytes.first_chunk::<SEGMENT_HEADER_BYTES>().ok_or_else(|| {
            not_next(
                &path,
                format!("{} bytes hold no segment header", bytes.len()),
            )
        })?;
        match decode_segment_header(header) {
            Ok(named) if named == first_lsn => {}
            Ok(named) => {
                return Err(not_next(
                    &path,
                    format!("its header names lsn {named}, the log continues at {first_lsn}"),
                ))
            }
            Err(detail) => return Err(not_next(&path, detail)),
        }
        let frames = &bytes[SEGMENT_HEADER_BYTES..];
        let last_lsn = check_frames(frames, self.last_lsn, self.frame_bytes_max, &path)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| LogError::io(&path, source))?;
        write_durably(file, bytes, 0, &path)?;
        sync_dir(&self.dir).map_err(|source| LogError::io(&self.dir, source))?;
        self.index.add_segment(first_lsn);
        self.active_first_lsn = first_lsn;
        self.active_len_bytes = bytes.len() as u64;
        self.advance(last_lsn);
        Ok(Lsn(last_lsn))
    }

    /// Tells readers where the durable frames end.
    fn advance(&mut self, last_lsn: u64) {
        self.last_lsn = last_lsn;
        self.index.record(
            self.active_first_lsn,
            Mark {
                lsn: last_lsn + 1,
                offset: self.active_len_bytes,
            },
        );
    }

    /// Publishes the last copied LSN as durable: the writer's watchers (the projector, HTTP
    /// reads, long-polls of the events route) may read up to it.
    pub fn publish_durable(&self) {
        self.shared
            .durable_lsn
            .store(self.last_lsn, Ordering::Release);
        self.shared.durable_watch.send_replace(Lsn(self.last_lsn));
    }
}

fn not_next(path: &Path, detail: String) -> FollowError {
    FollowError::NotTheNextFrames {
        detail: format!("bytes for {}: {detail}", path.display()),
    }
}

/// Checks that `bytes` are whole, valid frames numbered from `after + 1` on; returns the last
/// LSN (`after` when empty).
fn check_frames(
    bytes: &[u8],
    after: u64,
    frame_bytes_max: u32,
    path: &Path,
) -> Result<u64, FollowError> {
    let mut offset = 0;
    let mut last = after;
    while offset < bytes.len() {
        let header = match check_frame(&bytes[offset..], frame_bytes_max) {
            FrameCheck::Valid(header) => header,
            FrameCheck::Incomplete { needed_bytes, .. } => {
                return Err(not_next(
                    path,
                    format!("they end inside a frame at byte {offset} (it needs {needed_bytes})"),
                ))
            }
            FrameCheck::Invalid(defect) => {
                return Err(not_next(path, format!("frame at byte {offset}: {defect}")))
            }
        };
        if header.lsn != last + 1 {
            return Err(not_next(
                path,
                format!(
                    "frame at byte {offset} is lsn {}, expected {}",
                    header.lsn,
                    last + 1
                ),
            ));
        }
        last = header.lsn;
        offset += header.frame_bytes() as usize;
    }
    Ok(last)
}

/// One write at `offset` and one fsync; a failure after a partial write leaves a torn tail that recovery
/// cuts at the next start (the bytes were never published).
fn write_durably(file: File, bytes: &[u8], offset: u64, path: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
        .and_then(|()| file.sync_data())
        .map_err(|source| LogError::io(path, source))
}
