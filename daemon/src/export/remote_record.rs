//! The primary's side of exports and builds run on a read replica (docs/storage.md, "Exports and
//! builds on a replica"): `POST /v1/exports/records` hands the runner an `export_recorded` or
//! `dataset_built` event a replica wrote and copied to the storage URL, and the runner appends
//! it only after these checks, so the primary's log never names files that are not there or
//! that another log prefix would not have produced.
//!
//! An export or build as of LSN `to` is a function of the log prefix up to `to` (ids, ranges,
//! a build's parent: see `ledger`), so the replica, holding a byte-identical prefix, writes
//! what the primary would have written. What the primary checks:
//! - **From its own log**: the id follows from kind, format and range (or the spec and `to`);
//!   `to` is durable here and is a content record (not an export record); an incremental export
//!   starts at this kind's watermark (no two exports overlap, as on the primary); the folder is
//!   the one the id gives; no schedule claims it.
//! - **In the store, at the primary's own storage URL**: the manifest is there with the recorded
//!   sha256, names the same id, range, rows and files, a build's parent is the one this log
//!   gives, and every listed file is there with its size.
//!
//! The record's `copied_to` is the primary's URL of the folder (it found the files there): the
//! replica's spelling of the URL is not trusted.

use super::build::{build_dir, build_id, dataset_key};
use super::files::MANIFEST_NAME;
use super::ledger::ExportLedger;
use super::upload::object_key;
use super::{check_format, export_id, ExportError};
use crate::archive::ArchiveStore;
use agentd_schemas::events::{DatasetBuilt, Event, ExportRecorded, ExportedFile};
use agentd_schemas::export_api::{ExportManifest, RecordRunRequest};
use agentd_schemas::Lsn;
use object_store::ObjectStoreExt;

/// The record of a run: what a primary appends, and what a replica asks its primary to append.
#[derive(Debug, Clone)]
pub enum RunRecord {
    Export(ExportRecorded),
    Build(DatasetBuilt),
}

/// Why the primary refuses to record it. Both kinds of refusal answer 409 `conflict`: the
/// request is well formed (its shape is the event's), but it contradicts this log or the store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteRecordError {
    /// Not a record this log could hold (wrong id, folder or range, no storage URL here).
    #[error("{0}")]
    Invalid(String),
    /// Contradicts what the log or the store holds now (an export overlapping a later one, a
    /// manifest that disagrees, a file missing).
    #[error("{0}")]
    Conflict(String),
    /// The store could not be read: 502 for the caller to retry.
    #[error("{0}")]
    Store(String),
}

impl RunRecord {
    pub fn from_request(request: RecordRunRequest) -> Self {
        match request {
            RecordRunRequest::Export(export) => RunRecord::Export(export),
            RecordRunRequest::Build(build) => RunRecord::Build(build),
        }
    }

    /// The export or build id.
    pub fn id(&self) -> &str {
        match self {
            RunRecord::Export(export) => &export.export_id,
            RunRecord::Build(build) => &build.build_id,
        }
    }

    fn to_lsn(&self) -> Lsn {
        match self {
            RunRecord::Export(export) => export.to_lsn,
            RunRecord::Build(build) => build.to_lsn,
        }
    }

    pub fn dir(&self) -> &str {
        match self {
            RunRecord::Export(export) => &export.dir,
            RunRecord::Build(build) => &build.dir,
        }
    }

    fn files(&self) -> &[ExportedFile] {
        match self {
            RunRecord::Export(export) => &export.files,
            RunRecord::Build(build) => &build.files,
        }
    }

    /// Where the log already records this id, if it does.
    pub fn recorded_lsn(&self, ledger: &ExportLedger) -> Option<Lsn> {
        match self {
            RunRecord::Export(export) => ledger.export(&export.export_id).map(|r| r.lsn),
            RunRecord::Build(build) => ledger.build(&build.build_id).map(|r| r.lsn),
        }
    }

    /// Where the files are in object storage (`None`: not copied).
    pub fn set_copied_to(&mut self, url: Option<String>) {
        match self {
            RunRecord::Export(export) => export.copied_to = url,
            RunRecord::Build(build) => build.copied_to = url,
        }
    }

    pub fn into_event(self) -> Event {
        match self {
            RunRecord::Export(export) => Event::ExportRecorded(export),
            RunRecord::Build(build) => Event::DatasetBuilt(build),
        }
    }

    /// The body of `POST /v1/exports/records` that asks a primary to record it.
    pub fn into_request(self) -> RecordRunRequest {
        match self {
            RunRecord::Export(export) => RecordRunRequest::Export(export),
            RunRecord::Build(build) => RecordRunRequest::Build(build),
        }
    }
}

fn invalid(message: String) -> RemoteRecordError {
    RemoteRecordError::Invalid(message)
}

/// The checks against the primary's log (see the module comment); `durable` is its durable LSN.
pub fn check_against_log(
    record: &RunRecord,
    ledger: &ExportLedger,
    durable: Lsn,
) -> Result<(), RemoteRecordError> {
    let to = record.to_lsn();
    if to > durable {
        return Err(invalid(format!(
            "lsn {to} is past this log's durable lsn {durable}: was the replica following another primary?"
        )));
    }
    if ledger.last_content_lsn(to) != to {
        return Err(invalid(format!(
            "lsn {to} is an export record; exports and builds end at a content record"
        )));
    }
    match record {
        RunRecord::Export(export) => check_export(export, ledger),
        RunRecord::Build(build) => check_build(build),
    }
}

