//! The log as two tiers: segment files on the local disk from [`LocalTier::first_lsn`] on, and
//! the segments before it in a [`ColdSegments`] source (the archive) once local retention
//! deleted them. Every read goes through [`TieredFrames`], so a replay that starts at lsn 1
//! (start-up, `agentd rebuild`, careful mode, the events route for an old lsn) reads the
//! archived segments first and the local files after, without knowing which is which.
//!
//! A read pins the lowest local lsn it may still open; [`LocalTier::evict_oldest`] refuses to
//! delete a segment at or after a pin, so a segment is never deleted under a reader of this
//! process. A reader in another process (`agentd rebuild --out` beside a running daemon) that
//! finds a segment gone re-reads the marker and continues from the archive.

use super::cold::{ColdFrames, ColdSegments};
use super::local_start::{read_local_start, write_local_start, LocalStart};
use super::segment::{segment_path, sync_dir};
use super::{LogError, RawFrame};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where the local log starts, who reads it, and where the records before it are.
pub(crate) struct LocalTier {
    dir: PathBuf,
    /// The first lsn of the first local segment file.
    first_lsn: AtomicU64,
    /// Lowest local lsn each running read may still open, with how many reads hold it.
    pins: Mutex<BTreeMap<u64, usize>>,
    /// Set once, at start-up, when records before `first_lsn` are only in the archive.
    cold: OnceLock<Arc<dyn ColdSegments>>,
}

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("dir", &self.dir)
            .field("first_lsn", &self.first_lsn())
            .field("cold", &self.cold.get().map(|cold| cold.describe()))
            .finish_non_exhaustive()
    }
}

/// What [`LocalTier::evict_oldest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The segment file was deleted; the local log now starts at this lsn.
    Evicted { local_first_lsn: u64 },
    /// A read of this process may still open the segment; try again later.
    InUse,
}

impl LocalTier {
    pub(crate) fn new(dir: &Path, first_lsn: u64) -> LocalTier {
        LocalTier {
            dir: dir.to_path_buf(),
            first_lsn: AtomicU64::new(first_lsn.max(1)),
            pins: Mutex::new(BTreeMap::new()),
            cold: OnceLock::new(),
        }
    }

    /// The first lsn held by a local segment file.
    pub(crate) fn first_lsn(&self) -> u64 {
        self.first_lsn.load(Ordering::Acquire)
    }

    /// Where reads before the local log go. Set once; a second call is ignored (the first
    /// source stays, and readers already hold it).
    pub(crate) fn set_cold(&self, cold: Arc<dyn ColdSegments>) {
        let _already_set_keeps_the_first = self.cold.set(cold);
    }

    fn lock_pins(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        // A pin map is left consistent by every holder (insert or remove only), so a poisoned
        // lock still holds a usable map.
        self.pins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pins `lsn` when it is local: `None` (and no pin) when it is before the local log.
    fn pin_if_local(self: &Arc<Self>, lsn: u64) -> Option<Pin> {
        let mut pins = self.lock_pins();
        if lsn < self.first_lsn() {
            return None;
        }
        *pins.entry(lsn).or_default() += 1;
        Some(Pin {
            tier: self.clone(),
            lsn,
        })
    }

    /// Re-reads the marker, for a reader whose segment was deleted by another process.
    fn refresh_from_marker(&self) {
        if let Ok(Some(marker)) = read_local_start(&self.dir) {
            self.first_lsn.fetch_max(marker.first_lsn, Ordering::AcqRel);
        }
    }

    /// Deletes the oldest local segment, named `first_lsn`, whose records end just before
    /// `next_first_lsn` (the next segment's name; that file must exist, so the active segment
    /// is never deleted). First records durably that the local log starts at `next_first_lsn`
    /// and that the records before it are at `archive_url`. The caller has checked that the
    /// archive holds the segment with the same sha256.
    pub(crate) fn evict_oldest(
        &self,
        first_lsn: u64,
        next_first_lsn: u64,
        archive_url: &str,
    ) -> Result<Eviction, LogError> {
        let refuse = |detail: String| LogError::InvalidOptions { detail };
        if first_lsn > self.first_lsn() {
            return Err(refuse(format!(
                "refusing to delete segment {first_lsn}: the local log starts at lsn {}, delete older segments first",
                self.first_lsn()
            )));
        }
        let next_path = segment_path(&self.dir, next_first_lsn);
        if next_first_lsn <= first_lsn || !next_path.exists() {
            return Err(refuse(format!(
                "refusing to delete segment {first_lsn}: the log does not go on in {}",
                next_path.display()
            )));
        }
        {
            let pins = self.lock_pins();
            if pins.keys().next().is_some_and(|&lsn| lsn < next_first_lsn) {
                return Ok(Eviction::InUse);
            }
            let marked = next_first_lsn.max(self.first_lsn());
            write_local_start(&self.dir, &LocalStart::new(marked, archive_url))?;
            self.first_lsn.store(marked, Ordering::Release);
        }
        let path = segment_path(&self.dir, first_lsn);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            // Gone already: a crash after the marker and before this delete, then a restart.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LogError::Io { path, source }),
        }
        sync_dir(&self.dir).map_err(|source| LogError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(Eviction::Evicted {
            local_first_lsn: self.first_lsn(),
        })
    }
}

/// A read's hold on the local segments from `lsn` on; released when the read ends.
struct Pin {
    tier: Arc<LocalTier>,
    lsn: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.tier.lock_pins();
        if let Some(count) = pins.get_mut(&self.lsn) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.lsn);
            }
        }
    }
}

