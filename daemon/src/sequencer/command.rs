//! What a sequencer command is: a type that decides, through a pure function of a [`DecideCx`],
//! what to append and how to answer ([`Decided`]). The sequencer runs every command through one
//! path ([`super::Sequencer::execute`]) that appends, applies, answers and wakes waiters; the
//! commands themselves live in `jobs.rs`, `lease.rs`, `complete_lease.rs`, `queues.rs`,
//! `domain.rs` and `internal.rs`.

use super::lease::Parked;
use super::Sequencer;
use crate::log::AppendError;
use crate::queue::{DecideError, QueueLimits, QueueState};
use agentd_schemas::events::{Event, LogRecord};
use agentd_schemas::Lsn;
use tokio::sync::oneshot;

/// A command to the sequencer, decided against its state without side effects.
pub trait SequencerCommand: Send + Sized + 'static {
    /// What the decision answers once its record has an LSN.
    type Answer: AnswerWithLsn;

    /// Whether deciding reads the queues' ready sets, so delayed jobs that are due must be moved
    /// there first ([`crate::queue::QueueState::promote_due`]; an index change, never a logical
    /// one).
    const READS_READY_JOBS: bool = false;

    /// Decides the command: pure, reading only the context. A refusal (`Err`) is answered at
    /// once and appends nothing.
    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Self::Answer>, DecideError>;
}

/// The part of an answer that waits for the record's LSN.
pub trait AnswerWithLsn: Send + 'static {
    /// What the caller receives.
    type Reply: Send + 'static;

    fn with_lsn(self, lsn: Lsn) -> Self::Reply;
}

/// What a command answers.
pub type ReplyOf<C> = <<C as SequencerCommand>::Answer as AnswerWithLsn>::Reply;

/// Everything a decision may read. Time and randomness come in here, so a decision is a
/// function of its inputs and a unit test passes fixed ones.
#[derive(Clone, Copy)]
pub struct DecideCx<'a> {
    pub state: &'a QueueState,
    pub limits: &'a QueueLimits,
    /// The time the record will carry (`ts_ms`), never earlier than one already written.
    pub now_ms: u64,
    /// Draws a number in `[0, 1)` that spreads retries (`after_failure`'s jitter): a random
    /// source in the sequencer, a constant in tests.
    pub jitter: fn() -> f64,
}

/// How a command is carried out.
pub enum Decided<A: AnswerWithLsn> {
    /// Append `events` as one record; answer `answer` with its LSN once it is durable.
    Append { events: Vec<Event>, answer: A },
    /// Nothing to append. The answer may rest on a record still in flight (a duplicate
    /// submission's original, a step recorded a moment ago), so it is sent once every frame now
    /// in flight is durable, as a refusal (`Err` from `decide`) is: a 2xx or a 409 never rests
    /// on a record a crash or a full disk could take back.
    Answer(A::Reply),
    /// Nothing to lease yet: park the long-poll until a job arrives or its wait ends.
    Park(Parked<A::Reply>),
    /// Answer now, then append nothing until `release` fires or is dropped (at most
    /// [`super::DIGEST_HOLD_MAX`]); frames already in flight are still acknowledged meanwhile.
    Hold {
        reply: A::Reply,
        release: oneshot::Receiver<()>,
    },
    /// A replica's: apply records the primary decided, already durable in the local log
    /// (`follow.rs`); answered with the last LSN applied.
    Adopt {
        records: Vec<(Lsn, LogRecord)>,
        reply_with: fn(Lsn) -> A::Reply,
    },
}

/// Why a command did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SequencerError {
    #[error(transparent)]
    Rejected(#[from] DecideError),
    #[error("append failed: {0}")]
    Append(AppendError),
    #[error("too many workers are waiting for leases ({0}); retry shortly")]
    TooManyWaiters(usize),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// A write reached a read replica's sequencer (the HTTP layer answers 405 before).
    #[error("this daemon is a read-only replica; send writes to the primary")]
    ReadOnlyReplica,
    #[error("only a read replica adopts archived records")]
    AdoptOnPrimary,
    #[error("archived record out of sequence: expected lsn {expected}, got {got}")]
    AdoptOutOfSequence { expected: Lsn, got: Lsn },
}

impl From<AppendError> for SequencerError {
    fn from(error: AppendError) -> Self {
        SequencerError::Append(error)
    }
}

/// Where a command's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, SequencerError>>;

/// Sends an answer; a client that stopped waiting loses nothing it could still read.
pub(super) fn answer<T>(reply: Reply<T>, outcome: Result<T, SequencerError>) {
    let _ignored_if_client_left = reply.send(outcome);
}

/// A command on its way to the sequencer: the command, who asks (the `actor` of the record it
/// may append) and where the answer goes.
pub struct Request<C: SequencerCommand> {
    pub command: C,
    pub actor: Option<String>,
    pub reply: Reply<ReplyOf<C>>,
}

/// Declares [`Command`], the one type the command channel carries, with a variant per command
/// type, and its dispatch to the generic path. The dispatch holds no logic: a line per command.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($command:ty),)*) => {
        /// Every command, as it travels over the sequencer's channel.
        pub enum Command {
            $($(#[$doc])* $variant(Request<$command>),)*
        }

        $(impl From<Request<$command>> for Command {
            fn from(request: Request<$command>) -> Self {
                Command::$variant(request)
            }
        })*

        impl Command {
            /// Runs the command through [`Sequencer::execute`].
            pub(super) async fn execute(self, sequencer: &mut Sequencer, now_ms: u64) {
                match self {
                    $(Command::$variant(request) => sequencer.execute(now_ms, request).await,)*
                }
            }
        }
    };
}

commands! {
    Submit(super::jobs::Submit),
    Lease(super::lease::Lease),
    Heartbeat(super::jobs::Heartbeat),
    Complete(super::jobs::Complete),
    /// A completion and the leases of what is ready for the same worker, in one record.
    CompleteThenLease(super::complete_lease::CompleteThenLease),
    /// Many completions in one record; each lease is fenced on its own.
    CompleteMany(super::jobs::CompleteMany),
    Fail(super::jobs::Fail),
    Cancel(super::jobs::Cancel),
    Retry(super::jobs::Retry),
    SetPaused(super::queues::SetPaused),
    Queues(super::queues::Queues),
    HoldForDigest(super::internal::HoldForDigest),
    /// A domain write, decided against the fact index by [`crate::domain::decide`].
    Domain(crate::domain::decide::DomainCommand),
    AppendInternal(super::internal::AppendInternal),
    /// A replica's: records of the primary's archive to apply.
    AdoptArchived(super::follow::AdoptArchived),
}

/// The answer of a command that never appends: no value of it exists, so
/// [`Decided::Append`] cannot be built for such a command.
pub enum NeverAppends<R> {
    #[allow(dead_code)] // reason: uninhabited on purpose; `Infallible` makes it so
    Never(
        std::convert::Infallible,
        std::marker::PhantomData<fn() -> R>,
    ),
}

impl<R: Send + 'static> AnswerWithLsn for NeverAppends<R> {
    type Reply = R;

    fn with_lsn(self, _lsn: Lsn) -> R {
        match self {
            NeverAppends::Never(never, _) => match never {},
        }
    }
}
