//! The Python side of the comparison: the same rows as JSON Lines, and pyarrow turning them into
//! zstd Parquet.

use agentd::bench_api::DomainProjections;
use agentd_schemas::events::Action;
use agentd_schemas::Lsn;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// The trajectory rows as JSON Lines (the columns of the Parquet export).
pub fn write_jsonl(domain: &DomainProjections, path: &Path, to: Lsn) -> anyhow::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut bytes = 0u64;
    let trajectories = domain.trajectories();
    for entry in trajectories.steps_after(None) {
        let Some(view) = agentd::bench_api::view_at(entry, to) else {
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

/// Runs pyarrow on the JSONL, `nice_added` nice values lower than this process; returns the
/// seconds it reports for read + write.
pub fn python_export(
    python: &str,
    jsonl: &Path,
    out: &Path,
    level: i32,
    nice_added: i32,
) -> anyhow::Result<f64> {
    let script = r#"
import sys, time
import pyarrow.json as pj, pyarrow.parquet as pq
src, dst, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
table = pj.read_json(src)
pq.write_table(table, dst, compression="zstd", compression_level=level)
print(time.perf_counter() - t)
"#;
    // `nice` (coreutils) rather than a setpriority in a pre-exec hook: no unsafe code.
    let output = std::process::Command::new("nice")
        .args(["-n", &nice_added.to_string(), python, "-c", script])
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
