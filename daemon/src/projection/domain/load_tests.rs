//! The loader against a simulated projector: every record is applied once, in order, whoever
//! applies it, and the projections end as a full replay leaves them.

use super::super::tests::{projections, record, reward, sandbox, step};
use super::*;
use agentd_schemas::events::{
    encode_record, AfterFailure, Event, JobLeased, JobSubmitted, SandboxOutcome,
    RECORD_FORMAT_VERSION,
};
use agentd_schemas::{JobId, LeaseId};

/// Several of the driver's batches (4,096 records), so the loader hands over mid-stream.
const RECORDS: u64 = 9_000;
/// Where the simulated projector starts (what start-up replayed into the job projection).
const PROJECTOR_START: u64 = 6_000;

/// Steps, results and rewards; every fifth record (and the last) only job events, which the
/// loader leaves undecoded, and every seventh a job event beside a domain one.
fn nth_record(n: u64) -> LogRecord {
    let task = format!("task-{}", n % 97);
    let index = (n / 97) as u32;
    let event = match n % 3 {
        0 => step(&task, index, "model-a"),
        1 => sandbox(&task, index, SandboxOutcome::Ok),
        _ => reward(&task, index, (n % 10) as f64 / 10.0, n.is_multiple_of(2)),
    };
    let events = if n % 5 == 4 || n == RECORDS {
        ignored_events(n)
    } else if n.is_multiple_of(7) {
        vec![ignored_events(n).swap_remove(0), event]
    } else {
        vec![event]
    };
    record(1_767_225_600_000 + n, events)
}

/// One event of each kind the domain projections ignore (`IGNORED_EVENT_TAGS`).
fn ignored_events(n: u64) -> Vec<Event> {
    let (job_id, lease_id) = (JobId(n), LeaseId(n));
    let after = AfterFailure::Retry { run_at_ms: n };
    vec![
        Event::JobSubmitted(JobSubmitted {
            job_id,
            queue: "q".into(),
            kind: "k".into(),
            payload_json: format!("{{\"n\":{n}}}"),
            priority: 0,
            run_at_ms: n,
            max_attempts: 3,
            lease_ttl_ms: 30_000,
            tags: Default::default(),
            task_id: Some(format!("task-{}", n % 97)),
            idempotency_key: None,
        }),
        Event::JobLeased(JobLeased {
            job_id,
            lease_id,
            worker_id: "w".into(),
            attempt: 1,
            expires_at_ms: n,
        }),
        Event::LeaseHeartbeat {
            job_id,
            lease_id,
            expires_at_ms: n,
        },
        Event::JobCompleted {
            job_id,
            lease_id,
            result_json: Some("{}".into()),
            log_tail: Some("done".into()),
        },
        Event::JobFailed {
            job_id,
            lease_id,
            error: "e".into(),
            retryable: true,
            after: after.clone(),
            log_tail: None,
        },
        Event::LeaseExpired {
            job_id,
            lease_id,
            after,
        },
        Event::JobCancelled { job_id },
        Event::JobRetried {
            job_id,
            run_at_ms: n,
        },
        Event::QueuePaused { queue: "q".into() },
        Event::QueueResumed { queue: "q".into() },
    ]
}

#[test]
fn records_of_ignored_events_only_are_left_undecoded_and_change_nothing() {
    let domain = projections();
    for n in 1..=300 {
        domain.apply_record(Lsn(n), nth_record(n));
    }
    let before = domain.digests();
    for (position, event) in ignored_events(7).into_iter().enumerate() {
        let alone = record(1, vec![event.clone()]);
        assert!(
            super::super::ignores_record(RECORD_FORMAT_VERSION, &encode_record(&alone)),
            "{} is listed",
            event.type_name()
        );
        domain.apply_record(Lsn(1_000 + position as u64), alone);
        assert_eq!(
            domain.digests(),
            before,
            "{} changed a projection",
            event.type_name()
        );
    }
    let mixed = record(1, vec![ignored_events(1).swap_remove(0), step("t", 0, "m")]);
    assert!(!super::super::ignores_record(
        RECORD_FORMAT_VERSION,
        &encode_record(&mixed)
    ));
}

