//! The one path every command takes: decide against the state, then append and apply the
//! record, answer once it is durable, and wake the long-polls it may satisfy. Parking a lease,
//! answering after the frames in flight and holding for a digest are outcomes of this path.

use super::command::{answer, AnswerWithLsn, DecideCx, Decided, Reply, Request};
use super::command::{SequencerCommand, SequencerError};
use super::follow::SequencerRole;
use super::internal::DigestHold;
use super::{observe, replay_queue_state, InFlight, Sequencer};
use crate::log::AppendError;
use crate::queue::DecideError;
use agentd_schemas::events::{encode_record, Event, LogRecord, RECORD_FORMAT_VERSION};
use agentd_schemas::Lsn;
use rand::Rng;

/// Called once per durability outcome of a frame: the answer of the command that appended it.
pub(super) type OnDurable = Box<dyn FnOnce(Result<Lsn, AppendError>) + Send>;

/// The sequencer's random source for retry jitter ([`DecideCx::jitter`]).
pub(super) fn random_jitter() -> f64 {
    rand::rng().random::<f64>()
}

impl Sequencer {
    /// What decisions read at `now_ms`.
    pub(super) fn decide_cx(&self, now_ms: u64) -> DecideCx<'_> {
        DecideCx {
            state: &self.state,
            limits: &self.limits,
            now_ms,
            jitter: random_jitter,
        }
    }

    /// Decides one command and carries out the decision.
    pub(super) async fn execute<C: SequencerCommand>(&mut self, now_ms: u64, request: Request<C>) {
        let Request {
            command,
            actor,
            reply,
        } = request;
        if C::READS_READY_JOBS {
            self.promote_due_jobs(now_ms);
        }
        let decided = command.decide(&self.decide_cx(now_ms));
        let writes = matches!(decided, Ok(Decided::Append { .. } | Decided::Park(_)));
        if writes && self.role == SequencerRole::Replica {
            return answer(reply, Err(SequencerError::ReadOnlyReplica));
        }
        match decided {
            Err(refusal) => self.answer_after_in_flight(reply, Err(refusal)),
            Ok(Decided::Answer(now)) => self.answer_after_in_flight(reply, Ok(now)),
            Ok(Decided::Adopt {
                records,
                reply_with,
            }) => self.adopt(records, reply, reply_with),
            Ok(Decided::Append {
                events,
                answer: pending,
            }) => self.append(now_ms, actor, events, reply, pending).await,
            Ok(Decided::Park(parked)) => self.park(now_ms, actor, parked, reply),
            Ok(Decided::Hold {
                reply: digest,
                release,
            }) => {
                // A caller that left holds nothing up.
                if reply.send(Ok(digest)).is_ok() {
                    self.hold = Some(DigestHold::new(release));
                }
            }
        }
    }

    /// Appends `events` as one record and answers `pending` with its LSN once it is durable
    /// (or the append's error).
    pub(super) async fn append<A: AnswerWithLsn>(
        &mut self,
        now_ms: u64,
        actor: Option<String>,
        events: Vec<Event>,
        reply: Reply<A::Reply>,
        pending: A,
    ) {
        let on_durable: OnDurable = Box::new(move |outcome| {
            let outcome = outcome
                .map(|lsn| pending.with_lsn(lsn))
                .map_err(SequencerError::Append);
            answer(reply, outcome);
        });
        self.commit(now_ms, actor, events, on_durable).await;
    }

    /// Appends `events` as one record, applies it, and calls `on_durable` when the writer
    /// answers.
    pub(super) async fn commit(
        &mut self,
        now_ms: u64,
        actor: Option<String>,
        events: Vec<Event>,
        on_durable: OnDurable,
    ) {
        let lsn = self.next_lsn;
        observe::note_events(&self.state, &mut self.waiters, now_ms, &events);
        let record = LogRecord {
            ts_ms: now_ms,
            actor,
            events,
        };
        let payload = encode_record(&record);
        metrics::counter!("agentd_events_appended_total").increment(record.events.len() as u64);
        if self.careful {
            let outcome = self
                .writer
                .append(lsn, RECORD_FORMAT_VERSION, payload)
                .await;
            if outcome.is_ok() {
                self.careful = false;
                self.next_lsn = lsn.next();
                self.state.apply(lsn, &record);
            }
            return on_durable(outcome);
        }
        match self
            .writer
            .enqueue(lsn, RECORD_FORMAT_VERSION, payload)
            .await
        {
            Ok(rx) => {
                self.next_lsn = lsn.next();
                self.state.apply(lsn, &record);
                self.in_flight.push_back(InFlight { rx, on_durable });
            }
            Err(error) => on_durable(Err(error)),
        }
    }

    /// Calls `answer` once every frame now in flight is durable (at once when none is), with
    /// the first failure if one fails. A decision that appended nothing, or a refusal, may rest
    /// on a fact still in flight (a step recorded a moment ago); answering only after it is
    /// durable keeps a 2xx or a 409 from resting on a record a crash or a full disk could take
    /// back.
    /// An answer without an append, and a refusal, may rest on a record still in flight: both
    /// are sent once every frame now in flight is durable (at once when there is none).
    fn answer_after_in_flight<T: Send + 'static>(
        &mut self,
        reply: Reply<T>,
        outcome: Result<T, DecideError>,
    ) {
        self.after_in_flight(Box::new(move |durable| {
            let outcome = durable
                .map_err(SequencerError::Append)
                .and_then(|()| outcome.map_err(SequencerError::Rejected));
            answer(reply, outcome);
        }))
    }

    pub(super) fn after_in_flight(
        &mut self,
        answer: Box<dyn FnOnce(Result<(), AppendError>) + Send>,
    ) {
        match self.in_flight.back_mut() {
            None => answer(Ok(())),
            Some(last) => {
                let earlier = std::mem::replace(&mut last.on_durable, Box::new(|_| {}));
                last.on_durable = Box::new(move |outcome| {
                    let for_answer = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
                    earlier(outcome);
                    answer(for_answer);
                });
            }
        }
    }

    /// After a failed append, every later frame fails too. Wait for all of them, then rebuild the
    /// state from what is durable and continue in careful mode.
    pub(super) async fn recover_from_failed_append(&mut self) {
        while let Some(in_flight) = self.in_flight.pop_front() {
            let outcome = in_flight.rx.await.unwrap_or(Err(AppendError::Closed));
            (in_flight.on_durable)(outcome);
        }
        let durable_lsn = self.writer.durable_lsn();
        tracing::warn!(%durable_lsn, "an append failed; rebuilding queue state from the durable log and appending carefully");
        let log = self.log.clone();
        let rebuilt =
            tokio::task::spawn_blocking(move || replay_queue_state(&log, durable_lsn)).await;
        match rebuilt {
            Ok(Ok(state)) => {
                self.state = state;
                self.next_lsn = durable_lsn.next();
                self.careful = true;
                self.waiters.wake_all();
            }
            Ok(Err(error)) => crate::fatal(&format!(
                "cannot rebuild queue state after a failed append: {error}"
            )),
            Err(error) => crate::fatal(&format!("queue state rebuild task failed: {error}")),
        }
    }
}
