//! The domain projections: datasets and their processed splits, per-task agent state, and
//! trajectories (steps with their state before, sandbox result and reward).
//!
//! **Where they live.** In memory, each behind its own `RwLock`, shared as one
//! `Arc<DomainProjections>`. They are rebuilt by replaying the whole log at start (in the same
//! pass that rebuilds the queue state), then the projector thread applies each batch of durable
//! frames right after the job projection, before it publishes its applied LSN, so a reader that
//! waited for an LSN (`AppState::settle_reads`, `AppliedWatch::wait_for`) sees it in these
//! projections too. In memory, because the rules (token counting, merges, dedup across
//! datasets) are cheap to replay and the answers need whole-state views (stats over every
//! dataset, teacher precision over every step); a redb copy would add a second source of truth to
//! keep in step for no gain at the sizes the seed plans (tens of thousands of records, thousands
//! of trajectories).
//!
//! **Memory bound.** Proportional to the domain events in the log: every kept dataset record
//! (its text; records excluded as duplicates, over the cap or of unknown language cost only
//! counters), every state update (bounded per request by the API's limits) with its trim report,
//! every step with its sandbox result and reward (bounded per request), plus one agent state per
//! step (shared with other steps until the state changes; a state stays within its token budget,
//! about 3 KiB at the default 800 tokens). Counters and histograms are bounded by the number of
//! datasets, languages, models and distinct token counts. When that outgrows memory, the
//! projections move to redb like the job projection; the digests are defined over content, not
//! storage, so they stay comparable.
//!
//! **Purity.** `apply_*` reads no clock, no randomness, no environment: time is the record's
//! `ts_ms`, limits come from the events (agent state) or from the configuration the projection
//! was built with (splits), and conflicts are settled by log order. A panic while applying is a
//! bug in a rule; it stops the process (`crate::fatal`) rather than leave a half-applied state.

pub mod agent_states;
pub mod datasets;
mod digest;
pub mod gauges;
pub mod load;
pub mod training;
pub mod trajectories;

#[cfg(test)]
mod tests;

use crate::config::DatasetsConfig;
use crate::domain::splits::{ProcessedSplits, SplitsConfig, SplitsConfigError};
use crate::domain::tokens::UnknownEncoding;
use agent_states::AgentStates;
use agentd_schemas::events::{Event, LogRecord};
use agentd_schemas::Lsn;
use datasets::Datasets;
use serde::Serialize;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use trajectories::Trajectories;

/// The three domain projections and the LSN they reflect.
#[derive(Debug)]
pub struct DomainProjections {
    datasets: RwLock<Datasets>,
    agent_states: RwLock<AgentStates>,
    trajectories: RwLock<Trajectories>,
    training: RwLock<training::TrainingHistory>,
    /// The last frame applied; frames at or below it are skipped, so replaying a range twice
    /// (start-up replay, then the projector's catch-up) applies each frame once.
    applied: Mutex<Lsn>,
    /// Loaded, or still being loaded behind the job API after a restart (`load.rs`).
    load: load::LoadState,
}

/// The digest of each domain projection, under the names `agentd rebuild` and
/// `GET /v1/admin/digest` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainDigests {
    pub datasets: String,
    pub agent_state: String,
    pub trajectories: String,
}

