//! The segment the writer appends to, and the one write path into it.
//!
//! **Preallocation.** Appending to the end of a file grows it, and an `fdatasync` that follows a
//! growth must also commit the new file size through the filesystem's journal: on ext4 that is
//! a second ordered write before the flush. Overwriting bytes the file already holds changes no
//! metadata, so the `fdatasync` writes only the data. The writer therefore keeps up to
//! [`super::LogOptions::preallocate_bytes`] of zeros written ahead of the last frame: a batch
//! whose frames would pass the zeros writes a new run of zeros after them in the same write
//! (one slower `fdatasync` per run of zeros), and every other batch overwrites zeros (measured
//! in `docs/performance.md`, "Preallocated segments").
//!
//! The zeros never become part of the log:
//! - frames are written at `len_bytes`, the end of the last frame, never at the end of the file;
//! - recovery reads an all-zero run from the end of the last frame to the end of the last
//!   segment as preallocated space, not damage (a torn write is not all zeros, and is cut as
//!   before); see `recovery.rs`;
//! - a segment is cut to its frames before the next one is created (a roll) and when the writer
//!   stops cleanly, so sealed segments end exactly at their last frame, as readers, the
//!   archiver and recovery require.

use super::segment::SEGMENT_HEADER_BYTES;
use super::segment::{create_segment, is_disk_full, sync_dir, CreateSegmentError, SegmentEntry};
use super::LogError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Zeros written per `pwrite` while preallocating.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    /// Written with positional writes at `len_bytes` (not `O_APPEND`: the file may hold
    /// preallocated zeros after the last frame).
    file: File,
    pub(super) path: PathBuf,
    /// The lsn the segment is named for.
    pub(super) first_lsn: u64,
    /// Where the last frame ends, tracked here so the hot path makes no `stat` call.
    pub(super) len_bytes: u64,
    /// The file's length: `len_bytes` plus the preallocated zeros after it.
    pub(super) allocated_bytes: u64,
}

/// Why writing part of a batch failed.
pub(super) enum WriteFailure {
    DiskFull,
    Fatal(String),
}

