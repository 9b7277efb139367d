//! The snapshot file against real files in temp dirs: a state built by applying log records
//! comes back deciding exactly as the original, and every damaged, foreign or stale file is
//! skipped for an older one or for none.

#[path = "fixture_tests.rs"]
mod fixture;

#[path = "bench_tests.rs"]
mod bench;

use super::*;
use crate::export::ledger::ExportLedger;
use crate::queue::decide::{self, LeaseAsk};
use crate::queue::{JobStatus, QueueLimits, QueueState};
use agentd_schemas::api::SubmitJobRequest;
use agentd_schemas::events::{encode_record, Event, Tags, RECORD_FORMAT_VERSION};
use agentd_schemas::LeaseId;
use fixture::{build, varied_log, T0_MS};
use serde::Deserialize;
use std::sync::Arc;

/// What the lead's projector will snapshot: the queue state and the export ledger in one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sequencer {
    queue: QueueState,
    ledger: ExportLedger,
}

impl SnapshotState for Sequencer {
    fn after_load(&mut self) {
        self.queue.after_load();
        self.ledger.after_load();
    }
}

fn varied() -> (Sequencer, Lsn) {
    let built = build(varied_log());
    let state = Sequencer {
        queue: built.queue,
        ledger: built.ledger,
    };
    (state, built.last_lsn)
}

fn sha(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn accept_all(_: Lsn, _: &[u8; 32]) -> bool {
    true
}

fn load(dir: &Path) -> Option<Loaded<Sequencer>> {
    load_newest(dir, accept_all).unwrap()
}

/// The file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every job, in id order, in full (`Job` has no `PartialEq`: `Debug` shows every field,
/// lease data included).
fn jobs_in_order(state: &QueueState) -> Vec<String> {
    let mut jobs: Vec<_> = state.jobs.values().collect();
    jobs.sort_by_key(|job| job.id);
    jobs.iter().map(|job| format!("{job:?}")).collect()
}

/// The loaded state is the original: the same digest, the same indexes and counters, and the
/// same decisions for leases, expiries, a repeated idempotent submission and a held lease.
fn assert_same_queue_state(original: &QueueState, loaded: &QueueState) {
    assert_eq!(loaded.digest(), original.digest());
    assert_eq!(jobs_in_order(loaded), jobs_in_order(original));
    assert_eq!(
        format!("{:?}", loaded.queues),
        format!("{:?}", original.queues)
    );
    assert_eq!(loaded.delayed, original.delayed);
    assert_eq!(loaded.leases, original.leases);
    assert_eq!(loaded.lease_expiries, original.lease_expiries);
    assert_eq!(loaded.idempotency, original.idempotency);
    assert_eq!(loaded.kinds, original.kinds);
    let counters = |state: &QueueState| {
        (
            state.next_job_id,
            state.next_lease_id,
            state.last_lsn,
            state.last_ts_ms,
            state.lease_cache_bytes,
        )
    };
    assert_eq!(counters(loaded), counters(original));
    assert_eq!(loaded.facts, original.facts);
    assert_same_decisions(original, loaded);
}

fn assert_same_decisions(original: &QueueState, loaded: &QueueState) {
    let limits = QueueLimits::default();
    let queues = ["rollouts".to_string(), "evals".to_string()];
    for gpu in ["0", "1"] {
        let tags: Tags = [("gpu".to_string(), gpu.to_string())].into();
        let ask = LeaseAsk {
            worker_id: "w",
            queues: &queues,
            tags: &tags,
            max_jobs: 100,
        };
        let now_ms = T0_MS + 700_000;
        let lease = |state: &QueueState| decide::lease(state, &limits, now_ms, &ask);
        assert_eq!(lease(loaded), lease(original), "lease for gpu {gpu}");
    }
    let expire =
        |state: &QueueState| decide::expire_leases(state, &limits, T0_MS + 10_000_000, || 0.5);
    assert_eq!(expire(loaded), expire(original));
    let repeated = SubmitJobRequest {
        queue: "rollouts".into(),
        kind: "episode".into(),
        idempotency_key: Some("key-8".into()),
        ..Default::default()
    };
    let submit =
        |state: &QueueState| decide::submit(state, &limits, T0_MS, std::slice::from_ref(&repeated));
    let answer = submit(loaded).unwrap();
    assert_eq!(answer, submit(original).unwrap());
    assert!(
        answer.events.is_empty(),
        "recognized as a repeat: {answer:?}"
    );
    let held = |state: &QueueState| decide::held_lease(state, T0_MS, LeaseId(4)).map(|job| job.id);
    assert_eq!(held(loaded), held(original));
}

#[test]
fn a_loaded_state_decides_as_the_one_written() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join(SNAPSHOT_DIR);
    let (state, lsn) = varied();
    let path = write_snapshot(&dir, lsn, sha(7), &state).unwrap();
    assert_eq!(path, dir.join(format!("sequencer-{:020}.snap", lsn.0)));
    let loaded = load(&dir).expect("the snapshot loads");
    assert_eq!(loaded.lsn, lsn);
    assert_eq!(loaded.path, path);
    assert_eq!(loaded.bytes, fs::metadata(&path).unwrap().len());
    assert_same_queue_state(&state.queue, &loaded.state.queue);
    assert_eq!(loaded.state.ledger, state.ledger);
    // The build's spec leaves out `view` but not `training_run_id`, after it: still in place.
    let build = loaded.state.ledger.build("bld_1").unwrap();
    assert_eq!(build.event.spec.training_run_id.as_deref(), Some("run-7"));
    assert_eq!(names(&dir), [format!("sequencer-{:020}.snap", lsn.0)]);
}

