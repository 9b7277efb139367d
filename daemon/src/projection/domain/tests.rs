//! The domain projections applied to hand-made logs: what each keeps, how conflicts settle, and
//! that digests depend on the log alone (not on batching, not on re-delivery).

use super::*;
use crate::config::DatasetsConfig;
use agentd_schemas::events::{
    Action, AgentState, DatasetMeta, DatasetRecord, DatasetRecordsIngested, RewardRecorded,
    RewardSource, RolloutCreated, Sampling, SandboxOutcome, SandboxResultRecorded, StateForget,
    StateFrom, StateLimits, StepRecorded, TaskStateUpdated,
};
use agentd_schemas::{LeaseId, Lsn, RolloutId};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn projections() -> DomainProjections {
    DomainProjections::new(&DatasetsConfig::default()).unwrap()
}

pub(super) fn record(ts_ms: u64, events: Vec<Event>) -> LogRecord {
    LogRecord {
        ts_ms,
        actor: None,
        events,
    }
}

fn limits(history_max: u32) -> StateLimits {
    StateLimits {
        history_max,
        item_chars_max: 256,
        token_budget: 800,
        encoding: "o200k_base".to_owned(),
    }
}

fn update(task_id: &str, update: AgentState, history_max: u32) -> Event {
    Event::TaskStateUpdated(TaskStateUpdated {
        task_id: task_id.to_owned(),
        rollout_id: None,
        update,
        forget: StateForget::default(),
        limits: limits(history_max),
        lease_id: Some(LeaseId(1)),
    })
}

fn history(items: &[&str]) -> AgentState {
    AgentState {
        history: items.iter().map(|item| (*item).to_owned()).collect(),
        ..AgentState::default()
    }
}

pub(super) fn step(task_id: &str, step: u32, model: &str) -> Event {
    Event::StepRecorded(StepRecorded {
        task_id: task_id.to_owned(),
        rollout_id: None,
        step,
        job_id: None,
        lease_id: None,
        attempt: None,
        worker_id: None,
        model: model.to_owned(),
        policy_version: "p1".to_owned(),
        sampling: Sampling::default(),
        prompt_tokens: Some(10),
        completion_tokens: Some(5),
        prompt: None,
        think: Some("think".to_owned()),
        action: Some(Action::Pattern {
            language: "python".to_owned(),
            pattern: "print($A)".to_owned(),
            rewrite: "log($A)".to_owned(),
        }),
        state_update: None,
        raw_output: None,
        generation_ms: None,
        format_error: None,
    })
}

pub(super) fn sandbox(task_id: &str, step: u32, outcome: SandboxOutcome) -> Event {
    Event::SandboxResultRecorded(SandboxResultRecorded {
        task_id: task_id.to_owned(),
        rollout_id: None,
        step,
        lease_id: None,
        exit_code: Some(0),
        outcome,
        diff: "-a\n+b\n".to_owned(),
        stdout: String::new(),
        stderr: String::new(),
        tests_passed: Some(3),
        tests_failed: Some(0),
        duration_ms: Some(12),
        peak_rss_bytes: None,
    })
}

pub(super) fn reward(task_id: &str, step: u32, value: f64, verified: bool) -> Event {
    Event::RewardRecorded(RewardRecorded {
        task_id: task_id.to_owned(),
        rollout_id: None,
        step,
        lease_id: None,
        value,
        verified,
        components: BTreeMap::from([("tests".to_owned(), value)]),
        source: RewardSource::Rule,
    })
}

fn meta(source: &str, num_records: u64) -> DatasetMeta {
    DatasetMeta {
        source: source.to_owned(),
        version: "v1".to_owned(),
        license: "MIT".to_owned(),
        downloaded_at: "2024-05-01T12:00:00Z".to_owned(),
        sha256: "0".repeat(64),
        num_records,
        url: None,
    }
}

