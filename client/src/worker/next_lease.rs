//! Leasing a slot's next job with its completion (the default; `--no-lease-on-complete` turns
//! it off): the completion carries `next` (`POST /v1/leases/{id}/complete`), the daemon leases
//! one job ready right now in the same durable record, and the slot runs it without a lease
//! round trip. When none came back the slot is freed and the lease loop long-polls as before.
//!
//! Why a budget: `--max-jobs` bounds the leases of the whole worker, and two parties now lease:
//! the lease loop for its free slots and every slot that completes a job. Each reserves what it
//! asks for before asking and settles once answered, so the worker never holds more than
//! `--max-jobs` leases in total, whoever asked.

use super::Slot;
use agentd_schemas::api::NextLeaseRequest;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// The leases `--max-jobs` still allows, shared by the lease loop and the slots.
#[derive(Debug)]
pub(super) struct LeaseBudget {
    /// `None`: no limit (only the counting is kept).
    max: Option<u64>,
    counts: Mutex<BudgetCounts>,
}

#[derive(Debug, Default)]
struct BudgetCounts {
    /// Leases granted so far.
    granted: u64,
    /// Leases asked for and not answered yet.
    reserved: u64,
}

impl LeaseBudget {
    pub(super) fn new(max: Option<u64>) -> LeaseBudget {
        LeaseBudget {
            max,
            counts: Mutex::default(),
        }
    }

    /// Reserves up to `want` leases: as many as the limit leaves beside those granted and
    /// those reserved by requests in flight.
    pub(super) fn reserve(&self, want: u64) -> u64 {
        let mut counts = self.lock();
        let left = self.max.map_or(want, |max| {
            max.saturating_sub(counts.granted + counts.reserved)
        });
        let reserved = want.min(left);
        counts.reserved += reserved;
        reserved
    }

    /// Ends a reservation of `reserved` leases, of which `granted` were granted.
    pub(super) fn settle(&self, reserved: u64, granted: u64) {
        let mut counts = self.lock();
        counts.reserved -= reserved;
        counts.granted += granted;
    }

    /// Whether every lease the limit allows was granted (reservations still in flight may yet
    /// come back empty, so they do not count).
    pub(super) fn exhausted(&self) -> bool {
        self.max.is_some_and(|max| self.lock().granted >= max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetCounts> {
        // Each critical section adds or subtracts whole counts: a panic elsewhere cannot leave
        // them half-changed, so a poisoned lock is safe to use.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a slot needs to ask for its next job with a completion.
pub(super) struct NextLeases {
    /// The worker's lease request, for one job.
    pub(super) request: NextLeaseRequest,
    pub(super) budget: Arc<LeaseBudget>,
    /// True once a stop is requested: a stopping worker takes no new job.
    pub(super) shutdown: watch::Receiver<bool>,
}

impl NextLeases {
    /// A reservation of one lease for `slot`, when the worker may take a job into it now: not
    /// stopping, the slot's gates open (model server ready, actor said hello), within
    /// `--max-jobs`.
    pub(super) fn reserve(&self, slot: &Slot) -> Option<Reservation> {
        if *self.shutdown.borrow() || !slot.ready() {
            return None;
        }
        (self.budget.reserve(1) == 1).then(|| Reservation {
            budget: self.budget.clone(),
            settled: false,
        })
    }
}

/// One lease reserved in the [`LeaseBudget`]; given back unused if dropped unsettled (a call
/// that failed or was cancelled).
pub(super) struct Reservation {
    budget: Arc<LeaseBudget>,
    settled: bool,
}

impl Reservation {
    /// The answer came: `granted` is 0 or 1.
    pub(super) fn settle(mut self, granted: u64) {
        self.budget.settle(1, granted);
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.settle(1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_in_flight_and_grants_together_stay_within_max_jobs() {
        let budget = Arc::new(LeaseBudget::new(Some(3)));
        assert_eq!(budget.reserve(2), 2);
        let next = NextLeases {
            request: NextLeaseRequest::default(),
            budget: budget.clone(),
            shutdown: watch::channel(false).1,
        };
        let slot = Slot {
            index: 0,
            env: Vec::new(),
            server: None,
            actor: None,
        };
        let one = next.reserve(&slot).expect("one lease is left");
        assert!(next.reserve(&slot).is_none(), "two in flight, one reserved");
        // The loop's request came back with one job; the slot's with none.
        budget.settle(2, 1);
        one.settle(0);
        assert!(!budget.exhausted());
        let dropped = next
            .reserve(&slot)
            .expect("a reservation given back is free again");
        drop(dropped);
        assert_eq!(budget.reserve(5), 2);
        budget.settle(2, 2);
        assert!(budget.exhausted());
        assert!(next.reserve(&slot).is_none());
    }

    #[test]
    fn a_stopping_worker_reserves_nothing() {
        let (stop, shutdown) = watch::channel(false);
        let next = NextLeases {
            request: NextLeaseRequest::default(),
            budget: Arc::new(LeaseBudget::new(None)),
            shutdown,
        };
        let slot = Slot {
            index: 0,
            env: Vec::new(),
            server: None,
            actor: None,
        };
        assert!(next.reserve(&slot).is_some());
        stop.send(true).unwrap();
        assert!(next.reserve(&slot).is_none());
    }
}
