//! Rows from trajectory steps: the full per-step log (`trajectories`) and the TRL SFT view
//! (`trl_sft`). Columns are listed in `docs/exports.md`.
//!
//! A step is shown as of the export's `to` LSN: its sandbox result and reward appear only if they
//! were logged at or before `to`. So exporting from a projection that has moved past `to` gives
//! exactly the rows a projection stopped at `to` gives, which is what makes a live export and a
//! rebuild byte-identical.

use super::columns::{message_list_builder, push_message, MessageListBuilder};
use crate::domain::agent_state::render;
use crate::projection::domain::agent_states::AgentStates;
use crate::projection::domain::trajectories::{source_name, Fact, StepEntry};
use agentd_schemas::events::{
    Action, AgentState, RewardRecorded, SandboxOutcome, SandboxResultRecorded,
};
use agentd_schemas::export_api::EXPORT_SCHEMA_VERSION;
use agentd_schemas::Lsn;
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use std::sync::Arc;

/// A step as visible at some LSN.
pub struct StepView<'a> {
    pub sandbox: Option<&'a Fact<SandboxResultRecorded>>,
    pub reward: Option<&'a Fact<RewardRecorded>>,
    /// The step's own LSN and the last of its visible facts.
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
}

/// The step as of `to`, or `None` if it was logged after `to`.
pub fn view_at(entry: &StepEntry, to: Lsn) -> Option<StepView<'_>> {
    if entry.lsn > to {
        return None;
    }
    let sandbox = entry.sandbox.as_ref().filter(|fact| fact.lsn <= to);
    let reward = entry.reward.as_ref().filter(|fact| fact.lsn <= to);
    let last_lsn = entry
        .lsn
        .max(sandbox.map_or(Lsn::ZERO, |fact| fact.lsn))
        .max(reward.map_or(Lsn::ZERO, |fact| fact.lsn));
    Some(StepView {
        sandbox,
        reward,
        first_lsn: entry.lsn,
        last_lsn,
    })
}

/// Rows built from steps, one record batch at a time.
pub trait StepRows {
    fn with_capacity(rows: usize) -> Self;
    /// Adds the step if it belongs in an export of `(after, to]`; returns whether it did.
    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, states: &AgentStates) -> bool;
    fn finish(self) -> RecordBatch;
}

// ---------------------------------------------------------------------------------------------
// trajectories

fn component_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}

/// The columns of the `trajectories` export (schema version [`EXPORT_SCHEMA_VERSION`]).
pub fn trajectory_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let u64f = |name: &str, nullable: bool| Field::new(name, DataType::UInt64, nullable);
    let u32f = |name: &str, nullable: bool| Field::new(name, DataType::UInt32, nullable);
    Arc::new(Schema::new(vec![
        utf8("task_id", false),
        u32f("step", false),
        utf8("job_id", true),
        utf8("lease_id", true),
        u32f("attempt", true),
        utf8("worker_id", true),
        utf8("model", false),
        utf8("policy_version", false),
        Field::new("temperature", DataType::Float64, true),
        Field::new("top_p", DataType::Float64, true),
        u64f("max_tokens", true),
        Field::new("seed", DataType::Int64, true),
        u64f("prompt_tokens", true),
        u64f("completion_tokens", true),
        utf8("prompt", true),
        utf8("think", true),
        utf8("action_kind", false),
        utf8("action_language", true),
        utf8("action_pattern", true),
        utf8("action_rewrite", true),
        utf8("action_rule_yaml", true),
        utf8("state_before", false),
        u64f("state_before_lsn", false),
        u64f("state_before_tokens", true),
        utf8("state_tokenizer", true),
        utf8("state_update", true),
        utf8("sandbox_outcome", true),
        Field::new("exit_code", DataType::Int32, true),
        Field::new("timed_out", DataType::Boolean, true),
        utf8("diff", true),
        utf8("stdout", true),
        utf8("stderr", true),
        u32f("tests_passed", true),
        u32f("tests_failed", true),
        u64f("duration_ms", true),
        u64f("peak_rss_bytes", true),
        u64f("sandbox_lsn", true),
        u64f("sandbox_ts_ms", true),
        Field::new("reward", DataType::Float64, true),
        Field::new("verified", DataType::Boolean, true),
        utf8("reward_source", true),
        Field::new(
            "reward_components",
            DataType::List(Arc::new(Field::new_list_field(
                DataType::Struct(component_fields()),
                true,
            ))),
            true,
        ),
        u64f("reward_lsn", true),
        u64f("reward_ts_ms", true),
        u64f("step_lsn", false),
        u64f("step_ts_ms", false),
        u64f("first_lsn", false),
        u64f("last_lsn", false),
        u32f("schema_version", false),
    ]))
}

