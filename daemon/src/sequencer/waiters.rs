//! Workers parked in a lease long-poll, answered as soon as a matching job appears or their wait
//! ends. Bounded by `lease_waiters_max` (enforced by the caller).

use super::commands::{LeaseOutcome, SequencerError};
use agentd_schemas::events::Tags;
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// One parked lease request.
pub struct Waiter {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub tags: Tags,
    pub max_jobs: u32,
    pub deadline_ms: u64,
    pub actor: Option<String>,
    pub reply: oneshot::Sender<Result<LeaseOutcome, SequencerError>>,
}

/// The parked waiters in arrival order, and whether something happened that may satisfy them.
#[derive(Default)]
pub struct Waiters {
    parked: VecDeque<Waiter>,
    earliest_deadline_ms: Option<u64>,
    wake: bool,
}

impl Waiters {
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.earliest_deadline_ms
    }

    /// Notes that jobs may have become available.
    pub fn wake(&mut self) {
        if !self.parked.is_empty() {
            self.wake = true;
        }
    }

    pub fn wake_pending(&self) -> bool {
        self.wake
    }

    pub fn park(&mut self, waiter: Waiter) {
        self.earliest_deadline_ms = Some(
            self.earliest_deadline_ms
                .map_or(waiter.deadline_ms, |at| at.min(waiter.deadline_ms)),
        );
        self.parked.push_back(waiter);
    }

    /// Removes every waiter (to try each once); the caller parks back those still waiting.
    pub fn take_all(&mut self) -> Vec<Waiter> {
        self.wake = false;
        self.earliest_deadline_ms = None;
        self.parked.drain(..).collect()
    }

    /// Answers an empty lease list to every waiter whose wait is over, and drops waiters whose
    /// client went away.
    pub fn expire(&mut self, now_ms: u64) {
        if self.earliest_deadline_ms.is_none_or(|at| at > now_ms) {
            return;
        }
        for waiter in self.take_all() {
            if waiter.reply.is_closed() {
                continue;
            }
            if waiter.deadline_ms <= now_ms {
                let _ignored_if_client_left = waiter.reply.send(Ok(LeaseOutcome::default()));
            } else {
                self.park(waiter);
            }
        }
    }

    /// At shutdown: everyone gets an empty answer.
    pub fn answer_all_empty(&mut self) {
        for waiter in self.take_all() {
            let _ignored_if_client_left = waiter.reply.send(Ok(LeaseOutcome::default()));
        }
    }
}
