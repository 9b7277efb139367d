//! Rollouts through the real daemon: many samples of one task recorded concurrently (a GRPO
//! group), a retried episode that resumes its rollout under its new lease, and both surviving a
//! SIGKILL and an offline rebuild unchanged.

use agentd_tests::{agentd, Daemon};
use agentd_tests::{get_json, post_json};
use serde_json::{json, Value};

/// Samples in the group.
const ROLLOUTS: usize = 16;
/// Steps each rollout records.
const STEPS: u32 = 3;

fn step_body(step: u32, lease_id: Option<&str>) -> Value {
    let mut body = json!({
        "step": step,
        "model": "qwen2.5-coder-7b",
        "policy_version": "v3",
        "think": format!("step {step}"),
        "action": {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "logger.info($A)"},
        "state_update": {"history": [format!("step {step} done")]},
    });
    if let Some(lease_id) = lease_id {
        body["lease_id"] = json!(lease_id);
    }
    body
}

/// One sample: creates its rollout in group `g`, then records steps 0..STEPS with a sandbox
/// result and a reward each; returns the rollout id.
async fn sample(url: String, index: usize) -> String {
    let (status, created) = post_json(
        &url,
        "/v1/tasks/src%2Fv1%2F7/rollouts",
        json!({"model": "qwen2.5-coder-7b", "policy_version": "v3", "group": "g", "sampling": {"temperature": 1.0, "seed": index}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let rollout = created["rollout_id"].as_str().unwrap().to_owned();
    for step in 0..STEPS {
        let path = format!("/v1/rollouts/{rollout}/steps");
        let (status, answer) = post_json(&url, &path, step_body(step, None)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["rollout_id"], json!(rollout));
        let path = format!("/v1/rollouts/{rollout}/steps/{step}/sandbox");
        let (status, answer) = post_json(
            &url,
            &path,
            json!({"exit_code": 0, "outcome": "ok", "tests_passed": 1, "tests_failed": 0}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        // Rewards differ between samples so that the group has a spread.
        let value = (index % 4) as f64 / 3.0;
        let path = format!("/v1/rollouts/{rollout}/steps/{step}/reward");
        let (status, answer) = post_json(
            &url,
            &path,
            json!({"value": value, "verified": value == 1.0, "source": "rule"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    rollout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_samples_of_one_task_form_a_group_that_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, None);
    let url = daemon.url.clone();
    // The task's base state, which every sample starts from.
    let (status, _) = post_json(
        &url,
        "/v1/tasks/src%2Fv1%2F7/state",
        json!({"goals": ["use logging"]}),
    )
    .await;
    assert_eq!(status, 200);

    let samples: Vec<_> = (0..ROLLOUTS)
        .map(|index| tokio::spawn(sample(url.clone(), index)))
        .collect();
    let mut rollouts = Vec::new();
    for sample in samples {
        rollouts.push(sample.await.unwrap());
    }
    rollouts.sort();
    rollouts.dedup();
    assert_eq!(rollouts.len(), ROLLOUTS, "every sample got its own rollout");

    let listed = get_json(&url, "/v1/tasks/src%2Fv1%2F7/rollouts").await;
    let listed = listed["rollouts"].as_array().unwrap();
    assert_eq!(listed.len(), ROLLOUTS);
    for rollout in listed {
        assert_eq!(rollout["steps"], json!(STEPS), "{rollout}");
        assert_eq!(rollout["rewarded"], json!(STEPS), "{rollout}");
        assert_eq!(rollout["group"], json!("g"));
    }
    let group = get_json(&url, "/v1/groups/g").await;
    let advantages: Vec<f64> = group["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rollout| rollout["advantage"].as_f64().unwrap())
        .collect();
    assert_eq!(advantages.len(), ROLLOUTS);
    assert!(
        advantages.iter().sum::<f64>().abs() < 1e-9,
        "{advantages:?}"
    );
    assert!(group["std"].as_f64().unwrap() > 0.0);

    // A sample's state started from the task's base state and holds only its own history.
    let first = &rollouts[0];
    let state = get_json(&url, &format!("/v1/rollouts/{first}/state")).await;
    assert_eq!(state["state"]["goals"], json!(["use logging"]));
    assert_eq!(
        state["state"]["history"],
        json!(["step 0 done", "step 1 done", "step 2 done"])
    );
    let base = get_json(&url, "/v1/tasks/src%2Fv1%2F7/state").await;
    assert_eq!(
        base["state"]["history"],
        json!([]),
        "samples leave the base alone"
    );
    // `agentctl rollouts state` prints the same state as the prompt sees it.
    let shown = agentd_tests::agentctl(&url, &["rollouts", "state", first]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.starts_with(&format!("rollout {first} of task src/v1/7 · lsn ")),
        "{text}"
    );
    assert!(
        text.contains("step 2 done") && text.contains("use logging"),
        "{text}"
    );

    // Step indexes are unique per rollout: a repeat is refused and nothing reaches the log.
    let before = get_json(&url, "/v1/admin/digest").await;
    let (status, refused) = post_json(
        &url,
        &format!("/v1/rollouts/{first}/steps"),
        step_body(1, None),
    )
    .await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("conflict")));
    let (status, refused) = post_json(&url, "/v1/rollouts/ro_999/steps", step_body(0, None)).await;
    assert_eq!((status, refused["code"].as_str()), (404, Some("not_found")));
    assert_eq!(get_json(&url, "/v1/admin/digest").await, before);

    // SIGKILL and restart: the same rollouts, group and digests.
    let shown = get_json(&url, &format!("/v1/rollouts/{first}")).await;
    daemon.kill9();
    daemon.restart();
    let url = daemon.url.clone();
    assert_eq!(get_json(&url, "/v1/groups/g").await, group);
    assert_eq!(
        get_json(&url, &format!("/v1/rollouts/{first}")).await,
        shown
    );
    let digest = get_json(&url, "/v1/admin/digest").await;
    assert_eq!(digest, before);

    // An offline rebuild replays to the same digests.
    assert_eq!(daemon.stop(), Some(0));
    let output = agentd(&[
        "rebuild",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--out",
        dir.path().join("rebuilt").to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let rebuilt: Value = serde_json::from_slice(&output.stdout).unwrap();
    for name in ["agent_state", "trajectories", "queue", "jobs"] {
        assert_eq!(rebuilt[name], digest["projections"][name], "{name}");
    }
}

#[tokio::test]
async fn a_retried_episode_resumes_its_rollout_under_its_new_lease() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let url = daemon.url.clone();
    // Attempt 1's lease must expire (the long-poll below waits for it), and attempt 2's must
    // stay held through five requests: 300 ms was too short for that on a loaded machine
    // (attempt 2's repeated step got `lease_lost` instead of `conflict`).
    let (status, submitted) = post_json(
        &url,
        "/v1/jobs",
        json!({"queue": "episodes", "kind": "episode", "payload": {"group": "g-resume"},
               "task_id": "t", "lease_ttl_ms": 1500, "max_attempts": 3}),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let lease = |worker: &'static str| {
        let url = url.clone();
        async move {
            let (status, answer) = post_json(
                &url,
                "/v1/leases",
                json!({"worker_id": worker, "queues": ["episodes"], "wait_ms": 20000}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            answer["leases"][0].clone()
        }
    };

    // Attempt 1 creates the rollout under its lease and records step 0, then goes silent.
    let first = lease("box-1").await;
    assert!(first["job"].get("rollout_id").is_none(), "{first}");
    let first_lease = first["lease_id"].as_str().unwrap().to_owned();
    let (status, created) = post_json(
        &url,
        "/v1/tasks/t/rollouts",
        json!({"model": "m", "policy_version": "p", "group": "g-resume", "lease_id": first_lease}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let rollout = created["rollout_id"].as_str().unwrap().to_owned();
    let steps = format!("/v1/rollouts/{rollout}/steps");
    let (status, answer) = post_json(&url, &steps, step_body(0, Some(&first_lease))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rollout_id"], json!(rollout));

    // The lease expires; attempt 2 (the long-poll waits until the job is leasable again) sees
    // the rollout on its grant and resumes at step 1.
    let second = lease("box-2").await;
    assert_eq!(second["attempt"], json!(2), "{second}");
    assert_eq!(second["job"]["rollout_id"], json!(rollout));
    let second_lease = second["lease_id"].as_str().unwrap().to_owned();
    let (status, resumed) = post_json(
        &url,
        "/v1/tasks/t/rollouts",
        json!({"model": "m", "policy_version": "p", "group": "g-resume", "lease_id": second_lease}),
    )
    .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        (
            &resumed["rollout_id"],
            &resumed["created"],
            &resumed["next_step"]
        ),
        (&json!(rollout), &json!(false), &json!(1))
    );
    // The stale attempt is fenced off; a repeated step is refused; step 1 lands once.
    let (status, refused) = post_json(&url, &steps, step_body(1, Some(&first_lease))).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("lease_lost"))
    );
    let (status, refused) = post_json(&url, &steps, step_body(0, Some(&second_lease))).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("conflict")));
    let (status, answer) = post_json(&url, &steps, step_body(1, Some(&second_lease))).await;
    assert_eq!(status, 200, "{answer}");

    let shown = get_json(&url, &format!("/v1/rollouts/{rollout}")).await;
    let attempts: Vec<(u64, u64)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["step"].as_u64().unwrap(),
                step["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [(0, 1), (1, 2)], "every step exactly once");
    assert_eq!(shown["group"], json!("g-resume"));
}
