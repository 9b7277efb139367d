//! In-memory queue state: every job's lifecycle plus the indexes the sequencer needs to decide
//! quickly (ready jobs per queue in lease order, delayed jobs, active leases, idempotency keys).
//!
//! Invariants (checked by tests and `debug_assert`s):
//! - `apply` is pure: the same records in the same order give the same [`QueueState::digest`].
//! - A job is in exactly one of: a queue's `ready` set, `delayed`, `leases` (by its lease id), or
//!   none of them (terminal).
//! - The index structures (`ready` versus `delayed`) depend on when [`QueueState::promote_due`]
//!   last ran, but the logical state (what `digest` covers) and lease order do not: ready order
//!   is `(priority desc, run_at_ms, job_id)`, independent of promotion time.

use agentd_schemas::api::JobStateName;
use agentd_schemas::events::{AfterFailure, Event, JobLeased, JobSubmitted, LogRecord, Tags};
use agentd_schemas::{JobId, LeaseId, Lsn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Where a job is in its lifecycle. Variants carry the data of that state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting to be leased; eligible from `run_at_ms` (scheduled before, queued after).
    Waiting {
        run_at_ms: u64,
    },
    Leased {
        lease_id: LeaseId,
        worker_id: Arc<str>,
        expires_at_ms: u64,
        leased_at_ms: u64,
    },
    Completed,
    Dead,
    Cancelled,
}

/// The compact in-memory part of a job: what deciding needs, plus (while the job is not finished
/// and the budget allows) what a lease answer needs. Payloads and results live in the redb job
/// projection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub queue: Arc<str>,
    /// The job's kind, shared with every job of that kind through [`QueueState::kinds`]: a
    /// per-kind label costs each job one pointer, not a copy of the name (kinds are up to 128
    /// characters, and a log holds many jobs of a handful of kinds).
    pub kind: Arc<str>,
    pub priority: i32,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub tags: Tags,
    /// Attempts started (leases granted) since submission or the last manual retry.
    pub attempt: u32,
    pub status: JobStatus,
    pub submitted_lsn: Lsn,
    /// The submission's payload and task, kept so a lease is answered from memory instead of
    /// waiting for the projector and reading redb. Present from submission until the job is
    /// finished (completed, dead or cancelled), within [`LEASE_CACHE_BYTES_MAX`]; a job without
    /// it is answered from the job projection. A cache: not part of the logical state.
    pub lease_data: Option<Arc<LeaseData>>,
}

/// What a lease answer needs from a job's submission beyond the compact [`Job`].
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseData {
    pub payload_json: Box<str>,
    pub task_id: Option<String>,
}

impl LeaseData {
    /// The bytes this entry holds against [`LEASE_CACHE_BYTES_MAX`].
    pub(crate) fn cost(&self) -> u64 {
        (self.payload_json.len() + self.task_id.as_ref().map_or(0, String::len) + 64) as u64
    }
}

/// Most bytes of payloads the queue state keeps for answering leases from memory (256 MiB). A
/// backlog larger than that is answered from the job projection for the jobs past the budget,
/// exactly as before the cache (only slower).
pub const LEASE_CACHE_BYTES_MAX: u64 = 256 << 20;

impl Job {
    /// The state name users see at time `now_ms`.
    pub fn state_name(&self, now_ms: u64) -> JobStateName {
        match self.status {
            JobStatus::Waiting { run_at_ms } if run_at_ms > now_ms => JobStateName::Scheduled,
            JobStatus::Waiting { .. } => JobStateName::Queued,
            JobStatus::Leased { .. } => JobStateName::Leased,
            JobStatus::Completed => JobStateName::Completed,
            JobStatus::Dead => JobStateName::Dead,
            JobStatus::Cancelled => JobStateName::Cancelled,
        }
    }

    /// True when every tag the job requires is advertised by the worker with the same value.
    pub fn tags_satisfied_by(&self, worker_tags: &Tags) -> bool {
        self.tags
            .iter()
            .all(|(key, value)| worker_tags.get(key) == Some(value))
    }
}

