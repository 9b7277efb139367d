//! The durable append-only log: segment files of CRC-checked frames, a group-committing writer
//! thread, crash recovery and a reader.
//!
//! The log stores opaque payloads (MessagePack written by the caller) and knows nothing about
//! events. The byte layout is drawn in `docs/log-format.md`.
//!
//! Architecture invariants:
//! - A frame is acknowledged only after the `fdatasync` covering it returned.
//! - Exactly one thread (`log-writer`) writes segment files; everyone else sends it frames over a
//!   bounded channel.
//! - Recovery truncates only a provably torn tail of the last segment; any other damage refuses to
//!   start with [`LogError::Corrupt`] naming the file and byte offset.
//! - A failed fsync (or any write error but disk full) stops the process through
//!   [`LogOptions::on_fatal`]: after a failed fsync the page cache can no longer be trusted.
//! - Local retention deletes only the oldest segment, and only after `local-start.json`
//!   durably records where the local log now starts; recovery accepts a first segment after
//!   lsn 1 only with that marker. Reads below the local first lsn go to the cold tier
//!   ([`ColdSegments`]) and are checked frame by frame like local ones.

mod active;
mod cold;
mod follow;
mod frame;
mod index;
mod local_start;
mod reader;
mod recovery;
mod segment;
mod tiered;
pub(crate) mod writer;

#[cfg(test)]
mod tests;

pub use agentd_schemas::Lsn;
pub use cold::{ColdSegment, ColdSegments};
pub use follow::{FollowError, FollowedLog};
pub use local_start::read_local_start;
pub use reader::{LogReader, LogSource, RawFrame};
pub(crate) use segment::sync_dir;
pub use tiered::Eviction;
pub use writer::{BatchObservation, LogWriter};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default largest segment file: big enough that rolls (two extra fsyncs) are rare, small enough
/// that a recovery scan of the active segment takes well under a second.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default largest payload of one frame: bounds the memory a reader or recovery allocates for a
/// length read from disk.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Default most frames per group commit: bounds the acknowledgement work done after one fsync.
pub const BATCH_FRAMES_MAX_DEFAULT: usize = 4096;
/// Default bytes after which the writer stops adding frames to a batch: bounds the write buffer.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Default capacity of the writer's queue: appenders wait (backpressure) once it is full.
pub const QUEUE_CAPACITY_DEFAULT: usize = 8192;
/// Default zeros written ahead of the last frame: one slower fsync (the one that grows the file)
/// per 2 MiB of frames, about one group commit in a thousand on the single-job path.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// Process exit status used by the default fatal hook (`EX_SOFTWARE`).
pub const FATAL_EXIT_STATUS: i32 = 70;

/// Called with a description when the log can no longer guarantee durability.
pub type FatalHook = Arc<dyn Fn(&str) + Send + Sync>;
/// Called on the writer thread after every batch that became durable; must be cheap.
pub type BatchObserver = Arc<dyn Fn(&BatchObservation) + Send + Sync>;

/// Where the log lives and the limits it works within.
#[derive(Clone)]
pub struct LogOptions {
    /// Directory holding the segment files; created by [`open`] if missing. Files that do not end
    /// in `.seg` are ignored, so the directory may hold other things.
    pub dir: PathBuf,
    /// A segment is rolled when it plus the next frame would exceed this. A frame larger than this
    /// still goes alone in its own segment.
    pub segment_bytes_max: u64,
    /// Largest payload accepted by [`LogWriter::append`] and trusted by recovery and the reader.
    /// Lowering it below the size of frames already written makes those frames unreadable.
    pub frame_bytes_max: u32,
    /// Most frames one group commit takes from the queue.
    pub batch_frames_max: usize,
    /// The writer stops draining the queue once a batch holds this many bytes (so a batch holds
    /// at most this plus one frame).
    pub batch_bytes_max: usize,
    /// Capacity of the bounded queue between appenders and the writer thread.
    pub queue_capacity: usize,
    /// Zeros the writer keeps written ahead of the last frame of the active segment, so that a
    /// group commit's `fdatasync` overwrites allocated bytes instead of growing the file (which
    /// costs a journal commit per fsync on ext4). 0 appends to the end of the file. See
    /// `active.rs`.
    pub preallocate_bytes: u64,
    /// Called when a write or fsync fails for a reason other than a full disk. The default prints
    /// to stderr and exits with [`FATAL_EXIT_STATUS`]; the writer thread stops either way. Tests
    /// replace it to observe the failure.
    pub on_fatal: FatalHook,
    /// Observes each durable batch (size, fsync time) so the daemon can export metrics.
    pub on_batch: Option<BatchObserver>,
}

