//! Chaos: thousands of jobs run by real `agentctl worker` processes while workers are SIGKILLed
//! and restarted at random and the daemon is SIGKILLed and restarted on the same port (so the
//! workers, which retry transient errors, reconnect). Afterwards:
//!
//! - every job reached the terminal state its payload decides: `completed`, or `dead` for the
//!   jobs whose command always fails (and only those);
//! - no job was completed twice (at most one `job_completed`, by a lease granted for that job);
//! - every acknowledged submission is in the log exactly once (submissions carry idempotency keys
//!   and are retried until acknowledged, so the log holds exactly one `job_submitted` per key);
//! - LSNs are contiguous from 1;
//! - the live projection digest equals an offline `agentd rebuild` after a clean stop.
//!
//! The figures are printed (`chaos: ...`) for the README. Environment (defaults are the CI mode,
//! well under a minute):
//!
//! - `AGENTD_CHAOS_JOBS` (2000): jobs submitted.
//! - `AGENTD_CHAOS_SECONDS` (8): submissions are spread over this long, and daemon kills are
//!   scheduled inside it; the run lasts until every job is terminal.
//! - `AGENTD_CHAOS_DAEMON_KILLS` (3, or one per 10 s of `AGENTD_CHAOS_SECONDS` when that is set).
//! - `AGENTD_CHAOS_WORKERS` (4) processes of `AGENTD_CHAOS_CONCURRENCY` (4) slots each.

use agentd_client::http_client::JobListQuery;
use agentd_client::Client;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_schemas::{JobId, Lsn};
use agentd_tests::{binary, digest, free_port, rebuild, write_config, Daemon};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUEUE: &str = "chaos";
/// Short, so leases of killed workers expire within the test, yet several heartbeats long.
const LEASE_TTL_MS: u64 = 1500;
/// Attempts of a job that should complete: never exhausted by kills and expiries.
const ATTEMPTS_TO_COMPLETE: u32 = 1000;
/// Attempts of a job whose command always fails: it must end `dead`.
const ATTEMPTS_TO_FAIL: u32 = 2;
const SUBMIT_BATCH_JOBS: usize = 25;

/// What a job's command does, decided by its number so the test knows every job's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobMode {
    /// Answers at once.
    Quick,
    /// Sleeps 2 s, longer than the lease TTL: lives on heartbeats, and is often running when a
    /// kill comes.
    Slow,
    /// Exits 3 every time: ends `dead` after its attempts.
    Fail,
}

impl JobMode {
    fn of(number: usize) -> JobMode {
        if number % 50 == 7 {
            JobMode::Fail
        } else if number % 20 == 3 {
            JobMode::Slow
        } else {
            JobMode::Quick
        }
    }

    fn name(self) -> &'static str {
        match self {
            JobMode::Quick => "quick",
            JobMode::Slow => "slow",
            JobMode::Fail => "fail",
        }
    }

    fn final_state(self) -> JobStateName {
        match self {
            JobMode::Fail => JobStateName::Dead,
            JobMode::Quick | JobMode::Slow => JobStateName::Completed,
        }
    }
}

struct Settings {
    jobs: usize,
    submit_seconds: f64,
    daemon_kills: usize,
    workers: usize,
    concurrency: usize,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        let submit_seconds: f64 = env_or("AGENTD_CHAOS_SECONDS", 8.0);
        let default_kills = if std::env::var_os("AGENTD_CHAOS_SECONDS").is_some() {
            ((submit_seconds / 10.0) as usize).max(3)
        } else {
            3
        };
        Settings {
            jobs: env_or("AGENTD_CHAOS_JOBS", 2000),
            submit_seconds,
            daemon_kills: env_or("AGENTD_CHAOS_DAEMON_KILLS", default_kills),
            workers: env_or("AGENTD_CHAOS_WORKERS", 4).max(1),
            concurrency: env_or("AGENTD_CHAOS_CONCURRENCY", 4).max(1),
        }
    }
}

/// The worker processes and the job commands they started, killed on drop (also when the test
/// fails), so nothing outlives the test.
struct Fleet {
    url: String,
    /// Appears in the command line of every job command, so orphans of a killed worker (the job
    /// runs in its own process group, which a worker kill does not reach) can be found.
    marker: String,
    script: String,
    log_dir: PathBuf,
    workers: Vec<Option<Child>>,
    spawned: usize,
}