/// Lease order inside a queue: higher priority first, then earlier eligibility, then submission.
pub type ReadyKey = (Reverse<i32>, u64, JobId);

/// Per-queue indexes and counters.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct QueueIndex {
    pub paused: bool,
    pub ready: BTreeSet<ReadyKey>,
    pub delayed_count: u64,
    pub leased_count: u64,
    pub completed_count: u64,
    pub dead_count: u64,
    pub cancelled_count: u64,
}

impl QueueIndex {
    /// Number of jobs per state name; `scheduled` is exact only after `promote_due(now)`.
    pub fn depth(&self) -> BTreeMap<String, u64> {
        let counts = [
            (JobStateName::Scheduled, self.delayed_count),
            (JobStateName::Queued, self.ready.len() as u64),
            (JobStateName::Leased, self.leased_count),
            (JobStateName::Completed, self.completed_count),
            (JobStateName::Dead, self.dead_count),
            (JobStateName::Cancelled, self.cancelled_count),
        ];
        counts
            .into_iter()
            .map(|(state, count)| (state.as_str().to_string(), count))
            .collect()
    }
}

/// What an idempotency key maps to: the original job and the frame that submitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentSubmission {
    pub job_id: JobId,
    pub lsn: Lsn,
}

/// The queue projection. Build it by applying every log record in order.
///
/// Serialized whole into sequencer snapshots (`crate::snapshot::file`): a change of shape or
/// meaning of this type or any type in it bumps `SNAPSHOT_FORMAT_VERSION`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct QueueState {
    pub jobs: HashMap<JobId, Job>,
    pub queues: BTreeMap<Arc<str>, QueueIndex>,
    /// Waiting jobs not yet eligible at the last `apply`/`promote_due`, by eligibility time.
    pub delayed: BTreeSet<(u64, JobId)>,
    /// Active leases.
    pub leases: HashMap<LeaseId, JobId>,
    pub lease_expiries: BTreeSet<(u64, LeaseId)>,
    pub idempotency: HashMap<(Arc<str>, String), IdempotentSubmission>,
    /// Every job kind seen, so jobs of a kind share one allocation of its name. Only looked up,
    /// never iterated; it grows with distinct kinds, not with jobs.
    pub kinds: HashSet<Arc<str>>,
    pub next_job_id: u64,
    pub next_lease_id: u64,
    pub last_lsn: Lsn,
    /// Time of the last applied record; `promote_due` never moves backwards past it.
    pub last_ts_ms: u64,
    /// The domain facts the sequencer decides domain writes against (rollouts, steps,
    /// datasets), applied from the same records.
    pub facts: crate::facts::FactIndex,
    /// Bytes held by the jobs' [`Job::lease_data`], at most [`LEASE_CACHE_BYTES_MAX`].
    pub lease_cache_bytes: u64,
}

impl QueueState {
    pub fn new() -> Self {
        QueueState {
            next_job_id: 1,
            next_lease_id: 1,
            ..Default::default()
        }
    }

    pub fn job(&self, job_id: JobId) -> Option<&Job> {
        self.jobs.get(&job_id)
    }

    pub fn queue(&self, name: &str) -> Option<&QueueIndex> {
        self.queues.get(name)
    }

    /// Applies one durable (or about to be durable) record. Pure: reads only its arguments.
    pub fn apply(&mut self, lsn: Lsn, record: &LogRecord) {
        debug_assert!(lsn > self.last_lsn, "records are applied in log order");
        self.last_lsn = lsn;
        self.last_ts_ms = self.last_ts_ms.max(record.ts_ms);
        for event in &record.events {
            self.apply_event(lsn, record.ts_ms, event);
        }
        self.facts.apply(lsn, record);
    }

    /// Moves delayed jobs whose time has come into their queue's ready set. Changes indexes
    /// only, never the logical state.
    pub fn promote_due(&mut self, now_ms: u64) {
        while let Some(&(run_at_ms, job_id)) = self.delayed.first() {
            if run_at_ms > now_ms {
                break;
            }
            self.delayed.pop_first();
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            let key = (Reverse(job.priority), run_at_ms, job_id);
            if let Some(index) = self.queues.get_mut(&job.queue) {
                index.delayed_count -= 1;
                index.ready.insert(key);
            }
        }
    }

