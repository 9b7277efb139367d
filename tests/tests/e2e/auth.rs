//! Access control through the real binaries: tokens from `agentctl tokens create`, 401 for a
//! missing or bad token, 403 for a role that may not, the token's name in the audit trail, and
//! the refusal to serve an open address without tokens.

use agentd_client::Client;
use agentd_schemas::api::{DigestResponse, ErrorBody, LeaseRequest, SubmitJobRequest};
use agentd_schemas::{ErrorCode, Lsn};
use agentd_tests::{agentctl_text, agentctl_typed, binary, decode, http, write_config, Daemon};
use serde::Deserialize;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tempfile::TempDir;

/// What `agentctl --json tokens create` prints (the part these tests read).
#[derive(Deserialize)]
struct CreatedToken {
    token: String,
    config_line: String,
}

/// The tokens of every test here, by the index [`AuthDaemon::as_role`] takes: created once with
/// the real CLI (a process each) and shared, since a token is only text.
const TOKENS: [(&str, &str); 5] = [
    ("admin", "ops"),
    ("submit", "trainer"),
    ("submit", "other-team"),
    ("worker", "box-3"),
    ("read", "dashboard"),
];
const ADMIN: usize = 0;
const TRAINER: usize = 1;
const OTHER_TEAM: usize = 2;
const WORKER: usize = 3;
const READER: usize = 4;

fn created_tokens() -> &'static [CreatedToken] {
    static CREATED: OnceLock<Vec<CreatedToken>> = OnceLock::new();
    CREATED.get_or_init(|| {
        TOKENS
            .iter()
            .map(|(role, name)| {
                agentctl_typed(
                    "http://127.0.0.1:1",
                    &["tokens", "create", "--role", role, "--name", name],
                )
            })
            .collect()
    })
}

/// A daemon whose config holds every token of [`TOKENS`].
struct AuthDaemon {
    // Declared before `_dir`: fields drop in declaration order, so agentd is stopped before its
    // data dir is removed.
    daemon: Daemon,
    _dir: TempDir,
}