fn check_export(export: &ExportRecorded, ledger: &ExportLedger) -> Result<(), RemoteRecordError> {
    check_format(export.kind, export.format).map_err(|error| invalid(error.to_string()))?;
    let (after, to) = (export.after_lsn, export.to_lsn);
    let expected = export_id(export.kind, export.format, after, to);
    if after >= to || export.export_id != expected || export.dir != expected {
        return Err(invalid(format!(
            "export {:?} in {:?} does not follow from its range {after}..{to} (expected {expected:?})",
            export.export_id, export.dir
        )));
    }
    if export.schedule.is_some() || export.schema_version != export.kind.schema_version() {
        return Err(invalid(
            "a replica's export has no schedule and this daemon's schema version".to_owned(),
        ));
    }
    let watermark = ledger.watermark(export.kind, export.format);
    if after > Lsn::ZERO && after != watermark {
        return Err(RemoteRecordError::Conflict(format!(
            "this incremental export starts after lsn {after}, but this kind's exports reach lsn {watermark} now (the replica had not seen the latest export); run it again once the replica caught up, or run a full export"
        )));
    }
    Ok(())
}

fn check_build(build: &DatasetBuilt) -> Result<(), RemoteRecordError> {
    let key = dataset_key(&build.spec);
    let id = build_id(&build.spec, build.to_lsn);
    let dir = build_dir(&build.spec, &id);
    if build.dataset_key != key || build.build_id != id || build.dir != dir {
        return Err(invalid(format!(
            "build {:?} of {:?} in {:?} does not follow from its request and lsn {} (expected {id:?} of {key:?} in {dir:?})",
            build.build_id, build.dataset_key, build.dir, build.to_lsn
        )));
    }
    Ok(())
}

/// The checks in the store (see the module comment). `parent` is the parent build this log
/// gives a build (ignored for exports).
pub async fn check_in_store(
    record: &RunRecord,
    store: &ArchiveStore,
    parent: Option<String>,
) -> Result<(), RemoteRecordError> {
    let key = object_key(store, record.dir(), MANIFEST_NAME).map_err(store_error)?;
    let bytes = match store.store.get(&key).await {
        Ok(got) => got.bytes().await,
        Err(error) => Err(error),
    };
    let bytes = bytes.map_err(|error| match error {
        object_store::Error::NotFound { .. } => RemoteRecordError::Conflict(format!(
            "{} is not in the store: the replica's copy did not finish, or it uses another storage URL than this primary ({})",
            store.describe(&key),
            store.url
        )),
        error => RemoteRecordError::Store(format!("{}: {error}", store.describe(&key))),
    })?;
    let recorded_sha256 = match record {
        RunRecord::Export(export) => &export.manifest_sha256,
        RunRecord::Build(build) => &build.manifest_sha256,
    };
    let sha256 = crate::archive::sha256_hex(&bytes);
    if sha256 != *recorded_sha256 {
        return Err(RemoteRecordError::Conflict(format!(
            "{} has sha256 {sha256}, the record says {recorded_sha256}",
            store.describe(&key)
        )));
    }
    let manifest: ExportManifest = serde_json::from_slice(&bytes).map_err(|error| {
        RemoteRecordError::Conflict(format!(
            "{} is not a manifest: {error}",
            store.describe(&key)
        ))
    })?;
    check_manifest(record, &manifest, parent)?;
    check_files_present(record, store).await
}

fn check_manifest(
    record: &RunRecord,
    manifest: &ExportManifest,
    parent: Option<String>,
) -> Result<(), RemoteRecordError> {
    let (rows, after) = match record {
        RunRecord::Export(export) => (export.rows, export.after_lsn),
        RunRecord::Build(build) => (build.rows, Lsn::ZERO),
    };
    let same = manifest.export_id == record.id()
        && manifest.lsn_range.to == record.to_lsn()
        && (matches!(record, RunRecord::Build(_)) || manifest.lsn_range.after == after)
        && manifest.rows == rows
        && manifest.files == record.files();
    if !same {
        return Err(RemoteRecordError::Conflict(format!(
            "the manifest of {} does not match the record (id, range, rows or files)",
            record.id()
        )));
    }
    if let RunRecord::Build(_) = record {
        let named = manifest
            .dataset
            .as_ref()
            .and_then(|dataset| dataset.lineage.as_ref())
            .map(|lineage| lineage.parent_build_id.clone());
        if named != Some(parent.clone()) {
            return Err(RemoteRecordError::Conflict(format!(
                "the manifest of {} names the parent build {named:?}; this log gives {parent:?}",
                record.id()
            )));
        }
    }
    Ok(())
}

async fn check_files_present(
    record: &RunRecord,
    store: &ArchiveStore,
) -> Result<(), RemoteRecordError> {
    for file in record.files() {
        let key = object_key(store, record.dir(), &file.path).map_err(store_error)?;
        match store.store.head(&key).await {
            Ok(meta) if meta.size == file.bytes => {}
            Ok(meta) => {
                return Err(RemoteRecordError::Conflict(format!(
                    "{} holds {} bytes, the manifest lists {}",
                    store.describe(&key),
                    meta.size,
                    file.bytes
                )))
            }
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RemoteRecordError::Conflict(format!(
                    "{} is listed by the manifest but not in the store",
                    store.describe(&key)
                )))
            }
            Err(error) => {
                return Err(RemoteRecordError::Store(format!(
                    "{}: {error}",
                    store.describe(&key)
                )))
            }
        }
    }
    Ok(())
}

fn store_error(error: ExportError) -> RemoteRecordError {
    RemoteRecordError::Invalid(error.to_string())
}

#[cfg(test)]
#[path = "remote_record_tests.rs"]
mod tests;