async fn written_log(dir: &std::path::Path) -> LogReader {
    let options = crate::data_dir::log_options(&crate::config::Config::default(), dir.join("log"));
    let (log, _) = crate::log::open(options).unwrap();
    let reader = log.reader();
    let writer = log.start_writer();
    let mut pending = Vec::new();
    for n in 1..=RECORDS {
        let frame = encode_record(&nth_record(n));
        pending.push(
            writer
                .enqueue(Lsn(n), RECORD_FORMAT_VERSION, frame)
                .await
                .unwrap(),
        );
    }
    for receiver in pending {
        receiver.await.unwrap().unwrap();
    }
    writer.shutdown().await;
    reader
}

fn watch_at(lsn: Lsn) -> (watch::Sender<Lsn>, AppliedWatch) {
    let (applied_tx, rx) = watch::channel(lsn);
    let demand = Arc::new(watch::channel(lsn).0);
    (applied_tx, AppliedWatch { rx, demand })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_that_moves_on_during_the_load_is_caught_up_with_before_the_handover() {
    let dir = tempfile::tempdir().unwrap();
    let log = written_log(dir.path()).await;
    let expected = projections();
    for n in 1..=RECORDS {
        expected.apply_record(Lsn(n), nth_record(n));
    }
    let domain = Arc::new(projections());
    domain.mark_loading();
    assert!(!domain.is_loaded());
    let (applied_tx, projector_watch) = watch_at(Lsn(PROJECTOR_START));
    let (_stop_tx, stop) = watch::channel(false);

    // The projector is mid-catch-up (holds its turn) while the loader replays to its start.
    let loader = {
        let turn = domain.projector_turn();
        let loader = domain
            .spawn_loader(log.clone(), projector_watch, stop)
            .unwrap();
        while domain.applied_lsn() < Lsn(PROJECTOR_START) {
            std::thread::sleep(Duration::from_millis(1));
        }
        // It applies more to the job projection (not to the domain projections: not its turn
        // yet) and publishes that before letting go of its turn.
        assert!(!*turn);
        applied_tx.send_replace(Lsn(RECORDS));
        drop(turn);
        loader
    };

    assert!(domain.wait_loaded(Duration::from_secs(30)).await);
    loader.join().unwrap();
    assert_eq!(
        domain.applied_lsn(),
        Lsn(RECORDS),
        "the loader replayed what the projector skipped"
    );
    assert_eq!(domain.digests(), expected.digests());
    assert!(
        *domain.projector_turn(),
        "the projector applies from now on"
    );
}

#[tokio::test]
async fn a_loader_that_finds_nothing_more_to_apply_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = written_log(dir.path()).await;
    let domain = Arc::new(projections());
    domain.mark_loading();
    let (_applied_tx, projector_watch) = watch_at(Lsn(RECORDS));
    let (_stop_tx, stop) = watch::channel(false);
    let loader = domain
        .spawn_loader(log.clone(), projector_watch, stop)
        .unwrap();
    assert!(domain.wait_loaded(Duration::from_secs(30)).await);
    loader.join().unwrap();
    assert!(
        *domain.projector_turn(),
        "the projector applies from now on"
    );
    assert_eq!(domain.applied_lsn(), Lsn(RECORDS));
}

#[tokio::test]
async fn a_stopping_daemon_stops_the_loader_without_marking_anything_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let log = written_log(dir.path()).await;
    let domain = Arc::new(projections());
    domain.mark_loading();
    let (_applied_tx, projector_watch) = watch_at(Lsn(RECORDS));
    let (_stop_tx, stop) = watch::channel(true);
    let loader = domain
        .spawn_loader(log.clone(), projector_watch, stop)
        .unwrap();
    loader.join().unwrap();
    assert!(!domain.is_loaded());
    assert!(!*domain.projector_turn());
    assert!(!domain.wait_loaded(Duration::from_millis(10)).await);
}
