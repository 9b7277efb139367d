//! The coalescer against a fake daemon whose calls wait on a gate, so a test decides exactly
//! which completions arrive while a call is in flight.

use super::*;
use agentd_schemas::api::ErrorBody;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One call the fake received: the leases it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    One(u64),
    Many(Vec<u64>),
}

/// A fake daemon: records each call when it starts, then waits for a permit of `gate` before
/// answering; leases in `refused` fail with their code, every other lease `n` completes job `n`.
#[derive(Clone)]
struct FakeDaemon {
    calls: Arc<Mutex<Vec<Call>>>,
    gate: Arc<Semaphore>,
    refused: Arc<HashMap<u64, ErrorCode>>,
    /// The whole `complete_many` call fails with this code.
    many_fails_with: Option<ErrorCode>,
}

impl FakeDaemon {
    fn new(open_calls: usize) -> FakeDaemon {
        FakeDaemon {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(open_calls)),
            refused: Arc::default(),
            many_fails_with: None,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("test lock").clone()
    }

    async fn pass_gate(&self) {
        self.gate
            .acquire()
            .await
            .expect("gate never closed")
            .forget();
    }

    fn refusal(code: ErrorCode) -> ClientError {
        ClientError::Api {
            status: code.status(),
            code: code.as_str().to_string(),
            message: format!("refused: {}", code.as_str()),
        }
    }
}

impl CompletionCalls for FakeDaemon {
    async fn complete_one(&self, item: CompleteItem) -> Result<JobId, ClientError> {
        let lease = item.lease_id.0;
        self.calls.lock().expect("test lock").push(Call::One(lease));
        self.pass_gate().await;
        match self.refused.get(&lease) {
            Some(code) => Err(FakeDaemon::refusal(*code)),
            None => Ok(JobId(lease)),
        }
    }

    async fn complete_many(
        &self,
        items: Vec<CompleteItem>,
    ) -> Result<CompleteManyResponse, ClientError> {
        let leases: Vec<u64> = items.iter().map(|item| item.lease_id.0).collect();
        self.calls
            .lock()
            .expect("test lock")
            .push(Call::Many(leases));
        self.pass_gate().await;
        if let Some(code) = self.many_fails_with {
            return Err(FakeDaemon::refusal(code));
        }
        let results = items
            .iter()
            .map(|item| {
                let lease = item.lease_id.0;
                let refused = self.refused.get(&lease);
                CompleteItemResult {
                    lease_id: item.lease_id,
                    job_id: refused.is_none().then_some(JobId(lease)),
                    error: refused.map(|code| ErrorBody {
                        code: code.as_str().to_string(),
                        message: format!("refused: {}", code.as_str()),
                    }),
                }
            })
            .collect();
        Ok(CompleteManyResponse { results, lsn: None })
    }
}

/// Yields until `condition` holds; panics after a generous deadline (a hung coalescer).
async fn until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::task::yield_now().await;
    }
}

/// Completes `lease` in a task of its own, as a slot does.
fn slot_completes(
    coalescer: &CompletionCoalescer,
    lease: u64,
) -> tokio::task::JoinHandle<CompletionAnswer> {
    let coalescer = coalescer.clone();
    tokio::spawn(async move { coalescer.complete(LeaseId(lease), None, None).await })
}

/// Lease 1 goes out alone and holds the gate; leases 2.. are handed over while it is in flight.
async fn one_in_flight_then_queued(
    daemon: &FakeDaemon,
    batch_max: usize,
    queued: &[u64],
) -> (
    tokio::task::JoinHandle<CompletionAnswer>,
    Vec<tokio::task::JoinHandle<CompletionAnswer>>,
) {
    let coalescer = CompletionCoalescer::start(daemon.clone(), batch_max);
    let first = slot_completes(&coalescer, 1);
    until(|| daemon.calls() == [Call::One(1)]).await;
    let rest = queued
        .iter()
        .map(|lease| slot_completes(&coalescer, *lease))
        .collect();
    until(|| coalescer.queued() == queued.len()).await;
    (first, rest)
}

