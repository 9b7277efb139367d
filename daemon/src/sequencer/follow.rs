//! The sequencer of a read replica (`agentd replica`): it appends nothing of its own. Records
//! come already numbered from the primary's archive ([`AdoptArchived`]), copied into the local
//! log by the replica's follower before they are adopted here; the sequencer applies them to
//! its queue state exactly as a replay does, so `GET /v1/queues` and the digests answer from the
//! same state the primary had at that LSN. Every decision that would append or park a lease is
//! refused ([`SequencerError::ReadOnlyReplica`]) and no timer runs: no lease expires, no delayed
//! job is promoted by a record, nothing is decided from the replica's clock.

use super::command::{answer, DecideCx, Decided, NeverAppends, Reply, SequencerCommand};
use super::{Sequencer, SequencerError};
use crate::queue::DecideError;
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;

/// Who the sequencer works for: the primary decides and appends; a replica only adopts records
/// the primary decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequencerRole {
    Primary,
    Replica,
}

/// Records of the primary's log, already durable in the replica's local copy, in LSN order and
/// following the last one adopted. Answered with the last LSN adopted.
pub struct AdoptArchived {
    pub records: Vec<(Lsn, LogRecord)>,
}

impl SequencerCommand for AdoptArchived {
    type Answer = NeverAppends<Lsn>;

    fn decide(self, _cx: &DecideCx<'_>) -> Result<Decided<Self::Answer>, DecideError> {
        Ok(Decided::Adopt {
            records: self.records,
            reply_with: |lsn| lsn,
        })
    }
}

impl Sequencer {
    /// Applies records the primary decided. A primary never adopts, and a record that does not
    /// follow the last one is refused with nothing applied.
    pub(super) fn adopt<T>(
        &mut self,
        records: Vec<(Lsn, LogRecord)>,
        reply: Reply<T>,
        reply_with: fn(Lsn) -> T,
    ) {
        if self.role != SequencerRole::Replica {
            return answer(reply, Err(SequencerError::AdoptOnPrimary));
        }
        let mut expected = self.next_lsn;
        for (lsn, _) in &records {
            if *lsn != expected {
                return answer(
                    reply,
                    Err(SequencerError::AdoptOutOfSequence {
                        expected,
                        got: *lsn,
                    }),
                );
            }
            expected = lsn.next();
        }
        for (lsn, record) in &records {
            self.state.apply(*lsn, record);
            self.last_ts_ms = self.last_ts_ms.max(record.ts_ms);
        }
        self.next_lsn = expected;
        answer(reply, Ok(reply_with(self.state.last_lsn)));
    }
}