/// Builders of the `trajectories` columns.
pub struct TrajectoryRows {
    task_id: StringBuilder,
    step: UInt32Builder,
    job_id: StringBuilder,
    lease_id: StringBuilder,
    attempt: UInt32Builder,
    worker_id: StringBuilder,
    model: StringBuilder,
    policy_version: StringBuilder,
    temperature: Float64Builder,
    top_p: Float64Builder,
    max_tokens: UInt64Builder,
    seed: Int64Builder,
    prompt_tokens: UInt64Builder,
    completion_tokens: UInt64Builder,
    prompt: StringBuilder,
    think: StringBuilder,
    action_kind: StringBuilder,
    action_language: StringBuilder,
    action_pattern: StringBuilder,
    action_rewrite: StringBuilder,
    action_rule_yaml: StringBuilder,
    state_before: StringBuilder,
    state_before_lsn: UInt64Builder,
    state_before_tokens: UInt64Builder,
    state_tokenizer: StringBuilder,
    state_update: StringBuilder,
    sandbox_outcome: StringBuilder,
    exit_code: Int32Builder,
    timed_out: BooleanBuilder,
    diff: StringBuilder,
    stdout: StringBuilder,
    stderr: StringBuilder,
    tests_passed: UInt32Builder,
    tests_failed: UInt32Builder,
    duration_ms: UInt64Builder,
    peak_rss_bytes: UInt64Builder,
    sandbox_lsn: UInt64Builder,
    sandbox_ts_ms: UInt64Builder,
    reward: Float64Builder,
    verified: BooleanBuilder,
    reward_source: StringBuilder,
    reward_components: ListBuilder<StructBuilder>,
    reward_lsn: UInt64Builder,
    reward_ts_ms: UInt64Builder,
    step_lsn: UInt64Builder,
    step_ts_ms: UInt64Builder,
    first_lsn: UInt64Builder,
    last_lsn: UInt64Builder,
    schema_version: UInt32Builder,
    /// The last `state_before` written and its JSON: consecutive steps of a task usually saw
    /// the same state (one `Arc`), so it is serialized once, not once per row.
    last_state: Option<(Arc<AgentState>, String)>,
    /// Scratch space for the `job_N` / `lease_N` ids.
    id_text: String,
}

/// The token count and tokenizer of the state a step saw (the merge that produced it).
fn state_tokens(states: &AgentStates, entry: &StepEntry) -> Option<(u64, String)> {
    if entry.state_before_lsn == Lsn::ZERO {
        return None;
    }
    let task = states.task(&entry.step.task_id)?;
    let index = task
        .updates
        .binary_search_by_key(&entry.state_before_lsn, |update| update.lsn)
        .ok()?;
    let update = &task.updates[index];
    Some((update.tokens as u64, update.limits.encoding.clone()))
}

