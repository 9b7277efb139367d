//! One attempt of one leased job: the handler runs while a heartbeat task keeps the lease and
//! a watch on the slot's model server stops the job if the server goes down; then the attempt's
//! log is finished and the outcome reported to the daemon.

use super::next_lease::NextLeases;
use super::{CompletionCoalescer, Handler, JobContext, JobOutcome, Slot, StopReason};
use crate::http_client::{Client, ClientError};
use crate::job_log::{self, AttemptLog};
use crate::worker_metrics::WorkerMetrics;
use agentd_schemas::api::LeaseGrant;
use agentd_schemas::{JobId, LeaseId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SERVER_LOST_ERROR: &str = "the slot's model server went down or was restarted under the job";
const SHUTDOWN_ERROR: &str = "worker stopped the job while shutting down";

/// What became of an attempt, as far as the daemon was told.
#[derive(Clone, Copy)]
pub(super) enum Reported {
    Completed,
    Failed,
    Lost,
}

/// Everything one attempt needs besides its grant and slot.
pub(super) struct Attempt {
    pub client: Client,
    /// Where the completion goes with `--complete-batch-max` above 1; otherwise its own call.
    pub coalescer: Option<CompletionCoalescer>,
    pub handler: Handler,
    /// Turns true when the drain deadline passed: stop now.
    pub drain: watch::Receiver<bool>,
    /// Heartbeat every `lease_ttl / heartbeat_divisor`.
    pub heartbeat_divisor: u32,
    pub log: AttemptLog,
    pub metrics: Arc<WorkerMetrics>,
    /// With `--lease-on-complete` (the default) and without a coalescer: a completion asks
    /// for the slot's next job (`next_lease.rs`).
    pub next: Option<Arc<NextLeases>>,
}

impl Attempt {
    /// Runs the handler for `grant` in `slot` and reports how it ended; with the job leased
    /// for the slot with the completion, if one was.
    pub(super) async fn run(self, grant: LeaseGrant, slot: Slot) -> (Reported, Option<LeaseGrant>) {
        let lease_id = grant.lease_id;
        let attempt = grant.attempt;
        let (stop_tx, stop_rx) = watch::channel(StopReason::Running);
        let heartbeats = tokio::spawn(keep_lease(
            Heartbeat {
                client: self.client.clone(),
                lease_id,
                job_id: grant.job_id,
                lease_ttl_ms: grant.job.lease_ttl_ms,
                divisor: self.heartbeat_divisor,
                metrics: self.metrics.clone(),
            },
            self.drain,
            stop_tx.clone(),
        ));
        let server_watch = watch_server(&slot, grant.job_id, &stop_tx);
        let context = JobContext {
            grant,
            client: self.client.clone(),
            slot: slot.clone(),
            stop: stop_rx.clone(),
            output: self.log.sink(),
        };
        let outcome = (self.handler)(context).await;
        heartbeats.abort();
        if let Some(server_watch) = server_watch {
            server_watch.abort();
        }
        let stop_reason = *stop_rx.borrow();
        let (end_line, silent_detail) = end_line(attempt, &outcome, stop_reason);
        let log_tail = self.log.finish(&end_line, silent_detail.as_deref()).await;
        let reporter = Reporter {
            client: &self.client,
            coalescer: self.coalescer.as_ref(),
            next: self.next.as_deref().map(|next| (next, &slot)),
        };
        reporter
            .report(lease_id, outcome, stop_reason, log_tail)
            .await
    }
}

/// What the heartbeat task needs to keep one lease.
struct Heartbeat {
    client: Client,
    lease_id: LeaseId,
    job_id: JobId,
    lease_ttl_ms: u64,
    divisor: u32,
    metrics: Arc<WorkerMetrics>,
}

/// Heartbeats until the lease is lost (then stops the job with `LeaseLost`) or the drain
/// deadline passes (then `Draining`); aborted when the job ends first.
async fn keep_lease(
    heartbeat: Heartbeat,
    mut drain: watch::Receiver<bool>,
    stop: watch::Sender<StopReason>,
) {
    let Heartbeat {
        client,
        lease_id,
        job_id,
        lease_ttl_ms,
        divisor,
        metrics,
    } = heartbeat;
    let interval = Duration::from_millis((lease_ttl_ms / divisor as u64).max(50));
    let lease_ttl = Duration::from_millis(lease_ttl_ms);
    // The lease was granted a moment ago; each successful heartbeat renews it for a TTL from
    // when it was sent (a conservative reading of the daemon's clock).
    let mut held_until = Instant::now() + lease_ttl;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // A closed channel disables this branch instead of firing it in a loop.
            Ok(()) = drain.changed() => {
                if *drain.borrow() {
                    let _receiver_gone_means_job_done = stop.send(StopReason::Draining);
                    return;
                }
            }
        }
        let sent_at = Instant::now();
        // A hung daemon must not hold the heartbeat past the lease's end either.
        let answer = tokio::time::timeout(
            held_until.saturating_duration_since(sent_at),
            client.heartbeat(lease_id),
        )
        .await;
        if !matches!(answer, Ok(Ok(_))) {
            metrics.heartbeat_failed();
        }
        match answer {
            Ok(Ok(_)) => held_until = sent_at + lease_ttl,
            Ok(Err(error)) if matches!(error.code(), Some("lease_lost") | Some("not_found")) => {
                eprintln!("agentctl worker: lease {lease_id} of {job_id} lost ({error}); stopping the job");
                let _receiver_gone_means_job_done = stop.send(StopReason::LeaseLost);
                return;
            }
            // Unreachable daemon: once the lease has surely expired there, someone else may
            // already run the job; going on would be zombie work.
            Err(_) => {
                eprintln!("agentctl worker: lease {lease_id} of {job_id} expired while the daemon did not answer; stopping the job");
                let _receiver_gone_means_job_done = stop.send(StopReason::LeaseLost);
                return;
            }
            Ok(Err(error)) if Instant::now() >= held_until => {
                eprintln!("agentctl worker: lease {lease_id} of {job_id} expired while the daemon was unreachable ({error}); stopping the job");
                let _receiver_gone_means_job_done = stop.send(StopReason::LeaseLost);
                return;
            }
            Ok(Err(error)) => {
                eprintln!("agentctl worker: heartbeat for {lease_id} failed ({error}); will retry")
            }
        }
    }
}

