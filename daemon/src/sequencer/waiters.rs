//! Workers parked in a lease long-poll, answered as soon as a matching job appears or their wait
//! ends. Bounded by `lease_waiters_max` (enforced by the caller).
//!
//! Waiters are indexed by queue and by deadline, so that a submit to one queue tries only the
//! waiters of that queue, and a deadline passing answers only the waiters that are due: the cost
//! of an event is proportional to the waiters it can concern, not to every parked worker.

use super::{LeaseOutcome, SequencerError};
use agentd_schemas::events::Tags;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

/// Position of a waiter in arrival order; waiters are served oldest first.
pub type Arrival = u64;

/// The parked waiters and which of them something happened for.
#[derive(Default)]
pub struct Waiters {
    /// Every parked waiter by arrival.
    parked: BTreeMap<Arrival, Waiter>,
    /// Arrivals of the waiters listening on each queue.
    by_queue: HashMap<String, BTreeSet<Arrival>>,
    /// `(deadline_ms, arrival)` of every parked waiter, earliest first.
    deadlines: BTreeSet<(u64, Arrival)>,
    next_arrival: Arrival,
    woken: Woken,
}

/// Which waiters may now be satisfied.
#[derive(Default)]
enum Woken {
    #[default]
    None,
    /// Jobs may have become leasable in these queues.
    Queues(HashSet<String>),
    /// Anything may have changed (due jobs promoted, state rebuilt): try every waiter.
    All,
}

impl Waiters {
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// Notes that jobs may have become leasable in `queue`.
    pub fn wake_queue(&mut self, queue: &str) {
        if !self.by_queue.contains_key(queue) {
            return; // Nobody listens there: nothing to try.
        }
        match &mut self.woken {
            Woken::All => {}
            Woken::Queues(queues) => {
                queues.insert(queue.to_owned());
            }
            Woken::None => self.woken = Woken::Queues(HashSet::from([queue.to_owned()])),
        }
    }

    /// Notes that any waiter may now be satisfied.
    pub fn wake_all(&mut self) {
        if !self.parked.is_empty() {
            self.woken = Woken::All;
        }
    }

    pub fn wake_pending(&self) -> bool {
        !matches!(self.woken, Woken::None)
    }