/// Appends an id in its display form (`job_7`) without allocating a string per row.
fn append_id<T: std::fmt::Display>(
    column: &mut StringBuilder,
    scratch: &mut String,
    id: Option<T>,
) {
    use std::fmt::Write;
    match id {
        Some(id) => {
            scratch.clear();
            let _infallible = write!(scratch, "{id}");
            column.append_value(scratch.as_str());
        }
        None => column.append_null(),
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    // Plain data (strings, lists, options): serializing into a String cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl StepRows for TrajectoryRows {
    fn with_capacity(rows: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        let u64b = || UInt64Builder::with_capacity(rows);
        let u32b = || UInt32Builder::with_capacity(rows);
        TrajectoryRows {
            task_id: s(),
            step: u32b(),
            job_id: s(),
            lease_id: s(),
            attempt: u32b(),
            worker_id: s(),
            model: s(),
            policy_version: s(),
            temperature: Float64Builder::with_capacity(rows),
            top_p: Float64Builder::with_capacity(rows),
            max_tokens: u64b(),
            seed: Int64Builder::with_capacity(rows),
            prompt_tokens: u64b(),
            completion_tokens: u64b(),
            prompt: s(),
            think: s(),
            action_kind: s(),
            action_language: s(),
            action_pattern: s(),
            action_rewrite: s(),
            action_rule_yaml: s(),
            state_before: s(),
            state_before_lsn: u64b(),
            state_before_tokens: u64b(),
            state_tokenizer: s(),
            state_update: s(),
            sandbox_outcome: s(),
            exit_code: Int32Builder::with_capacity(rows),
            timed_out: BooleanBuilder::with_capacity(rows),
            diff: s(),
            stdout: s(),
            stderr: s(),
            tests_passed: u32b(),
            tests_failed: u32b(),
            duration_ms: u64b(),
            peak_rss_bytes: u64b(),
            sandbox_lsn: u64b(),
            sandbox_ts_ms: u64b(),
            reward: Float64Builder::with_capacity(rows),
            verified: BooleanBuilder::with_capacity(rows),
            reward_source: s(),
            reward_components: ListBuilder::new(StructBuilder::from_fields(
                component_fields(),
                rows,
            )),
            reward_lsn: u64b(),
            reward_ts_ms: u64b(),
            step_lsn: u64b(),
            step_ts_ms: u64b(),
            first_lsn: u64b(),
            last_lsn: u64b(),
            schema_version: u32b(),
            last_state: None,
            id_text: String::new(),
        }
    }

    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, states: &AgentStates) -> bool {
        let Some(view) = view_at(entry, to) else {
            return false;
        };
        // A step belongs to every export whose range holds one of its facts; the copy in the
        // latest export (highest `last_lsn`) is the most complete.
        let changed_in_range = [
            Some(view.first_lsn),
            view.sandbox.map(|fact| fact.lsn),
            view.reward.map(|fact| fact.lsn),
        ]
        .into_iter()
        .flatten()
        .any(|lsn| lsn > after && lsn <= to);
        if !changed_in_range {
            return false;
        }
        let step = &entry.step;
        self.task_id.append_value(&step.task_id);
        self.step.append_value(step.step);
        append_id(&mut self.job_id, &mut self.id_text, step.job_id);
        append_id(&mut self.lease_id, &mut self.id_text, step.lease_id);
        self.attempt.append_option(step.attempt);
        self.worker_id.append_option(step.worker_id.as_deref());
        self.model.append_value(&step.model);
        self.policy_version.append_value(&step.policy_version);
        self.temperature.append_option(step.sampling.temperature);
        self.top_p.append_option(step.sampling.top_p);
        self.max_tokens.append_option(step.sampling.max_tokens);
        self.seed.append_option(step.sampling.seed);
        self.prompt_tokens.append_option(step.prompt_tokens);
        self.completion_tokens.append_option(step.completion_tokens);
        self.prompt.append_option(step.prompt.as_deref());
        self.think.append_option(step.think.as_deref());
        match &step.action {
            Action::Pattern {
                language,
                pattern,
                rewrite,
            } => {
                self.action_kind.append_value("pattern");
                self.action_language.append_value(language);
                self.action_pattern.append_value(pattern);
                self.action_rewrite.append_value(rewrite);
                self.action_rule_yaml.append_null();
            }
            Action::Rule { yaml } => {
                self.action_kind.append_value("rule");
                self.action_language.append_null();
                self.action_pattern.append_null();
                self.action_rewrite.append_null();
                self.action_rule_yaml.append_value(yaml);
            }
        }
        let state_json = match &self.last_state {
            Some((state, json)) if Arc::ptr_eq(state, &entry.state_before) => json,
            _ => {
                let json = json_text(entry.state_before.as_ref());
                &self
                    .last_state
                    .insert((Arc::clone(&entry.state_before), json))
                    .1
            }
        };
        self.state_before.append_value(state_json);
        self.state_before_lsn.append_value(entry.state_before_lsn.0);
        match state_tokens(states, entry) {
            Some((tokens, tokenizer)) => {
                self.state_before_tokens.append_value(tokens);
                self.state_tokenizer.append_value(tokenizer);
            }
            None => {
                self.state_before_tokens.append_null();
                self.state_tokenizer.append_null();
            }
        }
        self.state_update
            .append_option(step.state_update.as_ref().map(json_text));
        match view.sandbox {
            Some(fact) => {
                let result = &fact.event;
                self.sandbox_outcome.append_value(result.outcome.as_str());
                self.exit_code.append_option(result.exit_code);
                self.timed_out
                    .append_value(result.outcome == SandboxOutcome::TimedOut);
                self.diff.append_value(&result.diff);
                self.stdout.append_value(&result.stdout);
                self.stderr.append_value(&result.stderr);
                self.tests_passed.append_option(result.tests_passed);
                self.tests_failed.append_option(result.tests_failed);
                self.duration_ms.append_option(result.duration_ms);
                self.peak_rss_bytes.append_option(result.peak_rss_bytes);
                self.sandbox_lsn.append_value(fact.lsn.0);
                self.sandbox_ts_ms.append_value(fact.ts_ms);
            }
            None => {
                self.sandbox_outcome.append_null();
                self.exit_code.append_null();
                self.timed_out.append_null();
                self.diff.append_null();
                self.stdout.append_null();
                self.stderr.append_null();
                self.tests_passed.append_null();
                self.tests_failed.append_null();
                self.duration_ms.append_null();
                self.peak_rss_bytes.append_null();
                self.sandbox_lsn.append_null();
                self.sandbox_ts_ms.append_null();
            }
        }
        match view.reward {
            Some(fact) => {
                let reward = &fact.event;
                self.reward.append_value(reward.value);
                self.verified.append_value(reward.verified);
                self.reward_source.append_value(source_name(reward.source));
                let components = self.reward_components.values();
                for (name, value) in &reward.components {
                    struct_field::<StringBuilder>(components, 0).append_value(name);
                    struct_field::<Float64Builder>(components, 1).append_value(*value);
                    components.append(true);
                }
                self.reward_components.append(true);
                self.reward_lsn.append_value(fact.lsn.0);
                self.reward_ts_ms.append_value(fact.ts_ms);
            }
            None => {
                self.reward.append_null();
                self.verified.append_null();
                self.reward_source.append_null();
                self.reward_components.append(false);
                self.reward_lsn.append_null();
                self.reward_ts_ms.append_null();
            }
        }
        self.step_lsn.append_value(entry.lsn.0);
        self.step_ts_ms.append_value(entry.ts_ms);
        self.first_lsn.append_value(view.first_lsn.0);
        self.last_lsn.append_value(view.last_lsn.0);
        self.schema_version.append_value(EXPORT_SCHEMA_VERSION);
        true
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.task_id.finish()),
            Arc::new(self.step.finish()),
            Arc::new(self.job_id.finish()),
            Arc::new(self.lease_id.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.worker_id.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.policy_version.finish()),
            Arc::new(self.temperature.finish()),
            Arc::new(self.top_p.finish()),
            Arc::new(self.max_tokens.finish()),
            Arc::new(self.seed.finish()),
            Arc::new(self.prompt_tokens.finish()),
            Arc::new(self.completion_tokens.finish()),
            Arc::new(self.prompt.finish()),
            Arc::new(self.think.finish()),
            Arc::new(self.action_kind.finish()),
            Arc::new(self.action_language.finish()),
            Arc::new(self.action_pattern.finish()),
            Arc::new(self.action_rewrite.finish()),
            Arc::new(self.action_rule_yaml.finish()),
            Arc::new(self.state_before.finish()),
            Arc::new(self.state_before_lsn.finish()),
            Arc::new(self.state_before_tokens.finish()),
            Arc::new(self.state_tokenizer.finish()),
            Arc::new(self.state_update.finish()),
            Arc::new(self.sandbox_outcome.finish()),
            Arc::new(self.exit_code.finish()),
            Arc::new(self.timed_out.finish()),
            Arc::new(self.diff.finish()),
            Arc::new(self.stdout.finish()),
            Arc::new(self.stderr.finish()),
            Arc::new(self.tests_passed.finish()),
            Arc::new(self.tests_failed.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.peak_rss_bytes.finish()),
            Arc::new(self.sandbox_lsn.finish()),
            Arc::new(self.sandbox_ts_ms.finish()),
            Arc::new(self.reward.finish()),
            Arc::new(self.verified.finish()),
            Arc::new(self.reward_source.finish()),
            Arc::new(self.reward_components.finish()),
            Arc::new(self.reward_lsn.finish()),
            Arc::new(self.reward_ts_ms.finish()),
            Arc::new(self.step_lsn.finish()),
            Arc::new(self.step_ts_ms.finish()),
            Arc::new(self.first_lsn.finish()),
            Arc::new(self.last_lsn.finish()),
            Arc::new(self.schema_version.finish()),
        ];
        // The builders follow the schema column for column: a mismatch is a bug in this file,
        // caught by every test that exports a step.
        RecordBatch::try_new(trajectory_schema(), columns)
            .expect("trajectory columns match their schema")
    }
}

