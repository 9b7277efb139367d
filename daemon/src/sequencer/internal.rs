//! Commands the daemon sends itself: appends it decided (exports, schedule firings, dataset
//! builds, settings at start-up) and the digest hold of `GET /v1/admin/digest`.

use super::command::{AnswerWithLsn, DecideCx, Decided, NeverAppends, SequencerCommand};
use crate::queue::DecideError;
use agentd_schemas::events::Event;
use agentd_schemas::Lsn;
use std::time::Duration;
use tokio::sync::oneshot;

/// Appends events the daemon decided itself (export records, schedule firings, dataset builds,
/// the `[datasets]` settings at start-up); no client write goes this way.
pub struct AppendInternal {
    pub events: Vec<Event>,
}

/// Answered with the record's LSN.
pub struct AppendedAt;

impl AnswerWithLsn for AppendedAt {
    type Reply = Lsn;

    fn with_lsn(self, lsn: Lsn) -> Lsn {
        lsn
    }
}

impl SequencerCommand for AppendInternal {
    type Answer = AppendedAt;

    fn decide(self, _cx: &DecideCx<'_>) -> Result<Decided<AppendedAt>, DecideError> {
        Ok(Decided::Append {
            events: self.events,
            answer: AppendedAt,
        })
    }
}

/// Longest a [`HoldForDigest`] keeps the sequencer from appending.
pub const DIGEST_HOLD_MAX: Duration = Duration::from_secs(10);

/// The queue state's digest ([`crate::queue::QueueState::digest`], what `agentd rebuild`
/// prints as `queue`) and the last record applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDigest {
    pub lsn: Lsn,
    pub digest: String,
}

/// Answers the queue state's digest, then appends nothing until `release` fires or is dropped
/// (at most [`DIGEST_HOLD_MAX`]), so the caller can digest the projections at exactly that LSN
/// (`GET /v1/admin/digest`). New commands wait meanwhile, in order (which is why only admins
/// may ask); frames already in flight are still acknowledged as they become durable.
pub struct HoldForDigest {
    pub release: oneshot::Receiver<()>,
}

impl SequencerCommand for HoldForDigest {
    type Answer = NeverAppends<QueueDigest>;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Self::Answer>, DecideError> {
        Ok(Decided::Hold {
            reply: QueueDigest {
                lsn: cx.state.last_lsn,
                digest: cx.state.digest(),
            },
            release: self.release,
        })
    }
}

/// A digest hold in force: the sequencer takes no command and appends nothing until it ends.
pub(super) struct DigestHold {
    release: oneshot::Receiver<()>,
    /// The bound that keeps a stuck caller from stopping every write.
    deadline: tokio::time::Instant,
}

impl DigestHold {
    pub(super) fn new(release: oneshot::Receiver<()>) -> Self {
        DigestHold {
            release,
            deadline: tokio::time::Instant::now() + DIGEST_HOLD_MAX,
        }
    }

    /// Completes when the holder releases the hold, drops it, or its time is up.
    pub(super) async fn ended(&mut self) {
        let _released_dropped_or_timed_out =
            tokio::time::timeout_at(self.deadline, &mut self.release).await;
    }
}
