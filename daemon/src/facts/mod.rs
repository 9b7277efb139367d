//! The fact index: the little the sequencer must know to decide a domain write, kept next to
//! the job state and updated from the same records, in log order.
//!
//! It answers "does this exist yet?" for every domain fact that may be written once: which
//! rollouts exist (with their task, group and job), which step indexes each rollout (or a task's
//! default rollout) holds, whether a step has its sandbox result and reward, which datasets are
//! registered (with their meta) and which record positions each received. Nothing else: the
//! texts live in the projections.
//!
//! The rules mirror the projections' (the first fact in log order stands), so for a log the
//! sequencer wrote itself they never meet a duplicate: a refused write never reaches the log.
//! Logs written before the sequencer decided domain writes may hold duplicates; they are skipped
//! here as the projections skip them.
//!
//! A module of its own, depending only on the schemas: the queue state holds the index and the
//! domain decisions read it beside the queue state, so keeping it under either would make the
//! two modules import each other.
//!
//! Memory: one small entry per rollout, per step (three LSNs), per dataset (its meta and one
//! range per gap in its positions) and per group name.

pub mod positions;

use crate::facts::positions::Positions;
use agentd_schemas::events::{DatasetMeta, Event, LogRecord};
use agentd_schemas::{JobId, Lsn, RolloutId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What the sequencer knows about domain facts.
///
/// Serialized into sequencer snapshots (`snapshot::file`): a change of shape or meaning of this
/// type or any type in it bumps `SNAPSHOT_FORMAT_VERSION`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FactIndex {
    /// The number the next rollout id gets (ids start at 1).
    next_rollout: u64,
    rollouts: HashMap<RolloutId, RolloutFacts>,
    /// Steps recorded through the task-level routes (a task's default rollout), by task.
    default_rollouts: HashMap<String, StepIndex>,
    /// The rollout created under each episode job (at most one per job).
    rollout_of_job: HashMap<JobId, RolloutId>,
    /// The task each group samples (a group holds rollouts of one task) and its size.
    groups: HashMap<String, GroupFacts>,
    datasets: HashMap<(String, String), DatasetFacts>,
}

/// One group of rollouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFacts {
    pub task_id: String,
    pub rollouts: u64,
}

/// One rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutFacts {
    pub task_id: String,
    pub group: String,
    /// Model and policy version it samples (a resumed attempt must sample the same).
    pub model: String,
    pub policy_version: String,
    pub job_id: Option<JobId>,
    /// The record that created it.
    pub lsn: Lsn,
    pub steps: StepIndex,
}

/// The steps of one rollout by index.
pub type StepIndex = BTreeMap<u32, StepFacts>;

/// Where a step and its attached facts were logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFacts {
    pub lsn: Lsn,
    pub sandbox: Option<Lsn>,
    pub reward: Option<Lsn>,
}

/// One dataset version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetFacts {
    /// `None` for records of a dataset never registered (only in logs older than this index).
    pub meta: Option<DatasetMeta>,
    pub positions: Positions,
}

/// The rollout a trajectory fact belongs to: a created rollout, or a task's default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutRef<'a> {
    Rollout(RolloutId),
    Default { task_id: &'a str },
}

impl FactIndex {
    /// Applies the domain events of one record (job events are the queue state's).
    pub fn apply(&mut self, lsn: Lsn, record: &LogRecord) {
        for event in &record.events {
            self.apply_event(lsn, event);
        }
    }