pub(super) fn struct_field<T: arrow_array::builder::ArrayBuilder>(
    builder: &mut StructBuilder,
    index: usize,
) -> &mut T {
    // The struct's fields are fixed by `component_fields` / the message fields: name/role is a
    // string at 0, value/content at 1.
    builder
        .field_builder::<T>(index)
        .expect("struct field builder of the declared type")
}

// ---------------------------------------------------------------------------------------------
// trl_sft

/// The columns of the `trl_sft` view.
pub fn sft_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        super::columns::messages_field("messages"),
        Field::new("task_id", DataType::Utf8, false),
        Field::new("step", DataType::UInt32, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("policy_version", DataType::Utf8, false),
        Field::new("reward", DataType::Float64, false),
        Field::new("reward_source", DataType::Utf8, false),
        Field::new("step_lsn", DataType::UInt64, false),
        Field::new("reward_lsn", DataType::UInt64, false),
    ]))
}

/// Builders of the `trl_sft` columns: steps whose reward is verified and was logged in range.
pub struct SftRows {
    messages: MessageListBuilder,
    task_id: StringBuilder,
    step: UInt32Builder,
    model: StringBuilder,
    policy_version: StringBuilder,
    reward: Float64Builder,
    reward_source: StringBuilder,
    step_lsn: UInt64Builder,
    reward_lsn: UInt64Builder,
}

