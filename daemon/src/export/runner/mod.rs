//! The export runner: one task that runs exports, schedule firings and dataset builds one at a
//! time (two exports never write the same directory at once, and encoding, which saturates a
//! core, never competes with itself). Requests arrive over a bounded channel; each decides its
//! LSN range from what is durable now, waits until the projections applied it, writes the files
//! on a blocking thread, then appends the event that records it and brings the ledger up to
//! date by reading the log (so the ledger only ever holds what the log holds).
//!
//! On a read replica started with `--primary`, the same runner writes and copies the files, and
//! the primary records them (`record.rs`): a replica appends nothing to its own log.

mod record;
mod service;

pub use service::{
    BuildRun, Caller, ExportRun, ExportService, LedgerState, RunError, RunnerParts, ScheduledExport,
};

use super::build::{self, dataset_key};
use super::copies::{CopyOf, PendingCopies};
use super::remote_record::RunRecord;
use super::{export_id, ExportError, ExportOutcome, ExportSettings};
use agentd_schemas::events::{
    DatasetBuildSpec, DatasetBuilt, Event, ExportFormat, ExportKind, ExportRecorded, ScheduleFired,
    ScheduleSlot,
};
use agentd_schemas::Lsn;
use service::Job;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a run waits for the projections to apply its range before it gives up.
const APPLY_WAIT: Duration = Duration::from_secs(60);

struct Runner {
    parts: RunnerParts,
    ledger: Arc<Mutex<LedgerState>>,
    settings: Arc<ExportSettings>,
    /// Copies to object storage that failed, retried between jobs (never held across an await).
    copies: Mutex<PendingCopies>,
}

impl Runner {
    fn new(
        parts: RunnerParts,
        ledger: Arc<Mutex<LedgerState>>,
        settings: Arc<ExportSettings>,
    ) -> Self {
        Runner {
            parts,
            ledger,
            settings,
            copies: Mutex::new(PendingCopies::default()),
        }
    }

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

    async fn run_job(&self, job: Job) {
        match job {
            Job::Export {
                kind,
                format,
                full,
                caller,
                reply,
            } => {
                let outcome = self.export(kind, format, full, caller).await;
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
            Job::Build {
                spec,
                caller,
                reply,
            } => {
                let outcome = self.build(spec, caller).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
            Job::Record {
                record,
                actor,
                reply,
            } => {
                let outcome = self.record_remote(record, actor).await;
                let _ignored_if_caller_left = reply.send(outcome);
            }
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything durable now, once the projections applied it, less trailing export records.
    async fn settled_lsn(&self) -> Result<Lsn, RunError> {
        self.domain_loaded().await;
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
        caller: Caller,
    ) -> Result<ExportRun, RunError> {
        let to = self.settled_lsn().await?;
        let watermark = self.ledger().ledger.watermark(kind, format);
        let after = if full { Lsn::ZERO } else { watermark.min(to) };
        if !full && after == to {
            return Ok(ExportRun {
                created: false,
                export_id: None,
                watermark,
                recorded_elsewhere: None,
            });
        }
        self.write_and_record(kind, format, (after, to), None, caller)
            .await
    }

    async fn fire(&self, schedule: ScheduledExport, slot_ms: u64) -> Result<ExportRun, RunError> {
        let to = self.settled_lsn().await?;
        let mut after = if schedule.full {
            Lsn::ZERO
        } else {
            self.ledger()
                .ledger
                .watermark(schedule.kind, schedule.format)
                .min(to)
        };
        if !schedule.full && after == to {
            // Nothing new since the export that set the watermark: the firing names that export
            // again (docs/exports.md, "Schedules") instead of writing an empty one for (to, to].
            if let Some(previous) = self.export_ending_at(schedule.kind, schedule.format, to) {
                after = previous;
            }
        }
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

    /// Where the newest recorded export of `kind` and `format` that ends at `to` starts.
    fn export_ending_at(&self, kind: ExportKind, format: ExportFormat, to: Lsn) -> Option<Lsn> {
        let state = self.ledger();
        let previous = state.ledger.exports().iter().rev().find(|recorded| {
            let event = &recorded.event;
            event.kind == kind && event.format == format && event.to_lsn == to
        })?;
        Some(previous.event.after_lsn)
    }

    /// Exports read the domain projections: after a restart, they wait for them to load
    /// (exports run in the background; an HTTP caller is answered `running` meanwhile).
    async fn domain_loaded(&self) {
        while !self.parts.domain.wait_loaded(APPLY_WAIT).await {
            tracing::info!("an export waits for the domain projections to load");
        }
    }

    async fn run_fired(&self, fired: ScheduleFired) -> Result<ExportRun, RunError> {
        self.domain_loaded().await;
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
            (fired.after_lsn, fired.to_lsn),
            Some(slot),
            Caller::default(),
        )
        .await
    }

    async fn write_and_record(
        &self,
        kind: ExportKind,
        format: ExportFormat,
        (after, to): (Lsn, Lsn),
        schedule: Option<ScheduleSlot>,
        caller: Caller,
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
                recorded_elsewhere: None,
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
        metrics::counter!("agentd_export_rows_total", "kind" => kind.as_str())
            .increment(outcome.manifest.rows);
        metrics::histogram!("agentd_export_duration_seconds", "kind" => kind.as_str())
            .record(started.elapsed().as_secs_f64());
        let copy = CopyOf {
            dir: outcome.dir.clone(),
            files: outcome.manifest.files.clone(),
        };
        let rows = outcome.manifest.rows;
        let record = RunRecord::Export(ExportRecorded {
            export_id: id.clone(),
            kind,
            format,
            after_lsn: after,
            to_lsn: to,
            dir: outcome.dir,
            rows,
            files: outcome.manifest.files,
            manifest_sha256: outcome.manifest_sha256,
            schema_version: kind.schema_version(),
            schedule,
            copied_to: None,
        });
        let recorded = self.record_run(caller, record, copy).await?;
        tracing::info!(export_id = %id, rows, "export recorded");
        let watermark = self.ledger().ledger.watermark(kind, format);
        Ok(ExportRun {
            created: recorded.created,
            export_id: Some(id),
            // A replica's ledger has not seen its own export yet: the primary's watermark.
            watermark: watermark.max(recorded.elsewhere.as_ref().map_or(Lsn::ZERO, |_| to)),
            recorded_elsewhere: recorded.elsewhere.and_then(record::Elsewhere::export),
        })
    }

    async fn build(&self, spec: DatasetBuildSpec, caller: Caller) -> Result<BuildRun, RunError> {
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
                recorded_elsewhere: None,
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
        let record = RunRecord::Build(DatasetBuilt {
            dataset_key: key,
            build_id: id.clone(),
            spec,
            to_lsn: to,
            dir: outcome.dir,
            rows: outcome.manifest.rows,
            files: outcome.manifest.files,
            schema_version: outcome.manifest.schema_version,
            manifest_sha256: outcome.manifest_sha256,
            copied_to: None,
        });
        let recorded = self.record_run(caller, record, copy).await?;
        Ok(BuildRun {
            created: recorded.created,
            build_id: id,
            recorded_elsewhere: recorded.elsewhere.and_then(record::Elsewhere::build),
        })
    }
}
