//! The digest of the trajectory projection: every step with its state before, sandbox result
//! and reward, and the ignored counters, in a fixed order.

use super::super::agent_states::write_state;
use super::super::digest::DigestStream;
use super::{source_name, StepEntry, Trajectories};
use agentd_schemas::events::Action;

/// Names the layout of [`Trajectories::digest`].
const DIGEST_VERSION: &str = "agentd.trajectories.v2";

impl Trajectories {
    /// SHA-256 (hex) over every step with its state before, sandbox result and reward, and the
    /// ignored counters. The other counters are functions of the steps, so they are not hashed.
    pub fn digest(&self) -> String {
        let mut out = DigestStream::new(DIGEST_VERSION);
        let ignored = self.ignored;
        for count in [
            ignored.duplicate_steps,
            ignored.duplicate_sandbox_results,
            ignored.duplicate_rewards,
            ignored.sandbox_results_without_step,
            ignored.rewards_without_step,
            ignored.duplicate_rollouts,
            ignored.steps_without_rollout,
        ] {
            out.number(count);
        }
        out.count(self.tasks.len());
        for (task_id, task) in &self.tasks {
            out.text(task_id);
            out.count(task.default.len());
            for entry in task.default.values() {
                write_step(&mut out, entry);
            }
            out.count(task.rollouts.len());
            for (id, rollout) in &task.rollouts {
                let created = &rollout.created;
                out.number(id.0);
                out.number(rollout.lsn.0);
                out.number(rollout.ts_ms);
                out.text(&created.group);
                out.text(&created.model);
                out.text(&created.policy_version);
                write_sampling(&mut out, &created.sampling);
                out.optional(created.job_id, |out, job| out.number(job.0));
                out.optional(created.lease_id, |out, lease| out.number(lease.0));
                out.optional(created.attempt, |out, attempt| {
                    out.number(u64::from(attempt))
                });
                out.optional(created.worker_id.as_deref(), DigestStream::text);
                out.flag(created.state_from == agentd_schemas::events::StateFrom::Empty);
                out.count(rollout.steps.len());
                for entry in rollout.steps.values() {
                    write_step(&mut out, entry);
                }
            }
        }
        out.finish()
    }
}

fn write_action(out: &mut DigestStream, action: &Action) {
    match action {
        Action::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            out.text("pattern");
            out.text(language);
            out.text(pattern);
            out.text(rewrite);
        }
        Action::Rule { yaml } => {
            out.text("rule");
            out.text(yaml);
        }
    }
}

fn write_sampling(out: &mut DigestStream, sampling: &agentd_schemas::events::Sampling) {
    out.optional(sampling.temperature, DigestStream::float);
    out.optional(sampling.top_p, DigestStream::float);
    out.optional(sampling.max_tokens, DigestStream::number);
    out.optional(sampling.seed, DigestStream::signed);
}

fn write_step(out: &mut DigestStream, entry: &StepEntry) {
    let step = &entry.step;
    out.number(u64::from(step.step));
    out.number(entry.lsn.0);
    out.number(entry.ts_ms);
    out.optional(step.job_id, |out, job| out.number(job.0));
    out.optional(step.lease_id, |out, lease| out.number(lease.0));
    out.optional(step.attempt, |out, attempt| out.number(u64::from(attempt)));
    out.optional(step.worker_id.as_deref(), DigestStream::text);
    out.text(&step.model);
    out.text(&step.policy_version);
    write_sampling(out, &step.sampling);
    out.optional(step.prompt_tokens, DigestStream::number);
    out.optional(step.completion_tokens, DigestStream::number);
    out.optional(step.prompt.as_deref(), DigestStream::text);
    out.optional(step.think.as_deref(), DigestStream::text);
    out.optional(step.action.as_ref(), write_action);
    out.optional(step.raw_output.as_deref(), DigestStream::text);
    out.optional(step.format_error.as_ref(), |out, error| {
        out.text(&error.code);
        out.text(&error.message);
    });
    out.optional(step.state_update.as_ref(), write_state);
    write_state(out, &entry.state_before);
    out.number(entry.state_before_lsn.0);
    out.optional(entry.sandbox.as_ref(), |out, fact| {
        let result = &fact.event;
        out.number(fact.lsn.0);
        out.number(fact.ts_ms);
        out.optional(result.lease_id, |out, lease| out.number(lease.0));
        out.optional(result.exit_code, |out, code| out.signed(i64::from(code)));
        out.text(result.outcome.as_str());
        out.text(&result.diff);
        out.text(&result.stdout);
        out.text(&result.stderr);
        out.optional(result.tests_passed, |out, n| out.number(u64::from(n)));
        out.optional(result.tests_failed, |out, n| out.number(u64::from(n)));
        out.optional(result.duration_ms, DigestStream::number);
        out.optional(result.peak_rss_bytes, DigestStream::number);
    });
    out.optional(entry.reward.as_ref(), |out, fact| {
        let reward = &fact.event;
        out.number(fact.lsn.0);
        out.number(fact.ts_ms);
        out.optional(reward.lease_id, |out, lease| out.number(lease.0));
        out.float(reward.value);
        out.flag(reward.verified);
        out.count(reward.components.len());
        for (name, value) in &reward.components {
            out.text(name);
            out.float(*value);
        }
        out.text(source_name(reward.source));
    });
}