#[tokio::test]
async fn a_completion_in_an_idle_state_goes_out_alone_through_the_single_route() {
    let daemon = FakeDaemon::new(usize::MAX >> 4);
    let coalescer = CompletionCoalescer::start(daemon.clone(), 8);
    let job = coalescer.complete(LeaseId(7), None, None).await;
    assert_eq!(job.expect("completed"), JobId(7));
    assert_eq!(daemon.calls(), [Call::One(7)]);
}

#[tokio::test]
async fn completions_arriving_during_an_in_flight_call_go_together_in_the_next() {
    let daemon = FakeDaemon::new(0);
    let (first, rest) = one_in_flight_then_queued(&daemon, 8, &[2, 3, 4]).await;
    daemon.gate.add_permits(2);
    assert_eq!(first.await.expect("slot").expect("completed"), JobId(1));
    for (handle, lease) in rest.into_iter().zip([2, 3, 4]) {
        assert_eq!(
            handle.await.expect("slot").expect("completed"),
            JobId(lease)
        );
    }
    assert_eq!(daemon.calls(), [Call::One(1), Call::Many(vec![2, 3, 4])]);
}

#[tokio::test]
async fn a_call_carries_at_most_batch_max_completions() {
    let daemon = FakeDaemon::new(0);
    let (first, rest) = one_in_flight_then_queued(&daemon, 2, &[2, 3, 4]).await;
    daemon.gate.add_permits(3);
    first.await.expect("slot").expect("completed");
    for handle in rest {
        handle.await.expect("slot").expect("completed");
    }
    assert_eq!(
        daemon.calls(),
        [Call::One(1), Call::Many(vec![2, 3]), Call::One(4)]
    );
}

#[tokio::test]
async fn an_item_refused_on_its_own_answers_only_its_slot_as_the_single_call_would() {
    let mut daemon = FakeDaemon::new(0);
    daemon.refused = Arc::new(HashMap::from([(3, ErrorCode::LeaseLost)]));
    let (first, rest) = one_in_flight_then_queued(&daemon, 8, &[2, 3, 4]).await;
    daemon.gate.add_permits(2);
    first.await.expect("slot").expect("completed");
    let answers: Vec<CompletionAnswer> = futures_join(rest).await;
    assert_eq!(*answers[0].as_ref().expect("lease 2 completed"), JobId(2));
    assert_eq!(*answers[2].as_ref().expect("lease 4 completed"), JobId(4));
    let refused = answers[1].as_ref().expect_err("lease 3 refused");
    assert_eq!(refused.error_code(), Some(ErrorCode::LeaseLost));
    assert!(
        matches!(**refused, ClientError::Api { status: 409, .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_failed_whole_call_answers_every_item_with_its_error() {
    let mut daemon = FakeDaemon::new(0);
    daemon.many_fails_with = Some(ErrorCode::Unavailable);
    let (first, rest) = one_in_flight_then_queued(&daemon, 8, &[2, 3]).await;
    daemon.gate.add_permits(2);
    first.await.expect("slot").expect("completed");
    for answer in futures_join(rest).await {
        let error = answer.expect_err("the whole call failed");
        assert_eq!(error.error_code(), Some(ErrorCode::Unavailable));
    }
    // Not retried: the single call is not retried either.
    assert_eq!(daemon.calls(), [Call::One(1), Call::Many(vec![2, 3])]);
}

#[tokio::test]
async fn a_batch_over_the_body_limit_is_sent_again_one_by_one() {
    let mut daemon = FakeDaemon::new(0);
    daemon.many_fails_with = Some(ErrorCode::BodyTooLarge);
    let (first, rest) = one_in_flight_then_queued(&daemon, 8, &[2, 3]).await;
    daemon.gate.add_permits(4);
    first.await.expect("slot").expect("completed");
    for (answer, lease) in futures_join(rest).await.into_iter().zip([2, 3]) {
        assert_eq!(answer.expect("completed alone"), JobId(lease));
    }
    assert_eq!(
        daemon.calls(),
        [
            Call::One(1),
            Call::Many(vec![2, 3]),
            Call::One(2),
            Call::One(3)
        ]
    );
}

/// Each slot's answer, in order.
async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<CompletionAnswer>>,
) -> Vec<CompletionAnswer> {
    let mut answers = Vec::with_capacity(handles.len());
    for handle in handles {
        answers.push(handle.await.expect("slot task"));
    }
    answers
}