impl ActiveSegment {
    /// Creates the first segment of an empty log.
    pub(crate) fn create(dir: &Path, first_lsn: u64) -> Result<ActiveSegment, LogError> {
        match create_segment(dir, first_lsn) {
            Ok((file, path)) => Ok(ActiveSegment::new(file, path, first_lsn)),
            Err(CreateSegmentError::DiskFull) => Err(LogError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            }),
            Err(CreateSegmentError::Fatal(detail)) => Err(LogError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(detail),
            }),
        }
    }

    fn new(file: File, path: PathBuf, first_lsn: u64) -> ActiveSegment {
        ActiveSegment {
            file,
            path,
            first_lsn,
            len_bytes: SEGMENT_HEADER_BYTES as u64,
            allocated_bytes: SEGMENT_HEADER_BYTES as u64,
        }
    }

    /// Reopens the recovered last segment, whose frames end at `len_bytes` (zeros may follow, up
    /// to the end of the file). Its contents may still sit only in the page cache (the previous
    /// process died before its fsync), and recovery just treated them as the log, so they are
    /// made durable before anyone builds on them.
    pub(crate) fn reopen(
        segment: &SegmentEntry,
        len_bytes: u64,
    ) -> Result<ActiveSegment, LogError> {
        let io_error = |source| LogError::Io {
            path: segment.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        let allocated_bytes = file.metadata().map_err(io_error)?.len().max(len_bytes);
        if let Some(dir) = segment.path.parent() {
            sync_dir(dir).map_err(|source| LogError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(ActiveSegment {
            file,
            path: segment.path.clone(),
            first_lsn: segment.first_lsn,
            len_bytes,
            allocated_bytes,
        })
    }

    /// Cuts the preallocated zeros off, so the file ends at its last frame, durably. Called
    /// before a roll and when the writer stops cleanly.
    pub(super) fn trim(&mut self) -> Result<(), String> {
        if self.allocated_bytes == self.len_bytes {
            return Ok(());
        }
        self.file
            .set_len(self.len_bytes)
            .and_then(|()| self.file.sync_all())
            .map_err(|error| {
                format!(
                    "cutting the preallocated end of {} to {} bytes: {error}",
                    self.path.display(),
                    self.len_bytes
                )
            })?;
        self.allocated_bytes = self.len_bytes;
        Ok(())
    }

    /// One positional write of `bytes` after the last frame (followed, when they would pass the
    /// preallocated zeros, by `preallocate_bytes` more zeros) and one `fdatasync`. On a full disk
    /// the frames are cut off again, so no partial frame remains; a failed cut, like any other
    /// failure, is fatal. Zeros that do not fit on the disk are simply not written.
    pub(super) fn write_and_sync(
        &mut self,
        bytes: &[u8],
        preallocate_bytes: u64,
    ) -> Result<Duration, WriteFailure> {
        let end = self.len_bytes + bytes.len() as u64;
        if let Err(error) = self.file.write_all_at(bytes, self.len_bytes) {
            return Err(self.cut_after_failed_write(&error, end));
        }
        self.allocated_bytes = self.allocated_bytes.max(end);
        if preallocate_bytes > 0 && end + preallocate_bytes / 2 > self.allocated_bytes {
            self.preallocate(end, preallocate_bytes)?;
        }
        let fsync_started = Instant::now();
        self.file.sync_data().map_err(|error| {
            WriteFailure::Fatal(format!("fdatasync of {}: {error}", self.path.display()))
        })?;
        self.len_bytes = end;
        Ok(fsync_started.elapsed())
    }

    /// Writes zeros from `end` to `end + bytes`. A full disk leaves the file ending at `end`.
    fn preallocate(&mut self, end: u64, bytes: u64) -> Result<(), WriteFailure> {
        let mut offset = self.allocated_bytes.max(end);
        let target = end + bytes;
        while offset < target {
            let chunk = (target - offset).min(ZEROS.len() as u64) as usize;
            if let Err(error) = self.file.write_all_at(&ZEROS[..chunk], offset) {
                if !is_disk_full(&error) {
                    return Err(WriteFailure::Fatal(format!(
                        "preallocating {}: {error}",
                        self.path.display()
                    )));
                }
                // Not fatal and not a refusal: the frames fit, only the zeros ahead did not.
                return self.file.set_len(end).map_err(|cut_error| {
                    WriteFailure::Fatal(format!(
                        "cutting {} back to {end} bytes after a disk-full preallocation: {cut_error}",
                        self.path.display()
                    ))
                }).map(|()| self.allocated_bytes = end);
            }
            offset += chunk as u64;
        }
        self.allocated_bytes = target;
        Ok(())
    }

    /// After a failed write of the bytes that would have ended at `end`.
    fn cut_after_failed_write(&mut self, error: &std::io::Error, end: u64) -> WriteFailure {
        if !is_disk_full(error) {
            return WriteFailure::Fatal(format!("write to {}: {error}", self.path.display()));
        }
        // Zeros already preallocated stay; a partial frame written past them is cut.
        let keep = self.allocated_bytes.max(self.len_bytes);
        // Frames written over preallocated zeros are overwritten by zeros again: nothing of a
        // refused batch may look like a frame to recovery. Only what the write could reach.
        let zeroed = self.zero_range(self.len_bytes, keep.min(end));
        match zeroed
            .and_then(|()| self.file.set_len(keep))
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => WriteFailure::DiskFull,
            Err(cut_error) => WriteFailure::Fatal(format!(
                "cutting {} back to {} bytes after a disk-full write: {cut_error}",
                self.path.display(),
                self.len_bytes
            )),
        }
    }

    fn zero_range(&self, from: u64, to: u64) -> std::io::Result<()> {
        let mut offset = from;
        while offset < to {
            let chunk = (to - offset).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..chunk], offset)?;
            offset += chunk as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
impl ActiveSegment {
    /// Swaps the file for a read-only handle, so the next write fails with `EBADF`: a write
    /// error that is not a full disk, to test the fatal path.
    pub(crate) fn make_writes_fail(&mut self) {
        self.file = File::open(&self.path).unwrap();
    }
}

/// Starts a new segment. The old one is cut to its last frame first (its frames are already
/// durable: every run, including its last, ended with an fdatasync before this is called), so
/// a sealed segment never holds preallocated zeros.
pub(super) fn roll(
    dir: &Path,
    active: &mut ActiveSegment,
    first_lsn: u64,
) -> Result<(), WriteFailure> {
    active.trim().map_err(WriteFailure::Fatal)?;
    let (file, path) = create_segment(dir, first_lsn).map_err(|error| match error {
        CreateSegmentError::DiskFull => WriteFailure::DiskFull,
        CreateSegmentError::Fatal(message) => WriteFailure::Fatal(message),
    })?;
    tracing::debug!(path = %path.display(), first_lsn, "log segment rolled");
    *active = ActiveSegment::new(file, path, first_lsn);
    Ok(())
}
