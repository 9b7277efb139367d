//! The `trajectories` export's rows: one per step, every fact logged by `to` (the columns are
//! listed once, in [`TrajectoryColumns`]; `push` fills them in that order, group by group).

use super::*;

pub(super) fn component_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}

pub(super) fn components_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(component_fields()),
        true,
    )))
}

export_columns! {
    /// The columns of the `trajectories` export (schema version `ExportKind::Trajectories.schema_version()`), in
    /// file order.
    pub struct TrajectoryColumns;
    capacity rows;
    task_id: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    step: UInt32Builder = UInt32Builder::with_capacity(rows) => DataType::UInt32, REQUIRED;
    /// `ro_<n>`; null for the task's default rollout.
    rollout_id: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The rollout's group; null for the default rollout.
    group: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The split of the task's dataset record (`train`, `dev`, `test`); null for a task that is
    /// not a kept record.
    split: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    job_id: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    lease_id: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    attempt: UInt32Builder = UInt32Builder::with_capacity(rows) => DataType::UInt32, NULLABLE;
    worker_id: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    model: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    policy_version: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    temperature: Float64Builder =
        Float64Builder::with_capacity(rows) => DataType::Float64, NULLABLE;
    top_p: Float64Builder = Float64Builder::with_capacity(rows) => DataType::Float64, NULLABLE;
    max_tokens: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    seed: Int64Builder = Int64Builder::with_capacity(rows) => DataType::Int64, NULLABLE;
    prompt_tokens: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    completion_tokens: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    prompt: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    think: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// Null for a raw output that did not parse (see `format_error`).
    action_kind: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    action_language: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    action_pattern: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    action_rewrite: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    action_rule_yaml: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    state_before: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    state_before_lsn: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    state_before_tokens: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    state_tokenizer: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    state_update: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The model's output as recorded, when the step came from one (`docs/output-format.md`).
    raw_output: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The code of a raw output that did not parse (such a step has reward 0).
    format_error: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// How long the model took to generate the step, as the actor measured it.
    generation_ms: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    sandbox_outcome: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    exit_code: Int32Builder = Int32Builder::with_capacity(rows) => DataType::Int32, NULLABLE;
    timed_out: BooleanBuilder =
        BooleanBuilder::with_capacity(rows) => DataType::Boolean, NULLABLE;
    diff: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    stdout: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    stderr: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    tests_passed: UInt32Builder = UInt32Builder::with_capacity(rows) => DataType::UInt32, NULLABLE;
    tests_failed: UInt32Builder = UInt32Builder::with_capacity(rows) => DataType::UInt32, NULLABLE;
    duration_ms: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    peak_rss_bytes: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    sandbox_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    sandbox_ts_ms: UInt64Builder =
        UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    reward: Float64Builder = Float64Builder::with_capacity(rows) => DataType::Float64, NULLABLE;
    verified: BooleanBuilder = BooleanBuilder::with_capacity(rows) => DataType::Boolean, NULLABLE;
    reward_source: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    reward_components: ListBuilder<StructBuilder> =
        ListBuilder::new(StructBuilder::from_fields(component_fields(), rows))
        => components_type(), NULLABLE;
    reward_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    reward_ts_ms: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, NULLABLE;
    /// The rollout's step rewards logged by `to`, summed; null for the default rollout.
    rollout_reward: Float64Builder =
        Float64Builder::with_capacity(rows) => DataType::Float64, NULLABLE;
    /// The rollout's group-relative advantage as of `to`; null for the default rollout.
    advantage: Float64Builder = Float64Builder::with_capacity(rows) => DataType::Float64, NULLABLE;
    step_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    step_ts_ms: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    first_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    last_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    schema_version: UInt32Builder =
        UInt32Builder::with_capacity(rows) => DataType::UInt32, REQUIRED;
}

/// The columns of the `trajectories` export (schema version `ExportKind::Trajectories.schema_version()`).
pub fn trajectory_schema() -> SchemaRef {
    TrajectoryColumns::schema()
}

/// Builders of the `trajectories` columns.
pub struct TrajectoryRows {
    columns: TrajectoryColumns,
    /// The last `state_before` written and its JSON: consecutive steps of a task usually saw
    /// the same state (one `Arc`), so it is serialized once, not once per row.
    last_state: Option<(Arc<AgentState>, String)>,
    /// Scratch space for the `job_N` / `lease_N` / `ro_N` ids.
    id_text: String,
}

