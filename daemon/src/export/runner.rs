//! The export runner: one task that runs exports, schedule firings and dataset builds one at a
//! time (two exports never write the same directory at once, and encoding, which saturates a
//! core, never competes with itself). Requests arrive over a bounded channel; each decides its
//! LSN range from what is durable now, waits until the projections applied it, writes the files
//! on a blocking thread, then appends the event that records it and brings the ledger up to
//! date by reading the log (so the ledger only ever holds what the log holds).

use super::build::{self, dataset_key};
use super::copies::{try_copy, CopyOf, CopyResult, PendingCopies};
use super::ledger::ExportLedger;
use super::{export_id, ExportError, ExportOutcome, ExportSettings};
use crate::log::LogWriter;
use crate::projection::domain::DomainProjections;
use crate::projection::AppliedWatch;
use crate::replay::for_each_record;
use crate::sequencer::{AppendInternal, SequencerError, SequencerHandle};
use agentd_schemas::events::{
    DatasetBuildSpec, DatasetBuilt, Event, ExportCopied, ExportFormat, ExportKind, ExportRecorded,
    ScheduleFired, ScheduleSlot,
};
use agentd_schemas::Lsn;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the runner; more are refused as busy.
pub const RUNNER_QUEUE_CAPACITY: usize = 64;
/// How long a run waits for the projections to apply its range before it gives up.
const APPLY_WAIT: Duration = Duration::from_secs(60);

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
}

/// What a build request produced.
#[derive(Debug, Clone)]
pub struct BuildRun {
    pub created: bool,
    pub build_id: String,
}

/// A schedule as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledExport {
    pub name: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub full: bool,
}

type Reply<T> = oneshot::Sender<Result<T, RunError>>;

