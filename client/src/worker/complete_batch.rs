//! The completion coalescer behind `agentctl worker --complete-batch-max N`: slots hand their
//! completions to one completer task, which sends them to the daemon, several per
//! `POST /v1/leases/complete` when they come while a call is in flight.
//!
//! Why this shape: a completion is answered only once its record is durable, so while one call
//! waits for its fsync the next completions can only wait too; sending them together in the next
//! call costs the daemon one record and one request instead of many, and costs the slots no more
//! time than waiting for a free connection would. When no call is in flight a completion goes out
//! at once, alone, through the single `POST /v1/leases/{id}/complete`: an idle worker adds no
//! latency, and a lone completion is exactly today's call.
//!
//! Each slot waits for ITS item's answer ([`CompletionCoalescer::complete`]), so a job is
//! reported done (and its slot leases again) only once its completion is durable, as before. An
//! item refused on its own (`lease_lost`, `not_found`, `string_too_long`, `payload_too_large`...)
//! comes back as the same [`ClientError::Api`] the single call would have answered, with the
//! code's own HTTP status, so callers handle both alike. A failure of the whole call (no answer,
//! an overloaded daemon) reaches every item of it, as it would have reached each single call:
//! nothing is retried here, because the single call is not retried either (the lease expires and
//! the job runs again). The one exception is `body_too_large`: the batch itself was too big for
//! the daemon's body limit, which no single call would have hit, so its items are sent again one
//! by one.

use crate::http_client::{Client, ClientError};
use agentd_schemas::api::{CompleteItem, CompleteItemResult, CompleteManyResponse};
use agentd_schemas::{ErrorCode, JobId, LeaseId};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most completions in one `POST /v1/leases/complete`: the daemon's fixed limit of the route
/// (`COMPLETE_MANY_MAX` in `daemon/src/http/leases.rs`; the e2e `limits` test pins it).
pub const COMPLETE_BATCH_MAX: usize = 10_000;

/// Completions waiting for the completer, at most. Each slot has at most one completion
/// waiting, so this only bounds a caller with more tasks than that (a bench); a full queue
/// makes `complete` wait, it never drops anything.
const WAITING_COMPLETIONS_MAX: usize = COMPLETE_BATCH_MAX;

/// The HTTP calls the completer makes; [`Client`] in the worker, a fake in the unit tests.
pub trait CompletionCalls: Send + Sync + 'static {
    /// `POST /v1/leases/{id}/complete`.
    fn complete_one(
        &self,
        item: CompleteItem,
    ) -> impl Future<Output = Result<JobId, ClientError>> + Send;
    /// `POST /v1/leases/complete`.
    fn complete_many(
        &self,
        items: Vec<CompleteItem>,
    ) -> impl Future<Output = Result<CompleteManyResponse, ClientError>> + Send;
}

impl CompletionCalls for Client {
    async fn complete_one(&self, item: CompleteItem) -> Result<JobId, ClientError> {
        self.complete_with_log_tail(item.lease_id, item.result, item.log_tail)
            .await
            .map(|answer| answer.job_id)
    }

    async fn complete_many(
        &self,
        items: Vec<CompleteItem>,
    ) -> Result<CompleteManyResponse, ClientError> {
        Client::complete_many(self, items).await
    }
}

/// A completion's answer: its job, or why not. The error is shared because a failure of a whole
/// call is every item's answer (`ClientError` is not `Clone`).
pub type CompletionAnswer = Result<JobId, Arc<ClientError>>;

/// The slots' handle on the completer task; cheap to clone. The task ends when the last handle
/// is dropped and every completion handed to it was answered.
#[derive(Clone)]
pub struct CompletionCoalescer {
    waiting: mpsc::Sender<Waiting>,
    batch_max: usize,
}

/// One completion and where its answer goes.
struct Waiting {
    item: CompleteItem,
    answer: oneshot::Sender<CompletionAnswer>,
}

impl CompletionCoalescer {
    /// Starts the completer task on the current runtime; at most `batch_max` completions per
    /// call (clamped to `1..=COMPLETE_BATCH_MAX`).
    pub fn start(calls: impl CompletionCalls, batch_max: usize) -> CompletionCoalescer {
        let batch_max = batch_max.clamp(1, COMPLETE_BATCH_MAX);
        let (waiting, queue) = mpsc::channel(WAITING_COMPLETIONS_MAX);
        tokio::spawn(complete_until_closed(calls, queue, batch_max));
        CompletionCoalescer { waiting, batch_max }
    }