    fn apply_event(&mut self, lsn: Lsn, event: &Event) {
        match event {
            Event::RolloutCreated(created) => {
                let id = created.rollout_id;
                self.next_rollout = self.next_rollout.max(id.0 + 1);
                if self.rollouts.contains_key(&id) {
                    return;
                }
                if let Some(job_id) = created.job_id {
                    self.rollout_of_job.entry(job_id).or_insert(id);
                }
                self.groups
                    .entry(created.group.clone())
                    .or_insert_with(|| GroupFacts {
                        task_id: created.task_id.clone(),
                        rollouts: 0,
                    })
                    .rollouts += 1;
                self.rollouts.insert(
                    id,
                    RolloutFacts {
                        task_id: created.task_id.clone(),
                        group: created.group.clone(),
                        model: created.model.clone(),
                        policy_version: created.policy_version.clone(),
                        job_id: created.job_id,
                        lsn,
                        steps: StepIndex::new(),
                    },
                );
            }
            Event::StepRecorded(step) => {
                let steps = match step.rollout_id {
                    Some(id) => match self.rollouts.get_mut(&id) {
                        Some(rollout) => &mut rollout.steps,
                        None => return,
                    },
                    None => self
                        .default_rollouts
                        .entry(step.task_id.clone())
                        .or_default(),
                };
                steps.entry(step.step).or_insert(StepFacts {
                    lsn,
                    sandbox: None,
                    reward: None,
                });
            }
            Event::SandboxResultRecorded(result) => {
                let target = rollout_ref(result.rollout_id, &result.task_id);
                if let Some(facts) = self.step_mut(target, result.step) {
                    facts.sandbox.get_or_insert(lsn);
                }
            }
            Event::RewardRecorded(reward) => {
                let target = rollout_ref(reward.rollout_id, &reward.task_id);
                if let Some(facts) = self.step_mut(target, reward.step) {
                    facts.reward.get_or_insert(lsn);
                }
            }
            Event::DatasetRegistered(meta) => {
                let facts = self
                    .datasets
                    .entry((meta.source.clone(), meta.version.clone()))
                    .or_default();
                facts.meta.get_or_insert_with(|| meta.clone());
            }
            Event::DatasetRecordsIngested(batch) => {
                let end = batch.first_index + batch.records.len() as u64;
                self.datasets
                    .entry((batch.source.clone(), batch.version.clone()))
                    .or_default()
                    .positions
                    .insert(batch.first_index, end);
            }
            _ => {}
        }
    }

    /// Entries held: rollouts, steps, groups, datasets and tasks with default-rollout steps
    /// (the size of a snapshot of the index, in entries). O(rollouts + tasks).
    pub fn entries(&self) -> u64 {
        let steps: usize = self
            .rollouts
            .values()
            .map(|rollout| rollout.steps.len())
            .chain(self.default_rollouts.values().map(BTreeMap::len))
            .sum();
        (steps
            + self.rollouts.len()
            + self.default_rollouts.len()
            + self.groups.len()
            + self.datasets.len()) as u64
    }

    /// The id the next rollout gets.
    pub fn next_rollout_id(&self) -> RolloutId {
        RolloutId(self.next_rollout.max(1))
    }

    pub fn rollout(&self, id: RolloutId) -> Option<&RolloutFacts> {
        self.rollouts.get(&id)
    }

    /// The rollout created under `job_id`, if any.
    pub fn rollout_of_job(&self, job_id: JobId) -> Option<RolloutId> {
        self.rollout_of_job.get(&job_id).copied()
    }

    /// The task a group samples and its size, once it has a rollout.
    pub fn group(&self, group: &str) -> Option<&GroupFacts> {
        self.groups.get(group)
    }

    /// The steps of a rollout (`None` for an unknown rollout; a default rollout always exists,
    /// possibly empty).
    pub fn steps(&self, target: RolloutRef<'_>) -> Option<&StepIndex> {
        static EMPTY: StepIndex = StepIndex::new();
        match target {
            RolloutRef::Rollout(id) => self.rollouts.get(&id).map(|rollout| &rollout.steps),
            RolloutRef::Default { task_id } => {
                Some(self.default_rollouts.get(task_id).unwrap_or(&EMPTY))
            }
        }
    }

    pub fn dataset(&self, source: &str, version: &str) -> Option<&DatasetFacts> {
        // Datasets are few and registered rarely; the owned key costs nothing that matters.
        self.datasets.get(&(source.to_owned(), version.to_owned()))
    }

    fn step_mut(&mut self, target: RolloutRef<'_>, step: u32) -> Option<&mut StepFacts> {
        let steps = match target {
            RolloutRef::Rollout(id) => &mut self.rollouts.get_mut(&id)?.steps,
            RolloutRef::Default { task_id } => self.default_rollouts.get_mut(task_id)?,
        };
        steps.get_mut(&step)
    }
}

/// The rollout an event names.
pub fn rollout_ref(rollout_id: Option<RolloutId>, task_id: &str) -> RolloutRef<'_> {
    match rollout_id {
        Some(id) => RolloutRef::Rollout(id),
        None => RolloutRef::Default { task_id },
    }
}
