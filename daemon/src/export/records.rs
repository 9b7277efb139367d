//! Rows from kept dataset records: the processed splits (`processed`) and the trainer views TRL
//! GRPO (`trl_grpo`) and verl RL (`verl_rl`). Columns are listed in `docs/exports.md`.
//!
//! A record belongs to the export whose range holds the LSN that ingested it; what processing
//! decided about a kept record (language, split, tokens) never changes afterwards, so records
//! export incrementally without repeats.

use super::columns::{
    export_columns, message_list_builder, messages_field, messages_type, push_message,
    text_builder, MessageListBuilder, NULLABLE, REQUIRED,
};
use super::steps::struct_field;
use crate::domain::agent_state::render;
use crate::domain::record_verification::record_verification;
use crate::domain::splits::ProcessedRecord;
use agentd_schemas::events::{AgentState, TrainingSettings};
use agentd_schemas::export_api::ProcessedRecordRow;
use agentd_schemas::Lsn;
use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use std::sync::Arc;

/// verl's `ability` column for every record: a code edit.
pub const VERL_ABILITY: &str = "code_edit";
/// verl's `reward_model.style`: the reward is computed by a rule against `ground_truth`.
pub const VERL_REWARD_STYLE: &str = "rule";

/// The id a record is known by in exports: `{source}/{version}/{index}`.
pub fn record_task_id(record: &ProcessedRecord) -> String {
    format!(
        "{}/{}/{}",
        record.dataset.source, record.dataset.version, record.index
    )
}

/// The user turn of a record: the instruction, a blank line, then the code before the edit in
/// a fenced block tagged with the language.
pub fn record_prompt(record: &ProcessedRecord) -> String {
    let pre = &record.record.pre;
    let newline = if pre.ends_with('\n') { "" } else { "\n" };
    format!(
        "{}\n\n```{}\n{pre}{newline}```",
        record.record.instruction,
        record.language.as_str()
    )
}

/// The agent state as the trainer views show it to the model: a `# Agent state` heading over
/// the state rendered as Markdown sections (`domain::agent_state::render`), or `(empty)`.
pub fn state_block(state: &AgentState) -> String {
    let rendered = render(state);
    if rendered.is_empty() {
        "# Agent state\n\n(empty)\n".to_string()
    } else {
        format!("# Agent state\n\n{rendered}")
    }
}

/// The user turn of a record's first step: the record's prompt and the state block of the
/// empty state a fresh rollout (`state_from: "empty"`) starts from.
pub fn record_user_turn(record: &ProcessedRecord) -> String {
    format!(
        "{}\n\n{}",
        record_prompt(record),
        state_block(&AgentState::default())
    )
}

/// What the trainer views take from the training settings in force at the export's `to`.
#[derive(Debug, Clone, Default)]
pub struct TrainerContext {
    /// `None` in a range of a log written before settings were recorded: the views keep the
    /// shape of their first version (no system turn, no state block, SFT by `verified`).
    pub training: Option<Arc<TrainingSettings>>,
    /// `training.rewards` as JSON, written on every row.
    pub reward_settings_json: Option<String>,
}

impl TrainerContext {
    /// The settings recorded at or before `to`.
    pub fn at(domain: &crate::projection::domain::DomainProjections, to: Lsn) -> Self {
        let training = domain.training().at(to);
        let reward_settings_json = training.as_ref().map(|settings| {
            serde_json::to_string(&settings.rewards).expect("reward settings serialize")
        });
        TrainerContext {
            training,
            reward_settings_json,
        }
    }

    pub fn system_prompt_version(&self) -> Option<&str> {
        self.training
            .as_ref()
            .map(|settings| settings.system_prompt.version.as_str())
    }