impl LogOptions {
    /// Options with the default limits for a log in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogOptions {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            batch_frames_max: BATCH_FRAMES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            queue_capacity: QUEUE_CAPACITY_DEFAULT,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
            on_fatal: Arc::new(exit_on_fatal),
            on_batch: None,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let segment_bytes_min = (segment::SEGMENT_HEADER_BYTES + frame::FRAME_HEADER_BYTES) as u64;
        let problem = if self.segment_bytes_max < segment_bytes_min {
            Some(format!(
                "segment_bytes_max {} is below {segment_bytes_min} (a header and one frame)",
                self.segment_bytes_max
            ))
        } else if self.frame_bytes_max == 0 {
            Some("frame_bytes_max must be at least 1".to_string())
        } else if self.batch_frames_max == 0 || self.batch_bytes_max == 0 {
            Some("batch_frames_max and batch_bytes_max must be at least 1".to_string())
        } else if self.queue_capacity == 0 {
            Some("queue_capacity must be at least 1".to_string())
        } else {
            None
        };
        match problem {
            Some(detail) => Err(LogError::InvalidOptions { detail }),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("dir", &self.dir)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("batch_frames_max", &self.batch_frames_max)
            .field("batch_bytes_max", &self.batch_bytes_max)
            .field("queue_capacity", &self.queue_capacity)
            .field("preallocate_bytes", &self.preallocate_bytes)
            .field("on_batch", &self.on_batch.is_some())
            .finish_non_exhaustive()
    }
}

fn exit_on_fatal(message: &str) {
    eprintln!("agentd: fatal log error: {message}; exiting so that recovery starts from disk");
    std::process::exit(FATAL_EXIT_STATUS);
}

/// What recovery found, for the startup log line and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Last frame in the log after recovery; [`Lsn::ZERO`] for an empty log.
    pub last_lsn: Lsn,
    /// First lsn held by a local segment file: 1, unless local retention deleted archived
    /// segments (`local-start.json` then says where the earlier records are).
    pub local_first_lsn: Lsn,
    /// Segment files the log holds after recovery.
    pub segments: usize,
    /// Valid frames read while scanning.
    pub frames_scanned: u64,
    /// The torn tail that was cut off, if there was one. Its frames were never acknowledged.
    pub truncated: Option<TornTail>,
}

/// An incomplete write left by a crash, removed by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file that was truncated (or removed, for a partial segment header).
    pub path: PathBuf,
    /// Byte offset the file was cut at: the end of the last good frame.
    pub offset: u64,
    /// Bytes removed from the end of the file.
    pub bytes_removed: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// Errors opening, recovering or reading the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("log I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Damage that is not a torn tail: the daemon must not start on it, because repairing it
    /// would silently drop acknowledged frames.
    #[error(
        "corrupt log: {} at byte {offset}: {detail}; refusing to start (torn tails are repaired \
         automatically, this is not one)",
        path.display()
    )]
    Corrupt {
        /// The segment file holding the damage.
        path: PathBuf,
        /// Byte offset of the first bad byte run (a frame or segment header start).
        offset: u64,
        /// What was found there.
        detail: String,
    },
    /// A reader met a frame it cannot return: damage, or a read beyond the durable lsn.
    #[error("log frame unreadable: {} at byte {offset}: {detail}", path.display())]
    Unreadable {
        /// The segment file being read.
        path: PathBuf,
        /// Byte offset of the frame.
        offset: u64,
        /// What was found there.
        detail: String,
    },
    /// A segment read back from where local retention left it (the archive) is unavailable or
    /// does not verify.
    #[error("archived log segment {origin}: {detail}")]
    Archived {
        /// The object (or source) read, as `URL (object log/NAME)`.
        origin: String,
        /// What failed.
        detail: String,
    },
    /// [`LogOptions`] limits that cannot work.
    #[error("invalid log options: {detail}")]
    InvalidOptions {
        /// Which limit and why.
        detail: String,
    },
}

