//! Queue commands: pause or resume a queue, and read every queue's depth.

use super::command::{AnswerWithLsn, DecideCx, Decided, NeverAppends, SequencerCommand};
use crate::queue::decide::{self, DecideError};
use agentd_schemas::api::{QueueChangeResponse, QueueView};
use agentd_schemas::Lsn;

/// Pauses (`paused: true`) or resumes a queue: leases from it stop or restart.
pub struct SetPaused {
    pub queue: String,
    pub paused: bool,
}

impl AnswerWithLsn for SetPaused {
    type Reply = QueueChangeResponse;

    fn with_lsn(self, lsn: Lsn) -> QueueChangeResponse {
        QueueChangeResponse {
            queue: self.queue,
            paused: self.paused,
            lsn,
        }
    }
}

impl SequencerCommand for SetPaused {
    /// The command is its own answer: the queue and the flag, with the record's LSN.
    type Answer = SetPaused;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<SetPaused>, DecideError> {
        let decision = decide::set_paused(cx.limits, &self.queue, self.paused)?;
        let paused_now = cx
            .state
            .queue(&self.queue)
            .is_some_and(|queue| queue.paused);
        if paused_now == self.paused {
            // Already so (a queue never seen is not paused): nothing to record, so a script
            // pausing every minute does not grow the log. The LSN answered is the state's, at
            // which the queue is known to be so.
            let lsn = cx.state.last_lsn;
            return Ok(Decided::Answer(self.with_lsn(lsn)));
        }
        Ok(Decided::Append {
            events: decision.events,
            answer: self,
        })
    }
}

/// Every queue with its paused flag and depth per state, from the sequencer's own state.
pub struct Queues;

impl SequencerCommand for Queues {
    type Answer = NeverAppends<Vec<QueueView>>;
    /// `scheduled` versus `queued` counts are exact only once due jobs are promoted.
    const READS_READY_JOBS: bool = true;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Self::Answer>, DecideError> {
        let views = cx
            .state
            .queues
            .iter()
            .map(|(name, index)| QueueView {
                queue: name.to_string(),
                paused: index.paused,
                depth: index.depth(),
            })
            .collect();
        Ok(Decided::Answer(views))
    }
}
