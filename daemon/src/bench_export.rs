//! `agentd bench-export`: writes a synthetic log of N trajectory steps (each a step, a sandbox
//! result and a reward record, with a state update every tenth step; every task of eight steps
//! is one job, submitted and leased with its first step and completed with its last), then
//! measures
//!
//! - a full replay into fresh queue state and domain projections (what start-up does when the
//!   redb job projection is current): events/s;
//! - `agentd rebuild` of the same data directory: the same replay plus the redb job projection
//!   written from scratch: events/s;
//! - a trajectory export of every step to zstd Parquet: rows/s and MB/s;
//! - the equivalent Python path, side by side on the same rows: pyarrow reading the trajectories
//!   as JSONL and writing zstd Parquet at the same level, timed inside Python (interpreter start
//!   and imports excluded), and the ratio of the two.
//!
//! Benchmarks measure; nothing here asserts a speed.

use agentd::config::Config;
use agentd::export::{write_export, ExportSettings};
use agentd::projection::domain::DomainProjections;
use agentd::queue::QueueState;
use agentd_schemas::events::{
    encode_record, Action, AgentState, Event, ExportFormat, ExportKind, JobLeased, JobSubmitted,
    LogRecord, RewardRecorded, RewardSource, Sampling, SandboxOutcome, SandboxResultRecorded,
    StateLimits, StepRecorded, TaskStateUpdated, RECORD_FORMAT_VERSION,
};
use agentd_schemas::{JobId, LeaseId, Lsn};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of the benchmark.
pub struct BenchOptions {
    pub steps: u64,
    /// Working directory (a temp dir under it is used and removed).
    pub dir: PathBuf,
    /// Python with pyarrow, for the comparison; skipped when it cannot import pyarrow.
    pub python: Option<String>,
}