    /// The earliest time a delayed job becomes eligible, if any.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.delayed.first().map(|&(run_at_ms, _)| run_at_ms)
    }

    /// The earliest lease expiry, if any lease is active.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.lease_expiries
            .first()
            .map(|&(expires_at_ms, _)| expires_at_ms)
    }

    fn apply_event(&mut self, lsn: Lsn, ts_ms: u64, event: &Event) {
        match event {
            Event::JobSubmitted(submitted) => self.apply_submitted(lsn, ts_ms, submitted),
            Event::JobLeased(leased) => self.apply_leased(ts_ms, leased),
            Event::LeaseHeartbeat {
                job_id,
                lease_id,
                expires_at_ms,
            } => self.apply_heartbeat(*job_id, *lease_id, *expires_at_ms),
            Event::JobCompleted { job_id, .. } => {
                self.transition(*job_id, ts_ms, JobStatus::Completed)
            }
            Event::JobFailed { job_id, after, .. } | Event::LeaseExpired { job_id, after, .. } => {
                let next = match after {
                    AfterFailure::Retry { run_at_ms } => JobStatus::Waiting {
                        run_at_ms: *run_at_ms,
                    },
                    AfterFailure::Dead => JobStatus::Dead,
                };
                self.transition(*job_id, ts_ms, next);
            }
            Event::JobCancelled { job_id } => self.transition(*job_id, ts_ms, JobStatus::Cancelled),
            Event::JobRetried { job_id, run_at_ms } => {
                if let Some(job) = self.jobs.get_mut(job_id) {
                    job.attempt = 0;
                }
                self.transition(
                    *job_id,
                    ts_ms,
                    JobStatus::Waiting {
                        run_at_ms: *run_at_ms,
                    },
                );
            }
            Event::QueuePaused { queue } => self.queue_mut(queue).paused = true,
            Event::QueueResumed { queue } => self.queue_mut(queue).paused = false,
            // Domain events do not change queue state (the fact index takes them).
            Event::RolloutCreated(_)
            | Event::DatasetRegistered(_)
            | Event::DatasetRecordsIngested(_)
            | Event::TaskStateUpdated(_)
            | Event::StepRecorded(_)
            | Event::SandboxResultRecorded(_)
            | Event::RewardRecorded(_)
            | Event::ExportRecorded(_)
            | Event::ScheduleFired(_)
            | Event::DatasetBuilt(_)
            | Event::ExportCopied(_)
            | Event::DatasetSettingsRecorded(_)
            | Event::TrainingSettingsRecorded(_) => {}
        }
    }

    fn apply_leased(&mut self, ts_ms: u64, leased: &JobLeased) {
        let Some(job) = self.jobs.get_mut(&leased.job_id) else {
            return;
        };
        let previous = std::mem::replace(
            &mut job.status,
            JobStatus::Leased {
                lease_id: leased.lease_id,
                worker_id: Arc::from(leased.worker_id.as_str()),
                expires_at_ms: leased.expires_at_ms,
                leased_at_ms: ts_ms,
            },
        );
        job.attempt = leased.attempt;
        let (queue, priority) = (job.queue.clone(), job.priority);
        self.leave_status(&queue, priority, leased.job_id, &previous);
        self.queue_mut(&queue).leased_count += 1;
        self.leases.insert(leased.lease_id, leased.job_id);
        self.lease_expiries
            .insert((leased.expires_at_ms, leased.lease_id));
        self.next_lease_id = self.next_lease_id.max(leased.lease_id.0 + 1);
    }

    /// Moves the expiry of `lease_id`, when it is still the job's lease.
    fn apply_heartbeat(&mut self, job_id: JobId, lease_id: LeaseId, new_expiry_ms: u64) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if let JobStatus::Leased {
            lease_id: current,
            expires_at_ms,
            ..
        } = &mut job.status
        {
            if *current == lease_id {
                self.lease_expiries.remove(&(*expires_at_ms, lease_id));
                *expires_at_ms = new_expiry_ms;
                self.lease_expiries.insert((new_expiry_ms, lease_id));
            }
        }
    }

    fn apply_submitted(&mut self, lsn: Lsn, ts_ms: u64, submitted: &JobSubmitted) {
        let queue: Arc<str> = match self.queues.get_key_value(submitted.queue.as_str()) {
            Some((name, _)) => name.clone(),
            None => Arc::from(submitted.queue.as_str()),
        };
        let kind = self.intern_kind(&submitted.kind);
        let job = Job {
            id: submitted.job_id,
            queue: queue.clone(),
            kind,
            priority: submitted.priority,
            max_attempts: submitted.max_attempts,
            lease_ttl_ms: submitted.lease_ttl_ms,
            tags: submitted.tags.clone(),
            attempt: 0,
            status: JobStatus::Waiting {
                run_at_ms: submitted.run_at_ms,
            },
            submitted_lsn: lsn,
            lease_data: self.cache_lease_data(submitted),
        };
        if let Some(key) = &submitted.idempotency_key {
            self.idempotency.insert(
                (queue.clone(), key.clone()),
                IdempotentSubmission {
                    job_id: submitted.job_id,
                    lsn,
                },
            );
        }
        self.next_job_id = self.next_job_id.max(submitted.job_id.0 + 1);
        self.enter_waiting(
            &queue,
            job.priority,
            submitted.job_id,
            submitted.run_at_ms,
            ts_ms,
        );
        self.jobs.insert(submitted.job_id, job);
    }

    /// The shared name of `kind`, allocated on its first job only.
    fn intern_kind(&mut self, kind: &str) -> Arc<str> {
        if let Some(shared) = self.kinds.get(kind) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(kind);
        self.kinds.insert(shared.clone());
        shared
    }

    /// The lease data of a new submission, when the cache has room for it.
    fn cache_lease_data(&mut self, submitted: &JobSubmitted) -> Option<Arc<LeaseData>> {
        let data = LeaseData {
            payload_json: submitted.payload_json.as_str().into(),
            task_id: submitted.task_id.clone(),
        };
        let cost = data.cost();
        if self.lease_cache_bytes + cost > LEASE_CACHE_BYTES_MAX {
            return None;
        }
        self.lease_cache_bytes += cost;
        Some(Arc::new(data))
    }

    /// Moves a job to `next`, keeping indexes and counters in step. A finished job is never
    /// leased again without a retry, so its lease data leaves the cache.
    fn transition(&mut self, job_id: JobId, ts_ms: u64, next: JobStatus) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let finished = matches!(
            next,
            JobStatus::Completed | JobStatus::Dead | JobStatus::Cancelled
        );
        if finished {
            if let Some(data) = job.lease_data.take() {
                self.lease_cache_bytes -= data.cost();
            }
        }
        let previous = std::mem::replace(&mut job.status, next.clone());
        let (queue, priority) = (job.queue.clone(), job.priority);
        self.leave_status(&queue, priority, job_id, &previous);
        let index = self.queue_mut(&queue);
        match next {
            JobStatus::Waiting { run_at_ms } => {
                self.enter_waiting(&queue, priority, job_id, run_at_ms, ts_ms)
            }
            JobStatus::Leased { .. } => index.leased_count += 1,
            JobStatus::Completed => index.completed_count += 1,
            JobStatus::Dead => index.dead_count += 1,
            JobStatus::Cancelled => index.cancelled_count += 1,
        }
    }

    fn enter_waiting(
        &mut self,
        queue: &Arc<str>,
        priority: i32,
        job_id: JobId,
        run_at_ms: u64,
        ts_ms: u64,
    ) {
        let index = self.queue_mut(queue);
        if run_at_ms > ts_ms {
            index.delayed_count += 1;
            self.delayed.insert((run_at_ms, job_id));
        } else {
            index.ready.insert((Reverse(priority), run_at_ms, job_id));
        }
    }

    fn leave_status(
        &mut self,
        queue: &Arc<str>,
        priority: i32,
        job_id: JobId,
        previous: &JobStatus,
    ) {
        match previous {
            JobStatus::Waiting { run_at_ms } => {
                let index = self
                    .queues
                    .get_mut(queue)
                    .expect("a job's queue exists once it was submitted");
                if !index.ready.remove(&(Reverse(priority), *run_at_ms, job_id)) {
                    let was_delayed = self.delayed.remove(&(*run_at_ms, job_id));
                    debug_assert!(was_delayed, "a waiting job is ready or delayed");
                    index.delayed_count -= 1;
                }
            }
            JobStatus::Leased {
                lease_id,
                expires_at_ms,
                ..
            } => {
                self.leases.remove(lease_id);
                self.lease_expiries.remove(&(*expires_at_ms, *lease_id));
                self.queue_mut(queue).leased_count -= 1;
            }
            JobStatus::Completed => self.queue_mut(queue).completed_count -= 1,
            JobStatus::Dead => self.queue_mut(queue).dead_count -= 1,
            JobStatus::Cancelled => self.queue_mut(queue).cancelled_count -= 1,
        }
    }

    fn queue_mut(&mut self, name: &str) -> &mut QueueIndex {
        if !self.queues.contains_key(name) {
            self.queues.insert(Arc::from(name), QueueIndex::default());
        }
        // Inserted just above when missing.
        self.queues.get_mut(name).expect("queue index exists")
    }

    /// A sha256 over the logical state in a canonical order (no index structures), so two
    /// replays of the same log can be compared. A job's `kind` is left out: it is copied from
    /// its submission, never changes and decides nothing (it only labels a metric), so hashing
    /// it would change every existing log's queue digest and detect no divergence.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "next_job {} next_lease {} last_lsn {}\n",
            self.next_job_id, self.next_lease_id, self.last_lsn
        ));
        let mut ids: Vec<&JobId> = self.jobs.keys().collect();
        ids.sort();
        for id in ids {
            let job = &self.jobs[id];
            hasher.update(format!(
                "{} {} {} {} {} {:?} {} {:?}\n",
                job.id,
                job.queue,
                job.priority,
                job.max_attempts,
                job.lease_ttl_ms,
                job.tags,
                job.attempt,
                job.status
            ));
        }
        for (name, index) in &self.queues {
            hasher.update(format!("queue {name} paused {}\n", index.paused));
        }
        let mut keys: Vec<_> = self.idempotency.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for ((queue, key), submission) in keys {
            hasher.update(format!(
                "idem {queue} {key:?} {} {}\n",
                submission.job_id, submission.lsn
            ));
        }
        hex::encode(hasher.finalize())
    }
}

