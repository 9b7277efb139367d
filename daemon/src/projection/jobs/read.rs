//! Reading the job projection: one job, its history, filtered pages over the secondary
//! indexes, and the API view of a stored job as of a time.

use super::*;

/// The state name of a stored job at time `now_ms`.
pub fn state_name(state: &StoredJobState, now_ms: u64) -> JobStateName {
    match state {
        StoredJobState::Waiting { run_at_ms } if *run_at_ms > now_ms => JobStateName::Scheduled,
        StoredJobState::Waiting { .. } => JobStateName::Queued,
        StoredJobState::Leased { .. } => JobStateName::Leased,
        StoredJobState::Completed => JobStateName::Completed,
        StoredJobState::Dead => JobStateName::Dead,
        StoredJobState::Cancelled => JobStateName::Cancelled,
    }
}

/// Turns a stored record into the API view.
pub fn view(job: JobRecord, history: Option<Vec<HistoryEntry>>, now_ms: u64) -> JobView {
    let parse = |text: &str| {
        serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()))
    };
    let (lease, run_at_ms) = match &job.state {
        StoredJobState::Leased {
            lease_id,
            worker_id,
            attempt,
            expires_at_ms,
        } => (
            Some(LeaseView {
                lease_id: *lease_id,
                worker_id: worker_id.clone(),
                attempt: *attempt,
                expires_at_ms: *expires_at_ms,
            }),
            None,
        ),
        StoredJobState::Waiting { run_at_ms } => (None, Some(*run_at_ms)),
        StoredJobState::Completed | StoredJobState::Dead | StoredJobState::Cancelled => {
            (None, None)
        }
    };
    JobView {
        job_id: job.job_id,
        queue: job.queue,
        kind: job.kind,
        state: state_name(&job.state, now_ms),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        priority: job.priority,
        payload: parse(&job.payload_json),
        result: job.result_json.as_deref().map(parse),
        last_error: job.last_error,
        tags: job.tags,
        task_id: job.task_id,
        idempotency_key: job.idempotency_key,
        lease_ttl_ms: job.lease_ttl_ms,
        run_at_ms,
        submitted_at_ms: job.submitted_at_ms,
        updated_at_ms: job.updated_at_ms,
        lease,
        log_tail: job.log_tail,
        history,
    }
}

/// Reads one job record.
pub fn read_job(db: &redb::Database, job_id: JobId) -> Result<Option<JobRecord>, JobsError> {
    read_job_in(&db.begin_read().map_err(storage)?, job_id)
}

/// [`read_job`] inside a read transaction, so several reads see one consistent state.
pub fn read_job_in(
    txn: &redb::ReadTransaction,
    job_id: JobId,
) -> Result<Option<JobRecord>, JobsError> {
    let jobs = txn.open_table(JOBS).map_err(storage)?;
    let Some(stored) = jobs.get(job_id.0).map_err(storage)? else {
        return Ok(None);
    };
    decode_versioned(JOB_RECORD_VERSION, stored.value())
        .map(Some)
        .map_err(|detail| JobsError::Corrupt { job_id, detail })
}

/// Reads a job's history in log order.
pub fn read_history(db: &redb::Database, job_id: JobId) -> Result<Vec<HistoryEntry>, JobsError> {
    let txn = db.begin_read().map_err(storage)?;
    let history = txn.open_table(HISTORY).map_err(storage)?;
    let mut entries = Vec::new();
    for row in history
        .range((job_id.0, 0, 0)..=(job_id.0, u64::MAX, u32::MAX))
        .map_err(storage)?
    {
        let (_, value) = row.map_err(storage)?;
        entries.push(
            rmp_serde::from_slice(value.value()).map_err(|error| JobsError::Corrupt {
                job_id,
                detail: error.to_string(),
            })?,
        );
    }
    Ok(entries)
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<String>,
    pub state: Option<JobStateName>,
}

/// Lists jobs after `after` in id order. A filter reads the matching secondary index, so a page
/// examines only jobs of the wanted queue and state class; at most `scan_max` are examined
/// (queued and scheduled jobs share a class, so a page of one may pass over the other) and the
/// returned cursor continues the scan.
pub fn list(
    db: &redb::Database,
    filter: &JobFilter,
    after: JobId,
    limit: usize,
    scan_max: usize,
    now_ms: u64,
) -> Result<(Vec<JobRecord>, Option<JobId>), JobsError> {
    let txn = db.begin_read().map_err(storage)?;
    let jobs = txn.open_table(JOBS).map_err(storage)?;
    // `after` comes from a client: the largest id has nothing after it (no overflow).
    let Some(first) = after.0.checked_add(1) else {
        return Ok((Vec::new(), None));
    };
    let candidates = filtered_job_ids(&txn, filter, first)?;
    let mut found = Vec::new();
    let mut last_seen = None;
    let mut more = false;
    for (examined, job_number) in candidates.enumerate() {
        if examined >= scan_max || found.len() >= limit {
            more = true;
            break;
        }
        let job_id = JobId(job_number?);
        last_seen = Some(job_id);
        let Some(stored) = jobs.get(job_id.0).map_err(storage)? else {
            return Err(JobsError::Corrupt {
                job_id,
                detail: "listed by an index but missing from the jobs table".into(),
            });
        };
        let job: JobRecord = decode_versioned(JOB_RECORD_VERSION, stored.value())
            .map_err(|detail| JobsError::Corrupt { job_id, detail })?;
        // The indexes narrow by queue and class; queued versus scheduled is decided here.
        let state_matches = filter
            .state
            .is_none_or(|state| state == state_name(&job.state, now_ms));
        if state_matches {
            found.push(job);
        }
    }
    Ok((found, if more { last_seen } else { None }))
}

type JobIds<'a> = Box<dyn Iterator<Item = Result<u64, JobsError>> + 'a>;

/// Job numbers from `first` on, in order, from the table that serves `filter`.
fn filtered_job_ids<'a>(
    txn: &'a redb::ReadTransaction,
    filter: &JobFilter,
    first: u64,
) -> Result<JobIds<'a>, JobsError> {
    let class = filter
        .state
        .map(|state| StateClass::holding(state).as_str());
    Ok(match (filter.queue.as_deref(), class) {
        (None, None) => {
            let table = txn.open_table(JOBS).map_err(storage)?;
            let rows = table.range(first..).map_err(storage)?;
            Box::new(rows.map(|row| Ok(row.map_err(storage)?.0.value())))
        }
        (Some(queue), None) => {
            let table = txn.open_table(JOBS_BY_QUEUE).map_err(storage)?;
            let rows = table
                .range((queue, first)..=(queue, u64::MAX))
                .map_err(storage)?;
            Box::new(rows.map(|row| Ok(row.map_err(storage)?.0.value().1)))
        }
        (None, Some(class)) => {
            let table = txn.open_table(JOBS_BY_STATE).map_err(storage)?;
            let rows = table
                .range((class, first)..=(class, u64::MAX))
                .map_err(storage)?;
            Box::new(rows.map(|row| Ok(row.map_err(storage)?.0.value().1)))
        }
        (Some(queue), Some(class)) => {
            let table = txn.open_table(JOBS_BY_QUEUE_STATE).map_err(storage)?;
            let rows = table
                .range((queue, class, first)..=(queue, class, u64::MAX))
                .map_err(storage)?;
            Box::new(rows.map(|row| Ok(row.map_err(storage)?.0.value().2)))
        }
    })
}