/// Stops the job with `ServerLost` when the slot's model server goes down or is restarted
/// (or was already down when the job started); `None` for a slot without a server.
fn watch_server(
    slot: &Slot,
    job_id: JobId,
    stop: &watch::Sender<StopReason>,
) -> Option<JoinHandle<()>> {
    let mut server = slot.server.clone()?;
    let server_stop = stop.clone();
    let status = *server.borrow();
    let started_under = status.generation;
    // The slot was ready when it was picked, but its server may have gone down since: a job
    // must not start against a server that is not ready (it would never be stopped).
    let down_at_start = !status.ready;
    let slot_index = slot.index;
    Some(tokio::spawn(async move {
        // A dropped sender means the worker is stopping its servers after the drain.
        let went_down = down_at_start
            || server
                .wait_for(|status| status.generation != started_under)
                .await
                .is_ok();
        if went_down {
            eprintln!("agentctl worker: the model server of slot {slot_index} went down; stopping {job_id} (retryable)");
            server_stop.send_if_modified(|reason| {
                let running = *reason == StopReason::Running;
                if running {
                    *reason = StopReason::ServerLost;
                }
                running
            });
        }
    }))
}

/// How an attempt's end reaches the daemon: failures always with their own call, completions
/// with their own call (asking for the slot's next job when `next` is set) or through the
/// coalescer.
struct Reporter<'a> {
    client: &'a Client,
    coalescer: Option<&'a CompletionCoalescer>,
    next: Option<(&'a NextLeases, &'a Slot)>,
}