fn step_records(index: u64) -> Vec<LogRecord> {
    let task_id = format!("task-{:07}", index / 8);
    let step = (index % 8) as u32;
    let ts_ms = 1_767_225_600_000 + index * 3;
    let record = |offset: u64, events| LogRecord {
        ts_ms: ts_ms + offset,
        actor: Some("bench".into()),
        events,
    };
    let mut first = Vec::new();
    // One job per task: submitted and leased with its first step, completed with its last.
    let job_id = JobId(index / 8 + 1);
    let lease_id = LeaseId(index / 8 + 1);
    if step == 0 {
        first.push(Event::JobSubmitted(JobSubmitted {
            job_id,
            queue: "rollouts".into(),
            kind: "episode".into(),
            payload_json: format!(r#"{{"task_id":"{task_id}"}}"#),
            priority: 0,
            run_at_ms: ts_ms,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: BTreeMap::new(),
            task_id: Some(task_id.clone()),
            idempotency_key: None,
        }));
        first.push(Event::JobLeased(JobLeased {
            job_id,
            lease_id,
            worker_id: format!("box-{}", index % 16),
            attempt: 1,
            expires_at_ms: ts_ms + 60_000,
        }));
    }
    if index.is_multiple_of(10) {
        first.push(Event::TaskStateUpdated(TaskStateUpdated {
            task_id: task_id.clone(),
            rollout_id: None,
            forget: Default::default(),
            update: AgentState {
                goals: vec!["replace print calls with logging".into()],
                history: vec![format!("step {step}: matched 3 print calls")],
                ..AgentState::default()
            },
            limits: StateLimits {
                history_max: 3,
                item_chars_max: 256,
                token_budget: 800,
                encoding: "o200k_base".into(),
            },
            lease_id: None,
        }));
    }
    first.push(Event::StepRecorded(StepRecorded {
        task_id: task_id.clone(),
        rollout_id: None,
        step,
        job_id: Some(job_id),
        lease_id: Some(lease_id),
        attempt: Some(1),
        worker_id: Some(format!("box-{}", index % 16)),
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
    }));
    let mut last = vec![Event::RewardRecorded(RewardRecorded {
        task_id: task_id.clone(),
        rollout_id: None,
        step,
        lease_id: None,
        value: if index.is_multiple_of(3) { 1.0 } else { 0.5 },
        verified: index.is_multiple_of(3),
        components: BTreeMap::from([("applied".to_string(), 1.0), ("tests".to_string(), 1.0)]),
        source: RewardSource::Rule,
    })];
    if step == 7 {
        last.push(Event::JobCompleted {
            job_id,
            lease_id,
            result_json: Some(r#"{"steps":8}"#.into()),
            log_tail: None,
        });
    }
    vec![
        record(0, first),
        record(
            1,
            vec![Event::SandboxResultRecorded(SandboxResultRecorded {
                task_id: task_id.clone(),
                rollout_id: None,
                step,
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
            })],
        ),
        record(2, last),
    ]
}

/// Writes the synthetic log; returns (last LSN, events).
fn write_log(config: &Config, log_dir: &Path, steps: u64) -> anyhow::Result<(Lsn, u64)> {
    let options = agentd::server::log_options(config, log_dir.to_path_buf());
    let (log, _) = agentd::log::open(options)?;
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

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// Runs the benchmark and prints its figures.
pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    let work = tempfile_dir(&options.dir)?;
    let config = Config::default();
    let log_dir = work.join("log");
    println!(
        "bench-export: {} steps, {} cores",
        options.steps,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    let (to, events) = write_log(&config, &log_dir, options.steps)?;
    println!(
        "log written: {} records, {events} events in {:.1} s",
        to.0,
        started.elapsed().as_secs_f64()
    );

    // The parts of a replay, so a regression shows where it is: reading and checking frames,
    // then decoding them, then applying (the full replay below).
    let started = Instant::now();
    let reader = agentd::log::LogReader::open(&log_dir, config.log.frame_bytes_max)?;
    let mut frame_bytes = 0u64;
    for frame in reader.frames(Lsn::ZERO, to) {
        frame_bytes += frame?.payload.len() as u64;
    }
    let read_s = started.elapsed().as_secs_f64();
    println!(
        "read frames (CRC checked): {} frames, {:.0} MB in {read_s:.2} s = {:.0} frames/s",
        to.0,
        mb(frame_bytes),
        to.0 as f64 / read_s
    );
    let started = Instant::now();
    agentd::replay::for_each_record(&reader, Lsn::ZERO, to, |_, record| {
        std::hint::black_box(record);
        Ok(())
    })?;
    let decode_s = started.elapsed().as_secs_f64();
    println!(
        "read + decode: {events} events in {decode_s:.2} s = {:.0} events/s",
        events as f64 / decode_s
    );

    let domain = DomainProjections::new(&config.datasets)?;
    let mut queue = QueueState::new();
    let started = Instant::now();
    let mut domain_projection = &domain;
    agentd::replay::drive(
        &reader,
        Lsn::ZERO,
        to,
        agentd::projection::FRAMES_PER_TRANSACTION_MAX,
        &mut [&mut queue, &mut domain_projection],
        |_| {},
    )?;
    let replay_s = started.elapsed().as_secs_f64();
    println!(
        "replay (queue state + domain projections): {events} events in {replay_s:.2} s = {:.0} events/s",
        events as f64 / replay_s
    );

    let started = Instant::now();
    let report = agentd::rebuild::rebuild(&config, &work, None)?;
    let rebuild_s = started.elapsed().as_secs_f64();
    println!(
        "agentd rebuild (redb job projection + queue state + domain projections): {events} events in {rebuild_s:.2} s = {:.0} events/s",
        events as f64 / rebuild_s
    );
    anyhow::ensure!(
        report.queue == queue.digest() && report.trajectories == domain.digests().trajectories,
        "the rebuild and the replay disagree"
    );

    let settings = ExportSettings::new(&config, &work, Some(work.join("exports")))?;
    let started = Instant::now();
    let outcome = write_export(
        &domain,
        &settings,
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )?;
    let export_s = started.elapsed().as_secs_f64();
    let bytes: u64 = outcome.manifest.files.iter().map(|file| file.bytes).sum();
    let rows = outcome.manifest.rows;

    // The same rows as JSONL, for the Python path (written outside the timed sections).
    let jsonl = work.join("trajectories.jsonl");
    let jsonl_bytes = write_jsonl(&domain, &jsonl, to)?;
    println!(
        "rust export: {rows} rows, {:.1} MB zstd Parquet ({} files) in {export_s:.2} s = {:.0} rows/s, {:.1} MB/s written, {:.1} MB/s of JSONL-equivalent input",
        mb(bytes),
        outcome.manifest.files.len(),
        rows as f64 / export_s,
        mb(bytes) / export_s,
        mb(jsonl_bytes) / export_s
    );
    match &options.python {
        Some(python) => match python_export(python, &jsonl, &work.join("python.parquet"), settings.zstd_level) {
            Ok(python_s) => println!(
                "python (pyarrow.json.read_json + pyarrow.parquet.write_table zstd level {}): {python_s:.2} s = {:.0} rows/s; rust is {:.2}x faster",
                settings.zstd_level,
                rows as f64 / python_s,
                python_s / export_s
            ),
            Err(error) => println!("python comparison skipped: {error}"),
        },
        None => println!("python comparison skipped (--python not given)"),
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

fn tempfile_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("agentd-bench-export-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The trajectory rows as JSON Lines (the columns of the Parquet export).
fn write_jsonl(domain: &DomainProjections, path: &Path, to: Lsn) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0u64;
    let trajectories = domain.trajectories();
    for entry in trajectories.steps_after(None) {
        let Some(view) = agentd::export::view_at(entry, to) else {
            continue;
        };
        let step = &entry.step;
        let (kind, language, pattern, rewrite) = match &step.action {
            Some(Action::Pattern {
                language,
                pattern,
                rewrite,
            }) => (
                Some("pattern"),
                Some(language),
                Some(pattern),
                Some(rewrite),
            ),
            Some(Action::Rule { .. }) => (Some("rule"), None, None, None),
            None => (None, None, None, None),
        };
        let sandbox = view.sandbox.map(|fact| &fact.event);
        let reward = view.reward.map(|fact| &fact.event);
        let row = json!({
            "task_id": step.task_id, "step": step.step,
            "job_id": step.job_id.map(|id| id.to_string()), "lease_id": step.lease_id.map(|id| id.to_string()),
            "attempt": step.attempt, "worker_id": step.worker_id, "model": step.model,
            "policy_version": step.policy_version, "temperature": step.sampling.temperature,
            "top_p": step.sampling.top_p, "max_tokens": step.sampling.max_tokens, "seed": step.sampling.seed,
            "prompt_tokens": step.prompt_tokens, "completion_tokens": step.completion_tokens,
            "prompt": step.prompt, "think": step.think, "action_kind": kind, "action_language": language,
            "action_pattern": pattern, "action_rewrite": rewrite,
            "state_before": serde_json::to_string(entry.state_before.as_ref())?,
            "state_before_lsn": entry.state_before_lsn.0,
            "sandbox_outcome": sandbox.map(|s| s.outcome.as_str()), "exit_code": sandbox.and_then(|s| s.exit_code),
            "diff": sandbox.map(|s| &s.diff), "stdout": sandbox.map(|s| &s.stdout), "stderr": sandbox.map(|s| &s.stderr),
            "tests_passed": sandbox.and_then(|s| s.tests_passed), "tests_failed": sandbox.and_then(|s| s.tests_failed),
            "duration_ms": sandbox.and_then(|s| s.duration_ms), "peak_rss_bytes": sandbox.and_then(|s| s.peak_rss_bytes),
            "reward": reward.map(|r| r.value), "verified": reward.map(|r| r.verified),
            "reward_components": reward.map(|r| r.components.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>()),
            "step_lsn": entry.lsn.0, "step_ts_ms": entry.ts_ms,
            "first_lsn": view.first_lsn.0, "last_lsn": view.last_lsn.0, "schema_version": 1,
        });
        let line = serde_json::to_vec(&row)?;
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    out.flush()?;
    Ok(bytes)
}

/// Runs pyarrow on the JSONL; returns the seconds it reports for read + write.
fn python_export(python: &str, jsonl: &Path, out: &Path, level: i32) -> anyhow::Result<f64> {
    let script = r#"
import sys, time
import pyarrow.json as pj, pyarrow.parquet as pq
src, dst, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
table = pj.read_json(src)
pq.write_table(table, dst, compression="zstd", compression_level=level)
print(time.perf_counter() - t)
"#;
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .arg(jsonl)
        .arg(out)
        .arg(level.to_string())
        .output()?;
    if !output.status.success() {
        anyhow::bail!(
            "{python}: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
