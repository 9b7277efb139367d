//! Rows from kept dataset records: the processed splits (`processed`) and the trainer views TRL
//! GRPO (`trl_grpo`) and verl RL (`verl_rl`). Columns are listed in `docs/exports.md`.
//!
//! A record belongs to the export whose range holds the LSN that ingested it; what processing
//! decided about a kept record (language, split, tokens) never changes afterwards, so records
//! export incrementally without repeats.

use super::columns::{message_list_builder, messages_field, push_message, MessageListBuilder};
use super::steps::struct_field;
use crate::domain::splits::ProcessedRecord;
use agentd_schemas::export_api::ProcessedRecordRow;
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

/// Rows built from records, one record batch at a time.
pub trait RecordRows {
    fn with_capacity(rows: usize) -> Self;
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
    fn with_capacity(rows: usize) -> Self {
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

pub fn grpo_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        messages_field("prompt"),
        Field::new("ground_truth", DataType::Utf8, false),
        Field::new("task_id", DataType::Utf8, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("index", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt64, false),
        Field::new("dedup_key", DataType::Utf8, false),
        Field::new("lsn", DataType::UInt64, false),
    ]))
}

pub struct GrpoRows {
    prompt: MessageListBuilder,
    ground_truth: StringBuilder,
    task_id: StringBuilder,
    language: StringBuilder,
    split: StringBuilder,
    source: StringBuilder,
    version: StringBuilder,
    index: UInt64Builder,
    tokens: UInt64Builder,
    dedup_key: StringBuilder,
    lsn: UInt64Builder,
}

impl RecordRows for GrpoRows {
    fn with_capacity(rows: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        GrpoRows {
            prompt: message_list_builder(rows),
            ground_truth: s(),
            task_id: s(),
            language: s(),
            split: s(),
            source: s(),
            version: s(),
            index: UInt64Builder::with_capacity(rows),
            tokens: UInt64Builder::with_capacity(rows),
            dedup_key: StringBuilder::with_capacity(rows, rows * 64),
            lsn: UInt64Builder::with_capacity(rows),
        }
    }

    fn push(&mut self, record: &ProcessedRecord) {
        push_message(&mut self.prompt, &[("user", &record_prompt(record))]);
        self.ground_truth.append_value(&record.record.post);
        self.task_id.append_value(record_task_id(record));
        self.language.append_value(record.language.as_str());
        self.split.append_value(record.split.as_str());
        self.source.append_value(&record.dataset.source);
        self.version.append_value(&record.dataset.version);
        self.index.append_value(record.index);
        self.tokens.append_value(record.tokens as u64);
        self.dedup_key.append_value(record.dedup_key_hex());
        self.lsn.append_value(record.lsn.0);
    }

    fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.prompt.finish()),
            Arc::new(self.ground_truth.finish()),
            Arc::new(self.task_id.finish()),
            Arc::new(self.language.finish()),
            Arc::new(self.split.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.index.finish()),
            Arc::new(self.tokens.finish()),
            Arc::new(self.dedup_key.finish()),
            Arc::new(self.lsn.finish()),
        ];
        RecordBatch::try_new(grpo_schema(), columns).expect("grpo columns match their schema")
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
}

impl RecordRows for VerlRows {
    fn with_capacity(rows: usize) -> Self {
        VerlRows {
            data_source: StringBuilder::with_capacity(rows, rows * 16),
            prompt: message_list_builder(rows),
            ability: StringBuilder::with_capacity(rows, rows * 9),
            reward_model: StructBuilder::from_fields(reward_model_fields(), rows),
            extra_info: StructBuilder::from_fields(extra_info_fields(), rows),
        }
    }

    fn push(&mut self, record: &ProcessedRecord) {
        self.data_source.append_value(&record.dataset.source);
        push_message(&mut self.prompt, &[("user", &record_prompt(record))]);
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
