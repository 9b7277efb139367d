//! Access control through the real binaries: tokens from `agentctl tokens create`, 401 for a
//! missing or bad token, 403 for a role that may not, the token's name in the audit trail, and
//! the refusal to serve an open address without tokens.

use agentd_client::Client;
use agentd_schemas::api::{DigestResponse, LeaseRequest, SubmitJobRequest};
use agentd_schemas::Lsn;
use agentd_tests::{agentctl, binary, write_config, Daemon};
use std::process::{Command, Stdio};

/// Creates a token with the real CLI; returns (token, config line).
fn create_token(role: &str, name: &str) -> (String, String) {
    let output = agentctl(
        "http://127.0.0.1:1",
        &["--json", "tokens", "create", "--role", role, "--name", name],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        created["token"].as_str().unwrap().to_string(),
        created["config_line"].as_str().unwrap().to_string(),
    )
}

async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn roles_gate_routes_and_the_token_name_is_audited() {
    let tokens: Vec<(String, String)> = [
        ("admin", "ops"),
        ("submit", "trainer"),
        ("submit", "other-team"),
        ("worker", "box-3"),
        ("read", "dashboard"),
    ]
    .iter()
    .map(|(role, name)| create_token(role, name))
    .collect();
    let lines: Vec<&str> = tokens.iter().map(|(_, line)| line.as_str()).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("[auth]\ntokens = [\n{}\n]\n", lines.join("\n")),
    );
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let token = |index: usize| tokens[index].0.clone();
    let as_role = |index: usize| Client::new(&daemon.url, Some(token(index))).unwrap();
    // Building an agentd client installs reqwest's TLS provider for the plain client below.
    let _client = as_role(0);
    let http = reqwest::Client::new();

    // Health is public; everything else needs a valid token.
    assert_eq!(
        http.get(format!("{}/healthz", daemon.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, code) = status_and_code(
        http.get(format!("{}/v1/queues", daemon.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let bad = http
        .get(format!("{}/v1/queues", daemon.url))
        .bearer_auth("agtk_not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(bad).await,
        (401, "unauthorized".to_string())
    );

    let job = SubmitJobRequest {
        queue: "q".into(),
        kind: "k".into(),
        ..Default::default()
    };
    let error = as_role(3).submit(&job).await.unwrap_err();
    assert_eq!(error.code(), Some("forbidden"), "a worker may not submit");
    let submitted = as_role(1).submit(&job).await.unwrap();
    as_role(1)
        .job(submitted.job_id)
        .await
        .expect("a submitter reads its own job");
    assert_eq!(
        as_role(2).job(submitted.job_id).await.unwrap_err().code(),
        Some("forbidden"),
        "but not another submitter's"
    );
    as_role(4)
        .job(submitted.job_id)
        .await
        .expect("a reader reads any job");
    assert_eq!(
        as_role(4).pause("q").await.unwrap_err().code(),
        Some("forbidden"),
        "a reader may not pause"
    );
    assert_eq!(
        as_role(1).queues().await.unwrap_err().code(),
        Some("forbidden"),
        "a submitter may not list queues"
    );

    let lease = LeaseRequest {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        tags: None,
        max_jobs: Some(1),
        wait_ms: Some(0),
    };
    assert_eq!(
        as_role(1).lease(&lease).await.unwrap_err().code(),
        Some("forbidden")
    );
    let grant = as_role(3)
        .lease(&lease)
        .await
        .unwrap()
        .leases
        .pop()
        .unwrap();
    as_role(3).complete(grant.lease_id, None).await.unwrap();
    as_role(0)
        .pause("q")
        .await
        .expect("admin may do everything");

    // The audit trail: each record names the token that caused it.
    let events = as_role(4)
        .events(agentd_schemas::Lsn(0), 100, 0)
        .await
        .unwrap()
        .events;
    let actors: Vec<(&str, &str)> = events
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap(),
                event["actor"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        actors,
        [
            // Recorded by the daemon itself at its first start.
            ("dataset_settings_recorded", "agentd"),
            ("training_settings_recorded", "agentd"),
            ("job_submitted", "trainer"),
            ("job_leased", "box-3"),
            ("job_completed", "box-3"),
            ("queue_paused", "ops")
        ]
    );
    let history = as_role(4)
        .job(submitted.job_id)
        .await
        .unwrap()
        .history
        .unwrap();
    assert_eq!(history[0].actor.as_deref(), Some("trainer"));

    // Digests are an operator's tool under /v1/admin/: only an admin token may take them.
    let digest = |index: usize| {
        http.get(format!("{}/v1/admin/digest", daemon.url))
            .bearer_auth(token(index))
            .send()
    };
    for (index, role) in [(4, "read"), (3, "worker"), (1, "submit")] {
        assert_eq!(
            status_and_code(digest(index).await.unwrap()).await,
            (403, "forbidden".to_string()),
            "a {role} token may not take digests"
        );
    }
    let response = digest(0).await.unwrap();
    assert_eq!(response.status(), 200);
    let digests: DigestResponse = response.json().await.unwrap();
    assert_eq!(
        digests.lsn,
        events
            .last()
            .map(|event| Lsn(event["lsn"].as_u64().unwrap()))
            .unwrap()
    );
    assert_eq!(digests.projections.queue.len(), 64, "a hex sha256");

    // agentctl passes the token from --token or AGENTD_TOKEN.
    let output = Command::new(binary("agentctl"))
        .args(["--url", &daemon.url, "queues", "list"])
        .env("AGENTD_TOKEN", token(4))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains('q'));
    let output = agentctl(&daemon.url, &["queues", "list"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unauthorized"));
}

#[test]
fn an_open_address_without_tokens_is_refused_unless_explicitly_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary("agentd"))
        .args([
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("agentctl tokens create") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").join("log").exists(),
        "nothing is created before the refusal"
    );
}
