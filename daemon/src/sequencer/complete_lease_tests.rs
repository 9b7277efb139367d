//! Complete-then-lease through a running sequencer and a real log: the answer comes once the
//! one record holding the completion and the grant is durable, and the log read back holds both.

use super::hold_tests::sequencer_in;
use super::*;
use crate::replay::for_each_record;
use agentd_schemas::api::{LeaseRequest, NextLeaseRequest, SubmitJobRequest};
use agentd_schemas::events::{Event, LogRecord};

#[tokio::test]
async fn the_completion_and_the_next_lease_are_one_durable_record() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, writer) = sequencer_in(dir.path(), QueueState::new());
    let reader = sequencer.log.clone();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let handle = SequencerHandle { tx };
    let task = tokio::spawn(sequencer.run(rx));
    let job = |n: u32| SubmitJobRequest {
        queue: "q".into(),
        kind: "k".into(),
        payload: serde_json::json!({ "n": n }),
        ..Default::default()
    };
    handle
        .call(
            Submit {
                requests: vec![job(1), job(2)],
            },
            None,
        )
        .await
        .unwrap();
    let next = NextLeaseRequest {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        tags: None,
        max_jobs: Some(1),
    };
    let first = handle
        .call(
            Lease {
                request: LeaseRequest {
                    worker_id: "w".into(),
                    queues: vec!["q".into()],
                    ..Default::default()
                },
                wait_ms: 0,
            },
            None,
        )
        .await
        .unwrap();
    let complete = |lease_id| Complete {
        lease_id,
        result: Some(serde_json::json!("done")),
        log_tail: None,
    };
    let (transition, grants) = handle
        .call(
            CompleteThenLease {
                complete: complete(first.grants[0].lease_id),
                next: next.clone(),
            },
            Some("worker-token".into()),
        )
        .await
        .unwrap();
    assert_eq!(grants.len(), 1);
    let (last, empty) = handle
        .call(
            CompleteThenLease {
                complete: complete(grants[0].lease_id),
                next,
            },
            None,
        )
        .await
        .unwrap();
    assert!(empty.is_empty(), "nothing left to lease");

    // Answered means durable: the log holds, at the answered lsn, the completion and the grant.
    let mut records: Vec<(Lsn, LogRecord)> = Vec::new();
    for_each_record(&reader, Lsn::ZERO, last.lsn, |lsn, record| {
        records.push((lsn, record));
        Ok(())
    })
    .unwrap();
    assert_eq!(records.len(), 4, "submit, lease, complete+lease, complete");
    let (lsn, record) = &records[2];
    assert_eq!(*lsn, transition.lsn);
    assert_eq!(record.actor.as_deref(), Some("worker-token"));
    match &record.events[..] {
        [Event::JobCompleted {
            job_id,
            result_json,
            ..
        }, Event::JobLeased(leased)] => {
            assert_eq!(*job_id, first.grants[0].job_id);
            assert_eq!(result_json.as_deref(), Some("\"done\""));
            assert_eq!(leased.lease_id, grants[0].lease_id);
            assert_eq!(leased.job_id, grants[0].job_id);
        }
        other => panic!("one record with the completion then the grant, got {other:?}"),
    }
    assert!(matches!(
        &records[3].1.events[..],
        [Event::JobCompleted { .. }]
    ));
    drop(handle);
    task.await.unwrap();
    writer.shutdown().await;
}