/// The same records applied after the load and to the original give the same state: the
/// snapshot plus the log's tail is the whole log.
#[test]
fn applying_the_tail_after_a_load_matches_a_full_replay() {
    let temp = tempfile::tempdir().unwrap();
    let records = varied_log();
    let (head, tail) = records.split_at(4);
    let built = build(head.to_vec());
    let state = Sequencer {
        queue: built.queue,
        ledger: built.ledger,
    };
    write_snapshot(temp.path(), built.last_lsn, sha(1), &state).unwrap();
    let mut loaded = load(temp.path()).unwrap();
    let mut lsn = loaded.lsn;
    for record in tail {
        lsn = lsn.next();
        loaded.state.queue.apply(lsn, record);
        loaded.state.ledger.apply(lsn, record);
    }
    let full = build(records.clone());
    assert_same_queue_state(&full.queue, &loaded.state.queue);
    assert_eq!(loaded.state.ledger, full.ledger);
}

/// Jobs of one kind share one allocation of its name again, and each job's queue name is the
/// queue index's.
#[test]
fn a_loaded_state_shares_kind_and_queue_names() {
    let temp = tempfile::tempdir().unwrap();
    let (state, lsn) = varied();
    write_snapshot(temp.path(), lsn, sha(1), &state).unwrap();
    let queue = load(temp.path()).unwrap().state.queue;
    let job = |id| queue.job(agentd_schemas::JobId(id)).unwrap();
    assert_eq!(&*job(1).kind, "episode");
    assert!(Arc::ptr_eq(&job(1).kind, &job(2).kind));
    assert!(Arc::ptr_eq(
        &job(1).kind,
        queue.kinds.get("episode").unwrap()
    ));
    assert!(Arc::ptr_eq(&job(3).kind, &job(6).kind));
    let (queue_name, _) = queue.queues.get_key_value("rollouts").unwrap();
    assert!(Arc::ptr_eq(&job(1).queue, queue_name));
    let key_queue = queue
        .idempotency
        .keys()
        .map(|(queue, _)| queue)
        .find(|queue| &***queue == "rollouts")
        .unwrap();
    assert!(Arc::ptr_eq(key_queue, queue_name));
}

/// Writes snapshots at LSNs 10 and 20 of the varied state; returns the newest's path.
fn two_snapshots(dir: &Path) -> PathBuf {
    let (state, _) = varied();
    write_snapshot(dir, Lsn(10), sha(10), &state).unwrap();
    write_snapshot(dir, Lsn(20), sha(20), &state).unwrap()
}