fn dataset_record(instruction: &str, language: &str) -> DatasetRecord {
    DatasetRecord {
        instruction: instruction.to_owned(),
        pre: "x = 1\n".to_owned(),
        post: "x = 2\n".to_owned(),
        language: language.to_owned(),
        tags: Vec::new(),
        metadata_json: "{}".to_owned(),
    }
}

fn ingest(source: &str, first_index: u64, records: Vec<DatasetRecord>) -> Event {
    Event::DatasetRecordsIngested(DatasetRecordsIngested {
        source: source.to_owned(),
        version: "v1".to_owned(),
        first_index,
        records,
    })
}

/// A log touching every domain event, with a job event in between (ignored by these
/// projections).
fn sample_log() -> Vec<(Lsn, LogRecord)> {
    let frames = vec![
        vec![Event::DatasetRegistered(meta("ds", 4))],
        vec![ingest(
            "ds",
            0,
            vec![
                dataset_record("rename a", "py"),
                dataset_record("rename a", "python"),
                dataset_record("rename b", "cobol"),
            ],
        )],
        vec![Event::QueuePaused {
            queue: "q".to_owned(),
        }],
        vec![update("t1", history(&["read the file"]), 3)],
        vec![
            step("t1", 0, "teacher-a"),
            update("t1", history(&["ran"]), 3),
        ],
        vec![sandbox("t1", 0, SandboxOutcome::Ok)],
        vec![reward("t1", 0, 1.0, true)],
        vec![step("t2", 0, "teacher-b")],
        vec![reward("t2", 0, 0.0, false)],
        vec![ingest(
            "ds",
            2,
            vec![
                dataset_record("rename b", "cobol"),
                dataset_record("rename c", "js"),
            ],
        )],
    ];
    frames
        .into_iter()
        .enumerate()
        .map(|(position, events)| {
            let lsn = Lsn(position as u64 + 1);
            (lsn, record(1_000 + lsn.0, events))
        })
        .collect()
}

#[test]
fn state_updates_merge_in_log_order_with_the_limits_in_each_event() {
    let domain = projections();
    domain.apply_record(
        Lsn(1),
        record(10, vec![update("t", history(&["a", "b"]), 3)]),
    );
    // A later event with a smaller history cap trims with its own limits.
    domain.apply_record(Lsn(2), record(20, vec![update("t", history(&["c"]), 2)]));
    let states = domain.agent_states();
    let task = states.task("t").unwrap();
    assert_eq!(task.state.history, ["b", "c"]);
    assert_eq!(task.lsn, Lsn(2));
    let lsns: Vec<Lsn> = task.updates.iter().map(|update| update.lsn).collect();
    assert_eq!(lsns, [Lsn(1), Lsn(2)]);
    assert_eq!(task.updates[1].ts_ms, 20);
    assert_eq!(task.updates[1].limits.history_max, 2);
    let trimmed: Vec<&str> = task.updates[1]
        .trimmed
        .iter()
        .map(|trimmed| trimmed.item.as_str())
        .collect();
    assert_eq!(trimmed, ["a"], "the update that pushed `a` out reports it");
    assert!(task.tokens > 0);
    assert!(states.task("other").is_none());
    assert_eq!(
        states.state_of("other", None),
        (Arc::new(AgentState::default()), Lsn::ZERO)
    );
}

#[test]
fn an_update_with_an_unknown_encoding_is_counted_not_merged() {
    let domain = projections();
    let mut limits = limits(3);
    limits.encoding = "gpt9_base".to_owned();
    let event = Event::TaskStateUpdated(TaskStateUpdated {
        task_id: "t".to_owned(),
        rollout_id: None,
        forget: StateForget::default(),
        update: history(&["a"]),
        limits,
        lease_id: None,
    });
    domain.apply_record(Lsn(1), record(1, vec![event]));
    assert!(domain.agent_states().task("t").is_none());
    assert_eq!(domain.agent_states().unmergeable(), 1);
}