impl Fleet {
    fn new(url: &str, log_dir: &Path, workers: usize, concurrency: usize) -> Fleet {
        let marker = format!(
            "agentd-chaos-{}-{}",
            std::process::id(),
            rand::rng().random::<u32>()
        );
        let script = format!(
            ": {marker}; job=$(cat); case \"$job\" in \
             *'\"mode\":\"fail\"'*) echo 'deliberate failure' >&2; exit 3;; \
             *'\"mode\":\"slow\"'*) sleep 2;; esac; echo '{{\"ok\":true}}'"
        );
        let mut fleet = Fleet {
            url: url.to_string(),
            marker,
            script,
            log_dir: log_dir.to_path_buf(),
            workers: Vec::new(),
            spawned: 0,
        };
        for _ in 0..workers {
            let child = fleet.spawn(concurrency);
            fleet.workers.push(Some(child));
        }
        fleet
    }

    fn spawn(&mut self, concurrency: usize) -> Child {
        self.spawned += 1;
        let worker_id = format!("chaos-{}", self.spawned);
        let log = std::fs::File::create(self.log_dir.join(format!("{worker_id}.log"))).unwrap();
        Command::new(binary("agentctl"))
            .args(["--url", &self.url, "worker", "--queue", QUEUE])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--wait-ms", "300", "--drain-timeout-s", "1"])
            .args(["--worker-id", &worker_id])
            .args(["--", "sh", "-c", &self.script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so a kill takes the worker down like a machine dying.
            .process_group(0)
            .spawn()
            .expect("spawn agentctl worker")
    }

    /// SIGKILLs worker `index`'s process group and reaps it.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.workers[index].take() {
            kill_group(child.id());
            let _ = child.wait();
        }
    }

    fn restart(&mut self, index: usize, concurrency: usize) {
        self.kill(index);
        let child = self.spawn(concurrency);
        self.workers[index] = Some(child);
    }

    /// Job commands whose worker was killed keep running until they finish (at most the 2 s of
    /// a slow job); kill them, found by the marker in their command line.
    fn kill_orphaned_jobs(&self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&self.marker) {
                // The worker started each command as the leader of its own group (with its
                // `sleep`), so the group id is the pid.
                kill_group(pid);
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for index in 0..self.workers.len() {
            self.kill(index);
        }
        self.kill_orphaned_jobs();
    }
}

fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Submissions acknowledged so far: job number -> job id.
type Acknowledged = Arc<Mutex<HashMap<usize, JobId>>>;

fn submission(number: usize) -> SubmitJobRequest {
    let mode = JobMode::of(number);
    SubmitJobRequest {
        queue: QUEUE.into(),
        kind: "chaos".into(),
        payload: serde_json::json!({"n": number, "mode": mode.name()}),
        max_attempts: Some(match mode {
            JobMode::Fail => ATTEMPTS_TO_FAIL,
            JobMode::Quick | JobMode::Slow => ATTEMPTS_TO_COMPLETE,
        }),
        lease_ttl_ms: Some(LEASE_TTL_MS),
        idempotency_key: Some(format!("chaos-{number}")),
        ..Default::default()
    }
}

/// Submits every job in batches spread over `seconds`, retrying a batch (same idempotency keys)
/// until it is acknowledged: the daemon may be down, or may have written a batch whose answer was
/// lost. Returns how many submit requests failed and were retried.
async fn submit_all(url: String, jobs: usize, seconds: f64, acknowledged: Acknowledged) -> u64 {
    let batches = jobs.div_ceil(SUBMIT_BATCH_JOBS).max(1);
    let pace = Duration::from_secs_f64(seconds / batches as f64);
    let mut client = Client::new(&url, None).unwrap();
    let mut retries = 0;
    for first in (0..jobs).step_by(SUBMIT_BATCH_JOBS) {
        let numbers: Vec<usize> = (first..(first + SUBMIT_BATCH_JOBS).min(jobs)).collect();
        let requests: Vec<SubmitJobRequest> = numbers.iter().map(|&n| submission(n)).collect();
        let answer = loop {
            match client.submit_batch(requests.clone()).await {
                Ok(answer) => break answer,
                Err(error) if error.is_transient() => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    // A fresh connection pool: the old connections died with the daemon.
                    client = Client::new(&url, None).unwrap();
                }
                Err(error) => panic!("the daemon refused a submission: {error}"),
            }
        };
        assert_eq!(answer.jobs.len(), numbers.len());
        {
            let mut acknowledged = acknowledged.lock().unwrap();
            for (number, job) in numbers.iter().zip(answer.jobs) {
                let previous = acknowledged.insert(*number, job.job_id);
                assert!(previous.is_none(), "job {number} acknowledged twice");
            }
        }
        tokio::time::sleep(pace).await;
    }
    retries
}