    /// The conversation that opens with `user`: the system turn first when a system prompt is
    /// recorded.
    pub fn conversation<'a>(&'a self, user: &'a str) -> Vec<(&'a str, &'a str)> {
        match &self.training {
            Some(settings) => vec![
                ("system", settings.system_prompt.text.as_str()),
                ("user", user),
            ],
            None => vec![("user", user)],
        }
    }

    /// A record's prompt: with settings, the system turn and the user turn with the state
    /// block; without, the instruction and code alone (version 1).
    fn prompt(&self, record: &ProcessedRecord) -> Vec<(&'static str, String)> {
        match &self.training {
            Some(settings) => vec![
                ("system", settings.system_prompt.text.clone()),
                ("user", record_user_turn(record)),
            ],
            None => vec![("user", record_prompt(record))],
        }
    }
}

/// Rows built from records, one record batch at a time.
pub trait RecordRows {
    fn with_capacity(rows: usize, context: &TrainerContext) -> Self;
    fn push(&mut self, record: &ProcessedRecord);
    fn finish(self) -> RecordBatch;
}

// ---------------------------------------------------------------------------------------------
// processed

pub fn processed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("index", DataType::UInt64, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("instruction", DataType::Utf8, false),
        Field::new("pre", DataType::Utf8, false),
        Field::new("post", DataType::Utf8, false),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
        Field::new("metadata_json", DataType::Utf8, false),
        Field::new("tokens", DataType::UInt64, false),
        Field::new("dedup_key", DataType::Utf8, false),
        Field::new("lsn", DataType::UInt64, false),
    ]))
}

pub struct ProcessedRows {
    source: StringBuilder,
    version: StringBuilder,
    index: UInt64Builder,
    language: StringBuilder,
    split: StringBuilder,
    instruction: StringBuilder,
    pre: StringBuilder,
    post: StringBuilder,
    tags: ListBuilder<StringBuilder>,
    metadata_json: StringBuilder,
    tokens: UInt64Builder,
    dedup_key: StringBuilder,
    lsn: UInt64Builder,
}

impl RecordRows for ProcessedRows {
    fn with_capacity(rows: usize, _: &TrainerContext) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        ProcessedRows {
            source: s(),
            version: s(),
            index: UInt64Builder::with_capacity(rows),
            language: s(),
            split: s(),
            instruction: s(),
            pre: s(),
            post: s(),
            tags: ListBuilder::new(StringBuilder::new()),
            metadata_json: s(),
            tokens: UInt64Builder::with_capacity(rows),
            dedup_key: StringBuilder::with_capacity(rows, rows * 64),
            lsn: UInt64Builder::with_capacity(rows),
        }
    }

    fn push(&mut self, record: &ProcessedRecord) {
        let data = &record.record;
        self.source.append_value(&record.dataset.source);
        self.version.append_value(&record.dataset.version);
        self.index.append_value(record.index);
        self.language.append_value(record.language.as_str());
        self.split.append_value(record.split.as_str());
        self.instruction.append_value(&data.instruction);
        self.pre.append_value(&data.pre);
        self.post.append_value(&data.post);
        for tag in &data.tags {
            self.tags.values().append_value(tag);
        }
        self.tags.append(true);
        self.metadata_json.append_value(&data.metadata_json);
        self.tokens.append_value(record.tokens as u64);
        self.dedup_key.append_value(record.dedup_key_hex());
        self.lsn.append_value(record.lsn.0);
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.index.finish()),
            Arc::new(self.language.finish()),
            Arc::new(self.split.finish()),
            Arc::new(self.instruction.finish()),
            Arc::new(self.pre.finish()),
            Arc::new(self.post.finish()),
            Arc::new(self.tags.finish()),
            Arc::new(self.metadata_json.finish()),
            Arc::new(self.tokens.finish()),
            Arc::new(self.dedup_key.finish()),
            Arc::new(self.lsn.finish()),
        ];
        RecordBatch::try_new(processed_schema(), columns)
            .expect("processed columns match their schema")
    }
}

/// The JSONL row of a record (same columns as [`processed_schema`]).
pub fn processed_row(record: &ProcessedRecord) -> ProcessedRecordRow {
    ProcessedRecordRow {
        source: record.dataset.source.clone(),
        version: record.dataset.version.clone(),
        index: record.index,
        language: record.language.as_str().to_owned(),
        split: record.split.as_str().to_owned(),
        instruction: record.record.instruction.clone(),
        pre: record.record.pre.clone(),
        post: record.record.post.clone(),
        tags: record.record.tags.clone(),
        metadata_json: record.record.metadata_json.clone(),
        tokens: record.tokens as u64,
        dedup_key: record.dedup_key_hex(),
        lsn: record.lsn,
    }
}