/// The token count and tokenizer of the state a step saw (the merge that produced it, in the
/// step's rollout or the task state the rollout started from).
pub(super) fn state_tokens<'s>(
    states: &'s AgentStates,
    entry: &StepEntry,
) -> Option<(u64, &'s str)> {
    if entry.state_before_lsn == Lsn::ZERO {
        return None;
    }
    let step = &entry.step;
    let update = states.update_at(&step.task_id, step.rollout_id, entry.state_before_lsn)?;
    Some((update.tokens as u64, update.limits.encoding.as_str()))
}

/// Appends an id in its display form (`job_7`) without allocating a string per row.
pub(super) fn append_id<T: std::fmt::Display>(
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

pub(super) fn json_text<T: serde::Serialize>(value: &T) -> String {
    // Plain data (strings, lists, options): serializing into a String cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl StepRows for TrajectoryRows {
    fn with_capacity(rows: usize) -> Self {
        TrajectoryRows {
            columns: TrajectoryColumns::with_capacity(rows),
            last_state: None,
            id_text: String::new(),
        }
    }

    fn presized(rows: usize, previous: &RecordBatch) -> Self {
        TrajectoryRows {
            columns: TrajectoryColumns::presized(rows, previous),
            last_state: None,
            id_text: String::new(),
        }
    }

    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, context: &StepContext) -> bool {
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
        let score = entry.step.rollout_id.and_then(|id| {
            context
                .scores
                .borrow_mut()
                .score(context.trajectories, id, to)
        });
        self.push_step(entry, context);
        push_action(&mut self.columns, entry.step.action.as_ref());
        self.push_state(entry, context.states);
        push_sandbox(&mut self.columns, view.sandbox);
        push_reward(&mut self.columns, view.reward);
        let columns = &mut self.columns;
        columns
            .rollout_reward
            .append_option(score.map(|score| score.reward));
        columns
            .advantage
            .append_option(score.map(|score| score.advantage));
        columns.step_lsn.append_value(entry.lsn.0);
        columns.step_ts_ms.append_value(entry.ts_ms);
        columns.first_lsn.append_value(view.first_lsn.0);
        columns.last_lsn.append_value(view.last_lsn.0);
        columns
            .schema_version
            .append_value(ExportKind::Trajectories.schema_version());
        true
    }

    fn finish(self) -> RecordBatch {
        self.columns.finish()
    }
}

impl TrajectoryRows {
    /// The step's own columns, `task_id` to `think`, in file order.
    fn push_step(&mut self, entry: &StepEntry, context: &StepContext) {
        let step = &entry.step;
        let columns = &mut self.columns;
        columns.task_id.append_value(&step.task_id);
        columns.step.append_value(step.step);
        append_id(&mut columns.rollout_id, &mut self.id_text, step.rollout_id);
        columns
            .group
            .append_option(group_of(context.trajectories, entry));
        columns
            .split
            .append_option(context.splits.get(&step.task_id).copied());
        append_id(&mut columns.job_id, &mut self.id_text, step.job_id);
        append_id(&mut columns.lease_id, &mut self.id_text, step.lease_id);
        columns.attempt.append_option(step.attempt);
        columns.worker_id.append_option(step.worker_id.as_deref());
        columns.model.append_value(&step.model);
        columns.policy_version.append_value(&step.policy_version);
        columns.temperature.append_option(step.sampling.temperature);
        columns.top_p.append_option(step.sampling.top_p);
        columns.max_tokens.append_option(step.sampling.max_tokens);
        columns.seed.append_option(step.sampling.seed);
        columns.prompt_tokens.append_option(step.prompt_tokens);
        columns
            .completion_tokens
            .append_option(step.completion_tokens);
        columns.prompt.append_option(step.prompt.as_deref());
        columns.think.append_option(step.think.as_deref());
    }

