//! The domain features through the real binaries, one behaviour a test: `agentctl ingest` of a
//! small dataset (with a duplicate, an unknown language and an over-cap record) and two actor
//! episodes through the HTTP API (state updates, steps, sandbox results, rewards under real
//! leases).
//!
//! - `datasets`: the ingest, its counts, the stats and the refusals of the dataset routes;
//! - `episodes`: what the episodes leave in the state, trajectory, stats, CLI and metrics, and
//!   what the step routes refuse;
//! - `durability`: a SIGKILL and restart that changes no answer and no digest, and an offline
//!   `agentd rebuild` that prints the same digests.
//!
//! Tests that only read, or whose requests must be refused, share one seeded daemon per test
//! process ([`shared`]): seeding costs a daemon start, an `agentctl` run and about twenty
//! acknowledged writes, and most tests here need nothing else. (A refusal changes nothing; if
//! one ever did, that test fails itself.) A test that changes what it reads (ingests again,
//! kills the daemon) seeds its own [`DomainDaemon`], so no answer depends on which tests ran
//! first.

mod datasets;
mod durability;
mod episodes;

use agentd_client::Client;
use agentd_schemas::api::{LeaseGrant, LeaseRequest, SubmitJobRequest};
use agentd_schemas::domain_api::{
    ActionRequest, DatasetListResponse, DatasetStatsResponse, RecordStepRequest,
    RecordStepResponse, RewardRequest, SamplingRequest, SandboxResultRequest, StateHistoryResponse,
    StateUpdateFields, StateUpdateRequest, StateUpdateResponse, TaskStateView, TrajectoryResponse,
    TrajectoryStatsResponse,
};
use agentd_schemas::events::{RewardSource, SandboxOutcome};
use agentd_schemas::{JobId, LeaseId};
use agentd_tests::{agentctl_typed, fixture, get_typed, path_text, write_config, Daemon};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::OnceLock;
use tempfile::TempDir;

/// A small token cap, so the fixture's over-cap record stays readable.
const DOMAIN_CONFIG: &str = "[datasets]\ntoken_cap = 64\n";
const SOURCE: &str = "fixture/commitpack-mini";
const VERSION: &str = "2024-05";
/// The worker that leases both episodes.
const ACTOR: &str = "actor-1";
/// An hour: longer than any test run.
const EPISODE_LEASE_TTL_MS: u64 = 3_600_000;

/// A daemon on a fresh data dir with [`DOMAIN_CONFIG`], and the paths a rebuild needs.
struct DomainDaemon {
    // Declared before `dir`: fields drop in declaration order, so agentd is stopped before its
    // data dir is removed.
    daemon: Daemon,
    config: PathBuf,
    data_dir: PathBuf,
    /// Holds the config and the data dir; removed when the test ends.
    dir: TempDir,
}

/// The part of `agentctl --json ingest`'s summary the tests read (`agentd_client`'s
/// `IngestSummary` is written, never read, so it has no `Deserialize`).
#[derive(Debug, Deserialize)]
struct IngestSummary {
    registered: bool,
    accepted: u64,
    resent: u64,
    records_received: u64,
    count_matches: bool,
}

/// One seeded episode: task, its job and the lease it was recorded under, and what the daemon
/// answered to its state update and its steps.
struct Episode {
    task: &'static str,
    model: &'static str,
    job_id: JobId,
    lease_id: LeaseId,
    update: StateUpdateResponse,
    steps: Vec<RecordStepResponse>,
}

/// task-a (model glm-4.6, its step 0 verified) and task-b (minimax-m2, nothing verified), both
/// leased by [`ACTOR`] and both leases still held.
struct Episodes {
    a: Episode,
    b: Episode,
}

/// The seeded daemon that read-only and refusal tests share (see the module documentation):
/// the dataset ingested, both episodes recorded, then task-a's job completed (its lease is no
/// longer held) while task-b's is still leased.
struct SharedDomain {
    daemon: Daemon,
    /// What `agentctl --json ingest` printed when it seeded the daemon.
    ingest_output: String,
    episodes: Episodes,
}

impl SharedDomain {
    fn url(&self) -> &str {
        &self.daemon.url
    }

    fn client(&self) -> Client {
        self.daemon.client()
    }
}

/// The shared seeded daemon, started and seeded by the first test that asks.
fn shared() -> &'static SharedDomain {
    static SHARED: OnceLock<SharedDomain> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Seeded on a thread and runtime of its own: the asking test's runtime is blocked in
        // this call.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to seed on");
            runtime.block_on(async {
                let daemon = Daemon::start_for_this_process(DOMAIN_CONFIG);
                let ingest_output = ingest_output(&daemon.url);
                let client = daemon.client();
                let episodes = record_episodes(&client).await;
                client.complete(episodes.a.lease_id, None).await.unwrap();
                SharedDomain {
                    daemon,
                    ingest_output,
                    episodes,
                }
            })
        })
        .join()
        .expect("seeding the shared domain daemon")
    })
}