// ---------------------------------------------------------------------------------------------
// trl_grpo

fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn string_list_builder(rows: usize) -> ListBuilder<StringBuilder> {
    ListBuilder::with_capacity(StringBuilder::new(), rows)
}

fn append_string_list(builder: &mut ListBuilder<StringBuilder>, items: Option<&[String]>) {
    match items {
        Some(items) => {
            for item in items {
                builder.values().append_value(item);
            }
            builder.append(true);
        }
        None => builder.append(false),
    }
}

export_columns! {
    /// Builders of the `trl_grpo` columns (schema version 2; version 1 ended at `lsn`).
    pub struct GrpoColumns;
    capacity rows;
    prompt: MessageListBuilder = message_list_builder(rows) => messages_type(), REQUIRED;
    ground_truth: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    task_id: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    language: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    split: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    source: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    version: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    index: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    tokens: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    dedup_key: StringBuilder = StringBuilder::with_capacity(rows, rows * 64) => DataType::Utf8, REQUIRED;
    lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    pre: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    post: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    metadata_json: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    /// The test files the record's metadata names (null: the verifier's defaults).
    tests: ListBuilder<StringBuilder> = string_list_builder(rows) => string_list_type(), NULLABLE;
    test_command: ListBuilder<StringBuilder> = string_list_builder(rows) => string_list_type(), NULLABLE;
    /// The `astgrep.verify` payload less the action (null: the record cannot be verified).
    verify_payload: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The recorded `[rewards]` as JSON (null: none recorded as of `to`).
    reward_settings: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    system_prompt_version: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
}

pub fn grpo_schema() -> SchemaRef {
    GrpoColumns::schema()
}

pub struct GrpoRows {
    columns: GrpoColumns,
    context: TrainerContext,
}

impl RecordRows for GrpoRows {
    fn with_capacity(rows: usize, context: &TrainerContext) -> Self {
        GrpoRows {
            columns: GrpoColumns::with_capacity(rows),
            context: context.clone(),
        }
    }

    fn push(&mut self, record: &ProcessedRecord) {
        let columns = &mut self.columns;
        let data = &record.record;
        push_message(&mut columns.prompt, &self.context.prompt(record));
        columns.ground_truth.append_value(&data.post);
        columns.task_id.append_value(record_task_id(record));
        columns.language.append_value(record.language.as_str());
        columns.split.append_value(record.split.as_str());
        columns.source.append_value(&record.dataset.source);
        columns.version.append_value(&record.dataset.version);
        columns.index.append_value(record.index);
        columns.tokens.append_value(record.tokens as u64);
        columns.dedup_key.append_value(record.dedup_key_hex());
        columns.lsn.append_value(record.lsn.0);
        columns.pre.append_value(&data.pre);
        columns.post.append_value(&data.post);
        columns.metadata_json.append_value(&data.metadata_json);
        let verification = record_verification(data, record.language.as_str()).ok();
        let verification = verification.as_ref();
        append_string_list(
            &mut columns.tests,
            verification.and_then(|v| v.tests.as_deref()),
        );
        append_string_list(
            &mut columns.test_command,
            verification.and_then(|v| v.test_command.as_deref()),
        );
        columns
            .verify_payload
            .append_option(verification.map(|v| v.payload_json.as_str()));
        columns
            .reward_settings
            .append_option(self.context.reward_settings_json.as_deref());
        columns
            .system_prompt_version
            .append_option(self.context.system_prompt_version());
    }

    fn finish(self) -> RecordBatch {
        self.columns.finish()
    }
}

// ---------------------------------------------------------------------------------------------
// verl_rl

fn reward_model_fields() -> Fields {
    Fields::from(vec![
        Field::new("style", DataType::Utf8, false),
        Field::new("ground_truth", DataType::Utf8, false),
    ])
}

