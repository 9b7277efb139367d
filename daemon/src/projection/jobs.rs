//! The job projection in redb: one record per job (payload, result, state), its history, and
//! idempotency keys. Stored with the applied LSN in the same transaction.

use agentd_schemas::api::{HistoryEntry, JobStateName, JobView, LeaseView};
use agentd_schemas::events::{AfterFailure, Event, LogRecord};
use agentd_schemas::projection::{
    decode_versioned, encode_versioned, JobRecord, StoredJobState, JOB_RECORD_VERSION,
};
use agentd_schemas::{JobId, Lsn};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

mod read;

#[cfg(test)]
pub use read::state_name;
pub use read::{list, read_history, read_job, read_job_in, view, JobFilter};

pub const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// (job, lsn, index of the event in its record) -> a msgpack [`HistoryEntry`].
pub const HISTORY: TableDefinition<(u64, u64, u32), &[u8]> = TableDefinition::new("job_history");
/// (queue, idempotency key) -> job number.
pub const IDEMPOTENCY: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("idempotency_keys");
/// Secondary indexes for filtered lists, so a page costs the jobs it examines in the wanted
/// queue or state, not a scan of every job: (queue, job), (state class, job) and
/// (queue, state class, job). The state class is [`StateClass::as_str`].
pub const JOBS_BY_QUEUE: TableDefinition<(&str, u64), ()> = TableDefinition::new("jobs_by_queue");
pub const JOBS_BY_STATE: TableDefinition<(&str, u64), ()> = TableDefinition::new("jobs_by_state");
pub const JOBS_BY_QUEUE_STATE: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("jobs_by_queue_state");

/// The stored state of a job without its data: what the list indexes key on. Queued and
/// scheduled jobs share `Waiting` (which one a job is depends on the time of the read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    Waiting,
    Leased,
    Completed,
    Dead,
    Cancelled,
}

impl StateClass {
    pub fn of(state: &StoredJobState) -> StateClass {
        match state {
            StoredJobState::Waiting { .. } => StateClass::Waiting,
            StoredJobState::Leased { .. } => StateClass::Leased,
            StoredJobState::Completed => StateClass::Completed,
            StoredJobState::Dead => StateClass::Dead,
            StoredJobState::Cancelled => StateClass::Cancelled,
        }
    }

    /// The class holding jobs a user asks for by state name.
    pub fn holding(state: JobStateName) -> StateClass {
        match state {
            JobStateName::Queued | JobStateName::Scheduled => StateClass::Waiting,
            JobStateName::Leased => StateClass::Leased,
            JobStateName::Completed => StateClass::Completed,
            JobStateName::Dead => StateClass::Dead,
            JobStateName::Cancelled => StateClass::Cancelled,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateClass::Waiting => "waiting",
            StateClass::Leased => "leased",
            StateClass::Completed => "completed",
            StateClass::Dead => "dead",
            StateClass::Cancelled => "cancelled",
        }
    }
}

/// Why the job projection could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("job projection storage: {0}")]
    Storage(String),
    #[error("job projection holds an unreadable record for {job_id}: {detail}")]
    Corrupt { job_id: JobId, detail: String },
}

pub fn storage(error: impl std::fmt::Display) -> JobsError {
    JobsError::Storage(error.to_string())
}

/// Creates the tables so read transactions never find them missing.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), JobsError> {
    txn.open_table(JOBS).map_err(storage)?;
    txn.open_table(HISTORY).map_err(storage)?;
    txn.open_table(IDEMPOTENCY).map_err(storage)?;
    txn.open_table(JOBS_BY_QUEUE).map_err(storage)?;
    txn.open_table(JOBS_BY_STATE).map_err(storage)?;
    txn.open_table(JOBS_BY_QUEUE_STATE).map_err(storage)?;
    Ok(())
}

/// Whether a record holds any job event (most records of a trajectory-heavy log do not).
pub fn has_job_events(record: &LogRecord) -> bool {
    record.events.iter().any(|event| job_of(event).is_some())
}

