//! [`ColumnParallelWriter`] writes the bytes `ArrowWriter` writes, whatever the thread count,
//! row group limits and batch sizes.

use super::column_writer::ColumnParallelWriter;
use arrow_array::builder::{
    Float64Builder, ListBuilder, StringBuilder, StructBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

fn component_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ])
}

fn schema() -> SchemaRef {
    let components = DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(component_fields()),
        true,
    )));
    Arc::new(Schema::new(vec![
        Field::new("task_id", DataType::Utf8, false),
        Field::new("step", DataType::UInt32, false),
        Field::new("stdout", DataType::Utf8, true),
        Field::new("components", components, true),
        Field::new("lsn", DataType::UInt64, false),
    ]))
}

/// Rows `first..first + rows`: repeated ids (dictionary-friendly), long unique text with nulls,
/// a nested list column, and increasing numbers.
fn batch(first: usize, rows: usize) -> RecordBatch {
    let mut task = StringBuilder::new();
    let mut step = UInt32Builder::new();
    let mut stdout = StringBuilder::new();
    let mut components = ListBuilder::new(StructBuilder::from_fields(component_fields(), 0));
    let mut lsn = UInt64Builder::new();
    for row in first..first + rows {
        task.append_value(format!("task-{}", row / 8));
        step.append_value((row % 8) as u32);
        if row % 5 == 0 {
            stdout.append_null();
        } else {
            stdout.append_value(format!("line {row}: {}", "x".repeat(row % 97)));
        }
        if row % 3 == 0 {
            components.append(false);
        } else {
            let values = components.values();
            for part in 0..row % 4 {
                super::steps::struct_field::<StringBuilder>(values, 0)
                    .append_value(format!("part{part}"));
                super::steps::struct_field::<Float64Builder>(values, 1)
                    .append_value(row as f64 / (part + 1) as f64);
                values.append(true);
            }
            components.append(true);
        }
        lsn.append_value(row as u64 * 3);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(task.finish()),
        Arc::new(step.finish()),
        Arc::new(stdout.finish()),
        Arc::new(components.finish()),
        Arc::new(lsn.finish()),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn batches(sizes: &[usize]) -> Vec<RecordBatch> {
    let mut first = 0;
    sizes
        .iter()
        .map(|&rows| {
            let made = batch(first, rows);
            first += rows;
            made
        })
        .collect()
}

fn with_arrow_writer(properties: &WriterProperties, input: &[RecordBatch]) -> Vec<u8> {
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties.clone())).unwrap();
    for batch in input {
        writer.write(batch).unwrap();
    }
    writer.into_inner().unwrap()
}

fn with_parallel_writer(
    properties: &WriterProperties,
    input: &[RecordBatch],
    threads: usize,
) -> Vec<u8> {
    let mut writer = ColumnParallelWriter::try_new(Vec::new(), schema(), properties.clone())
        .unwrap()
        .with_threads(threads);
    for batch in input {
        writer.write(batch).unwrap();
    }
    writer.into_inner().unwrap()
}

fn properties() -> parquet::file::properties::WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_created_by("agentd".to_owned())
}

/// Batches of uneven sizes, an empty one among them.
const BATCH_SIZES: [usize; 9] = [512, 1, 40, 4096, 333, 2048, 0, 1000, 77];

/// Some hundred rows' estimated size.
const BYTE_LIMIT: usize = 20_000;

fn byte_limited() -> WriterProperties {
    properties()
        .set_max_row_group_bytes(Some(BYTE_LIMIT))
        .build()
}

fn row_limited() -> WriterProperties {
    properties().set_max_row_group_row_count(Some(700)).build()
}

#[test]
fn the_same_bytes_as_arrow_writer() {
    let cases = [
        ("one row group", properties().build()),
        ("row groups closed by the byte limit", byte_limited()),
        ("row groups closed by the row limit", row_limited()),
        (
            "both limits, small pages",
            properties()
                .set_max_row_group_bytes(Some(BYTE_LIMIT * 3))
                .set_max_row_group_row_count(Some(1500))
                .set_data_page_row_count_limit(100)
                .build(),
        ),
    ];
    let input = batches(&BATCH_SIZES);
    for (name, properties) in &cases {
        let expected = with_arrow_writer(properties, &input);
        for threads in [1, 2, 3, 8] {
            let written = with_parallel_writer(properties, &input, threads);
            assert!(
                written == expected,
                "{name}, {threads} threads: {} bytes, ArrowWriter wrote {}",
                written.len(),
                expected.len()
            );
        }
    }
}

/// The rows of each row group of a Parquet file.
fn row_groups(bytes: Vec<u8>) -> Vec<i64> {
    use parquet::file::reader::FileReader;
    let reader =
        parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
    let groups = reader.metadata().row_groups().iter();
    groups.map(|group| group.num_rows()).collect()
}

#[test]
fn the_limits_close_row_groups_inside_batches() {
    // The limit cases above must really close row groups inside batches, or they would not
    // test the boundaries.
    for properties in [byte_limited(), row_limited()] {
        let input = batches(&BATCH_SIZES);
        let groups = row_groups(with_parallel_writer(&properties, &input, 2));
        let total: usize = BATCH_SIZES.iter().sum();
        assert_eq!(groups.iter().sum::<i64>(), total as i64);
        let mut ends = std::collections::BTreeSet::new();
        let mut end = 0;
        for rows in BATCH_SIZES {
            end += rows as i64;
            ends.insert(end);
        }
        let mut end = 0;
        let inside = groups.iter().any(|rows| {
            end += rows;
            !ends.contains(&end)
        });
        assert!(groups.len() > 3 && inside, "{groups:?}");
    }
}

#[test]
fn an_empty_file_is_the_same_too() {
    let properties = properties().build();
    assert_eq!(
        with_parallel_writer(&properties, &[], 2),
        with_arrow_writer(&properties, &[])
    );
}
