//! Rollouts shape: the writes of RL actors sampling groups. C actors run concurrently; each takes
//! the next rollout, creates it (`POST /v1/tasks/{task_id}/rollouts`, `--group-size` rollouts per
//! task share a group), then records `--steps` steps, each as three calls in order: the step
//! with a state update (`POST /v1/rollouts/{id}/steps`), its sandbox result and its reward. Every
//! call waits for its answer (durable and applied) before the next, as an actor does.

use super::window::{per_second, round1, LatencySummary};
use super::{Output, Shape};
use crate::cli::output::print_json;
use crate::http_client::Client;
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Most rollouts one run creates (each keeps latency samples).
const ROLLOUTS_MAX: u64 = 1_000_000;
/// Most steps per rollout.
const STEPS_MAX: u64 = 1000;

#[derive(Debug, Clone)]
pub(super) struct RolloutPlan {
    /// Prefix of the task ids and group names of this run.
    prefix: String,
    rollouts: u64,
    group_size: u64,
    steps: u64,
    actors: u64,
}

impl RolloutPlan {
    pub(super) fn from_args(args: &super::BenchArgs) -> anyhow::Result<RolloutPlan> {
        if args.rollouts == 0 || args.rollouts > ROLLOUTS_MAX {
            bail!("--rollouts must be between 1 and {ROLLOUTS_MAX}");
        }
        if args.group_size == 0 {
            bail!("--group-size must be at least 1");
        }
        if args.steps == 0 || args.steps > STEPS_MAX {
            bail!("--steps must be between 1 and {STEPS_MAX}");
        }
        Ok(RolloutPlan {
            prefix: args
                .queue
                .clone()
                .unwrap_or_else(|| format!("bench-{}", std::process::id())),
            rollouts: args.rollouts,
            group_size: args.group_size,
            steps: args.steps,
            actors: args.consumers,
        })
    }
}

/// Latency samples of one actor, per call kind, in ms.
#[derive(Default)]
struct Samples {
    create: Vec<f64>,
    step: Vec<f64>,
    sandbox: Vec<f64>,
    reward: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct RolloutReport {
    shape: Shape,
    prefix: String,
    actors: u64,
    group_size: u64,
    steps_per_rollout: u64,
    rollouts: u64,
    steps: u64,
    /// Every HTTP write: one create per rollout, three calls per step.
    writes: u64,
    seconds: f64,
    rollouts_per_s: f64,
    steps_per_s: f64,
    writes_per_s: f64,
    create: LatencySummary,
    step: LatencySummary,
    sandbox: LatencySummary,
    reward: LatencySummary,
}

pub(super) async fn run_rollouts(
    client: &Client,
    plan: RolloutPlan,
) -> anyhow::Result<RolloutReport> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut actors = JoinSet::new();
    for _ in 0..plan.actors {
        let (client, plan, next) = (client.clone(), plan.clone(), Arc::clone(&next));
        actors.spawn(async move { actor(&client, &plan, &next).await });
    }
    let mut all = Samples::default();
    while let Some(joined) = actors.join_next().await {
        let samples = joined.context("a bench actor panicked")??;
        all.create.extend(samples.create);
        all.step.extend(samples.step);
        all.sandbox.extend(samples.sandbox);
        all.reward.extend(samples.reward);
    }
    let seconds = started.elapsed().as_secs_f64();
    let rollouts = all.create.len() as u64;
    let steps = all.step.len() as u64;
    let writes = rollouts + steps + all.sandbox.len() as u64 + all.reward.len() as u64;
    Ok(RolloutReport {
        shape: Shape::Rollouts,
        prefix: plan.prefix,
        actors: plan.actors,
        group_size: plan.group_size,
        steps_per_rollout: plan.steps,
        rollouts,
        steps,
        writes,
        seconds: round1(seconds),
        rollouts_per_s: per_second(rollouts, seconds),
        steps_per_s: per_second(steps, seconds),
        writes_per_s: per_second(writes, seconds),
        create: LatencySummary::from_samples(all.create),
        step: LatencySummary::from_samples(all.step),
        sandbox: LatencySummary::from_samples(all.sandbox),
        reward: LatencySummary::from_samples(all.reward),
    })
}

/// One actor: rollouts until the run's count is reached.
async fn actor(client: &Client, plan: &RolloutPlan, next: &AtomicU64) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= plan.rollouts {
            return Ok(samples);
        }
        let task = index / plan.group_size;
        let task_id = format!("{}-task-{task}", plan.prefix);
        let path = format!("/v1/tasks/{task_id}/rollouts");
        let body = json!({
            "model": "bench-model",
            "policy_version": "v1",
            "group": format!("{}-g{task}", plan.prefix),
            "sampling": {"temperature": 1.0, "seed": index},
        });
        let created: Value = timed(&mut samples.create, client.post(&path, &body)).await?;
        let rollout = created["rollout_id"]
            .as_str()
            .context("the create answer has no rollout_id")?
            .to_owned();
        let steps = format!("/v1/rollouts/{rollout}/steps");
        let value = (index % 4) as f64 / 3.0;
        let sandbox = json!({"exit_code": 0, "outcome": "ok", "diff": "-print(x)\n+logger.info(x)\n",
                             "stdout": "TESTS passed=3 failed=0", "tests_passed": 3, "tests_failed": 0,
                             "duration_ms": 400});
        let reward = json!({"value": value, "verified": value == 1.0, "source": "rule",
                            "components": {"applied": 1.0, "tests": value}});
        for step in 0..plan.steps {
            let body = step_body(step);
            let _: Value = timed(&mut samples.step, client.post(&steps, &body)).await?;
            let path = format!("{steps}/{step}/sandbox");
            let _: Value = timed(&mut samples.sandbox, client.post(&path, &sandbox)).await?;
            let path = format!("{steps}/{step}/reward");
            let _: Value = timed(&mut samples.reward, client.post(&path, &reward)).await?;
        }
    }
}

fn step_body(step: u64) -> Value {
    json!({
        "step": step,
        "model": "bench-model",
        "policy_version": "v1",
        "prompt_tokens": 800,
        "completion_tokens": 90,
        "think": "print() calls in library code should go through the module logger",
        "action": {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "logger.info($A)"},
        "state_update": {"history": [format!("step {step}: rewrote print calls")]},
    })
}

/// Awaits one call (a future does nothing until awaited) and records how long it took.
async fn timed<T>(
    samples: &mut Vec<f64>,
    call: impl std::future::Future<Output = Result<T, crate::http_client::ClientError>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let answer = call.await?;
    samples.push(started.elapsed().as_secs_f64() * 1000.0);
    Ok(answer)
}

impl RolloutReport {
    pub(super) fn print(&self, output: Output) -> anyhow::Result<()> {
        if output == Output::Json {
            return print_json(self);
        }
        println!(
            "shape rollouts: {} actors, groups of {}, {} steps each (step + sandbox + reward per step)",
            self.actors, self.group_size, self.steps_per_rollout
        );
        println!(
            "  {} rollouts, {} steps, {} writes in {:.1} s = {:.0} rollouts/s, {:.0} steps/s, {:.0} writes/s",
            self.rollouts,
            self.steps,
            self.writes,
            self.seconds,
            self.rollouts_per_s,
            self.steps_per_s,
            self.writes_per_s
        );
        for (name, summary) in [
            ("create ", &self.create),
            ("step   ", &self.step),
            ("sandbox", &self.sandbox),
            ("reward ", &self.reward),
        ] {
            println!(
                "  {name} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
                summary.p50_ms, summary.p99_ms, summary.max_ms
            );
        }
        Ok(())
    }
}