/// The job tables of one write transaction, opened once for all the records it applies
/// (opening three tables per record cost more than applying the record). Job records touched
/// in the transaction stay decoded in `touched` and are encoded and written once, by
/// [`JobTables::finish`] (a job is usually submitted, leased and completed within one batch).
pub struct JobTables<'txn> {
    jobs: redb::Table<'txn, u64, &'static [u8]>,
    history: redb::Table<'txn, (u64, u64, u32), &'static [u8]>,
    idempotency: redb::Table<'txn, (&'static str, &'static str), u64>,
    by_queue: redb::Table<'txn, (&'static str, u64), ()>,
    by_state: redb::Table<'txn, (&'static str, u64), ()>,
    by_queue_state: redb::Table<'txn, (&'static str, &'static str, u64), ()>,
    /// Each touched job and its state class as stored before this transaction (`None` for a
    /// job submitted in it), so the indexes are updated once per job, not per event.
    touched: std::collections::HashMap<u64, (JobRecord, Option<StateClass>)>,
}

impl<'txn> JobTables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, JobsError> {
        Ok(JobTables {
            jobs: txn.open_table(JOBS).map_err(storage)?,
            history: txn.open_table(HISTORY).map_err(storage)?,
            idempotency: txn.open_table(IDEMPOTENCY).map_err(storage)?,
            by_queue: txn.open_table(JOBS_BY_QUEUE).map_err(storage)?,
            by_state: txn.open_table(JOBS_BY_STATE).map_err(storage)?,
            by_queue_state: txn.open_table(JOBS_BY_QUEUE_STATE).map_err(storage)?,
            touched: std::collections::HashMap::new(),
        })
    }

    /// Applies the job events of one record.
    pub fn apply_record(&mut self, lsn: Lsn, record: &LogRecord) -> Result<(), JobsError> {
        for (index, event) in record.events.iter().enumerate() {
            let Some(job_id) = job_of(event) else {
                continue;
            };
            let mut entry = HistoryEntry {
                lsn,
                ts_ms: record.ts_ms,
                event: event.type_name().to_string(),
                lease_id: None,
                worker_id: None,
                attempt: None,
                expires_at_ms: None,
                error: None,
                retryable: None,
                run_at_ms: None,
                actor: record.actor.clone(),
            };
            let job = if let Event::JobSubmitted(submitted) = event {
                if let Some(key) = &submitted.idempotency_key {
                    self.idempotency
                        .insert((submitted.queue.as_str(), key.as_str()), job_id.0)
                        .map_err(storage)?;
                }
                entry.run_at_ms = Some(submitted.run_at_ms);
                let job = JobRecord {
                    job_id,
                    queue: submitted.queue.clone(),
                    kind: submitted.kind.clone(),
                    payload_json: submitted.payload_json.clone(),
                    priority: submitted.priority,
                    max_attempts: submitted.max_attempts,
                    lease_ttl_ms: submitted.lease_ttl_ms,
                    tags: submitted.tags.clone(),
                    task_id: submitted.task_id.clone(),
                    idempotency_key: submitted.idempotency_key.clone(),
                    submitted_lsn: lsn,
                    submitted_at_ms: record.ts_ms,
                    updated_at_ms: record.ts_ms,
                    attempt: 0,
                    state: StoredJobState::Waiting {
                        run_at_ms: submitted.run_at_ms,
                    },
                    result_json: None,
                    last_error: None,
                    submitted_by: record.actor.clone(),
                    log_tail: None,
                };
                &mut self
                    .touched
                    .entry(job_id.0)
                    .insert_entry((job, None))
                    .into_mut()
                    .0
            } else {
                self.job(job_id, lsn)?
            };
            job.updated_at_ms = record.ts_ms;
            update_job(job, &mut entry, event);
            let entry_bytes = rmp_serde::to_vec_named(&entry).map_err(storage)?;
            self.history
                .insert((job_id.0, lsn.0, index as u32), entry_bytes.as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }

    /// Writes the job records touched since [`JobTables::open`]; call before committing.
    pub fn finish(mut self) -> Result<(), JobsError> {
        for (job_id, (job, stored_class)) in self.touched.drain() {
            let class = StateClass::of(&job.state);
            if stored_class != Some(class) {
                let queue = job.queue.as_str();
                match stored_class {
                    Some(old) => {
                        self.by_state
                            .remove((old.as_str(), job_id))
                            .map_err(storage)?;
                        self.by_queue_state
                            .remove((queue, old.as_str(), job_id))
                            .map_err(storage)?;
                    }
                    None => {
                        self.by_queue.insert((queue, job_id), ()).map_err(storage)?;
                    }
                }
                self.by_state
                    .insert((class.as_str(), job_id), ())
                    .map_err(storage)?;
                self.by_queue_state
                    .insert((queue, class.as_str(), job_id), ())
                    .map_err(storage)?;
            }
            self.jobs
                .insert(
                    job_id,
                    encode_versioned(JOB_RECORD_VERSION, &job).as_slice(),
                )
                .map_err(storage)?;
        }
        Ok(())
    }

    /// The job as of the events applied so far in this transaction.
    fn job(&mut self, job_id: JobId, lsn: Lsn) -> Result<&mut JobRecord, JobsError> {
        use std::collections::hash_map::Entry;
        match self.touched.entry(job_id.0) {
            Entry::Occupied(entry) => Ok(&mut entry.into_mut().0),
            Entry::Vacant(vacant) => {
                let stored = self.jobs.get(job_id.0).map_err(storage)?;
                let Some(stored) = stored else {
                    // Events for a job are only decided after its submission is in the log.
                    return Err(JobsError::Corrupt {
                        job_id,
                        detail: format!("event at lsn {lsn} for a job never submitted"),
                    });
                };
                let job = decode_versioned::<JobRecord>(JOB_RECORD_VERSION, stored.value())
                    .map_err(|detail| JobsError::Corrupt { job_id, detail })?;
                let class = StateClass::of(&job.state);
                Ok(&mut vacant.insert((job, Some(class))).0)
            }
        }
    }
}

fn job_of(event: &Event) -> Option<JobId> {
    match event {
        Event::JobSubmitted(submitted) => Some(submitted.job_id),
        Event::JobLeased(leased) => Some(leased.job_id),
        Event::LeaseHeartbeat { job_id, .. }
        | Event::JobCompleted { job_id, .. }
        | Event::JobFailed { job_id, .. }
        | Event::LeaseExpired { job_id, .. }
        | Event::JobCancelled { job_id }
        | Event::JobRetried { job_id, .. } => Some(*job_id),
        _ => None,
    }
}

fn after_failure_state(after: &AfterFailure, entry: &mut HistoryEntry) -> StoredJobState {
    match after {
        AfterFailure::Retry { run_at_ms } => {
            entry.run_at_ms = Some(*run_at_ms);
            StoredJobState::Waiting {
                run_at_ms: *run_at_ms,
            }
        }
        AfterFailure::Dead => StoredJobState::Dead,
    }
}

fn update_job(job: &mut JobRecord, entry: &mut HistoryEntry, event: &Event) {
    match event {
        Event::JobLeased(leased) => {
            job.attempt = leased.attempt;
            job.state = StoredJobState::Leased {
                lease_id: leased.lease_id,
                worker_id: leased.worker_id.clone(),
                attempt: leased.attempt,
                expires_at_ms: leased.expires_at_ms,
            };
            entry.lease_id = Some(leased.lease_id);
            entry.worker_id = Some(leased.worker_id.clone());
            entry.attempt = Some(leased.attempt);
            entry.expires_at_ms = Some(leased.expires_at_ms);
        }
        Event::LeaseHeartbeat {
            lease_id,
            expires_at_ms,
            ..
        } => {
            if let StoredJobState::Leased {
                expires_at_ms: current,
                ..
            } = &mut job.state
            {
                *current = *expires_at_ms;
            }
            entry.lease_id = Some(*lease_id);
            entry.expires_at_ms = Some(*expires_at_ms);
        }
        Event::JobCompleted {
            lease_id,
            result_json,
            log_tail,
            ..
        } => {
            job.state = StoredJobState::Completed;
            job.result_json = result_json.clone();
            // The tail belongs to the attempt that sent it: a later completion or failure
            // without one clears it rather than showing an older attempt's output as its own.
            job.log_tail = log_tail.clone();
            entry.lease_id = Some(*lease_id);
        }
        Event::JobFailed {
            lease_id,
            error,
            retryable,
            after,
            log_tail,
            ..
        } => {
            job.state = after_failure_state(after, entry);
            job.last_error = Some(error.clone());
            job.log_tail = log_tail.clone();
            entry.lease_id = Some(*lease_id);
            entry.error = Some(error.clone());
            entry.retryable = Some(*retryable);
        }
        Event::LeaseExpired {
            lease_id, after, ..
        } => {
            let message = format!("lease {lease_id} expired without a heartbeat");
            job.state = after_failure_state(after, entry);
            job.last_error = Some(message.clone());
            entry.lease_id = Some(*lease_id);
            entry.error = Some(message);
        }
        Event::JobCancelled { .. } => job.state = StoredJobState::Cancelled,
        Event::JobRetried { run_at_ms, .. } => {
            job.attempt = 0;
            job.state = StoredJobState::Waiting {
                run_at_ms: *run_at_ms,
            };
            entry.run_at_ms = Some(*run_at_ms);
        }
        _ => {}
    }
}

/// sha256 over every table in key order.
pub fn digest(db: &redb::Database) -> Result<String, JobsError> {
    digest_in(&db.begin_read().map_err(storage)?)
}

/// [`digest`] inside a read transaction the caller holds (to read other tables at the same
/// point).
pub fn digest_in(txn: &redb::ReadTransaction) -> Result<String, JobsError> {
    let mut hasher = Sha256::new();
    let jobs = txn.open_table(JOBS).map_err(storage)?;
    for row in jobs.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        hasher.update(key.value().to_le_bytes());
        hasher.update(value.value());
    }
    let history = txn.open_table(HISTORY).map_err(storage)?;
    for row in history.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (job, lsn, index) = key.value();
        hasher.update(format!("{job}/{lsn}/{index}"));
        hasher.update(value.value());
    }
    let idempotency = txn.open_table(IDEMPOTENCY).map_err(storage)?;
    for row in idempotency.iter().map_err(storage)? {
        let (key, value) = row.map_err(storage)?;
        let (queue, idem_key) = key.value();
        hasher.update(format!("{queue}\0{idem_key}\0{}", value.value()));
    }
    // The list indexes are derived from the jobs table; hashing them catches an index that
    // drifted from it.
    for row in txn
        .open_table(JOBS_BY_QUEUE)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, _unit) = row.map_err(storage)?;
        let (queue, job) = key.value();
        hasher.update(format!("q\0{queue}\0{job}\0"));
    }
    for row in txn
        .open_table(JOBS_BY_STATE)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, _unit) = row.map_err(storage)?;
        let (class, job) = key.value();
        hasher.update(format!("s\0{class}\0{job}\0"));
    }
    let by_queue_state = txn.open_table(JOBS_BY_QUEUE_STATE).map_err(storage)?;
    for row in by_queue_state.iter().map_err(storage)? {
        let (key, _unit) = row.map_err(storage)?;
        let (queue, class, job) = key.value();
        hasher.update(format!("qs\0{queue}\0{class}\0{job}\0"));
    }
    Ok(hex::encode(hasher.finalize()))
}
