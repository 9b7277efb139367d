//! The synthetic log: per trajectory step a step, a sandbox result and a reward record, with a
//! state update every tenth step; every task of eight steps is one job, submitted and leased
//! with its first step and completed with its last.

use agentd::config::Config;
use agentd_schemas::events::{
    encode_record, Action, AgentState, Event, JobLeased, JobSubmitted, LogRecord, RewardRecorded,
    RewardSource, Sampling, SandboxOutcome, SandboxResultRecorded, StateLimits, StepRecorded,
    TaskStateUpdated, RECORD_FORMAT_VERSION,
};
use agentd_schemas::{JobId, LeaseId, Lsn};
use std::collections::BTreeMap;
use std::path::Path;

/// Where step `index` stands: its task (eight steps each), its index in the task, its time, and
/// the task's one job and lease.
struct StepPlace {
    index: u64,
    task_id: String,
    step: u32,
    ts_ms: u64,
    job_id: JobId,
    lease_id: LeaseId,
}

impl StepPlace {
    fn of(index: u64) -> StepPlace {
        StepPlace {
            index,
            task_id: format!("task-{:07}", index / 8),
            step: (index % 8) as u32,
            ts_ms: 1_767_225_600_000 + index * 3,
            job_id: JobId(index / 8 + 1),
            lease_id: LeaseId(index / 8 + 1),
        }
    }

    fn worker_id(&self) -> String {
        format!("box-{}", self.index % 16)
    }
}

/// The three records of step `index`: (job submitted and leased on a task's first step, a state
/// update every tenth step,) the step; its sandbox result; its reward (and the job completed on
/// a task's last step).
pub fn step_records(index: u64) -> Vec<LogRecord> {
    let place = StepPlace::of(index);
    let record = |offset: u64, events| LogRecord {
        ts_ms: place.ts_ms + offset,
        actor: Some("bench".into()),
        events,
    };
    let mut first = Vec::new();
    if place.step == 0 {
        first.extend(job_started(&place));
    }
    if index.is_multiple_of(10) {
        first.push(state_updated(&place));
    }
    first.push(step_recorded(&place));
    let mut last = vec![reward_recorded(&place)];
    if place.step == 7 {
        last.push(Event::JobCompleted {
            job_id: place.job_id,
            lease_id: place.lease_id,
            result_json: Some(r#"{"steps":8}"#.into()),
            log_tail: None,
        });
    }
    vec![
        record(0, first),
        record(1, vec![sandbox_recorded(&place)]),
        record(2, last),
    ]
}

/// One job per task: submitted and leased with its first step.
fn job_started(place: &StepPlace) -> [Event; 2] {
    let task_id = &place.task_id;
    [
        Event::JobSubmitted(JobSubmitted {
            job_id: place.job_id,
            queue: "rollouts".into(),
            kind: "episode".into(),
            payload_json: format!(r#"{{"task_id":"{task_id}"}}"#),
            priority: 0,
            run_at_ms: place.ts_ms,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: BTreeMap::new(),
            task_id: Some(task_id.clone()),
            idempotency_key: None,
        }),
        Event::JobLeased(JobLeased {
            job_id: place.job_id,
            lease_id: place.lease_id,
            worker_id: place.worker_id(),
            attempt: 1,
            expires_at_ms: place.ts_ms + 60_000,
        }),
    ]
}

fn state_updated(place: &StepPlace) -> Event {
    Event::TaskStateUpdated(TaskStateUpdated {
        task_id: place.task_id.clone(),
        rollout_id: None,
        forget: Default::default(),
        update: AgentState {
            goals: vec!["replace print calls with logging".into()],
            history: vec![format!("step {}: matched 3 print calls", place.step)],
            ..AgentState::default()
        },
        limits: StateLimits {
            history_max: 3,
            item_chars_max: 256,
            token_budget: 800,
            encoding: "o200k_base".into(),
        },
        lease_id: None,
    })
}

fn step_recorded(place: &StepPlace) -> Event {
    let (index, step) = (place.index, place.step);
    Event::StepRecorded(StepRecorded {
        task_id: place.task_id.clone(),
        rollout_id: None,
        step,
        job_id: Some(place.job_id),
        lease_id: Some(place.lease_id),
        attempt: Some(1),
        worker_id: Some(place.worker_id()),
        model: "qwen2.5-coder-7b".into(),
        policy_version: format!("v{}", index / 100_000),
        sampling: Sampling {
            temperature: Some(0.7),
            top_p: Some(0.95),
            max_tokens: Some(1024),
            seed: Some(index as i64),
        },
        prompt_tokens: Some(700 + index % 300),
        completion_tokens: Some(80 + index % 50),
        prompt: Some(format!(
            "## Goals\n- replace print calls with logging in module_{index}.py\n## History\n- step {step}: matched {} print calls\n\nPropose one ast-grep rewrite.",
            index % 7
        )),
        think: Some(format!("print({index}) is debugging output; logger.info keeps it at info level")),
        action: Some(Action::Pattern {
            language: "python".into(),
            pattern: "print($A)".into(),
            rewrite: "logger.info($A)".into(),
        }),
        state_update: None,
        raw_output: None,
        generation_ms: None,
        format_error: None,
    })
}

fn sandbox_recorded(place: &StepPlace) -> Event {
    let index = place.index;
    Event::SandboxResultRecorded(SandboxResultRecorded {
        task_id: place.task_id.clone(),
        rollout_id: None,
        step: place.step,
        lease_id: None,
        exit_code: Some(0),
        outcome: SandboxOutcome::Ok,
        diff: format!(
            "--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-print({index})\n+logger.info({index})\n"
        ),
        stdout: "3 passed in 0.41s\n".into(),
        stderr: String::new(),
        tests_passed: Some(3),
        tests_failed: Some(0),
        duration_ms: Some(410 + index % 90),
        peak_rss_bytes: Some(31_457_280),
    })
}

fn reward_recorded(place: &StepPlace) -> Event {
    let index = place.index;
    Event::RewardRecorded(RewardRecorded {
        task_id: place.task_id.clone(),
        rollout_id: None,
        step: place.step,
        lease_id: None,
        value: if index.is_multiple_of(3) { 1.0 } else { 0.5 },
        verified: index.is_multiple_of(3),
        components: BTreeMap::from([("applied".to_string(), 1.0), ("tests".to_string(), 1.0)]),
        source: RewardSource::Rule,
    })
}

/// Writes the synthetic log; returns (last LSN, events).
pub fn write_log(config: &Config, log_dir: &Path, steps: u64) -> anyhow::Result<(Lsn, u64)> {
    let options = agentd::bench_api::log_options(config, log_dir.to_path_buf());
    let (log, _) = agentd::bench_api::open_log(options)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let writer = log.start_writer();
        let mut lsn = Lsn::ZERO;
        let mut events = 0u64;
        let mut pending = std::collections::VecDeque::new();
        for index in 0..steps {
            for record in step_records(index) {
                lsn = lsn.next();
                events += record.events.len() as u64;
                let rx = writer
                    .enqueue(lsn, RECORD_FORMAT_VERSION, encode_record(&record))
                    .await
                    .map_err(|error| anyhow::anyhow!("append: {error}"))?;
                pending.push_back(rx);
                while pending.len() > 4096 {
                    if let Some(rx) = pending.pop_front() {
                        rx.await?
                            .map_err(|error| anyhow::anyhow!("append: {error}"))?;
                    }
                }
            }
        }
        for rx in pending {
            rx.await?
                .map_err(|error| anyhow::anyhow!("append: {error}"))?;
        }
        writer.shutdown().await;
        Ok((lsn, events))
    })
}