enum Job {
    Export {
        kind: ExportKind,
        format: ExportFormat,
        full: bool,
        actor: Option<String>,
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
        actor: Option<String>,
        reply: Reply<BuildRun>,
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
        let runner = Runner {
            parts,
            ledger: ledger.clone(),
            settings: settings.clone(),
            copies: Mutex::new(PendingCopies::default()),
        };
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
        actor: Option<String>,
    ) -> Result<ExportRun, RunError> {
        super::check_format(kind, format)?;
        self.call(|reply| Job::Export {
            kind,
            format,
            full,
            actor,
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
        actor: Option<String>,
    ) -> Result<BuildRun, RunError> {
        self.call(|reply| Job::Build { spec, actor, reply }).await
    }
}

struct Runner {
    parts: RunnerParts,
    ledger: Arc<Mutex<LedgerState>>,
    settings: Arc<ExportSettings>,
    /// Copies to object storage that failed, retried between jobs (never held across an await).
    copies: Mutex<PendingCopies>,
}

impl Runner {
    /// Runs jobs as they come and, between them, the copies to object storage that are due.
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let due = self.pending_copies().next_due();
            let retry_copies = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => self.run_job(job).await,
                    None => return,
                },
                () = retry_copies => self.retry_due_copies().await,
            }
        }
    }

    fn pending_copies(&self) -> std::sync::MutexGuard<'_, PendingCopies> {
        self.copies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run_job(&self, job: Job) {
        match job {
            Job::Export {
                kind,
                format,
                full,
                actor,
                reply,
            } => {
                let outcome = self.export(kind, format, full, actor).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
            Job::Fire {
                schedule,
                slot_ms,
                reply,
            } => {
                let outcome = self.fire(schedule, slot_ms).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
            Job::Resume { fired, reply } => {
                let outcome = self.run_fired(fired).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
            Job::Build { spec, actor, reply } => {
                let outcome = self.build(spec, actor).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
        }
    }

    /// Tries the copies that are due; one that fails again waits longer, one that succeeds is
    /// recorded (`export_copied`), so the views give its URL from then on.
    async fn retry_due_copies(&self) {
        let due = self.pending_copies().take_due(tokio::time::Instant::now());
        for (id, copy, failures) in due {
            match try_copy(&self.settings, &copy).await {
                CopyResult::Copied(copied_to) => {
                    let event = Event::ExportCopied(ExportCopied {
                        export_id: id.clone(),
                        copied_to,
                    });
                    match self.append(None, vec![event]).await {
                        Ok(_) => tracing::info!(id = %id, "copied to object storage"),
                        Err(error) => {
                            tracing::warn!(id = %id, "cannot record the copy: {error}");
                            self.pending_copies().add(id, copy, failures + 1);
                        }
                    }
                }
                CopyResult::Failed => self.pending_copies().add(id, copy, failures + 1),
                CopyResult::NoStore => {}
            }
        }
    }

    /// Queues a copy of a recorded export or build that has none (its copy failed and was given
    /// up, or failed before a restart): asking for it again is how an operator retries.
    fn queue_missing_copy(&self, id: &str, copy: impl FnOnce() -> Option<CopyOf>) {
        if self.settings.storage.is_none() || self.pending_copies().contains(id) {
            return;
        }
        if let Some(copy) = copy() {
            self.pending_copies().add(id.to_owned(), copy, 0);
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything durable now, once the projections applied it, less trailing export records.
    async fn settled_lsn(&self) -> Result<Lsn, RunError> {
        let durable = self.parts.writer.durable_lsn();
        if !self.parts.applied.wait_for(durable, APPLY_WAIT).await {
            return Err(RunError::Lagging(durable));
        }
        Ok(self.ledger().ledger.last_content_lsn(durable))
    }

    async fn export(
        &self,
        kind: ExportKind,
        format: ExportFormat,
        full: bool,
        actor: Option<String>,
    ) -> Result<ExportRun, RunError> {
        let to = self.settled_lsn().await?;
        let watermark = self.ledger().ledger.watermark(kind, format);
        let after = if full { Lsn::ZERO } else { watermark.min(to) };
        if !full && after == to {
            return Ok(ExportRun {
                created: false,
                export_id: None,
                watermark,
            });
        }
        self.write_and_record(kind, format, after, to, None, actor)
            .await
    }

    async fn fire(&self, schedule: ScheduledExport, slot_ms: u64) -> Result<ExportRun, RunError> {
        let to = self.settled_lsn().await?;
        let after = if schedule.full {
            Lsn::ZERO
        } else {
            self.ledger()
                .ledger
                .watermark(schedule.kind, schedule.format)
                .min(to)
        };
        let fired = ScheduleFired {
            schedule: schedule.name,
            slot_ms,
            kind: schedule.kind,
            format: schedule.format,
            after_lsn: after,
            to_lsn: to,
            export_id: export_id(schedule.kind, schedule.format, after, to),
        };
        self.append(None, vec![Event::ScheduleFired(fired.clone())])
            .await?;
        self.run_fired(fired).await
    }

    async fn run_fired(&self, fired: ScheduleFired) -> Result<ExportRun, RunError> {
        if !self.parts.applied.wait_for(fired.to_lsn, APPLY_WAIT).await {
            return Err(RunError::Lagging(fired.to_lsn));
        }
        let slot = ScheduleSlot {
            schedule: fired.schedule.clone(),
            slot_ms: fired.slot_ms,
        };
        self.write_and_record(
            fired.kind,
            fired.format,
            fired.after_lsn,
            fired.to_lsn,
            Some(slot),
            None,
        )
        .await
    }

    async fn write_and_record(
        &self,
        kind: ExportKind,
        format: ExportFormat,
        after: Lsn,
        to: Lsn,
        schedule: Option<ScheduleSlot>,
        actor: Option<String>,
    ) -> Result<ExportRun, RunError> {
        let id = export_id(kind, format, after, to);
        let recorded = self.ledger().ledger.export(&id).cloned();
        if let Some(recorded) = recorded {
            self.queue_missing_copy(&id, || {
                recorded.copied_to.is_none().then(|| CopyOf {
                    dir: recorded.event.dir.clone(),
                    files: recorded.event.files.clone(),
                })
            });
            return Ok(ExportRun {
                created: false,
                export_id: Some(id),
                watermark: self.ledger().ledger.watermark(kind, format),
            });
        }
        let domain = self.parts.domain.clone();
        let settings = self.settings.clone();
        let started = std::time::Instant::now();
        let outcome: ExportOutcome = tokio::task::spawn_blocking(move || {
            super::write_export(&domain, &settings, kind, format, after, to)
        })
        .await
        .map_err(|error| {
            RunError::Export(ExportError::Invalid(format!("export task: {error}")))
        })??;
        // The files are complete and fsynced: copy them (manifest last) before the record, so a
        // copy that works is in the same record; one that fails is retried after it.
        let copy = CopyOf {
            dir: outcome.dir.clone(),
            files: outcome.manifest.files.clone(),
        };
        let copied = try_copy(&self.settings, &copy).await;
        metrics::counter!("agentd_export_rows_total", "kind" => kind.as_str())
            .increment(outcome.manifest.rows);
        metrics::histogram!("agentd_export_duration_seconds", "kind" => kind.as_str())
            .record(started.elapsed().as_secs_f64());
        let event = ExportRecorded {
            export_id: id.clone(),
            kind,
            format,
            after_lsn: after,
            to_lsn: to,
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            files: outcome.manifest.files,
            manifest_sha256: outcome.manifest_sha256,
            schema_version: kind.schema_version(),
            schedule,
            copied_to: copied.url(),
        };
        self.append(actor, vec![Event::ExportRecorded(event)])
            .await?;
        if copied == CopyResult::Failed {
            self.pending_copies().add(id.clone(), copy, 1);
        }
        tracing::info!(export_id = %id, rows = outcome.manifest.rows, "export recorded");
        Ok(ExportRun {
            created: true,
            export_id: Some(id),
            watermark: self.ledger().ledger.watermark(kind, format),
        })
    }

    async fn build(
        &self,
        spec: DatasetBuildSpec,
        actor: Option<String>,
    ) -> Result<BuildRun, RunError> {
        let to = self.settled_lsn().await?;
        let id = build::build_id(&spec, to);
        let recorded = self.ledger().ledger.build(&id).cloned();
        if let Some(recorded) = recorded {
            self.queue_missing_copy(&id, || {
                recorded.copied_to.is_none().then(|| CopyOf {
                    dir: recorded.event.dir.clone(),
                    files: recorded.event.files.clone(),
                })
            });
            return Ok(BuildRun {
                created: false,
                build_id: id,
            });
        }
        let domain = self.parts.domain.clone();
        let settings = self.settings.clone();
        let for_build = spec.clone();
        let key = dataset_key(&spec);
        let parent = self.ledger().ledger.parent_build_id(&key, to);
        let outcome = tokio::task::spawn_blocking(move || {
            build::write_build(&domain, &settings, &for_build, to, parent)
        })
        .await
        .map_err(|error| {
            RunError::Export(ExportError::Invalid(format!("build task: {error}")))
        })??;
        let copy = CopyOf {
            dir: outcome.dir.clone(),
            files: outcome.manifest.files.clone(),
        };
        let copied = try_copy(&self.settings, &copy).await;
        let event = DatasetBuilt {
            dataset_key: dataset_key(&spec),
            build_id: id.clone(),
            spec,
            to_lsn: to,
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            files: outcome.manifest.files,
            schema_version: outcome.manifest.schema_version,
            manifest_sha256: outcome.manifest_sha256,
            copied_to: copied.url(),
        };
        self.append(actor, vec![Event::DatasetBuilt(event)]).await?;
        if copied == CopyResult::Failed {
            self.pending_copies().add(id.clone(), copy, 1);
        }
        Ok(BuildRun {
            created: true,
            build_id: id,
        })
    }

    /// Appends events as one record, then reads that record back into the ledger (with the
    /// time the sequencer gave it). Only this runner records exports, schedule firings and
    /// builds, one job at a time, so no record between the ledger's last one and this one can
    /// hold any: reading just this record costs the same however much the log grew since.
    async fn append(&self, actor: Option<String>, events: Vec<Event>) -> Result<Lsn, RunError> {
        let lsn = self
            .parts
            .sequencer
            .call(AppendInternal { events }, actor)
            .await?;
        let after = Lsn(lsn.0.saturating_sub(1)).max(self.ledger().applied);
        let log = self.parts.log.clone();
        let records = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            for_each_record(&log, after, lsn, |lsn, record| {
                let exports = record.events.iter().any(|event| {
                    matches!(
                        event,
                        Event::ExportRecorded(_)
                            | Event::ScheduleFired(_)
                            | Event::DatasetBuilt(_)
                            | Event::ExportCopied(_)
                    )
                });
                if exports {
                    records.push((lsn, record));
                }
                Ok(())
            })
            .map(|()| records)
        })
        .await;
        // The record is durable: reading it back can fail only on a broken log or a panic, and
        // going on would leave the ledger without it (later appends read only their own record).
        let records = match records {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => crate::fatal(&format!(
                "cannot read back the export record at lsn {lsn}: {error}"
            )),
            Err(error) => crate::fatal(&format!(
                "reading back the export record at lsn {lsn} failed: {error}"
            )),
        };
        let mut state = self.ledger();
        for (lsn, record) in &records {
            if *lsn > state.applied {
                state.ledger.apply(*lsn, record);
            }
        }
        state.applied = state.applied.max(lsn);
        Ok(lsn)
    }
}