impl DomainDaemon {
    fn start() -> DomainDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DOMAIN_CONFIG);
        let data_dir = dir.path().join("data");
        let daemon = Daemon::start(&data_dir, Some(&config));
        DomainDaemon {
            daemon,
            config,
            data_dir,
            dir,
        }
    }

    /// A daemon with the dataset ingested and both episodes recorded.
    async fn seeded() -> (DomainDaemon, Episodes) {
        let domain = DomainDaemon::start();
        domain.ingest();
        let episodes = record_episodes(&domain.client()).await;
        (domain, episodes)
    }

    fn url(&self) -> &str {
        &self.daemon.url
    }

    fn client(&self) -> Client {
        self.daemon.client()
    }

    fn ingest(&self) -> IngestSummary {
        agentd_tests::decode(&ingest_output(self.url()))
    }

    /// Every read the domain offers, so a restart can be shown to change none of them.
    async fn answers(&self) -> DomainAnswers {
        let url = self.url();
        DomainAnswers {
            datasets: get_typed(url, "/v1/datasets").await,
            dataset_stats: get_typed(url, "/v1/datasets/stats").await,
            states: [
                get_typed(url, "/v1/tasks/task-a/state").await,
                get_typed(url, "/v1/tasks/task-b/state").await,
            ],
            histories: [
                get_typed(url, "/v1/tasks/task-a/state/history").await,
                get_typed(url, "/v1/tasks/task-b/state/history").await,
            ],
            trajectories: [
                get_typed(url, "/v1/tasks/task-a/trajectory").await,
                get_typed(url, "/v1/tasks/task-b/trajectory").await,
            ],
            trajectory_stats: get_typed(url, "/v1/trajectories/stats").await,
        }
    }
}

/// What [`DomainDaemon::answers`] reads, for task-a and task-b.
#[derive(Debug, PartialEq)]
struct DomainAnswers {
    datasets: DatasetListResponse,
    dataset_stats: DatasetStatsResponse,
    states: [TaskStateView; 2],
    histories: [StateHistoryResponse; 2],
    trajectories: [TrajectoryResponse; 2],
    trajectory_stats: TrajectoryStatsResponse,
}

/// `agentctl --json ingest` of the fixture in batches of two (so that the summary adds up
/// several answers), and its summary as printed.
fn ingest_output(url: &str) -> String {
    let meta = fixture("domain/_meta.json");
    let records = fixture("domain/normalized.jsonl");
    agentd_tests::agentctl_text(
        url,
        &[
            "--json",
            "ingest",
            "--meta",
            path_text(&meta),
            "--records",
            path_text(&records),
            "--batch-size",
            "2",
        ],
    )
    .ok()
}

async fn record_episodes(client: &Client) -> Episodes {
    // Both jobs are leased before either episode runs, as two actors' slots would be.
    let a = submit_and_lease(client, "task-a", ACTOR).await;
    let b = submit_and_lease(client, "task-b", ACTOR).await;
    Episodes {
        a: episode(client, "task-a", a, "glm-4.6", true).await,
        b: episode(client, "task-b", b, "minimax-m2", false).await,
    }
}

async fn dataset_stats(url: &str) -> DatasetStatsResponse {
    get_typed(url, "/v1/datasets/stats").await
}

async fn trajectory_stats(url: &str) -> TrajectoryStatsResponse {
    get_typed(url, "/v1/trajectories/stats").await
}

/// What `agentctl --json datasets stats` prints is what the API answers.
fn cli_dataset_stats(url: &str) -> DatasetStatsResponse {
    agentctl_typed(url, &["datasets", "stats"])
}

fn pattern(pattern: &str, rewrite: &str) -> ActionRequest {
    ActionRequest::Pattern {
        language: "python".into(),
        pattern: pattern.into(),
        rewrite: rewrite.into(),
    }
}

fn step_request(step: u32, job_id: JobId, lease_id: LeaseId, model: &str) -> RecordStepRequest {
    RecordStepRequest {
        step,
        job_id: Some(job_id),
        lease_id: Some(lease_id),
        model: model.into(),
        policy_version: "srl-poc-1".into(),
        sampling: Some(SamplingRequest {
            temperature: Some(0.7),
            top_p: Some(0.95),
            max_tokens: Some(512),
            seed: Some(7),
        }),
        prompt_tokens: Some(812),
        completion_tokens: Some(96),
        prompt: None,
        think: Some(format!("step {step}: the accumulator is badly named")),
        // Step 0 edits Python with a pattern, step 1 TypeScript with a rule: the stats count
        // each under its action's language.
        action: Some(match step {
            0 => pattern("x", "total"),
            _ => ActionRequest::Rule {
                yaml: "id: rename\nlanguage: ts\nrule:\n  pattern: x\nfix: total\n".into(),
            },
        }),
        raw_output: None,
        generation_ms: None,
        state_update: Some(StateUpdateFields {
            history: vec![format!("step {step}: proposed a rename")],
            hypotheses: vec!["renaming keeps the tests green".into()],
            ..StateUpdateFields::default()
        }),
    }
}