/// A `[datasets]` configuration the projections cannot be built with.
#[derive(Debug, thiserror::Error)]
pub enum DomainConfigError {
    #[error("[datasets] encoding: {0}")]
    Encoding(#[from] UnknownEncoding),
    #[error("[datasets]: {0}")]
    Splits(#[from] SplitsConfigError),
}

/// The serialized tags of the job and queue events, which [`DomainProjections`] ignore: the
/// loader does not decode a record that holds only these (most of a job queue's log). The
/// other ignored kinds (exports, schedules, builds) are too rare to be worth listing.
const IGNORED_EVENT_TAGS: [&str; 10] = [
    "job_submitted.v1",
    "job_leased.v1",
    "lease_heartbeat.v1",
    "job_completed.v1",
    "job_failed.v1",
    "lease_expired.v1",
    "job_cancelled.v1",
    "job_retried.v1",
    "queue_paused.v1",
    "queue_resumed.v1",
];

/// Whether the record in a frame holds nothing these projections apply (see
/// [`crate::replay::Undecoded`]).
pub fn ignores_record(format_version: u8, payload: &[u8]) -> bool {
    agentd_schemas::events::only_events_tagged(format_version, payload, &IGNORED_EVENT_TAGS)
}

impl DomainProjections {
    /// Empty projections; the splits follow `config` (encoding, token cap, split weights).
    pub fn new(config: &DatasetsConfig) -> Result<Self, DomainConfigError> {
        let (splits_config, counter) = SplitsConfig::from_settings(&config.settings())?;
        let splits = ProcessedSplits::new(splits_config, counter)?;
        Ok(DomainProjections {
            datasets: RwLock::new(Datasets::new(splits)),
            agent_states: RwLock::new(AgentStates::default()),
            trajectories: RwLock::new(Trajectories::default()),
            training: RwLock::new(training::TrainingHistory::default()),
            applied: Mutex::new(Lsn::ZERO),
            load: load::LoadState::loaded(),
        })
    }

    /// Applies a batch of frames in LSN order (the projector's hook).
    pub fn apply_batch(&self, records: Vec<(Lsn, LogRecord)>) {
        for (lsn, record) in records {
            self.apply_record(lsn, record);
        }
    }

    /// Applies the domain events of one frame; a frame at or below the applied LSN is skipped.
    /// The record is taken by value: its steps, results and rewards move into the projections
    /// instead of being copied (replays apply millions of them).
    pub fn apply_record(&self, lsn: Lsn, record: LogRecord) {
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if lsn <= *applied {
            return;
        }
        let LogRecord {
            ts_ms,
            actor,
            events,
        } = record;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for event in events {
                self.apply_event(lsn, ts_ms, actor.as_deref(), event);
            }
        }));
        if outcome.is_err() {
            crate::fatal(&format!(
                "a domain projection panicked applying the record at lsn {lsn}"
            ));
        }
        *applied = lsn;
    }

    /// Events of one record apply in order, so a step sees the state before the state update
    /// logged with it.
    fn apply_event(&self, lsn: Lsn, ts_ms: u64, actor: Option<&str>, event: Event) {
        match event {
            Event::DatasetRegistered(meta) => write(&self.datasets).apply_registered(lsn, &meta),
            Event::DatasetSettingsRecorded(settings) => {
                write(&self.datasets).apply_settings(&settings)
            }
            Event::TrainingSettingsRecorded(settings) => write(&self.training).apply(lsn, settings),
            Event::DatasetRecordsIngested(batch) => {
                write(&self.datasets).apply_ingested(lsn, &batch)
            }
            Event::TaskStateUpdated(update) => {
                write(&self.agent_states).apply(lsn, ts_ms, actor, &update)
            }
            Event::RolloutCreated(created) => {
                // Lock order: agent states before trajectories, everywhere.
                write(&self.agent_states).apply_rollout(&created);
                write(&self.trajectories).apply_rollout(lsn, ts_ms, created);
            }
            Event::StepRecorded(step) => {
                let state_before =
                    read(&self.agent_states).state_of(&step.task_id, step.rollout_id);
                write(&self.trajectories).apply_step(lsn, ts_ms, step, state_before);
            }
            Event::SandboxResultRecorded(result) => {
                write(&self.trajectories).apply_sandbox(lsn, ts_ms, result)
            }
            Event::RewardRecorded(reward) => {
                write(&self.trajectories).apply_reward(lsn, ts_ms, reward)
            }
            // Every job and queue event is ignored here; the loader leaves the records that
            // hold nothing else undecoded (`IGNORED_EVENT_TAGS`): applying one of them here
            // would need that list changed too.
            Event::JobSubmitted(_)
            | Event::JobLeased(_)
            | Event::LeaseHeartbeat { .. }
            | Event::JobCompleted { .. }
            | Event::JobFailed { .. }
            | Event::LeaseExpired { .. }
            | Event::JobCancelled { .. }
            | Event::JobRetried { .. }
            | Event::QueuePaused { .. }
            | Event::QueueResumed { .. }
            | Event::ExportRecorded(_)
            | Event::ScheduleFired(_)
            | Event::DatasetBuilt(_)
            | Event::ExportCopied(_) => {}
        }
    }

    /// The recorded training settings.
    pub fn training(&self) -> RwLockReadGuard<'_, training::TrainingHistory> {
        read(&self.training)
    }

    /// The last frame applied.
    pub fn applied_lsn(&self) -> Lsn {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Read access to the datasets. Applying an ingest batch holds the write lock while it
    /// counts tokens, so async callers read from a blocking task.
    pub fn datasets(&self) -> RwLockReadGuard<'_, Datasets> {
        read(&self.datasets)
    }

    /// Read access to the agent states (held briefly by writers: one merge).
    pub fn agent_states(&self) -> RwLockReadGuard<'_, AgentStates> {
        read(&self.agent_states)
    }

    /// Read access to the trajectories (held briefly by writers: one insert).
    pub fn trajectories(&self) -> RwLockReadGuard<'_, Trajectories> {
        read(&self.trajectories)
    }

    /// The digests of the three projections. The caller decides what LSN they reflect (wait for
    /// the projector, or call after a replay).
    pub fn digests(&self) -> DomainDigests {
        DomainDigests {
            datasets: self.datasets().digest(),
            agent_state: self.agent_states().digest(),
            trajectories: self.trajectories().digest(),
        }
    }
}

/// The in-memory domain projections take the records they are given last by value (steps,
/// results and rewards move in); given a borrowed batch, they copy it.
impl crate::replay::Projection for &DomainProjections {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), crate::replay::ApplyError> {
        for (lsn, record) in records {
            self.apply_record(*lsn, record.clone());
        }
        Ok(())
    }

    fn apply_owned(
        &mut self,
        records: Vec<(Lsn, LogRecord)>,
    ) -> Result<(), crate::replay::ApplyError> {
        self.apply_batch(records);
        Ok(())
    }
}

/// A poisoned lock means a panic while applying, which `apply_record` turns into a process
/// stop; readers racing that stop may still read.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