/// Jobs of the chaos queue in each state, or `None` while the daemon cannot answer.
async fn depth(client: &Client) -> Option<HashMap<String, u64>> {
    let queues = client.queues().await.ok()?;
    let queue = queues
        .queues
        .into_iter()
        .find(|queue| queue.queue == QUEUE)?;
    Some(queue.depth.into_iter().collect())
}

/// What the log says, read back through `GET /v1/events`.
#[derive(Default)]
struct LogFacts {
    last_lsn: u64,
    /// job -> number of `job_submitted` events.
    submissions: HashMap<String, u32>,
    /// idempotency key -> jobs submitted with it.
    keys: HashMap<String, Vec<String>>,
    /// lease -> job it was granted for.
    leases: HashMap<String, String>,
    /// job -> leases that completed it.
    completions: HashMap<String, Vec<String>>,
    failures: u64,
    lease_expiries: u64,
}

async fn read_log(client: &Client) -> LogFacts {
    let mut facts = LogFacts::default();
    let mut after = Lsn(0);
    loop {
        let page = client.events(after, 10_000, 0).await.unwrap();
        for event in &page.events {
            let lsn = event["lsn"].as_u64().unwrap();
            assert!(
                lsn == facts.last_lsn || lsn == facts.last_lsn + 1,
                "lsn gap: {lsn} after {}",
                facts.last_lsn
            );
            facts.last_lsn = lsn;
            let job = event["job_id"].as_str().unwrap_or_default().to_string();
            let lease = event["lease_id"].as_str().unwrap_or_default().to_string();
            match event["type"].as_str().unwrap() {
                "job_submitted" => {
                    *facts.submissions.entry(job.clone()).or_default() += 1;
                    if let Some(key) = event["idempotency_key"].as_str() {
                        facts.keys.entry(key.to_string()).or_default().push(job);
                    }
                }
                "job_leased" => {
                    let previous = facts.leases.insert(lease.clone(), job);
                    assert!(previous.is_none(), "{lease} was granted twice");
                }
                "job_completed" => facts.completions.entry(job).or_default().push(lease),
                "job_failed" => facts.failures += 1,
                "lease_expired" => facts.lease_expiries += 1,
                _ => {}
            }
        }
        if page.next_after == after {
            break;
        }
        after = page.next_after;
    }
    facts
}

/// Every job of the chaos queue as the live projection has it.
async fn all_jobs(client: &Client) -> HashMap<JobId, agentd_schemas::api::JobView> {
    let mut jobs = HashMap::new();
    let mut after = None;
    loop {
        let page = client
            .jobs(&JobListQuery {
                queue: Some(QUEUE.into()),
                state: None,
                limit: Some(1000),
                after,
            })
            .await
            .unwrap();
        for job in page.jobs {
            jobs.insert(job.job_id, job);
        }
        match page.next_after {
            Some(next) => after = Some(next),
            None => return jobs,
        }
    }
}