/// Submits an `episode` job for `task` to the `actors` queue and leases it as `worker_id`.
async fn submit_and_lease(client: &Client, task: &str, worker_id: &str) -> (JobId, LeaseGrant) {
    let job = SubmitJobRequest {
        queue: "actors".into(),
        kind: "episode".into(),
        task_id: Some(task.into()),
        // Held for the whole test run: the shared daemon's leases must not expire between the
        // tests that post under them (the default is a minute).
        lease_ttl_ms: Some(EPISODE_LEASE_TTL_MS),
        ..SubmitJobRequest::default()
    };
    let job_id = client.submit(&job).await.unwrap().job_id;
    let ask = LeaseRequest {
        worker_id: worker_id.into(),
        queues: vec!["actors".into()],
        tags: None,
        max_jobs: Some(1),
        wait_ms: Some(0),
    };
    let grant = client.lease(&ask).await.unwrap().leases.pop().unwrap();
    assert_eq!(
        grant.job_id, job_id,
        "leased another job than the one submitted"
    );
    (job_id, grant)
}

/// One episode: a state update, two steps (the first verified in the sandbox if
/// `first_verified`, the second not), with their sandbox results and rewards, all under the
/// episode's lease.
async fn episode(
    client: &Client,
    task: &'static str,
    (job_id, grant): (JobId, LeaseGrant),
    model: &'static str,
    first_verified: bool,
) -> Episode {
    let lease_id = grant.lease_id;
    let update = StateUpdateRequest {
        goals: vec![format!("make {task} readable")],
        constraints: vec!["keep behaviour".into()],
        next_focus: Some("the accumulator loop".into()),
        lease_id: Some(lease_id),
        ..StateUpdateRequest::default()
    };
    let update = client.update_task_state(task, &update).await.unwrap();
    let mut steps = Vec::new();
    for step in 0..2u32 {
        let answer = client
            .record_step(task, &step_request(step, job_id, lease_id, model))
            .await
            .unwrap();
        steps.push(answer);
        let passed = step == 0 && first_verified;
        let sandbox = SandboxResultRequest {
            exit_code: Some(if passed { 0 } else { 1 }),
            outcome: if passed {
                SandboxOutcome::Ok
            } else {
                SandboxOutcome::Failed
            },
            diff: Some("-x = 0\n+total = 0\n".into()),
            stdout: Some("3 passed\n".into()),
            stderr: None,
            tests_passed: Some(if passed { 3 } else { 2 }),
            tests_failed: Some(if passed { 0 } else { 1 }),
            duration_ms: Some(140),
            peak_rss_bytes: Some(48 << 20),
            lease_id: Some(lease_id),
        };
        client
            .record_sandbox_result(task, step, &sandbox)
            .await
            .unwrap();
        let reward = RewardRequest {
            value: if passed { 1.0 } else { 0.0 },
            verified: passed,
            components: [("tests".to_owned(), if passed { 1.0 } else { 0.0 })].into(),
            source: if step == 0 {
                RewardSource::Rule
            } else {
                RewardSource::Teacher
            },
            lease_id: Some(lease_id),
        };
        client.record_reward(task, step, &reward).await.unwrap();
    }
    Episode {
        task,
        model,
        job_id,
        lease_id,
        update,
        steps,
    }
}

/// `text` with each `(value, masked)` pair replaced, in order, so that a snapshot holds no id,
/// LSN or time that changes from run to run, yet still shows where each known value stood.
fn mask(text: &str, known: &[(String, String)]) -> String {
    let mut masked = text.to_owned();
    for (value, name) in known {
        masked = masked.replace(value.as_str(), name);
    }
    masked
}

/// `text` with each time the CLI prints (`2026-12-06T18:09:02.766Z`, a word of its own)
/// replaced by `<time>`.
fn mask_times(text: &str) -> String {
    let is_time = |word: &str| {
        let bytes = word.as_bytes();
        bytes.len() == 24 && bytes[4] == b'-' && bytes[10] == b'T' && word.ends_with('Z')
    };
    text.split(' ')
        .map(|word| if is_time(word) { "<time>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}
