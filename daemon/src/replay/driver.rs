//! The one projection driver: reads a range of the log from a [`LogSource`] and applies it, in
//! batches, to a list of [`Projection`]s. Start-up, `agentd rebuild`, the projector thread and
//! the sequencer's careful mode all replay through [`drive`], so a projection sees the same
//! records in the same order whoever replays it.
//!
//! Architecture invariant: a [`Projection`] reads nothing but the records it is given (no
//! clock, no randomness, no IO other than its own storage), so replaying the same range into a
//! fresh projection always gives the same state.

use super::{for_each_record_skipping, ReplayError};
use crate::log::LogSource;
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;

/// Why a projection could not apply a batch (its own storage failed). Boxed so that each
/// projection keeps its own error type and this module depends on none of them.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Why [`drive`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Apply(ApplyError),
}

/// State derived from the log by applying its records in LSN order.
pub trait Projection {
    /// Applies consecutive records, in LSN order, each once. A projection that already holds
    /// some of them (a stored one that caught up earlier) skips those.
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError>;

    /// [`Self::apply`] for the projection a batch is handed to last: it may keep the records'
    /// contents instead of copying them (steps and results are most of a replay's bytes).
    fn apply_owned(&mut self, records: Vec<(Lsn, LogRecord)>) -> Result<(), ApplyError> {
        self.apply(&records)
    }
}

/// Applies every record with `after < lsn <= up_to` to each projection in `projections`, in
/// batches of at most `batch_records` (a stored projection commits one transaction per batch),
/// calling `progress` with the last LSN of each applied batch. The last projection of the list
/// receives each batch by value. Returns the last LSN applied (`after` when the range is empty).
///
/// Stops at the first error, from reading the log or from a projection. Every projection then
/// holds every batch before the failing one; the projections before the failing one in the list
/// hold the failing batch too.
pub fn drive(
    source: &(impl LogSource + ?Sized),
    after: Lsn,
    up_to: Lsn,
    batch_records: usize,
    projections: &mut [&mut dyn Projection],
    progress: impl FnMut(Lsn),
) -> Result<Lsn, DriveError> {
    let range = (after, up_to);
    drive_skipping(source, range, None, batch_records, projections, progress)
}

/// [`drive`], but the records `skip` recognises reach the projections empty, undecoded (see
/// [`super::Undecoded`]): for projections that ignore most kinds of events.
pub fn drive_skipping(
    source: &(impl LogSource + ?Sized),
    (after, up_to): (Lsn, Lsn),
    skip: Option<super::Undecoded>,
    batch_records: usize,
    projections: &mut [&mut dyn Projection],
    mut progress: impl FnMut(Lsn),
) -> Result<Lsn, DriveError> {
    let batch_records = batch_records.max(1);
    let mut applied = after;
    let mut batch = Vec::with_capacity(batch_records.min(4096));
    let mut failure = None;
    let mut flush = |batch: Vec<(Lsn, LogRecord)>, applied: &mut Lsn| {
        let Some(&(last, _)) = batch.last() else {
            return Ok(());
        };
        apply_to_all(projections, batch)?;
        *applied = last;
        progress(last);
        Ok::<(), ApplyError>(())
    };
    let read = for_each_record_skipping(source, (after, up_to), skip, |lsn, record| {
        batch.push((lsn, record));
        if batch.len() >= batch_records {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_records.min(4096)));
            if let Err(error) = flush(full, &mut applied) {
                failure = Some(error);
                return Err(ReplayError::Stopped);
            }
        }
        Ok(())
    });
    match (read, failure) {
        (_, Some(error)) => return Err(DriveError::Apply(error)),
        (Err(error), None) => return Err(error.into()),
        (Ok(()), None) => {}
    }
    flush(batch, &mut applied).map_err(DriveError::Apply)?;
    Ok(applied)
}

fn apply_to_all(
    projections: &mut [&mut dyn Projection],
    batch: Vec<(Lsn, LogRecord)>,
) -> Result<(), ApplyError> {
    let Some((last, others)) = projections.split_last_mut() else {
        return Ok(());
    };
    for projection in others {
        projection.apply(&batch)?;
    }
    last.apply_owned(batch)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