/// The last lines of every worker log, for a failure message (the temp dir goes with the test).
fn log_tails(dir: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    logs.sort();
    logs.iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
            format!("{}:\n  {tail}", path.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_completes_nothing_twice() {
    let settings = Settings::from_env();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[queue]\nretry_backoff_base_ms = 10\nretry_backoff_max_ms = 200\n",
    );
    let data_dir = dir.path().join("data");
    let worker_logs = dir.path().join("workers");
    std::fs::create_dir_all(&worker_logs).unwrap();
    let mut daemon = Daemon::start_on(&data_dir, Some(&config), free_port());
    let url = daemon.url.clone();
    let started = Instant::now();

    let acknowledged: Acknowledged = Arc::default();
    let submitter = tokio::spawn(submit_all(
        url.clone(),
        settings.jobs,
        settings.submit_seconds,
        acknowledged.clone(),
    ));
    let mut fleet = Fleet::new(&url, &worker_logs, settings.workers, settings.concurrency);

    // Daemon kills at random moments inside the submission window, in order.
    let mut rng = rand::rng();
    let mut daemon_kill_at: Vec<Duration> = (0..settings.daemon_kills)
        .map(|_| Duration::from_secs_f64(rng.random_range(0.1..0.9) * settings.submit_seconds))
        .collect();
    daemon_kill_at.sort();
    daemon_kill_at.reverse();
    let deadline = started
        + Duration::from_secs_f64(settings.submit_seconds)
        + Duration::from_secs(60 + settings.jobs as u64 / 50);
    let mut worker_kills = 0u64;
    let mut daemon_restarts = 0u64;
    let client = daemon.client();
    loop {
        let depth = depth(&client).await;
        let terminal = depth.as_ref().map_or(0, |depth| {
            depth.get("completed").copied().unwrap_or(0) + depth.get("dead").copied().unwrap_or(0)
        });
        if submitter.is_finished() && terminal == settings.jobs as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every job reached a terminal state in time ({} of {} acknowledged, queue \
             {depth:?}); worker logs:\n{}",
            acknowledged.lock().unwrap().len(),
            settings.jobs,
            log_tails(&worker_logs)
        );
        // Random pauses: when the kills land is the point of chaos.
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        if daemon_kill_at
            .last()
            .is_some_and(|&at| started.elapsed() >= at)
        {
            daemon_kill_at.pop();
            daemon.kill9();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            daemon.restart_on_same_port();
            assert_eq!(daemon.url, url);
            daemon_restarts += 1;
        } else {
            let index = rng.random_range(0..settings.workers);
            fleet.kill(index);
            worker_kills += 1;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            fleet.restart(index, settings.concurrency);
        }
    }
    let submit_retries = submitter.await.unwrap();
    let chaos_seconds = started.elapsed().as_secs_f64();
    drop(fleet);

    // Everything the log and the projection say, against what was acknowledged.
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(
        acknowledged.len(),
        settings.jobs,
        "every submission was acknowledged"
    );
    let facts = read_log(&client).await;
    let jobs = all_jobs(&client).await;
    let mut duplicates = 0u64;
    let mut lost = 0u64;
    let mut completed = 0u64;
    let mut dead = 0u64;
    for (number, job_id) in &acknowledged {
        let name = job_id.to_string();
        let submissions = facts.submissions.get(&name).copied().unwrap_or(0);
        assert_eq!(
            submissions, 1,
            "acknowledged submission {name} must be in the log exactly once"
        );
        let mode = JobMode::of(*number);
        let view = jobs
            .get(job_id)
            .unwrap_or_else(|| panic!("acknowledged job {name} is not in the projection"));
        assert_eq!(view.payload["n"], *number as u64);
        if view.state != mode.final_state() {
            lost += 1;
            eprintln!(
                "chaos: {name} ({mode:?}) ended {:?}: {:?}",
                view.state, view.last_error
            );
        }
        let completions = facts.completions.get(&name).cloned().unwrap_or_default();
        match mode.final_state() {
            JobStateName::Completed => {
                completed += 1;
                assert_eq!(view.result, Some(serde_json::json!({"ok": true})), "{name}");
                assert_eq!(completions.len(), 1, "{name} completed by {completions:?}");
            }
            _ => {
                dead += 1;
                assert!(
                    completions.is_empty(),
                    "{name} always fails, yet completed: {completions:?}"
                );
            }
        }
        duplicates += completions.len().saturating_sub(1) as u64;
        for lease in &completions {
            assert_eq!(
                facts.leases.get(lease),
                Some(&name),
                "{name} was completed by {lease}, which was not granted for it"
            );
        }
    }
    assert_eq!(lost, 0, "jobs that did not reach their terminal state");
    assert_eq!(duplicates, 0, "jobs completed by more than one lease");
    // Exactly one submission per idempotency key, and no job the test did not submit.
    assert_eq!(facts.submissions.len(), settings.jobs, "jobs in the log");
    assert_eq!(jobs.len(), settings.jobs, "jobs in the projection");
    for number in 0..settings.jobs {
        let key = format!("chaos-{number}");
        assert_eq!(
            facts.keys.get(&key),
            Some(&vec![acknowledged[&number].to_string()]),
            "idempotency key {key}"
        );
    }
    let distinct_completed: HashSet<&String> = facts.completions.keys().collect();
    assert_eq!(distinct_completed.len() as u64, completed);

    // The live projection, built incrementally across every crash, equals a fresh rebuild.
    let live = digest(&url).await;
    assert_eq!(daemon.stop(), Some(0), "a clean stop after the chaos");
    let rebuilt = rebuild(&data_dir, None, &dir.path().join("rebuilt"));
    assert_eq!(live.lsn, rebuilt.lsn);
    assert_eq!(
        live.projections, rebuilt.projections,
        "digests: live vs rebuild"
    );

    eprintln!(
        "chaos: {} jobs ({completed} completed, {dead} dead by design) in {chaos_seconds:.1} s; \
         {} worker processes x {} slots; {worker_kills} worker SIGKILLs, {daemon_restarts} daemon \
         SIGKILL+restarts, {} leases granted, {} lease expiries, {} job failures, \
         {submit_retries} submit retries, {} log records; lost = {lost}, duplicates = {duplicates}",
        settings.jobs,
        settings.workers,
        settings.concurrency,
        facts.leases.len(),
        facts.lease_expiries,
        facts.failures,
        facts.last_lsn,
    );
}
