//! The runner's handle ([`ExportService`]), what it is asked ([`Job`]) and what it answers.

use super::super::ledger::{ExportLedger, RecordedBuild, RecordedExport};
use super::super::primary_link::{PrimaryError, PrimaryLink};
use super::super::remote_record::{RemoteRecordError, RunRecord};
use super::super::{ExportError, ExportSettings};
use super::Runner;
use crate::log::LogWriter;
use crate::projection::domain::DomainProjections;
use crate::projection::AppliedWatch;
use crate::sequencer::{SequencerError, SequencerHandle};
use agentd_schemas::events::{DatasetBuildSpec, ExportFormat, ExportKind, ScheduleFired};
use agentd_schemas::export_api::RecordRunResponse;
use agentd_schemas::Lsn;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the runner; more are refused as busy.
pub const RUNNER_QUEUE_CAPACITY: usize = 64;

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error("export failed: {0}")]
    Export(ExportError),
    #[error(transparent)]
    Sequencer(#[from] SequencerError),
    #[error("the projections did not reach lsn {0} in time")]
    Lagging(Lsn),
    #[error("the export runner has {RUNNER_QUEUE_CAPACITY} requests waiting; retry later")]
    Busy,
    #[error("the export runner stopped")]
    Stopped,
    /// The primary refused to record a replica's export or build (checks in `remote_record`).
    #[error("not recorded: {0}")]
    Refused(RemoteRecordError),
    /// A replica could not have its run recorded by the primary.
    #[error(transparent)]
    Primary(#[from] PrimaryError),
}

impl From<ExportError> for RunError {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::Invalid(message) => RunError::Invalid(message),
            error => RunError::Export(error),
        }
    }
}

/// What an export request produced.
#[derive(Debug, Clone)]
pub struct ExportRun {
    /// False when the export was already recorded or there was nothing to export.
    pub created: bool,
    /// The recorded export's id (absent when nothing new was there to export).
    pub export_id: Option<String>,
    pub watermark: Lsn,
    /// On a read replica: the export as the primary recorded it, which the replica's ledger
    /// lists only once it followed the archive that far.
    pub recorded_elsewhere: Option<RecordedExport>,
}

/// What a build request produced.
#[derive(Debug, Clone)]
pub struct BuildRun {
    pub created: bool,
    pub build_id: String,
    /// As [`ExportRun::recorded_elsewhere`].
    pub recorded_elsewhere: Option<RecordedBuild>,
}

/// Who asked for a run: the actor its record names and, on a read replica, the caller's
/// `Authorization` header, which the replica passes on to the primary when it asks it to record
/// the run (so the primary checks the caller's own token and its log names the caller).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub actor: Option<String>,
    pub authorization: Option<String>,
}

/// A schedule as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledExport {
    pub name: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub full: bool,
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, RunError>>;

pub(super) enum Job {
    Export {
        kind: ExportKind,
        format: ExportFormat,
        full: bool,
        caller: Caller,
        reply: Reply<ExportRun>,
    },
    Fire {
        schedule: ScheduledExport,
        slot_ms: u64,
        reply: Reply<ExportRun>,
    },
    Resume {
        fired: ScheduleFired,
        reply: Reply<ExportRun>,
    },
    Build {
        spec: DatasetBuildSpec,
        caller: Caller,
        reply: Reply<BuildRun>,
    },
    /// A read replica's run, to check and record (on a primary).
    Record {
        record: RunRecord,
        actor: Option<String>,
        reply: Reply<RecordRunResponse>,
    },
}

/// The ledger with the last LSN it read.
#[derive(Debug, Default)]
pub struct LedgerState {
    pub ledger: ExportLedger,
    pub applied: Lsn,
}

/// The handle HTTP handlers and the scheduler use. Cheap to clone.
#[derive(Clone)]
pub struct ExportService {
    tx: mpsc::Sender<Job>,
    ledger: Arc<Mutex<LedgerState>>,
    pub settings: Arc<ExportSettings>,
}

/// What the runner needs from the rest of the daemon.
pub struct RunnerParts {
    pub sequencer: SequencerHandle,
    pub writer: LogWriter,
    pub applied: AppliedWatch,
    pub domain: Arc<DomainProjections>,
    pub log: crate::log::LogReader,
    /// On a read replica started with `--primary`: where its runs are recorded (it appends
    /// nothing itself). None on a primary.
    pub primary: Option<Arc<PrimaryLink>>,
}

impl ExportService {
    /// Starts the runner over a ledger replayed up to `ledger.applied`.
    pub fn spawn(
        settings: ExportSettings,
        ledger: LedgerState,
        parts: RunnerParts,
    ) -> (ExportService, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(RUNNER_QUEUE_CAPACITY);
        let ledger = Arc::new(Mutex::new(ledger));
        let settings = Arc::new(settings);
        let runner = Runner::new(parts, ledger.clone(), settings.clone());
        let task = tokio::spawn(runner.run(rx));
        (
            ExportService {
                tx,
                ledger,
                settings,
            },
            task,
        )
    }

    /// A read replica's: applies records of the primary's log, durable in the local copy, to
    /// the ledger, so the exports and builds the primary recorded are listed. Records already
    /// applied are skipped.
    pub(crate) fn follow(&self, records: &[(Lsn, agentd_schemas::events::LogRecord)]) {
        let mut state = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        for (lsn, record) in records {
            if *lsn > state.applied {
                state.ledger.apply(*lsn, record);
                state.applied = *lsn;
            }
        }
    }

    /// Reads the ledger.
    pub fn with_ledger<T>(&self, read: impl FnOnce(&ExportLedger) -> T) -> T {
        let state = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        read(&state.ledger)
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, RunError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(job(reply)).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => RunError::Busy,
            mpsc::error::TrySendError::Closed(_) => RunError::Stopped,
        })?;
        rx.await.map_err(|_| RunError::Stopped)?
    }

    /// Exports `kind` from the watermark (or everything, with `full`) up to what is durable now.
    pub async fn export(
        &self,
        kind: ExportKind,
        format: ExportFormat,
        full: bool,
        caller: Caller,
    ) -> Result<ExportRun, RunError> {
        super::super::check_format(kind, format)?;
        self.call(|reply| Job::Export {
            kind,
            format,
            full,
            caller,
            reply,
        })
        .await
    }

    /// Fires a schedule for `slot_ms` (the scheduler's call).
    pub async fn fire(
        &self,
        schedule: ScheduledExport,
        slot_ms: u64,
    ) -> Result<ExportRun, RunError> {
        self.call(|reply| Job::Fire {
            schedule,
            slot_ms,
            reply,
        })
        .await
    }

    /// Runs the export of a firing that was logged but never recorded (a crash in between).
    pub async fn resume(&self, fired: ScheduleFired) -> Result<ExportRun, RunError> {
        self.call(|reply| Job::Resume { fired, reply }).await
    }

    /// Builds a dataset over what is durable now.
    pub async fn build(
        &self,
        spec: DatasetBuildSpec,
        caller: Caller,
    ) -> Result<BuildRun, RunError> {
        self.call(|reply| Job::Build {
            spec,
            caller,
            reply,
        })
        .await
    }

    /// Checks and records a read replica's export or build (`POST /v1/exports/records`).
    pub async fn record(
        &self,
        record: RunRecord,
        actor: Option<String>,
    ) -> Result<RecordRunResponse, RunError> {
        self.call(|reply| Job::Record {
            record,
            actor,
            reply,
        })
        .await
    }
}
