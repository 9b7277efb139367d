//! Episodes: what actors' state updates, steps, sandbox results and rewards leave in the agent
//! state, the trajectory, the stats, the CLI and the metrics, and what the step routes refuse.

use super::{mask, mask_times, shared, step_request, submit_and_lease, trajectory_stats, ACTOR};
use agentd_schemas::domain_api::{
    IgnoredView, RewardRequest, StateUpdateRequest, TaskStateView, TrajectoryResponse,
    TrajectoryStatsResponse,
};
use agentd_schemas::events::{RewardSource, SandboxOutcome};
use agentd_schemas::{ErrorCode, Lsn};
use agentd_tests::{
    agentctl_text, agentctl_typed, eventually, get_text, get_typed, post_json, post_refused, Daemon,
};
use expect_test::expect;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn a_state_update_and_each_step_answer_the_merged_state() {
    let episodes = &shared().episodes;
    for episode in [&episodes.a, &episodes.b] {
        let merged = &episode.update;
        assert_eq!(merged.state.lsn, merged.update_lsn);
        assert!(
            merged.state.rendered.contains("## Goals"),
            "{}",
            merged.state.rendered
        );
        assert!(merged.state.tokens > 0);
        assert_eq!(merged.state.encoding, "o200k_base");
        for (step, answer) in episode.steps.iter().enumerate() {
            let merged = answer
                .state
                .as_ref()
                .expect("a step with a state update answers the merged state");
            assert_eq!(merged.update_lsn, answer.lsn);
            assert!(merged
                .state
                .state
                .history
                .contains(&format!("step {step}: proposed a rename")));
        }
    }
}

#[tokio::test]
async fn the_step_routes_refuse_a_second_step_or_reward_a_missing_step_unknown_fields_and_long_texts(
) {
    let domain = shared();
    let client = domain.client();
    // Step 1 again, under task-b's lease, which is still held.
    let b = &domain.episodes.b;
    let error = client
        .record_step(b.task, &step_request(1, b.job_id, b.lease_id, b.model))
        .await
        .unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::Conflict), "{error}");
    let a = &domain.episodes.a;
    let reward = RewardRequest {
        value: 1.0,
        verified: true,
        components: Default::default(),
        source: RewardSource::Human,
        lease_id: None,
    };
    let error = client.record_reward(a.task, 9, &reward).await.unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::NotFound), "{error}");
    let error = client.record_reward(a.task, 0, &reward).await.unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::Conflict), "{error}");
    post_refused(
        domain.url(),
        "/v1/tasks/task-a/state",
        json!({"goals": ["x"], "goal": "typo"}),
        ErrorCode::InvalidRequest,
    )
    .await;
    let refused = post_refused(
        domain.url(),
        "/v1/tasks/task-a/steps/0/sandbox",
        json!({"outcome": "ok", "stdout": "x".repeat(70_000)}),
        ErrorCode::StringTooLong,
    )
    .await;
    assert!(
        refused.message.contains("65536"),
        "the limit is named: {refused:?}"
    );
}

#[tokio::test]
async fn after_its_job_completes_an_episode_can_no_longer_update_state_or_record_steps() {
    // task-a's job was completed when the shared daemon was seeded.
    let domain = shared();
    let client = domain.client();
    let a = &domain.episodes.a;
    let stale = StateUpdateRequest {
        goals: vec!["too late".into()],
        lease_id: Some(a.lease_id),
        ..StateUpdateRequest::default()
    };
    let error = client.update_task_state(a.task, &stale).await.unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::LeaseLost), "{error}");
    let error = client
        .record_step(a.task, &step_request(2, a.job_id, a.lease_id, a.model))
        .await
        .unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::LeaseLost), "{error}");

    let state = client.task_state(a.task).await.unwrap();
    assert!(!state.state.goals.contains(&"too late".to_owned()));
    assert_eq!(state.updates, 3, "the refused update is not counted");
    let trajectory = client.trajectory(a.task, None).await.unwrap();
    assert_eq!(
        trajectory.steps.len(),
        2,
        "the refused step is not recorded"
    );
}