/// `path`'s bytes changed by `change`, then the reason `load_file` gives.
fn rejection(path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> Rejected {
    let mut bytes = fs::read(path).unwrap();
    change(&mut bytes);
    fs::write(path, &bytes).unwrap();
    let lsn = parse_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
    load_file::<Sequencer>(path, lsn, &accept_all).unwrap_err()
}

/// Each kind of damage is recognized as what it is, and the older snapshot loads instead.
#[test]
fn a_damaged_newest_snapshot_is_skipped_for_the_older_one() {
    type Damage = (&'static str, fn(&mut Vec<u8>), fn(&Rejected) -> bool);
    let cases: [Damage; 7] = [
        (
            "flipped body byte",
            |b| b[SNAPSHOT_HEADER_BYTES + 40] ^= 1,
            |r| matches!(r, Rejected::BodyCrc),
        ),
        (
            "flipped lsn byte",
            |b| b[12] ^= 1,
            |r| matches!(r, Rejected::HeaderCrc),
        ),
        (
            "flipped header crc",
            |b| b[67] ^= 0x80,
            |r| matches!(r, Rejected::HeaderCrc),
        ),
        (
            "truncated body",
            |b| b.truncate(b.len() - 1),
            |r| matches!(r, Rejected::Length { .. }),
        ),
        (
            "truncated header",
            |b| b.truncate(30),
            |r| matches!(r, Rejected::Short),
        ),
        (
            "wrong magic",
            |b| b[0] = b'X',
            |r| matches!(r, Rejected::Magic),
        ),
        ("other version", set_version_2, |r| {
            matches!(r, Rejected::Version { found: 2 })
        }),
    ];
    for (name, change, expected) in cases {
        let temp = tempfile::tempdir().unwrap();
        let newest = two_snapshots(temp.path());
        let reason = rejection(&newest, change);
        assert!(expected(&reason), "{name}: {reason}");
        let loaded = load(temp.path()).expect("the older snapshot loads");
        assert_eq!(loaded.lsn, Lsn(10), "{name}");
    }
}

/// Another format version with a valid header checksum: only the version is wrong.
#[allow(clippy::ptr_arg)] // the same type as the other damage cases in the table
fn set_version_2(bytes: &mut Vec<u8>) {
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..64]);
    bytes[64..68].copy_from_slice(&crc.to_le_bytes());
}

/// A body that is intact but not this type (a format change without a version bump, at worst)
/// is skipped, not a panic.
#[test]
fn a_body_of_another_shape_is_skipped() {
    let temp = tempfile::tempdir().unwrap();
    write_snapshot(temp.path(), Lsn(3), sha(3), &("not", "a", "state")).unwrap();
    let path = temp.path().join(file_name(Lsn(3)));
    let reason = load_file::<Sequencer>(&path, Lsn(3), &accept_all).unwrap_err();
    assert!(matches!(reason, Rejected::Decode(_)), "{reason}");
    assert!(load(temp.path()).is_none());
}

/// A file renamed to another LSN does not pass for it.
#[test]
fn a_file_under_another_lsns_name_is_skipped() {
    let temp = tempfile::tempdir().unwrap();
    let newest = two_snapshots(temp.path());
    fs::rename(&newest, temp.path().join(file_name(Lsn(30)))).unwrap();
    let path = temp.path().join(file_name(Lsn(30)));
    let reason = load_file::<Sequencer>(&path, Lsn(30), &accept_all).unwrap_err();
    assert!(matches!(reason, Rejected::NameLsn { .. }), "{reason}");
    assert_eq!(load(temp.path()).unwrap().lsn, Lsn(10));
}

/// `accept` sees each snapshot's LSN and record hash; a snapshot it refuses (of another log, or
/// past where this log was cut back) never loads.
#[test]
fn a_snapshot_of_another_log_does_not_load() {
    let temp = tempfile::tempdir().unwrap();
    two_snapshots(temp.path());
    let asked = std::cell::RefCell::new(Vec::new());
    let loaded: Loaded<Sequencer> = load_newest(temp.path(), |lsn, sha| {
        asked.borrow_mut().push((lsn, sha[0]));
        *sha == self::sha(10)
    })
    .unwrap()
    .unwrap();
    assert_eq!(loaded.lsn, Lsn(10));
    assert_eq!(asked.into_inner(), [(Lsn(20), 20), (Lsn(10), 10)]);
    let none: Option<Loaded<Sequencer>> = load_newest(temp.path(), |_, _| false).unwrap();
    assert!(none.is_none());
}

#[test]
fn a_missing_directory_is_no_snapshot_and_an_unreadable_one_an_error() {
    let temp = tempfile::tempdir().unwrap();
    assert!(load(&temp.path().join("absent")).is_none());
    let not_a_dir = temp.path().join("file");
    fs::write(&not_a_dir, b"x").unwrap();
    let error = load_newest::<Sequencer>(&not_a_dir, accept_all).unwrap_err();
    assert!(matches!(error, SnapshotError::Io { .. }), "{error}");
}

/// A write keeps itself and the newest older snapshot; it removes temp files, older snapshots
/// and newer ones (of a log cut back), but not other files.
#[test]
fn a_write_keeps_two_snapshots_and_removes_temp_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let state = ("small", 1u32);
    for lsn in [10, 20, 30] {
        write_snapshot(dir, Lsn(lsn), sha(1), &state).unwrap();
    }
    fs::write(dir.join(format!("{}.tmp", file_name(Lsn(40)))), b"torn").unwrap();
    fs::write(dir.join("notes.txt"), b"kept").unwrap();
    write_snapshot(dir, Lsn(35), sha(1), &state).unwrap();
    let expected = ["notes.txt".into(), file_name(Lsn(30)), file_name(Lsn(35))];
    assert_eq!(names(dir), expected);
    write_snapshot(dir, Lsn(25), sha(1), &state).unwrap();
    assert_eq!(names(dir), ["notes.txt".into(), file_name(Lsn(25))]);
}