#[test]
fn a_step_keeps_the_state_before_it_and_its_own_update_applies_after() {
    let domain = projections();
    domain.apply_batch(sample_log());
    let trajectories = domain.trajectories();
    let first = trajectories.step("t1", None, 0).unwrap();
    assert_eq!(first.state_before.history, ["read the file"]);
    assert_eq!(first.state_before_lsn, Lsn(4));
    assert_eq!(first.lsn, Lsn(5));
    assert_eq!(first.ts_ms, 1_005);
    assert_eq!(first.sandbox.as_ref().unwrap().lsn, Lsn(6));
    assert_eq!(first.reward.as_ref().unwrap().event.value, 1.0);
    assert_eq!(
        domain.agent_states().task("t1").unwrap().state.history,
        ["read the file", "ran"]
    );
    let second = trajectories.step("t2", None, 0).unwrap();
    assert_eq!(*second.state_before, AgentState::default());
    assert_eq!(second.state_before_lsn, Lsn::ZERO);
    assert!(second.sandbox.is_none());
}

#[test]
fn conflicting_facts_are_settled_by_log_order_and_counted() {
    let domain = projections();
    let frames = vec![
        vec![step("t", 0, "m")],
        vec![step("t", 0, "other-model")],
        vec![sandbox("t", 0, SandboxOutcome::Failed)],
        vec![sandbox("t", 0, SandboxOutcome::Ok)],
        vec![reward("t", 0, 0.5, false)],
        vec![reward("t", 0, 1.0, true)],
        vec![
            sandbox("t", 7, SandboxOutcome::Ok),
            reward("nope", 0, 1.0, true),
        ],
    ];
    for (position, events) in frames.into_iter().enumerate() {
        domain.apply_record(Lsn(position as u64 + 1), record(1, events));
    }
    let trajectories = domain.trajectories();
    let entry = trajectories.step("t", None, 0).unwrap();
    assert_eq!(entry.step.model, "m");
    assert_eq!(
        entry.sandbox.as_ref().unwrap().event.outcome,
        SandboxOutcome::Failed
    );
    assert_eq!(entry.reward.as_ref().unwrap().event.value, 0.5);
    let stats = trajectories.stats();
    assert_eq!(stats.steps, 1);
    assert_eq!(
        stats.models,
        [(
            "m".to_owned(),
            trajectories::ModelCounters {
                steps: 1,
                rewarded: 1,
                verified: 0
            }
        )]
    );
    assert_eq!(
        stats.ignored,
        trajectories::Ignored {
            duplicate_steps: 1,
            duplicate_sandbox_results: 1,
            duplicate_rewards: 1,
            sandbox_results_without_step: 1,
            rewards_without_step: 1,
            duplicate_rollouts: 0,
            steps_without_rollout: 0,
        }
    );
}