/// What the model is trained to answer: its reasoning (if recorded) in `<think>` tags, then the
/// action as JSON (`{"kind":"pattern","language":...,"pattern":...,"rewrite":...}` or
/// `{"kind":"rule","yaml":...}`).
pub fn assistant_text(think: Option<&str>, action: &Action) -> String {
    let action = json_text(action);
    match think {
        Some(think) if !think.is_empty() => format!("<think>\n{think}\n</think>\n{action}"),
        _ => action,
    }
}

impl StepRows for SftRows {
    fn with_capacity(rows: usize) -> Self {
        SftRows {
            messages: message_list_builder(rows),
            task_id: StringBuilder::with_capacity(rows, rows * 16),
            step: UInt32Builder::with_capacity(rows),
            model: StringBuilder::with_capacity(rows, rows * 16),
            policy_version: StringBuilder::with_capacity(rows, rows * 8),
            reward: Float64Builder::with_capacity(rows),
            reward_source: StringBuilder::with_capacity(rows, rows * 8),
            step_lsn: UInt64Builder::with_capacity(rows),
            reward_lsn: UInt64Builder::with_capacity(rows),
        }
    }

    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, _states: &AgentStates) -> bool {
        let Some(reward) = entry.reward.as_ref() else {
            return false;
        };
        if !(reward.event.verified && reward.lsn > after && reward.lsn <= to && entry.lsn <= to) {
            return false;
        }
        let step = &entry.step;
        // The prompt the model saw; a step recorded without one gets the rendered state it acted
        // on, which is what agentd's own prompts are built from.
        let prompt = match &step.prompt {
            Some(prompt) => prompt.clone(),
            None => render(&entry.state_before),
        };
        let answer = assistant_text(step.think.as_deref(), &step.action);
        push_message(
            &mut self.messages,
            &[("user", &prompt), ("assistant", &answer)],
        );
        self.task_id.append_value(&step.task_id);
        self.step.append_value(step.step);
        self.model.append_value(&step.model);
        self.policy_version.append_value(&step.policy_version);
        self.reward.append_value(reward.event.value);
        self.reward_source
            .append_value(source_name(reward.event.source));
        self.step_lsn.append_value(entry.lsn.0);
        self.reward_lsn.append_value(reward.lsn.0);
        true
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.messages.finish()),
            Arc::new(self.task_id.finish()),
            Arc::new(self.step.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.policy_version.finish()),
            Arc::new(self.reward.finish()),
            Arc::new(self.reward_source.finish()),
            Arc::new(self.step_lsn.finish()),
            Arc::new(self.reward_lsn.finish()),
        ];
        RecordBatch::try_new(sft_schema(), columns).expect("sft columns match their schema")
    }
}
