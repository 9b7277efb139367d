//! Replaying the log: every record of an LSN range, decoded, in order, from a [`LogSource`],
//! and the one [`driver`] that applies such a range to [`Projection`]s. The one way anything
//! reads records back (start-up, `agentd rebuild`, the projector's catch-up, careful mode, the
//! events route, the export ledger's refresh).
//!
//! Architecture invariant: this module sits between the byte-level log (which knows nothing
//! about events) and everything that interprets records; it depends on `log` and the schemas
//! only, so every projection can implement [`Projection`] without an import circle.

pub mod driver;

pub use driver::{drive, drive_skipping, ApplyError, DriveError, Projection};

use crate::log::{LogError, LogSource};
use agentd_schemas::events::{decode_record, LogRecord};
use agentd_schemas::Lsn;

/// Why replaying the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot decode the record at lsn {lsn}: {source}")]
    Decode {
        lsn: Lsn,
        source: agentd_schemas::events::DecodeError,
    },
    /// The visitor asked to stop early (its own error is reported separately).
    #[error("replay stopped by its consumer")]
    Stopped,
}

/// Ranges at least this long are read and decoded on a second thread while the caller applies
/// (start-up replays, rebuilds); shorter ones (the projector's steady catch-up) stay on the
/// caller's thread, where a thread start would cost more than it saves.
const PIPELINE_MIN_FRAMES: u64 = 4096;
/// Records handed from the decoding thread to the caller at a time.
const PIPELINE_BATCH_RECORDS: usize = 512;
/// Batches in flight between them (bounds the memory of the pipeline).
const PIPELINE_BATCHES_IN_FLIGHT: usize = 8;

/// Tells, from a frame's format version and payload, that its record holds nothing the
/// caller applies: [`for_each_record_skipping`] then hands it on as [`LogRecord`] with no
/// events (its LSN kept, so the caller's bookkeeping is unchanged) without decoding it. It
/// must answer false when unsure; a false only costs the decode.
pub type Undecoded = fn(u8, &[u8]) -> bool;

/// Decodes every record with `after < lsn <= up_to` in order.
pub fn for_each_record(
    reader: &(impl LogSource + ?Sized),
    after: Lsn,
    up_to: Lsn,
    visit: impl FnMut(Lsn, LogRecord) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    for_each_record_skipping(reader, (after, up_to), None, visit)
}

/// [`for_each_record`], but the records `skip` recognises are visited empty, undecoded.
pub fn for_each_record_skipping(
    reader: &(impl LogSource + ?Sized),
    (after, up_to): (Lsn, Lsn),
    skip: Option<Undecoded>,
    mut visit: impl FnMut(Lsn, LogRecord) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    if up_to.0.saturating_sub(after.0) < PIPELINE_MIN_FRAMES {
        for decoded in decoded_records(reader, after, up_to, skip) {
            let (lsn, record) = decoded?;
            visit(lsn, record)?;
        }
        return Ok(());
    }
    // Reading, CRC checks and MessagePack decoding take about as long as applying, so the two
    // halves run on the two cores side by side; the order of records is unchanged.
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<(Lsn, LogRecord), ReplayError>>>(
            PIPELINE_BATCHES_IN_FLIGHT,
        );
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(PIPELINE_BATCH_RECORDS);
            for decoded in decoded_records(reader, after, up_to, skip) {
                let failed = decoded.is_err();
                batch.push(decoded);
                if failed || batch.len() == PIPELINE_BATCH_RECORDS {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(PIPELINE_BATCH_RECORDS));
                    // A closed channel means the consumer stopped; so does an error.
                    if tx.send(full).is_err() || failed {
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch);
            }
        });
        for batch in rx {
            for decoded in batch {
                let (lsn, record) = decoded?;
                visit(lsn, record)?;
            }
        }
        Ok(())
    })
}

fn decoded_records<'a>(
    reader: &'a (impl LogSource + ?Sized),
    after: Lsn,
    up_to: Lsn,
    skip: Option<Undecoded>,
) -> impl Iterator<Item = Result<(Lsn, LogRecord), ReplayError>> + 'a {
    reader.frames_in(after, up_to).map(move |frame| {
        let frame = frame?;
        if skip.is_some_and(|skip| skip(frame.format_version, &frame.payload)) {
            let empty = LogRecord {
                ts_ms: 0,
                actor: None,
                events: Vec::new(),
            };
            return Ok((frame.lsn, empty));
        }
        let record = decode_record(frame.format_version, &frame.payload).map_err(|source| {
            ReplayError::Decode {
                lsn: frame.lsn,
                source,
            }
        })?;
        Ok((frame.lsn, record))
    })
}

#[cfg(test)]
mod tests;