#[tokio::test]
async fn state_history_and_trajectory_hold_each_update_and_the_state_before_each_step() {
    let client = shared().client();
    let state_a = client.task_state("task-a").await.unwrap();
    assert_eq!(state_a.updates, 3, "one direct update and one per step");
    assert_eq!(
        state_a.state.history,
        ["step 0: proposed a rename", "step 1: proposed a rename"]
    );
    let history = client.task_state_history("task-a", None).await.unwrap();
    let lsns: Vec<u64> = history.updates.iter().map(|update| update.lsn.0).collect();
    assert!(lsns.windows(2).all(|pair| pair[0] < pair[1]), "{lsns:?}");
    assert_eq!(history.updates.last().unwrap().lsn, state_a.lsn);
    let trajectory = client.trajectory("task-a", None).await.unwrap();
    assert_eq!(trajectory.steps.len(), 2);
    let (first, second) = (&trajectory.steps[0], &trajectory.steps[1]);
    assert_eq!(first.state_before.goals, ["make task-a readable"]);
    assert!(
        first.state_before.history.is_empty(),
        "the step's own update comes after it"
    );
    assert_eq!(second.state_before.history, ["step 0: proposed a rename"]);
    assert_eq!(
        (first.attempt, first.worker_id.as_deref()),
        (Some(1), Some(ACTOR))
    );
    assert_eq!(first.sandbox.as_ref().unwrap().outcome, SandboxOutcome::Ok);
    assert!(first.reward.as_ref().unwrap().verified);
    assert!(!second.reward.as_ref().unwrap().verified);
}

#[tokio::test]
async fn trajectory_stats_give_teacher_precision_per_model_and_per_language_of_the_action() {
    let stats = shared().client().trajectory_stats().await.unwrap();
    let precision: Vec<(&str, Option<f64>)> = stats
        .models
        .iter()
        .map(|model| (model.model.as_str(), model.teacher_precision))
        .collect();
    assert_eq!(
        precision,
        [("glm-4.6", Some(0.5)), ("minimax-m2", Some(0.0))]
    );
    assert_eq!(
        (stats.steps, stats.rewards.count, stats.rewards.verified),
        (4, 4, 1)
    );
    assert_eq!(stats.rewards.by_source.get("rule"), Some(&2));
    assert_eq!(stats.sandbox_outcomes.get("failed"), Some(&3));
    // By the language of each step's action: both steps 0 are Python patterns (task-a's
    // verified), both steps 1 rules whose YAML says `language: ts`.
    let languages: Vec<(&str, u64, u64, u64, Option<f64>)> = stats
        .languages
        .iter()
        .map(|entry| {
            let name = entry.language.as_str();
            let (steps, rewarded, verified) = (entry.steps, entry.rewarded, entry.verified);
            (name, steps, rewarded, verified, entry.teacher_precision)
        })
        .collect();
    assert_eq!(
        languages,
        [
            ("python", 2, 2, 1, Some(0.5)),
            ("typescript", 2, 2, 0, Some(0.0))
        ]
    );
}