type LocalFrames = Box<dyn Iterator<Item = Result<RawFrame, LogError>> + Send>;

/// Frames `after < lsn <= up_to` from the archive below the local log and from the local files
/// from its first lsn on, in order. Ends early, without an error, where the local log ends.
pub(crate) struct TieredFrames<L: FnMut(u64, u64) -> LocalFrames + Send> {
    tier: Arc<LocalTier>,
    open_local: L,
    frame_bytes_max: u32,
    /// The last lsn returned (or the range's start).
    after: u64,
    up_to: u64,
    current: Option<LocalFrames>,
    /// The current iterator reads local files (so ending early means the log ends, unless
    /// another process deleted a segment meanwhile).
    current_is_local: bool,
    _pin: Option<Pin>,
    done: bool,
}

impl<L: FnMut(u64, u64) -> LocalFrames + Send> TieredFrames<L> {
    pub(crate) fn new(
        tier: Arc<LocalTier>,
        frame_bytes_max: u32,
        after: u64,
        up_to: u64,
        open_local: L,
    ) -> Self {
        TieredFrames {
            tier,
            open_local,
            frame_bytes_max,
            after,
            up_to,
            current: None,
            current_is_local: false,
            _pin: None,
            done: after >= up_to,
        }
    }

    /// Picks the source of the frame after `self.after`; `Ok(false)` when the read is over.
    fn open_next_source(&mut self) -> Result<bool, LogError> {
        let next = self.after + 1;
        if self.current_is_local {
            // The local files ended before `up_to`: the end of the log, unless a segment was
            // deleted (by another process) since this read started.
            self.tier.refresh_from_marker();
            if next >= self.tier.first_lsn() {
                return Ok(false);
            }
        }
        if let Some(pin) = self.tier.pin_if_local(next) {
            self._pin = Some(pin);
            self.current = Some((self.open_local)(self.after, self.up_to));
            self.current_is_local = true;
            return Ok(true);
        }
        let Some(cold) = self.tier.cold.get() else {
            return Err(LogError::Archived {
                origin: self.tier.dir.display().to_string(),
                detail: format!(
                    "lsn {next} is before the local log, which starts at lsn {} (local retention deleted the earlier segments after archiving them), and no archive is open to read them from",
                    self.tier.first_lsn()
                ),
            });
        };
        let segment = cold.segment_holding(next)?;
        if !(segment.first_lsn..=segment.last_lsn).contains(&next) {
            return Err(segment.archived_error(format!(
                "asked for the segment holding lsn {next}, got lsns {} to {}",
                segment.first_lsn, segment.last_lsn
            )));
        }
        let up_to = self.up_to.min(segment.last_lsn);
        self.current = Some(Box::new(ColdFrames::new(
            segment,
            self.frame_bytes_max,
            self.after,
            up_to,
        )));
        self.current_is_local = false;
        Ok(true)
    }

    fn read_next(&mut self) -> Result<Option<RawFrame>, LogError> {
        while self.after < self.up_to {
            if let Some(current) = self.current.as_mut() {
                if let Some(frame) = current.next() {
                    let frame = frame?;
                    self.after = frame.lsn.0;
                    return Ok(Some(frame));
                }
                self.current = None;
                if !self.current_is_local {
                    continue; // A cold segment ends where it said; read on after it.
                }
            }
            if !self.open_next_source()? {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

impl<L: FnMut(u64, u64) -> LocalFrames + Send> Iterator for TieredFrames<L> {
    type Item = Result<RawFrame, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.read_next().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
            self.current = None;
        }
        next
    }
}
