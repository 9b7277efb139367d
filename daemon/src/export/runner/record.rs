//! How the runner records what it ran: on a primary, one appended record (`append`); on a read
//! replica, a request to the primary (`PrimaryLink`), which checks the run against its own log
//! and the store (`remote_record`) before it appends the same record. Also the copies to object
//! storage that failed and are retried between jobs.

use super::service::{Caller, RunError};
use super::Runner;
use crate::export::copies::{try_copy, CopyOf, CopyResult, PendingCopies};
use crate::export::ledger::{RecordedBuild, RecordedExport};
use crate::export::primary_link::PrimaryError;
use crate::export::remote_record::{
    check_against_log, check_in_store, RemoteRecordError, RunRecord,
};
use crate::export::upload::url_of;
use crate::replay::for_each_record;
use crate::sequencer::AppendInternal;
use agentd_schemas::events::{Event, ExportCopied};
use agentd_schemas::export_api::RecordRunResponse;
use agentd_schemas::Lsn;
use std::sync::PoisonError;

/// How a finished run was recorded.
pub(super) struct Recorded {
    /// False when the log already held it (the primary's answer for a replica's run).
    pub(super) created: bool,
    /// On a replica: the record as the primary appended it.
    pub(super) elsewhere: Option<Elsewhere>,
}

/// A replica's run as its primary recorded it.
pub(super) struct Elsewhere {
    record: RunRecord,
    lsn: Lsn,
}

impl Elsewhere {
    pub(super) fn export(self) -> Option<RecordedExport> {
        let RunRecord::Export(event) = self.record else {
            return None;
        };
        Some(RecordedExport {
            copied_to: event.copied_to.clone(),
            event,
            lsn: self.lsn,
            ts_ms: crate::clock::now_ms(),
        })
    }

    pub(super) fn build(self) -> Option<RecordedBuild> {
        let RunRecord::Build(event) = self.record else {
            return None;
        };
        Some(RecordedBuild {
            copied_to: event.copied_to.clone(),
            event,
            lsn: self.lsn,
        })
    }
}

impl Runner {
    /// Copies a run's files to the store (manifest last), then records it. A primary records a
    /// copy that failed without `copied_to` and retries the copy; a replica's run is recorded
    /// only once copied, since the primary and the trainers reach the files only there.
    pub(super) async fn record_run(
        &self,
        caller: Caller,
        mut record: RunRecord,
        copy: CopyOf,
    ) -> Result<Recorded, RunError> {
        let copied = try_copy(&self.settings, &copy).await;
        record.set_copied_to(copied.url());
        if let Some(primary) = &self.parts.primary {
            if !matches!(copied, CopyResult::Copied(_)) {
                return Err(PrimaryError::NotCopied(copy.dir).into());
            }
            let request = record.clone().into_request();
            let answer = primary
                .record(&request, caller.authorization.as_deref())
                .await?;
            return Ok(Recorded {
                created: answer.created,
                elsewhere: Some(Elsewhere {
                    record,
                    lsn: answer.recorded_lsn,
                }),
            });
        }
        let id = record.id().to_owned();
        self.append(caller.actor, vec![record.into_event()]).await?;
        if copied == CopyResult::Failed {
            self.pending_copies().add(id, copy, 1);
        }
        Ok(Recorded {
            created: true,
            elsewhere: None,
        })
    }

    /// A primary's answer to `POST /v1/exports/records`: the replica's run is appended once
    /// it passed every check of `remote_record`; one the log holds already is not appended again.
    pub(super) async fn record_remote(
        &self,
        mut record: RunRecord,
        actor: Option<String>,
    ) -> Result<RecordRunResponse, RunError> {
        let refused = |error: RemoteRecordError| RunError::Refused(error);
        let Some(store) = &self.settings.storage else {
            return Err(refused(RemoteRecordError::Invalid(
                "this daemon has no [storage] url: only a primary archiving to the replica's storage URL records a replica's runs".to_owned(),
            )));
        };
        let parent = {
            let state = self.ledger();
            if let Some(lsn) = record.recorded_lsn(&state.ledger) {
                return Ok(RecordRunResponse {
                    created: false,
                    recorded_lsn: lsn,
                });
            }
            check_against_log(&record, &state.ledger, self.parts.writer.durable_lsn())
                .map_err(refused)?;
            match &record {
                RunRecord::Build(build) => state
                    .ledger
                    .parent_build_id(&build.dataset_key, build.to_lsn),
                RunRecord::Export(_) => None,
            }
        };
        check_in_store(&record, store, parent)
            .await
            .map_err(refused)?;
        record.set_copied_to(Some(url_of(&store.url, record.dir())));
        tracing::info!(id = %record.id(), "recording a read replica's run");
        let recorded_lsn = self.append(actor, vec![record.into_event()]).await?;
        Ok(RecordRunResponse {
            created: true,
            recorded_lsn,
        })
    }

    pub(super) fn pending_copies(&self) -> std::sync::MutexGuard<'_, PendingCopies> {
        self.copies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tries the copies that are due; one that fails again waits longer, one that succeeds is
    /// recorded (`export_copied`), so the views give its URL from then on.
    pub(super) async fn retry_due_copies(&self) {
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
    /// A replica copies only what it ran (the primary's missing copies are the primary's).
    pub(super) fn queue_missing_copy(&self, id: &str, copy: impl FnOnce() -> Option<CopyOf>) {
        let replica = self.parts.primary.is_some();
        if replica || self.settings.storage.is_none() || self.pending_copies().contains(id) {
            return;
        }
        if let Some(copy) = copy() {
            self.pending_copies().add(id.to_owned(), copy, 0);
        }
    }

    /// Appends events as one record, then reads that record back into the ledger (with the
    /// time the sequencer gave it). Only this runner records exports, schedule firings and
    /// builds, one job at a time, so no record between the ledger's last one and this one can
    /// hold any: reading just this record costs the same however much the log grew since.
    pub(super) async fn append(
        &self,
        actor: Option<String>,
        events: Vec<Event>,
    ) -> Result<Lsn, RunError> {
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
                if crate::export::ledger::is_export_record(&record) {
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