    /// Most completions per call.
    pub fn batch_max(&self) -> usize {
        self.batch_max
    }

    /// Completes `lease_id` and waits until its completion is durable: the job's id, or the
    /// error the single `POST /v1/leases/{id}/complete` would have answered.
    pub async fn complete(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        log_tail: Option<String>,
    ) -> CompletionAnswer {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            item: CompleteItem {
                lease_id,
                result,
                log_tail,
            },
            answer,
        };
        if self.waiting.send(waiting).await.is_err() {
            return Err(completer_gone());
        }
        answered.await.unwrap_or_else(|_| Err(completer_gone()))
    }

    /// Completions handed over and not yet taken into a call.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.waiting.max_capacity() - self.waiting.capacity()
    }
}

/// The completer task: takes the first waiting completion, adds whatever else is waiting (up to
/// `batch_max`), sends them in one call and answers each; completions arriving meanwhile wait
/// in the queue for the next call.
async fn complete_until_closed(
    calls: impl CompletionCalls,
    mut queue: mpsc::Receiver<Waiting>,
    batch_max: usize,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        send_batch(&calls, batch).await;
    }
}

/// Sends `batch` (alone through the single route when it is one) and answers each item.
async fn send_batch(calls: &impl CompletionCalls, batch: Vec<Waiting>) {
    if batch.len() == 1 {
        return send_each(calls, batch).await;
    }
    let (items, answers): (Vec<CompleteItem>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.item, waiting.answer))
        .unzip();
    match calls.complete_many(items.clone()).await {
        Ok(response) => answer_items(items, answers, response),
        Err(error) if error.error_code() == Some(ErrorCode::BodyTooLarge) => {
            let batch = items
                .into_iter()
                .zip(answers)
                .map(|(item, answer)| Waiting { item, answer })
                .collect();
            send_each(calls, batch).await
        }
        Err(error) => {
            // `ClientError` is not `Clone` (it holds a `reqwest::Error`): the items share it.
            let error = Arc::new(error);
            for answer in answers {
                // A slot that stopped waiting no longer needs its answer.
                let _slot_gone = answer.send(Err(error.clone()));
            }
        }
    }
}

/// One single call per item, in order.
async fn send_each(calls: &impl CompletionCalls, batch: Vec<Waiting>) {
    for Waiting { item, answer } in batch {
        let outcome = calls.complete_one(item).await.map_err(Arc::new);
        // A slot that stopped waiting no longer needs its answer.
        let _slot_gone = answer.send(outcome);
    }
}

/// Answers each item from its result in `response` (in order, one per item, as the route
/// promises; an item the daemon left unanswered gets a `Decode` error, not a success).
fn answer_items(
    items: Vec<CompleteItem>,
    answers: Vec<oneshot::Sender<CompletionAnswer>>,
    response: CompleteManyResponse,
) {
    let mut results = response.results.into_iter();
    for (item, answer) in items.into_iter().zip(answers) {
        let outcome = match results.next() {
            Some(result) if result.lease_id == item.lease_id => item_outcome(result),
            _ => Err(Arc::new(ClientError::Decode(format!(
                "POST /v1/leases/complete: no result for {} in the answer",
                item.lease_id
            )))),
        };
        // A slot that stopped waiting no longer needs its answer.
        let _slot_gone = answer.send(outcome);
    }
}

/// An item's result as the single call would have answered it: its job, or an `Api` error with
/// the code's own status.
fn item_outcome(result: CompleteItemResult) -> CompletionAnswer {
    match (result.job_id, result.error) {
        (Some(job_id), None) => Ok(job_id),
        (_, Some(error)) => Err(Arc::new(ClientError::Api {
            // A code this build does not know is a newer daemon's refusal: 422 says "not
            // retryable as is" without claiming more.
            status: ErrorCode::parse(&error.code).map_or(422, ErrorCode::status),
            code: error.code,
            message: error.message,
        })),
        (None, None) => Err(Arc::new(ClientError::Decode(format!(
            "POST /v1/leases/complete: the result for {} has neither a job nor an error",
            result.lease_id
        )))),
    }
}

/// The completer task is gone: only when the runtime is shutting down.
fn completer_gone() -> Arc<ClientError> {
    Arc::new(ClientError::Setup(
        "the completion batcher stopped before answering".into(),
    ))
}

#[cfg(test)]
mod tests;
