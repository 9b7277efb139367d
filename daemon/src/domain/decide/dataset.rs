//! Dataset writes: a version's registration and the records it receives, each position once.

use super::{conflict, DomainReply};
use crate::facts::FactIndex;
use crate::queue::decide::{DecideError, Decision};
use agentd_schemas::events::{DatasetMeta, DatasetRecord, DatasetRecordsIngested, Event};

/// Registers a dataset version's meta; the same meta again appends nothing, a different one is
/// refused (`conflict`).
pub(super) fn register_dataset(
    facts: &FactIndex,
    meta: DatasetMeta,
) -> Result<Decision<DomainReply>, DecideError> {
    let existing = facts
        .dataset(&meta.source, &meta.version)
        .and_then(|dataset| dataset.meta.as_ref());
    match existing {
        Some(existing) if *existing == meta => Ok(Decision {
            events: Vec::new(),
            reply: DomainReply::DatasetRegistered { created: false },
        }),
        Some(existing) => Err(conflict(format!(
            "dataset {} {} is already registered with a different {}; register a new version instead",
            meta.source,
            meta.version,
            differing_fields(existing, &meta).join(", ")
        ))),
        None => Ok(Decision {
            events: vec![Event::DatasetRegistered(meta)],
            reply: DomainReply::DatasetRegistered { created: true },
        }),
    }
}

/// One `dataset_records_ingested` event per stretch of positions the dataset has not received,
/// so resending a batch writes nothing.
pub(super) fn ingest(
    facts: &FactIndex,
    source: String,
    version: String,
    runs: Vec<(u64, Vec<DatasetRecord>)>,
) -> Result<Decision<DomainReply>, DecideError> {
    let Some(dataset) = facts
        .dataset(&source, &version)
        .filter(|dataset| dataset.meta.is_some())
    else {
        return Err(DecideError::NotFoundHint {
            what: format!("dataset {source} {version}"),
            hint: "register it first: POST its meta to /v1/datasets".into(),
        });
    };
    let mut events = Vec::new();
    let mut already_received = 0;
    for (run_start, records) in runs {
        let run_end = run_start + records.len() as u64;
        let mut kept = 0;
        for range in dataset.positions.missing(run_start, run_end) {
            // `range` lies inside `run_start..run_end`, so the offsets index `records`.
            let (from, to) = (
                (range.start - run_start) as usize,
                (range.end - run_start) as usize,
            );
            let Some(slice) = records.get(from..to) else {
                continue;
            };
            kept += slice.len() as u64;
            events.push(Event::DatasetRecordsIngested(DatasetRecordsIngested {
                source: source.clone(),
                version: version.clone(),
                first_index: range.start,
                records: slice.to_vec(),
            }));
        }
        already_received += records.len() as u64 - kept;
    }
    Ok(Decision {
        events,
        reply: DomainReply::Ingested { already_received },
    })
}

/// The names of the meta fields that differ, for the conflict message.
fn differing_fields(old: &DatasetMeta, new: &DatasetMeta) -> Vec<&'static str> {
    [
        ("license", old.license != new.license),
        ("downloaded_at", old.downloaded_at != new.downloaded_at),
        ("sha256", old.sha256 != new.sha256),
        ("num_records", old.num_records != new.num_records),
        ("url", old.url != new.url),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}