/// The header as drawn in the module doc, field by field.
#[test]
fn the_header_is_laid_out_as_documented() {
    let temp = tempfile::tempdir().unwrap();
    let path = write_snapshot(temp.path(), Lsn(0x0102), sha(9), &[1u8, 2, 3]).unwrap();
    let bytes = fs::read(&path).unwrap();
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    assert_eq!(&bytes[0..8], b"AGDSNAP1");
    assert_eq!(le_u32(&bytes[8..12]), SNAPSHOT_FORMAT_VERSION);
    assert_eq!(le_u64(&bytes[12..20]), 0x0102);
    assert_eq!(bytes[20..52], sha(9));
    assert_eq!(le_u64(&bytes[52..60]), body.len() as u64);
    assert_eq!(body, rmp_serde::to_vec(&[1u8, 2, 3]).unwrap());
    assert_eq!(le_u32(&bytes[60..64]), crc32c::crc32c(body));
    assert_eq!(le_u32(&bytes[64..68]), crc32c::crc32c(&bytes[0..64]));
}

/// The body of a fixed state, hashed: when it changes, a serialized type changed shape, and
/// [`SNAPSHOT_FORMAT_VERSION`] must be bumped with the new fingerprint (old snapshots would
/// otherwise be read as the new shape). One entry per hash map, so the bytes do not depend on
/// hash order.
#[test]
fn format_fingerprint() {
    let built = build([
        fixture::record(
            T0_MS,
            vec![
                fixture::submitted(1, "q", "k", T0_MS, Some("key"), 1),
                fixture::leased(1, 1, 1, T0_MS + 60_000),
                fixture::rollout_created(1, "task", "group", Some(1)),
                fixture::step("task", Some(1), 0),
                fixture::sandbox("task", Some(1), 0),
                fixture::reward("task", Some(1), 0),
                fixture::step("task-b", None, 0),
                Event::DatasetRegistered(fixture::dataset_meta()),
                Event::ScheduleFired(fixture::schedule_fired()),
                Event::ExportRecorded(fixture::export_recorded()),
                Event::DatasetBuilt(fixture::dataset_built()),
            ],
        ),
        fixture::record(T0_MS + 1, vec![fixture::completed(1, 1)]),
    ]);
    let statuses = [
        JobStatus::Waiting { run_at_ms: 5 },
        JobStatus::Leased {
            lease_id: LeaseId(2),
            worker_id: "w".into(),
            expires_at_ms: 6,
            leased_at_ms: 7,
        },
        JobStatus::Completed,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];
    let body = rmp_serde::to_vec(&(&built.queue, &built.ledger, &statuses)).unwrap();
    let fingerprint = hex::encode(Sha256::digest(&body));
    assert_eq!(
        (SNAPSHOT_FORMAT_VERSION, fingerprint.as_str()),
        (
            1,
            "230981653fc6733e10ce7c581cb9f897dc707c59033a2120029a3072a26d3052"
        ),
        "the snapshot body changed: bump SNAPSHOT_FORMAT_VERSION and put the new fingerprint here"
    );
}

/// The identity of a log position is its record's payload hash, read back from the log files.
#[test]
fn record_sha256_hashes_the_payload_at_an_lsn() {
    let temp = tempfile::tempdir().unwrap();
    let records = varied_log();
    let (log, _) = crate::log::open(crate::log::LogOptions::new(temp.path())).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let writer = log.start_writer();
        for (index, record) in records.iter().enumerate() {
            let lsn = Lsn(index as u64 + 1);
            let payload = encode_record(record);
            writer
                .append(lsn, RECORD_FORMAT_VERSION, payload)
                .await
                .unwrap();
        }
        writer.shutdown().await;
    });
    let reader = crate::log::LogReader::open(temp.path(), 1 << 20).unwrap();
    for lsn in [1, 5, records.len() as u64] {
        let expected: [u8; 32] = Sha256::digest(encode_record(&records[lsn as usize - 1])).into();
        assert_eq!(
            record_sha256(&reader, Lsn(lsn)),
            Some(expected),
            "lsn {lsn}"
        );
    }
    assert_ne!(
        record_sha256(&reader, Lsn(1)),
        record_sha256(&reader, Lsn(2))
    );
    assert_eq!(
        record_sha256(&reader, Lsn(0)),
        Some(EMPTY_LOG_RECORD_SHA256)
    );
    assert_eq!(record_sha256(&reader, Lsn(records.len() as u64 + 1)), None);
}
