//! Parked long-polls are woken for every way a job becomes leasable, including a delayed job
//! falling due while something else (a submit to another queue, a lease) promotes it.

use super::waiters::Waiter;
use super::*;
use agentd_schemas::events::{Event, JobSubmitted, LogRecord};
use agentd_schemas::JobId;

fn delayed_job_record(run_at_ms: u64) -> LogRecord {
    LogRecord {
        ts_ms: 1,
        actor: None,
        events: vec![Event::JobSubmitted(JobSubmitted {
            job_id: JobId(1),
            queue: "gpu".into(),
            kind: "test".into(),
            payload_json: "{}".into(),
            priority: 0,
            run_at_ms,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: Default::default(),
            task_id: None,
            idempotency_key: None,
        })],
    }
}

#[tokio::test]
async fn promoting_a_due_job_wakes_the_waiters_of_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = QueueState::new();
    state.apply(Lsn(1), &delayed_job_record(100));
    let (mut sequencer, writer) = super::hold_tests::sequencer_in(dir.path(), state);
    let (reply, _receiver) = oneshot::channel();
    sequencer.waiters.park(Waiter {
        worker_id: "w".into(),
        queues: vec!["gpu".into()],
        tags: Default::default(),
        max_jobs: 1,
        deadline_ms: 30_000,
        actor: None,
        reply,
    });
    sequencer.promote_due_jobs(50);
    assert!(!sequencer.waiters.wake_pending(), "nothing was due yet");
    // Whoever promotes the job (here, as a lease or a submit to another queue would) wakes
    // the waiters: the due-job timer will no longer see it as due.
    sequencer.promote_due_jobs(150);
    assert_eq!(sequencer.state.next_due_ms(), None);
    assert!(sequencer.waiters.wake_pending());
    assert_eq!(sequencer.waiters.take_woken().len(), 1);
    writer.shutdown().await;
}