impl QueueState {
    /// Makes a deserialized state share its names again as [`QueueState::apply`] does: each job's
    /// kind is the one allocation in [`QueueState::kinds`], and each job's queue (and each
    /// idempotency key's) the queue index's key. The encoding stores every `Arc<str>` as its own
    /// string, so without this a loaded state holds one allocation per job for each.
    pub fn reintern_after_load(&mut self) {
        let queue_names: HashMap<Arc<str>, Arc<str>> = self
            .queues
            .keys()
            .map(|name| (name.clone(), name.clone()))
            .collect();
        let shared_queue = |name: Arc<str>| queue_names.get(&name).cloned().unwrap_or(name);
        let mut jobs = std::mem::take(&mut self.jobs);
        for job in jobs.values_mut() {
            job.kind = self.intern_kind(&job.kind);
            job.queue = shared_queue(job.queue.clone());
        }
        self.jobs = jobs;
        self.idempotency = std::mem::take(&mut self.idempotency)
            .into_iter()
            .map(|((queue, key), submission)| ((shared_queue(queue), key), submission))
            .collect();
    }
}

impl crate::replay::Projection for QueueState {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), crate::replay::ApplyError> {
        for (lsn, record) in records {
            QueueState::apply(self, *lsn, record);
        }
        Ok(())
    }
}