impl AuthDaemon {
    fn start() -> AuthDaemon {
        let lines: Vec<&str> = created_tokens()
            .iter()
            .map(|created| created.config_line.as_str())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("[auth]\ntokens = [\n{}\n]\n", lines.join("\n")),
        );
        let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
        AuthDaemon { daemon, _dir: dir }
    }

    fn url(&self) -> &str {
        &self.daemon.url
    }

    fn token(&self, index: usize) -> String {
        created_tokens()[index].token.clone()
    }

    fn as_role(&self, index: usize) -> Client {
        Client::new(self.url(), Some(self.token(index))).unwrap()
    }

    /// The worker token leases the one job of queue `q` and completes it.
    async fn lease_and_complete_as_worker(&self) {
        let worker = self.as_role(WORKER);
        let grant = worker
            .lease(&lease_request())
            .await
            .unwrap()
            .leases
            .pop()
            .expect("a job to lease");
        worker.complete(grant.lease_id, None).await.unwrap();
    }

    /// A plain GET of `path` with `token` (none: no Authorization header).
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Option<ErrorCode>) {
        let mut request = http().get(format!("{}{path}", self.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let code = response
            .json::<ErrorBody>()
            .await
            .ok()
            .and_then(|body| ErrorCode::parse(&body.code));
        (status, code)
    }
}

fn job() -> SubmitJobRequest {
    SubmitJobRequest {
        queue: "q".into(),
        kind: "k".into(),
        ..Default::default()
    }
}

fn lease_request() -> LeaseRequest {
    LeaseRequest {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        tags: None,
        max_jobs: Some(1),
        wait_ms: Some(0),
    }
}

#[tokio::test]
async fn health_is_public_and_every_other_route_needs_a_valid_token() {
    let auth = AuthDaemon::start();
    assert_eq!(auth.get("/healthz", None).await.0, 200);
    assert_eq!(
        auth.get("/v1/queues", None).await,
        (401, Some(ErrorCode::Unauthorized))
    );
    assert_eq!(
        auth.get("/v1/queues", Some("agtk_not-a-real-token")).await,
        (401, Some(ErrorCode::Unauthorized))
    );
}

#[tokio::test]
async fn each_role_may_do_only_what_it_is_for() {
    let auth = AuthDaemon::start();
    let forbidden = Some(ErrorCode::Forbidden);
    let error = auth.as_role(WORKER).submit(&job()).await.unwrap_err();
    assert_eq!(error.error_code(), forbidden, "a worker may not submit");
    let submitted = auth.as_role(TRAINER).submit(&job()).await.unwrap();
    auth.as_role(TRAINER)
        .job(submitted.job_id)
        .await
        .expect("a submitter reads its own job");
    let error = auth.as_role(OTHER_TEAM).job(submitted.job_id).await;
    assert_eq!(
        error.unwrap_err().error_code(),
        forbidden,
        "but not another submitter's"
    );
    auth.as_role(READER)
        .job(submitted.job_id)
        .await
        .expect("a reader reads any job");
    assert_eq!(
        auth.as_role(READER)
            .pause("q")
            .await
            .unwrap_err()
            .error_code(),
        forbidden,
        "a reader may not pause"
    );
    assert_eq!(
        auth.as_role(TRAINER)
            .queues()
            .await
            .unwrap_err()
            .error_code(),
        forbidden,
        "a submitter may not list queues"
    );
    assert_eq!(
        auth.as_role(TRAINER)
            .lease(&lease_request())
            .await
            .unwrap_err()
            .error_code(),
        forbidden,
        "a submitter may not lease"
    );
    auth.lease_and_complete_as_worker().await;
    auth.as_role(ADMIN)
        .pause("q")
        .await
        .expect("admin may do everything");
}

#[tokio::test]
async fn every_record_names_the_token_that_caused_it_and_only_an_admin_takes_digests() {
    let auth = AuthDaemon::start();
    let submitted = auth.as_role(TRAINER).submit(&job()).await.unwrap();
    auth.lease_and_complete_as_worker().await;
    auth.as_role(ADMIN).pause("q").await.unwrap();

    // The audit trail: each record names the token that caused it.
    let events = auth
        .as_role(READER)
        .events(Lsn(0), 100, 0)
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
    let history = auth
        .as_role(READER)
        .job(submitted.job_id)
        .await
        .unwrap()
        .history
        .unwrap();
    assert_eq!(history[0].actor.as_deref(), Some("trainer"));

    // Digests are an operator's tool under /v1/admin/: only an admin token may take them, and
    // they reflect the last record.
    for (index, role) in [(READER, "read"), (WORKER, "worker"), (TRAINER, "submit")] {
        assert_eq!(
            auth.get("/v1/admin/digest", Some(&auth.token(index))).await,
            (403, Some(ErrorCode::Forbidden)),
            "a {role} token may not take digests"
        );
    }
    let digests: DigestResponse = decode(
        &http()
            .get(format!("{}/v1/admin/digest", auth.url()))
            .bearer_auth(auth.token(ADMIN))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let last = events.last().unwrap();
    assert_eq!(digests.lsn, Lsn(last["lsn"].as_u64().unwrap()));
    assert_eq!(digests.projections.queue.len(), 64, "a hex sha256");
}

#[tokio::test]
async fn agentctl_sends_the_token_from_agentd_token() {
    let auth = AuthDaemon::start();
    auth.as_role(TRAINER).submit(&job()).await.unwrap();
    let output = Command::new(binary("agentctl"))
        .args(["--url", auth.url(), "queues", "list"])
        .env("AGENTD_TOKEN", auth.token(READER))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains('q'));
    let without = agentctl_text(auth.url(), &["queues", "list"]);
    assert!(!without.success);
    assert!(without.stderr.contains("unauthorized"), "{without:?}");
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
