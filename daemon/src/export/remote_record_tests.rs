//! The primary's checks of a replica's run: against its log, then in the store.

use super::*;
use agentd_schemas::events::{ExportFormat, ExportKind, LogRecord};

fn export(after: u64, to: u64) -> ExportRecorded {
    let id = export_id(
        ExportKind::TrlGrpo,
        ExportFormat::Parquet,
        Lsn(after),
        Lsn(to),
    );
    ExportRecorded {
        export_id: id.clone(),
        kind: ExportKind::TrlGrpo,
        format: ExportFormat::Parquet,
        after_lsn: Lsn(after),
        to_lsn: Lsn(to),
        dir: id,
        rows: 3,
        files: vec![ExportedFile {
            path: "train.parquet".into(),
            rows: 3,
            bytes: 5,
            sha256: crate::archive::sha256_hex(b"PAR1!"),
        }],
        manifest_sha256: String::new(),
        schema_version: ExportKind::TrlGrpo.schema_version(),
        schedule: None,
        copied_to: None,
    }
}

/// A ledger whose log recorded an export of `(0, 9]` at lsn 10.
fn ledger() -> ExportLedger {
    let mut ledger = ExportLedger::default();
    let record = LogRecord {
        ts_ms: 1,
        actor: None,
        events: vec![Event::ExportRecorded(export(0, 9))],
    };
    ledger.apply(Lsn(10), &record);
    ledger
}

fn checked(record: ExportRecorded) -> Result<(), RemoteRecordError> {
    check_against_log(&RunRecord::Export(record), &ledger(), Lsn(20))
}

#[test]
fn a_record_must_follow_from_this_log() {
    assert!(checked(export(9, 12)).is_ok(), "from the watermark");
    assert!(checked(export(0, 12)).is_ok(), "a full export");
    for (record, why) in [
        (export(0, 25), "past the durable lsn"),
        (export(0, 10), "ends at an export record"),
        (export(12, 12), "an empty range"),
    ] {
        assert!(
            matches!(checked(record), Err(RemoteRecordError::Invalid(_))),
            "{why}"
        );
    }
    let mut renamed = export(9, 12);
    renamed.export_id = "exp_trl_grpo_0_12".into();
    assert!(matches!(
        checked(renamed),
        Err(RemoteRecordError::Invalid(_))
    ));
    let mut elsewhere = export(9, 12);
    elsewhere.dir = "../exp_trl_grpo_9_12".into();
    assert!(matches!(
        checked(elsewhere),
        Err(RemoteRecordError::Invalid(_))
    ));
    let mut scheduled = export(9, 12);
    scheduled.schedule = Some(agentd_schemas::events::ScheduleSlot {
        schedule: "nightly".into(),
        slot_ms: 1,
    });
    assert!(matches!(
        checked(scheduled),
        Err(RemoteRecordError::Invalid(_))
    ));
}

#[test]
fn an_incremental_export_that_overlaps_the_last_one_is_a_conflict() {
    assert!(matches!(
        checked(export(5, 12)),
        Err(RemoteRecordError::Conflict(message)) if message.contains("lsn 9")
    ));
}

/// A `file://` store holding the export's manifest (as `manifest`) and its data file.
fn store_with(
    dir: &std::path::Path,
    record: &ExportRecorded,
    manifest: &[u8],
    data: &[u8],
) -> ArchiveStore {
    let folder = dir.join("exports").join(&record.dir);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(MANIFEST_NAME), manifest).unwrap();
    std::fs::write(folder.join("train.parquet"), data).unwrap();
    crate::archive::StorageUrl::parse(&format!("file://{}", dir.display()))
        .unwrap()
        .open()
        .unwrap()
}

fn manifest_of(record: &ExportRecorded) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "manifest_version": 1,
        "export_id": record.export_id,
        "kind": record.kind,
        "format": record.format,
        "lsn_range": {"after": record.after_lsn, "to": record.to_lsn},
        "schema_version": record.schema_version,
        "tokenizer": "o200k_base",
        "agentd_version": "test",
        "rows": record.rows,
        "files": record.files,
    }))
    .unwrap()
}

async fn in_store(record: &ExportRecorded, store: &ArchiveStore) -> Result<(), RemoteRecordError> {
    check_in_store(&RunRecord::Export(record.clone()), store, None).await
}

#[tokio::test]
async fn the_manifest_and_every_file_must_be_in_the_store_as_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = export(9, 12);
    let manifest = manifest_of(&record);
    record.manifest_sha256 = crate::archive::sha256_hex(&manifest);
    let store = store_with(dir.path(), &record, &manifest, b"PAR1!");
    in_store(&record, &store).await.unwrap();

    let conflict = |result: Result<(), RemoteRecordError>, what: &str| match result {
        Err(RemoteRecordError::Conflict(message)) => assert!(message.contains(what), "{message}"),
        other => panic!("{what}: {other:?}"),
    };
    // A data file of another size.
    let short = tempfile::tempdir().unwrap();
    conflict(
        in_store(
            &record,
            &store_with(short.path(), &record, &manifest, b"PAR"),
        )
        .await,
        "holds 3 bytes",
    );
    // Another manifest than the record's.
    let mut other = record.clone();
    other.manifest_sha256 = crate::archive::sha256_hex(b"{}");
    conflict(in_store(&other, &store).await, "has sha256");
    // A manifest listing other rows than the record.
    let mut rows = record.clone();
    rows.rows = 4;
    conflict(in_store(&rows, &store).await, "does not match the record");
    // No manifest at all (the copy did not finish, or another storage URL).
    let empty = tempfile::tempdir().unwrap();
    let bare = crate::archive::StorageUrl::parse(&format!("file://{}", empty.path().display()))
        .unwrap()
        .open()
        .unwrap();
    conflict(in_store(&record, &bare).await, "not in the store");
}