fn extra_info_fields() -> Fields {
    Fields::from(vec![
        Field::new("split", DataType::Utf8, false),
        Field::new("index", DataType::UInt64, false),
        Field::new("task_id", DataType::Utf8, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("lsn", DataType::UInt64, false),
        // Version 2: what a `compute_score` needs (the payload's tests and command included).
        Field::new("pre", DataType::Utf8, false),
        Field::new("post", DataType::Utf8, false),
        Field::new("metadata_json", DataType::Utf8, false),
        Field::new("verify_payload", DataType::Utf8, true),
        Field::new("reward_settings", DataType::Utf8, true),
        Field::new("system_prompt_version", DataType::Utf8, true),
    ])
}

pub fn verl_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("data_source", DataType::Utf8, false),
        messages_field("prompt"),
        Field::new("ability", DataType::Utf8, false),
        Field::new(
            "reward_model",
            DataType::Struct(reward_model_fields()),
            false,
        ),
        Field::new("extra_info", DataType::Struct(extra_info_fields()), false),
    ]))
}

pub struct VerlRows {
    data_source: StringBuilder,
    prompt: MessageListBuilder,
    ability: StringBuilder,
    reward_model: StructBuilder,
    extra_info: StructBuilder,
    context: TrainerContext,
}

impl RecordRows for VerlRows {
    fn with_capacity(rows: usize, context: &TrainerContext) -> Self {
        VerlRows {
            context: context.clone(),
            data_source: StringBuilder::with_capacity(rows, rows * 16),
            prompt: message_list_builder(rows),
            ability: StringBuilder::with_capacity(rows, rows * 9),
            reward_model: StructBuilder::from_fields(reward_model_fields(), rows),
            extra_info: StructBuilder::from_fields(extra_info_fields(), rows),
        }
    }

    fn push(&mut self, record: &ProcessedRecord) {
        self.data_source.append_value(&record.dataset.source);
        push_message(&mut self.prompt, &self.context.prompt(record));
        self.ability.append_value(VERL_ABILITY);
        let reward_model = &mut self.reward_model;
        struct_field::<StringBuilder>(reward_model, 0).append_value(VERL_REWARD_STYLE);
        struct_field::<StringBuilder>(reward_model, 1).append_value(&record.record.post);
        reward_model.append(true);
        let extra = &mut self.extra_info;
        struct_field::<StringBuilder>(extra, 0).append_value(record.split.as_str());
        struct_field::<UInt64Builder>(extra, 1).append_value(record.index);
        struct_field::<StringBuilder>(extra, 2).append_value(record_task_id(record));
        struct_field::<StringBuilder>(extra, 3).append_value(record.language.as_str());
        struct_field::<StringBuilder>(extra, 4).append_value(&record.dataset.source);
        struct_field::<StringBuilder>(extra, 5).append_value(&record.dataset.version);
        struct_field::<UInt64Builder>(extra, 6).append_value(record.lsn.0);
        let data = &record.record;
        struct_field::<StringBuilder>(extra, 7).append_value(&data.pre);
        struct_field::<StringBuilder>(extra, 8).append_value(&data.post);
        struct_field::<StringBuilder>(extra, 9).append_value(&data.metadata_json);
        let verification = record_verification(data, record.language.as_str()).ok();
        struct_field::<StringBuilder>(extra, 10)
            .append_option(verification.as_ref().map(|v| v.payload_json.as_str()));
        struct_field::<StringBuilder>(extra, 11)
            .append_option(self.context.reward_settings_json.as_deref());
        struct_field::<StringBuilder>(extra, 12)
            .append_option(self.context.system_prompt_version());
        extra.append(true);
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.data_source.finish()),
            Arc::new(self.prompt.finish()),
            Arc::new(self.ability.finish()),
            Arc::new(self.reward_model.finish()),
            Arc::new(self.extra_info.finish()),
        ];
        RecordBatch::try_new(verl_schema(), columns).expect("verl columns match their schema")
    }
}