impl Reporter<'_> {
    /// Tells the daemon how the attempt ended (nothing for a lost lease).
    async fn report(
        &self,
        lease_id: LeaseId,
        outcome: JobOutcome,
        stop_reason: StopReason,
        log_tail: Option<String>,
    ) -> (Reported, Option<LeaseGrant>) {
        let client = self.client;
        let mut next_grant = None;
        let report = match (outcome, stop_reason) {
            (_, StopReason::LeaseLost) => return (Reported::Lost, None),
            // A job that failed once its server was gone most likely failed because of it.
            (JobOutcome::Stopped | JobOutcome::Fail { .. }, StopReason::ServerLost) => client
                .fail_with_log_tail(lease_id, SERVER_LOST_ERROR, true, log_tail)
                .await
                .map(|_| Reported::Failed)
                .map_err(Arc::new),
            (JobOutcome::Stopped, StopReason::Draining)
            | (JobOutcome::Stopped, StopReason::Running) => client
                .fail_with_log_tail(lease_id, SHUTDOWN_ERROR, true, log_tail)
                .await
                .map(|_| Reported::Failed)
                .map_err(Arc::new),
            (JobOutcome::Complete(result), _) => self
                .complete(lease_id, result, log_tail)
                .await
                .map(|(_, next)| {
                    next_grant = next;
                    Reported::Completed
                }),
            (JobOutcome::Fail { error, retryable }, _) => client
                .fail_with_log_tail(lease_id, &error, retryable, log_tail)
                .await
                .map(|_| Reported::Failed)
                .map_err(Arc::new),
        };
        let reported = match report {
            Ok(reported) => reported,
            Err(error) if error.code() == Some("lease_lost") => Reported::Lost,
            Err(error) => {
                eprintln!("agentctl worker: could not report {lease_id}: {error}; the lease will expire and the job run again");
                Reported::Lost
            }
        };
        (reported, next_grant)
    }

    /// Completes the lease and returns once the completion is durable, whichever way it went:
    /// an item refused inside a batch answers the same error as its own call would have.
    async fn complete(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        log_tail: Option<String>,
    ) -> Result<(JobId, Option<LeaseGrant>), Arc<ClientError>> {
        if let Some(coalescer) = self.coalescer {
            let job_id = coalescer.complete(lease_id, result, log_tail).await?;
            return Ok((job_id, None));
        }
        let Some((next, reservation)) = self
            .next
            .and_then(|(next, slot)| Some((next, next.reserve(slot)?)))
        else {
            return self
                .client
                .complete_with_log_tail(lease_id, result, log_tail)
                .await
                .map(|answer| (answer.job_id, None))
                .map_err(Arc::new);
        };
        // A failed call drops the reservation, which gives it back.
        let answer = self
            .client
            .complete_then_lease(lease_id, result, log_tail, next.request.clone())
            .await
            .map_err(Arc::new)?;
        // One job was asked for; the daemon grants at most `max_jobs`.
        let grant = answer.next_leases.unwrap_or_default().into_iter().next();
        reservation.settle(u64::from(grant.is_some()));
        Ok((answer.transition.job_id, grant))
    }
}

/// The `==` line that ends an attempt in its log, and what to add to it when the job printed
/// nothing (a built-in's result), so even a silent job's log says what came of it.
fn end_line(
    attempt: u32,
    outcome: &JobOutcome,
    stop_reason: StopReason,
) -> (String, Option<String>) {
    let detail = |text: &str| {
        let first_line = text.lines().next().unwrap_or("");
        job_log::first_bytes_of(first_line, job_log::END_LINE_DETAIL_BYTES_MAX)
    };
    match (outcome, stop_reason) {
        (_, StopReason::LeaseLost) => (
            format!("== attempt {attempt} stopped: the lease was lost (expired or cancelled)"),
            None,
        ),
        (JobOutcome::Stopped | JobOutcome::Fail { .. }, StopReason::ServerLost) => (
            format!("== attempt {attempt} failed (retryable): {SERVER_LOST_ERROR}"),
            None,
        ),
        (JobOutcome::Stopped, _) => (
            format!("== attempt {attempt} failed (retryable): {SHUTDOWN_ERROR}"),
            None,
        ),
        (JobOutcome::Complete(result), _) => (
            format!("== attempt {attempt} completed"),
            result
                .as_ref()
                .map(|result| format!("result: {}", detail(&result.to_string()))),
        ),
        (JobOutcome::Fail { error, retryable }, _) => (
            format!(
                "== attempt {attempt} failed ({}): {}",
                if *retryable {
                    "retryable"
                } else {
                    "not retryable"
                },
                detail(error)
            ),
            None,
        ),
    }
}