#[tokio::test]
async fn agentctl_shows_the_state_its_history_the_trajectory_and_the_stats() {
    let domain = shared();
    let url = domain.url();
    let history = domain
        .client()
        .task_state_history("task-a", None)
        .await
        .unwrap();
    let state: TaskStateView = get_typed(url, "/v1/tasks/task-a/state").await;
    assert_eq!(
        state.lsn,
        history.updates.last().unwrap().lsn,
        "`state show` names the last update's LSN"
    );
    let trajectory: TrajectoryResponse = get_typed(url, "/v1/tasks/task-a/trajectory").await;
    // Ids and LSNs differ from run to run: each known one is shown by name, in its context
    // (`lsn 12 ·`, `(lsn 12)`, the history table's first column), so no other number is taken for
    // it. A step and the state update it carries are one record: one LSN, named for the update.
    let a = &domain.episodes.a;
    let mut lsn_names: Vec<(Lsn, String)> = Vec::new();
    let updates = history.updates.iter().map(|update| update.lsn);
    for (index, lsn) in updates.enumerate() {
        lsn_names.push((lsn, format!("update {index}")));
    }
    for step in &trajectory.steps {
        if lsn_names.iter().all(|(lsn, _)| *lsn != step.lsn) {
            lsn_names.push((step.lsn, format!("step {}", step.step)));
        }
    }
    let mut known = vec![
        (a.job_id.to_string(), "<job a>".to_owned()),
        (a.lease_id.to_string(), "<lease a>".to_owned()),
    ];
    for (lsn, name) in &lsn_names {
        known.push((format!("lsn {lsn} ·"), format!("lsn <{name}> ·")));
        known.push((format!("(lsn {lsn})"), format!("(lsn <{name}>)")));
        // The history table pads its LSN column to 8 characters.
        known.push((format!("\n{:<8}", lsn.to_string()), format!("\n<{name}>")));
    }

    let shown = agentctl_text(url, &["state", "show", "task-a"]).ok();
    expect![[r#"
        task task-a · lsn <update 2> · 3 updates · 58 tokens (o200k_base)

        ## Goals
        - make task-a readable

        ## Constraints
        - keep behaviour

        ## Hypotheses
        - renaming keeps the tests green

        ## History
        - step 0: proposed a rename
        - step 1: proposed a rename

        ## Next focus
        the accumulator loop
    "#]]
    .assert_eq(&mask(&shown, &known));
    let listed = agentctl_text(url, &["state", "history", "task-a"]).ok();
    expect![[r#"
        LSN      TIME                     LEASE      TOKENS  UPDATE
        <update 0> <time> <lease a>        24  goals+1 constraints+1 next_focus
        <update 1> <time> <lease a>        49  hypotheses+1 history+1
        <update 2> <time> <lease a>        58  hypotheses+1 history+1
    "#]]
    .assert_eq(&mask_times(&mask(&listed, &known)));
    let steps = agentctl_text(url, &["trajectories", "show", "task-a"]).ok();
    expect![[r#"
        step 0 · lsn <update 1> · model glm-4.6 (policy srl-poc-1) · <job a> <lease a> attempt 1 · tokens 812 in, 96 out
          action: pattern [python] "x" -> "total"
          think: step 0: the accumulator is badly named
          state before: 1 goals, 1 constraints, next focus (lsn <update 0>)
          state update: 1 hypotheses, 1 history
          sandbox: ok, exit 0, tests 3 passed 0 failed, 140 ms, diff 2 lines
          reward: 1 verified (rule) tests=1
        step 1 · lsn <update 2> · model glm-4.6 (policy srl-poc-1) · <job a> <lease a> attempt 1 · tokens 812 in, 96 out
          action: rule (5 lines of YAML)
          think: step 1: the accumulator is badly named
          state before: 1 goals, 1 constraints, 1 hypotheses, 1 history, next focus (lsn <update 1>)
          state update: 1 hypotheses, 1 history
          sandbox: failed, exit 1, tests 2 passed 1 failed, 140 ms, diff 2 lines
          reward: 0 not verified (teacher) tests=0
    "#]].assert_eq(&mask(&steps, &known));
    let stats_text = agentctl_text(url, &["trajectories", "stats"]).ok();
    expect![[r#"
        4 steps in 2 tasks · 0 rollouts in 0 groups · 4 sandbox results · 4 rewards (1 verified)

        MODEL                               STEPS  REWARDED  VERIFIED  TEACHER PRECISION
        glm-4.6                                 2         2         1              0.500
        minimax-m2                              2         2         0              0.000

        MODEL @ POLICY VERSION              STEPS  REWARDED  VERIFIED  TEACHER PRECISION
        glm-4.6 @ srl-poc-1                     2         2         1              0.500
        minimax-m2 @ srl-poc-1                  2         2         0              0.000

        LANGUAGE                            STEPS  REWARDED  VERIFIED  TEACHER PRECISION
        python                                  2         2         1              0.500
        typescript                              2         2         0              0.000

        rewards: mean 0.250 min 0.000 max 1.000 · by source: human 0, rule 2, teacher 2
          (-inf, -1]     0
          (-1, -0.5]     0
          (-0.5, 0]      3
          (0, 0.1]       0
          (0.1, 0.2]     0
          (0.2, 0.3]     0
          (0.3, 0.4]     0
          (0.4, 0.5]     0
          (0.5, 0.6]     0
          (0.6, 0.7]     0
          (0.7, 0.8]     0
          (0.8, 0.9]     0
          (0.9, 1]       1
          (1, +inf)      0
        sandbox outcomes: failed 3, ok 1
    "#]]
    .assert_eq(&stats_text);
    let stats_json: TrajectoryStatsResponse = agentctl_typed(url, &["trajectories", "stats"]);
    assert_eq!(stats_json, trajectory_stats(url).await);
}

#[tokio::test]
async fn metrics_export_teacher_precision_the_reward_histogram_and_the_episode_run_time() {
    // task-a's episode job, completed when the shared daemon was seeded, has its run time
    // counted by queue and kind.
    let url = shared().url();
    // The gauges are refreshed by a periodic task.
    eventually(
        Duration::from_secs(10),
        "teacher precision gauges",
        || async {
            let text = get_text(url, "/metrics").await;
            (text.contains("agentd_teacher_precision{model=\"glm-4.6\"} 0.5")
                && text.contains("agentd_teacher_precision_by_language{language=\"python\"} 0.5")
                && text.contains("agentd_rewards_verified 1"))
            .then_some(())
        },
    )
    .await;
    let metrics = get_text(url, "/metrics").await;
    let run_time_count = metrics.lines().find(|line| {
        line.starts_with("agentd_job_start_to_finish_seconds_count{")
            && line.contains("queue=\"actors\"")
            && line.contains("kind=\"episode\"")
    });
    assert_eq!(
        run_time_count.and_then(|line| line.rsplit(' ').next()),
        Some("1"),
        "{metrics}"
    );
    // The reward histogram counts every recorded reward, as the stats do, and has HELP text.
    let stats = trajectory_stats(url).await;
    let reward_count = metrics
        .lines()
        .find_map(|line| line.strip_prefix("agentd_reward_value_count "));
    assert_eq!(
        reward_count,
        Some(stats.rewards.count.to_string().as_str()),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE agentd_reward_value histogram")
            && metrics.contains("# HELP agentd_reward_value "),
        "{metrics}"
    );
}

/// Many clients racing to record the same step, its sandbox result, its reward and a dataset's
/// meta: exactly one of each is answered 2xx, the rest 409 `conflict`, and the log holds only
/// what was acknowledged (no ignored duplicates in the projection's counters).
#[tokio::test]
async fn racing_writers_of_one_fact_get_one_success_and_conflicts() {
    const RACERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let url = daemon.url.clone();

    async fn race(url: &str, path: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
        let calls = bodies.into_iter().map(|body| {
            let (url, path) = (url.to_owned(), path.to_owned());
            tokio::spawn(async move { post_json(&url, &path, body).await })
        });
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    }
    fn one_winner(what: &str, answers: &[(u16, Value)]) {
        let won = answers.iter().filter(|(status, _)| *status < 300).count();
        assert_eq!(won, 1, "{what}: exactly one 2xx expected: {answers:?}");
        for (status, body) in answers.iter().filter(|(status, _)| *status >= 300) {
            assert_eq!(*status, 409, "{what}: {body}");
            assert_eq!(body["code"], "conflict", "{what}: {body}");
        }
    }

    // Each racer's step carries its own state update: only the winner's may reach the state.
    let steps = (0..RACERS)
        .map(|racer| {
            json!({
                "step": 0, "model": format!("model-{racer}"), "policy_version": "p1",
                "action": {"kind": "pattern", "language": "python", "pattern": "x", "rewrite": "y"},
                "state_update": {"history": [format!("racer {racer}")]},
            })
        })
        .collect();
    let answers = race(&url, "/v1/tasks/race/steps", steps).await;
    one_winner("step", &answers);
    let sandboxes = (0..RACERS)
        .map(|racer| json!({"exit_code": racer, "outcome": "ok"}))
        .collect();
    one_winner(
        "sandbox",
        &race(&url, "/v1/tasks/race/steps/0/sandbox", sandboxes).await,
    );
    let rewards = (0..RACERS)
        .map(|racer| json!({"value": racer as f64 / 100.0, "verified": false, "source": "rule"}))
        .collect();
    one_winner(
        "reward",
        &race(&url, "/v1/tasks/race/steps/0/reward", rewards).await,
    );
    let metas = (0..RACERS)
        .map(|racer| {
            json!({
                "source": "race/ds", "version": "v1", "license": "MIT",
                "downloaded_at": "2024-05-01T12:00:00Z", "sha256": "0".repeat(64),
                "num_records": racer,
            })
        })
        .collect();
    one_winner("dataset", &race(&url, "/v1/datasets", metas).await);

    let trajectory: TrajectoryResponse = get_typed(&url, "/v1/tasks/race/trajectory").await;
    let racer = trajectory.steps[0].model.strip_prefix("model-").unwrap();
    let state: TaskStateView = get_typed(&url, "/v1/tasks/race/state").await;
    assert_eq!(
        state.state.history,
        [format!("racer {racer}")],
        "only the recorded step's update is merged: {state:?}"
    );
    let stats: TrajectoryStatsResponse = get_typed(&url, "/v1/trajectories/stats").await;
    assert_eq!(
        stats.ignored,
        IgnoredView::default(),
        "nothing duplicate reached the log"
    );
}

/// A step posted with only its `lease_id` is recorded with the lease's job, attempt and worker,
/// which the sequencer fills in from the lease it checks.
#[tokio::test]
async fn a_step_under_a_lease_alone_records_the_leases_job_attempt_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let client = daemon.client();
    let (job_id, grant) = submit_and_lease(&client, "task-l", "box-7").await;
    let body = json!({
        "step": 0, "lease_id": grant.lease_id, "model": "m", "policy_version": "p1",
        "action": {"kind": "rule", "yaml": "rule: {pattern: x}"},
    });
    let (status, answer) = post_json(&daemon.url, "/v1/tasks/task-l/steps", body).await;
    assert_eq!(status, 200, "{answer}");
    let trajectory: TrajectoryResponse =
        get_typed(&daemon.url, "/v1/tasks/task-l/trajectory").await;
    let step = &trajectory.steps[0];
    assert_eq!(
        (step.job_id, step.attempt, step.worker_id.as_deref()),
        (Some(job_id), Some(grant.attempt), Some("box-7")),
        "{step:?}"
    );
}