#[test]
fn teacher_precision_is_verified_steps_over_judged_steps_per_model() {
    let domain = projections();
    let frames = vec![
        vec![
            step("a", 0, "glm"),
            step("a", 1, "glm"),
            step("b", 0, "minimax"),
        ],
        vec![reward("a", 0, 1.0, true), reward("a", 1, -2.0, false)],
        vec![reward("b", 0, 0.05, false)],
        vec![step("c", 0, "glm")],
    ];
    for (position, events) in frames.into_iter().enumerate() {
        domain.apply_record(Lsn(position as u64 + 1), record(1, events));
    }
    let stats = domain.trajectories().stats();
    let precision: Vec<(&str, Option<f64>)> = stats
        .models
        .iter()
        .map(|(model, counters)| (model.as_str(), counters.precision()))
        .collect();
    // glm: one verified of two judged; its third step waits for a verdict and is no failure.
    assert_eq!(precision, [("glm", Some(0.5)), ("minimax", Some(0.0))]);
    let policies: Vec<(&str, &str, u64, Option<f64>)> = stats
        .policies
        .iter()
        .map(|((model, policy), counters)| {
            (
                model.as_str(),
                policy.as_str(),
                counters.steps,
                counters.precision(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        [("glm", "p1", 3, Some(0.5)), ("minimax", "p1", 1, Some(0.0))]
    );
    assert_eq!(stats.tasks, 3);
    let rewards = &stats.rewards;
    assert_eq!((rewards.count, rewards.verified), (3, 1));
    assert_eq!((rewards.min, rewards.max), (Some(-2.0), Some(1.0)));
    // -2.0 is in (-inf, -1], 0.05 in (0, 0.1], 1.0 in (0.9, 1.0].
    let mut expected = [0u64; 14];
    expected[0] = 1;
    expected[3] = 1;
    expected[12] = 1;
    assert_eq!(rewards.buckets, expected);
    assert_eq!(rewards.by_source.get("rule"), Some(&3));
}

/// A step whose action is `action` (`None`: a raw output that did not parse).
fn step_in(task_id: &str, step_index: u32, action: Option<Action>) -> Event {
    let Event::StepRecorded(mut recorded) = step(task_id, step_index, "glm") else {
        unreachable!("step() makes a step");
    };
    recorded.action = action;
    Event::StepRecorded(recorded)
}

fn pattern_in(language: &str) -> Option<Action> {
    Some(Action::Pattern {
        language: language.to_owned(),
        pattern: "x".to_owned(),
        rewrite: "y".to_owned(),
    })
}

fn rule_yaml(yaml: &str) -> Option<Action> {
    Some(Action::Rule {
        yaml: yaml.to_owned(),
    })
}

#[test]
fn teacher_precision_per_language_of_the_action() {
    let frames = vec![
        vec![
            step_in("a", 0, pattern_in("python")),
            // An alias counts under the canonical name.
            step_in("a", 1, pattern_in("py")),
            step_in(
                "a",
                2,
                rule_yaml("id: r\nlanguage: TypeScript\nrule:\n  pattern: x\n"),
            ),
            step_in("a", 3, None),
            step_in("a", 4, pattern_in("cobol")),
        ],
        // A duplicate of step 0 in another language is ignored: the first in log order stands.
        vec![step_in("a", 0, pattern_in("go"))],
        vec![
            reward("a", 0, 1.0, true),
            reward("a", 1, 0.0, false),
            reward("a", 2, 1.0, true),
            reward("a", 3, 0.0, false),
        ],
    ];
    let domain = projections();
    for (position, events) in frames.iter().cloned().enumerate() {
        domain.apply_record(Lsn(position as u64 + 1), record(1, events));
    }
    let stats = domain.trajectories().stats();
    let languages: Vec<(&str, u64, u64, u64, Option<f64>)> = stats
        .languages
        .iter()
        .map(|(language, counters)| {
            let precision = counters.precision();
            let (steps, rewarded, verified) =
                (counters.steps, counters.rewarded, counters.verified);
            (*language, steps, rewarded, verified, precision)
        })
        .collect();
    assert_eq!(
        languages,
        [
            ("python", 2, 2, 1, Some(0.5)),
            ("typescript", 1, 1, 1, Some(1.0)),
            // No action, and a language agentd does not know; step 4 awaits its verdict.
            ("unknown", 2, 1, 0, Some(0.0)),
        ]
    );
    let step_total: u64 = stats.languages.iter().map(|(_, c)| c.steps).sum();
    assert_eq!(step_total, stats.steps, "every step has one language");

    // The counters are a function of the log: one batch gives the same.
    let again = projections();
    again.apply_batch(
        frames
            .into_iter()
            .enumerate()
            .map(|(position, events)| (Lsn(position as u64 + 1), record(1, events)))
            .collect(),
    );
    assert_eq!(again.trajectories().stats().languages, stats.languages);
}

#[test]
fn each_ingest_record_remembers_its_own_outcome() {
    let domain = projections();
    domain.apply_batch(sample_log());
    let datasets = domain.datasets();
    let first = datasets.ingest_outcome(Lsn(2)).unwrap();
    assert_eq!(
        (
            first.accepted,
            first.kept,
            first.duplicates,
            first.unknown_language,
            first.resent
        ),
        (3, 1, 1, 1, 0)
    );
    // Position 2 again (resent) and position 3 (new, JavaScript).
    let second = datasets.ingest_outcome(Lsn(10)).unwrap();
    assert_eq!((second.accepted, second.resent, second.kept), (1, 1, 1));
    assert_eq!(datasets.ingest_outcome(Lsn(3)), None);
    let summary = &datasets.splits().datasets()[0];
    assert_eq!((summary.records_received, summary.complete), (4, true));
}

#[test]
fn digests_depend_on_the_log_only() {
    let log = sample_log();
    let whole = projections();
    whole.apply_batch(log.clone());
    // Re-delivered frames (start-up replay then projector catch-up) are skipped.
    whole.apply_batch(log[3..].to_vec());
    let one_by_one = projections();
    for chunk in log.chunks(3) {
        one_by_one.apply_batch(chunk.to_vec());
    }
    assert_eq!(whole.digests(), one_by_one.digests());
    assert_eq!(whole.applied_lsn(), Lsn(10));

    let empty = projections().digests();
    let digests = whole.digests();
    assert_ne!(digests.datasets, empty.datasets);
    assert_ne!(digests.agent_state, empty.agent_state);
    assert_ne!(digests.trajectories, empty.trajectories);

    // One different fact (the reward of t2 verified) changes only the trajectory digest.
    let mut changed_log = log.clone();
    changed_log[8].1.events = vec![reward("t2", 0, 0.0, true)];
    let changed = projections();
    changed.apply_batch(changed_log);
    let changed = changed.digests();
    assert_eq!(changed.datasets, digests.datasets);
    assert_eq!(changed.agent_state, digests.agent_state);
    assert_ne!(changed.trajectories, digests.trajectories);
}

#[test]
fn the_splits_follow_the_datasets_configuration() {
    let mut config = DatasetsConfig {
        token_cap: 3,
        ..DatasetsConfig::default()
    };
    let domain = DomainProjections::new(&config).unwrap();
    domain.apply_batch(sample_log());
    let stats = domain.datasets().splits().stats();
    assert_eq!(stats.token_cap, 3);
    // Nothing is kept, so the second "rename a" is no duplicate: it is over the cap too.
    assert_eq!(stats.total.over_token_cap, 3);
    assert_eq!(stats.total.duplicates, 0);
    assert_ne!(domain.digests().datasets, {
        let default = projections();
        default.apply_batch(sample_log());
        default.digests().datasets
    });
    config.encoding = "nope".to_owned();
    assert!(DomainProjections::new(&config).is_err());
    let mut zero_weights = DatasetsConfig::default();
    (
        zero_weights.split_train,
        zero_weights.split_dev,
        zero_weights.split_test,
    ) = (0, 0, 0);
    assert!(DomainProjections::new(&zero_weights).is_err());
}

fn created(id: u64, task_id: &str, group: &str, state_from: StateFrom) -> Event {
    Event::RolloutCreated(RolloutCreated {
        rollout_id: RolloutId(id),
        task_id: task_id.to_owned(),
        group: group.to_owned(),
        model: "m".to_owned(),
        policy_version: "p1".to_owned(),
        sampling: Sampling::default(),
        job_id: None,
        lease_id: None,
        attempt: None,
        worker_id: None,
        state_from,
    })
}

/// Puts an event into a rollout.
fn of_rollout(id: u64, mut event: Event) -> Event {
    let rollout = Some(RolloutId(id));
    match &mut event {
        Event::StepRecorded(step) => step.rollout_id = rollout,
        Event::SandboxResultRecorded(result) => result.rollout_id = rollout,
        Event::RewardRecorded(reward) => reward.rollout_id = rollout,
        Event::TaskStateUpdated(update) => update.rollout_id = rollout,
        _ => unreachable!("only trajectory events belong to a rollout"),
    }
    event
}

#[test]
fn rollouts_of_one_task_keep_their_own_steps_state_and_rewards() {
    let domain = projections();
    let frames = vec![
        vec![update("t", history(&["base"]), 3)],
        vec![
            created(1, "t", "g", StateFrom::Task),
            created(2, "t", "g", StateFrom::Empty),
        ],
        // The same step index in two rollouts and in the default rollout.
        vec![
            of_rollout(1, step("t", 0, "m")),
            of_rollout(1, update("t", history(&["one"]), 3)),
        ],
        vec![of_rollout(2, step("t", 0, "m"))],
        vec![step("t", 0, "m")],
        vec![of_rollout(1, reward("t", 0, 1.0, true))],
        vec![of_rollout(2, reward("t", 0, 0.0, false))],
        // A later base update reaches neither rollout.
        vec![update("t", history(&["base later"]), 3)],
        vec![of_rollout(1, step("t", 1, "m"))],
        // A step of a rollout never created is counted, not kept.
        vec![of_rollout(9, step("t", 0, "m"))],
    ];
    for (position, events) in frames.into_iter().enumerate() {
        domain.apply_record(Lsn(position as u64 + 1), record(1, events));
    }
    let states = domain.agent_states();
    assert_eq!(
        states.task("t").unwrap().state.history,
        ["base", "base later"]
    );
    assert_eq!(
        states.rollout(RolloutId(1)).unwrap().state.history,
        ["base", "one"]
    );
    assert!(
        states.rollout(RolloutId(2)).is_none(),
        "empty start, no update"
    );
    let trajectories = domain.trajectories();
    let first = trajectories.step("t", Some(RolloutId(1)), 0).unwrap();
    assert_eq!(first.state_before.history, ["base"]);
    let second = trajectories.step("t", Some(RolloutId(1)), 1).unwrap();
    assert_eq!(second.state_before.history, ["base", "one"]);
    let other = trajectories.step("t", Some(RolloutId(2)), 0).unwrap();
    assert_eq!(*other.state_before, AgentState::default());
    let rollouts = trajectories.task_rollouts("t");
    let ids: Vec<_> = rollouts.iter().map(|r| r.rollout_id).collect();
    assert_eq!(ids, [None, Some(RolloutId(1)), Some(RolloutId(2))]);
    let group = trajectories.group("g").unwrap();
    assert_eq!(group.mean, 0.5);
    let advantages: Vec<f64> = group.rollouts.iter().filter_map(|(_, a)| *a).collect();
    assert!((advantages[0] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    assert!((advantages[0] + advantages[1]).abs() < 1e-12);
    assert_eq!(trajectories.stats().ignored.steps_without_rollout, 1);
    // Export order: the default rollout, then rollouts by id, each in step order.
    let order: Vec<_> = trajectories
        .steps_after(None)
        .map(|entry| (entry.step.rollout_id, entry.step.step))
        .collect();
    assert_eq!(
        order,
        [
            (None, 0),
            (Some(RolloutId(1)), 0),
            (Some(RolloutId(1)), 1),
            (Some(RolloutId(2)), 0)
        ]
    );
    let resumed: Vec<_> = trajectories
        .steps_after(Some(("t", Some(RolloutId(1)), 0)))
        .map(|entry| (entry.step.rollout_id, entry.step.step))
        .collect();
    assert_eq!(resumed, [(Some(RolloutId(1)), 1), (Some(RolloutId(2)), 0)]);
}

#[test]
fn the_first_registration_of_a_dataset_version_stands() {
    let domain = projections();
    let first = meta("src", 2);
    let mut second = meta("src", 2);
    second.license = "Apache-2.0".to_owned();
    assert_ne!(first, second);
    domain.apply_record(
        Lsn(1),
        record(1, vec![Event::DatasetRegistered(first.clone())]),
    );
    domain.apply_record(Lsn(2), record(2, vec![Event::DatasetRegistered(second)]));
    assert_eq!(domain.datasets().meta("src", "v1"), Some(first));
}
