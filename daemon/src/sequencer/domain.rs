//! Domain writes as a sequencer command: decided by [`crate::domain::decide`] against the fact
//! index, and answered only once every record the answer rests on is durable.

use super::command::{AnswerWithLsn, DecideCx, Decided, SequencerCommand};
use crate::domain::decide::{self as domain_decide, DomainCommand, DomainReply};
use crate::queue::DecideError;
use agentd_schemas::Lsn;

/// A decided domain write: the record holding it (`None` when nothing had to be appended: a
/// dataset registered again with the same meta, records all received before, a rollout
/// resumed) and what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainOutcome {
    pub lsn: Option<Lsn>,
    /// The last record the decision could depend on: the record itself, or for a decision that
    /// appended nothing, the last record applied to the sequencer's state, which may still be
    /// in flight. Answer only once it is applied, so a 2xx never rests on a fact a crash could
    /// take back.
    pub depends_on: Lsn,
    pub reply: DomainReply,
}

impl AnswerWithLsn for DomainReply {
    type Reply = DomainOutcome;

    fn with_lsn(self, lsn: Lsn) -> DomainOutcome {
        DomainOutcome {
            lsn: Some(lsn),
            depends_on: lsn,
            reply: self,
        }
    }
}

impl SequencerCommand for DomainCommand {
    type Answer = DomainReply;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<DomainReply>, DecideError> {
        // A refusal (a step already recorded, a reward already given) is answered after the
        // frames in flight, as every answer without an append is (see `Decided::Answer`).
        let decision = domain_decide::decide(cx.state, cx.now_ms, self)?;
        Ok(if decision.events.is_empty() {
            Decided::Answer(DomainOutcome {
                lsn: None,
                depends_on: cx.state.last_lsn,
                reply: decision.reply,
            })
        } else {
            Decided::Append {
                events: decision.events,
                answer: decision.reply,
            }
        })
    }
}