    /// Parks a new waiter behind every earlier one.
    pub fn park(&mut self, waiter: Waiter) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.park_back(arrival, waiter);
    }

    /// Parks a waiter taken by [`Self::take_woken`] again, in its original place.
    pub fn park_back(&mut self, arrival: Arrival, waiter: Waiter) {
        for queue in &waiter.queues {
            self.by_queue
                .entry(queue.clone())
                .or_default()
                .insert(arrival);
        }
        self.deadlines.insert((waiter.deadline_ms, arrival));
        self.parked.insert(arrival, waiter);
    }

    /// Removes the woken waiters, oldest first, to try each once; the caller parks back those
    /// still waiting with [`Self::park_back`].
    pub fn take_woken(&mut self) -> Vec<(Arrival, Waiter)> {
        let arrivals: BTreeSet<Arrival> = match std::mem::take(&mut self.woken) {
            Woken::None => return Vec::new(),
            Woken::All => self.parked.keys().copied().collect(),
            Woken::Queues(queues) => queues
                .iter()
                .filter_map(|queue| self.by_queue.get(queue))
                .flatten()
                .copied()
                .collect(),
        };
        arrivals
            .into_iter()
            .filter_map(|arrival| Some((arrival, self.remove(arrival)?)))
            .collect()
    }

    /// Answers an empty lease list to every waiter whose wait is over.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(deadline_ms, arrival)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            if let Some(waiter) = self.remove(arrival) {
                let _ignored_if_client_left = waiter.reply.send(Ok(LeaseOutcome::default()));
            }
        }
    }

    /// Drops the waiters whose client stopped waiting. O(W): called only when the waiters are
    /// at their limit, before a new one would be refused.
    pub fn drop_closed(&mut self) {
        let closed: Vec<Arrival> = self
            .parked
            .iter()
            .filter(|(_, waiter)| waiter.reply.is_closed())
            .map(|(&arrival, _)| arrival)
            .collect();
        for arrival in closed {
            self.remove(arrival);
        }
    }

    /// At shutdown: everyone gets an empty answer.
    pub fn answer_all_empty(&mut self) {
        let arrivals: Vec<Arrival> = self.parked.keys().copied().collect();
        for arrival in arrivals {
            if let Some(waiter) = self.remove(arrival) {
                let _ignored_if_client_left = waiter.reply.send(Ok(LeaseOutcome::default()));
            }
        }
    }

    fn remove(&mut self, arrival: Arrival) -> Option<Waiter> {
        let waiter = self.parked.remove(&arrival)?;
        for queue in &waiter.queues {
            if let Some(arrivals) = self.by_queue.get_mut(queue) {
                arrivals.remove(&arrival);
                if arrivals.is_empty() {
                    self.by_queue.remove(queue);
                }
            }
        }
        self.deadlines.remove(&(waiter.deadline_ms, arrival));
        Some(waiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(
        queues: &[&str],
        deadline_ms: u64,
    ) -> (
        Waiter,
        oneshot::Receiver<Result<LeaseOutcome, SequencerError>>,
    ) {
        let (reply, receiver) = oneshot::channel();
        let waiter = Waiter {
            worker_id: "w".into(),
            queues: queues.iter().map(|queue| queue.to_string()).collect(),
            tags: Tags::new(),
            max_jobs: 1,
            deadline_ms,
            actor: None,
            reply,
        };
        (waiter, receiver)
    }

    fn woken_queues(waiters: &mut Waiters) -> Vec<(Arrival, Vec<String>)> {
        waiters
            .take_woken()
            .into_iter()
            .map(|(arrival, waiter)| (arrival, waiter.queues))
            .collect()
    }

    #[test]
    fn a_wake_on_one_queue_takes_only_its_waiters_in_arrival_order() {
        let mut waiters = Waiters::default();
        let mut receivers = Vec::new();
        for queues in [&["gpu"][..], &["cpu"], &["cpu", "gpu"], &["io"]] {
            let (parked, receiver) = waiter(queues, 1000);
            waiters.park(parked);
            receivers.push(receiver);
        }
        waiters.wake_queue("nobody-listens");
        assert!(!waiters.wake_pending());
        waiters.wake_queue("cpu");
        let taken = woken_queues(&mut waiters);
        assert_eq!(
            taken,
            vec![
                (1, vec!["cpu".to_string()]),
                (2, vec!["cpu".to_string(), "gpu".to_string()])
            ]
        );
        assert_eq!(waiters.len(), 2);
        assert!(!waiters.wake_pending());
        waiters.wake_all();
        assert_eq!(woken_queues(&mut waiters).len(), 2);
        assert!(waiters.is_empty());
    }

    #[test]
    fn parked_back_waiters_keep_their_place_and_expire_at_their_deadline() {
        let mut waiters = Waiters::default();
        let (first, mut first_rx) = waiter(&["q"], 100);
        let (second, mut second_rx) = waiter(&["q"], 50);
        waiters.park(first);
        waiters.park(second);
        waiters.wake_queue("q");
        let taken = waiters.take_woken();
        assert_eq!(taken.len(), 2);
        for (arrival, waiter) in taken.into_iter().rev() {
            waiters.park_back(arrival, waiter);
        }
        assert_eq!(waiters.next_deadline_ms(), Some(50));
        waiters.expire(49);
        assert_eq!(waiters.len(), 2);
        waiters.expire(50);
        assert_eq!(waiters.len(), 1);
        assert!(second_rx.try_recv().unwrap().unwrap().grants.is_empty());
        assert!(first_rx.try_recv().is_err());
        waiters.wake_queue("q");
        assert_eq!(woken_queues(&mut waiters), vec![(0, vec!["q".to_string()])]);
    }
}