impl LogError {
    fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why an append was not made durable. Cloneable so one failure can answer a whole batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The disk (or quota) is full. Nothing of this frame is on disk; the writer expects this
    /// frame's lsn next, so the sequencer resends from `durable_lsn() + 1` once space returns.
    #[error("log disk is full; the frame was not written")]
    DiskFull,
    /// The frame's lsn is not the one the writer expects; it was not written.
    #[error("log append out of sequence: expected lsn {expected}, got {got}")]
    OutOfSequence {
        /// The lsn the writer will accept next.
        expected: Lsn,
        /// The lsn that was sent.
        got: Lsn,
    },
    /// The payload is larger than [`LogOptions::frame_bytes_max`].
    #[error("log frame payload of {bytes} bytes is over the maximum of {max}")]
    FrameTooLarge {
        /// Payload size sent.
        bytes: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The writer has shut down or stopped on a fatal error.
    #[error("log writer is closed")]
    Closed,
}

/// A recovered log, ready to start its writer. Recovery happens before this exists, so nothing
/// can append to a log whose tail has not been checked.
#[derive(Debug)]
pub struct Log {
    options: LogOptions,
    last_lsn: Lsn,
    active: writer::ActiveSegment,
    /// Frame positions learned by recovery, kept up to date by the writer, shared by readers.
    index: Arc<index::OffsetIndex>,
    /// Where the local segment files start, shared by readers.
    tier: Arc<tiered::LocalTier>,
}

/// Checks the frame that starts at `bytes[0]` exactly as recovery does, without any IO, so the
/// frame decoder can be fuzzed from outside the crate (`daemon/tests/fuzz_decoders/`).
///
/// `Ok(Some(frame))` for a valid frame (its lsn is not judged), `Ok(None)` when `bytes` end
/// before the frame does, `Err(detail)` when the bytes are all there but are not a frame. The
/// length field is checked against `frame_bytes_max` before it is used for anything.
#[doc(hidden)]
pub fn decode_frame_for_fuzzing(
    bytes: &[u8],
    frame_bytes_max: u32,
) -> Result<Option<RawFrame>, String> {
    match frame::check_frame(bytes, frame_bytes_max) {
        frame::FrameCheck::Valid(header) => {
            // A valid frame lies entirely inside `bytes`, so this range is in bounds.
            let payload_end = frame::FRAME_HEADER_BYTES + header.payload_len as usize;
            Ok(Some(RawFrame {
                lsn: Lsn(header.lsn),
                format_version: header.format_version,
                payload: bytes[frame::FRAME_HEADER_BYTES..payload_end].to_vec(),
            }))
        }
        frame::FrameCheck::Incomplete { .. } => Ok(None),
        frame::FrameCheck::Invalid(defect) => Err(defect.to_string()),
    }
}

/// Opens the log in `options.dir` (creating the directory if missing) and recovers it: checks
/// every segment, truncates a torn tail of the last one, and refuses to start on corruption.
pub fn open(options: LogOptions) -> Result<(Log, RecoveryReport), LogError> {
    options.validate()?;
    std::fs::create_dir_all(&options.dir).map_err(|source| LogError::io(&options.dir, source))?;
    let index = Arc::new(index::OffsetIndex::default());
    let recovered = recovery::recover(&options.dir, options.frame_bytes_max, &index)?;
    let (active, segments) = match recovered.active {
        Some(active) => (active, recovered.segments),
        None => {
            let first_lsn = recovered.last_lsn + 1;
            let active = writer::ActiveSegment::create(&options.dir, first_lsn)?;
            index.add_segment(first_lsn);
            (active, recovered.segments + 1)
        }
    };
    let tier = Arc::new(tiered::LocalTier::new(
        &options.dir,
        recovered.local_first_lsn,
    ));
    let report = RecoveryReport {
        last_lsn: Lsn(recovered.last_lsn),
        local_first_lsn: Lsn(recovered.local_first_lsn),
        segments,
        frames_scanned: recovered.frames_scanned,
        truncated: recovered.truncated,
    };
    tracing::info!(
        dir = %options.dir.display(),
        last_lsn = recovered.last_lsn,
        local_first_lsn = recovered.local_first_lsn,
        segments,
        frames_scanned = report.frames_scanned,
        torn_tail = report.truncated.is_some(),
        "log recovered"
    );
    let log = Log {
        options,
        last_lsn: Lsn(recovered.last_lsn),
        active,
        index,
        tier,
    };
    Ok((log, report))
}

impl Log {
    /// The last frame in the log: the sequencer continues from the next lsn.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// A reader sharing this log's offset index, which recovery filled and the writer keeps
    /// current: reads starting at any lsn seek close to it instead of scanning a segment. Every
    /// reader of a running daemon should be a clone of this one.
    pub fn reader(&self) -> LogReader {
        LogReader::with_index(
            &self.options.dir,
            self.options.frame_bytes_max,
            self.index.clone(),
            self.tier.clone(),
        )
    }

    /// Starts the one `log-writer` thread that owns the segment files from now on.
    pub fn start_writer(self) -> LogWriter {
        writer::start(self.options, self.active, self.last_lsn, self.index)
    }
}