    /// `state_before` to `generation_ms`: the state the step saw (serialized once per shared
    /// state), its tokens, the update and the raw output.
    fn push_state(&mut self, entry: &StepEntry, states: &AgentStates) {
        let step = &entry.step;
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
        let columns = &mut self.columns;
        columns.state_before.append_value(state_json);
        columns
            .state_before_lsn
            .append_value(entry.state_before_lsn.0);
        match state_tokens(states, entry) {
            Some((tokens, tokenizer)) => {
                columns.state_before_tokens.append_value(tokens);
                columns.state_tokenizer.append_value(tokenizer);
            }
            None => {
                columns.state_before_tokens.append_null();
                columns.state_tokenizer.append_null();
            }
        }
        columns
            .state_update
            .append_option(step.state_update.as_ref().map(json_text));
        columns.raw_output.append_option(step.raw_output.as_deref());
        columns
            .format_error
            .append_option(step.format_error.as_ref().map(|error| error.code.as_str()));
        columns.generation_ms.append_option(step.generation_ms);
    }
}

/// `action_kind` to `action_rule_yaml`.
pub(super) fn push_action(columns: &mut TrajectoryColumns, action: Option<&Action>) {
    let (kind, language, pattern, rewrite, rule_yaml) = match action {
        Some(Action::Pattern {
            language,
            pattern,
            rewrite,
        }) => (
            Some("pattern"),
            Some(language.as_str()),
            Some(pattern.as_str()),
            Some(rewrite.as_str()),
            None,
        ),
        Some(Action::Rule { yaml }) => (Some("rule"), None, None, None, Some(yaml.as_str())),
        None => (None, None, None, None, None),
    };
    columns.action_kind.append_option(kind);
    columns.action_language.append_option(language);
    columns.action_pattern.append_option(pattern);
    columns.action_rewrite.append_option(rewrite);
    columns.action_rule_yaml.append_option(rule_yaml);
}

/// `sandbox_outcome` to `sandbox_ts_ms`: the sandbox result logged by `to`, or nulls.
pub(super) fn push_sandbox(
    columns: &mut TrajectoryColumns,
    sandbox: Option<&Fact<SandboxResultRecorded>>,
) {
    let Some(fact) = sandbox else {
        columns.sandbox_outcome.append_null();
        columns.exit_code.append_null();
        columns.timed_out.append_null();
        columns.diff.append_null();
        columns.stdout.append_null();
        columns.stderr.append_null();
        columns.tests_passed.append_null();
        columns.tests_failed.append_null();
        columns.duration_ms.append_null();
        columns.peak_rss_bytes.append_null();
        columns.sandbox_lsn.append_null();
        columns.sandbox_ts_ms.append_null();
        return;
    };
    let result = &fact.event;
    columns
        .sandbox_outcome
        .append_value(result.outcome.as_str());
    columns.exit_code.append_option(result.exit_code);
    columns
        .timed_out
        .append_value(result.outcome == SandboxOutcome::TimedOut);
    columns.diff.append_value(&result.diff);
    columns.stdout.append_value(&result.stdout);
    columns.stderr.append_value(&result.stderr);
    columns.tests_passed.append_option(result.tests_passed);
    columns.tests_failed.append_option(result.tests_failed);
    columns.duration_ms.append_option(result.duration_ms);
    columns.peak_rss_bytes.append_option(result.peak_rss_bytes);
    columns.sandbox_lsn.append_value(fact.lsn.0);
    columns.sandbox_ts_ms.append_value(fact.ts_ms);
}

/// `reward` to `reward_ts_ms`: the reward logged by `to`, or nulls.
pub(super) fn push_reward(columns: &mut TrajectoryColumns, reward: Option<&Fact<RewardRecorded>>) {
    let Some(fact) = reward else {
        columns.reward.append_null();
        columns.verified.append_null();
        columns.reward_source.append_null();
        columns.reward_components.append(false);
        columns.reward_lsn.append_null();
        columns.reward_ts_ms.append_null();
        return;
    };
    let reward = &fact.event;
    columns.reward.append_value(reward.value);
    columns.verified.append_value(reward.verified);
    columns
        .reward_source
        .append_value(source_name(reward.source));
    let components = columns.reward_components.values();
    for (name, value) in &reward.components {
        struct_field::<StringBuilder>(components, 0).append_value(name);
        struct_field::<Float64Builder>(components, 1).append_value(*value);
        components.append(true);
    }
    columns.reward_components.append(true);
    columns.reward_lsn.append_value(fact.lsn.0);
    columns.reward_ts_ms.append_value(fact.ts_ms);
}
