//! Exports of `agentd rebuild --out DIR`: from projections replayed up to some LSN, re-create
//! every export and dataset build the log recorded up to there (same ids, same relative paths,
//! byte-identical files, which the report checks against the recorded manifest hashes), plus a
//! full export of every kind as of that LSN ("the dataset as it was on the 3rd").

use super::ledger::ExportLedger;
use super::{build, write_export, ExportError, ExportSettings};
use crate::projection::domain::DomainProjections;
use agentd_schemas::events::{ExportFormat, ExportKind};
use agentd_schemas::Lsn;
use serde::Serialize;
use std::collections::BTreeSet;

/// One export written by a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuiltExport {
    pub export_id: String,
    /// Relative to the exports root.
    pub dir: String,
    pub rows: u64,
    pub manifest_sha256: String,
    /// For an export the log recorded: whether the rebuilt manifest is byte-identical to the
    /// recorded one (`null` for the full exports of the rebuild itself).
    pub matches_recorded: Option<bool>,
}

/// Writes the recorded exports and builds with `to_lsn <= to`, then a full export of every kind
/// up to the last record at or before `to` that is not an export record (as the live daemon
/// cuts its exports). `domain` must reflect exactly the log up to `to` or more.
pub fn rebuild_exports(
    domain: &DomainProjections,
    settings: &ExportSettings,
    ledger: &ExportLedger,
    to: Lsn,
) -> Result<Vec<RebuiltExport>, ExportError> {
    let mut written = Vec::new();
    let mut done = BTreeSet::new();
    for recorded in ledger.exports() {
        let event = &recorded.event;
        if event.to_lsn > to {
            continue;
        }
        let outcome = write_export(
            domain,
            settings,
            event.kind,
            event.format,
            event.after_lsn,
            event.to_lsn,
        )?;
        done.insert(event.export_id.clone());
        written.push(RebuiltExport {
            export_id: event.export_id.clone(),
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            matches_recorded: Some(outcome.manifest_sha256 == event.manifest_sha256),
            manifest_sha256: outcome.manifest_sha256,
        });
    }
    for recorded in ledger.builds() {
        let event = &recorded.event;
        if event.to_lsn > to {
            continue;
        }
        // As the runner takes it: the newest build of the key recorded by the build's `to`.
        let parent = ledger.parent_build_id(&event.dataset_key, event.to_lsn);
        let outcome = build::write_build(domain, settings, &event.spec, event.to_lsn, parent)?;
        written.push(RebuiltExport {
            export_id: event.build_id.clone(),
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            matches_recorded: Some(outcome.manifest_sha256 == event.manifest_sha256),
            manifest_sha256: outcome.manifest_sha256,
        });
    }
    // Named and cut by the rule the live daemon uses (the last record that is not an export
    // record), so a rebuild's full export is the live `--full` export of the same point, id and
    // bytes alike, not one named after the export records that followed it.
    let content_to = ledger.last_content_lsn(to);
    for kind in ExportKind::ALL {
        let id = super::export_id(kind, ExportFormat::Parquet, Lsn::ZERO, content_to);
        if done.contains(&id) {
            continue;
        }
        let outcome = write_export(
            domain,
            settings,
            kind,
            ExportFormat::Parquet,
            Lsn::ZERO,
            content_to,
        )?;
        written.push(RebuiltExport {
            export_id: id,
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            manifest_sha256: outcome.manifest_sha256,
            matches_recorded: None,
        });
    }
    Ok(written)
}
