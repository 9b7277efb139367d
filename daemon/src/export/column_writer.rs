//! A Parquet writer that encodes and compresses the columns of a row group on several threads,
//! producing the same bytes as `parquet::arrow::ArrowWriter` with the same properties.
//!
//! Why: an export's writer thread spent about twice the time of the thread building its rows
//! (dictionary interning, encoding and zstd of every column, one after the other), so the
//! export ran at the writer's speed with the second core half idle (measured on a 300k-step
//! trajectory export). Columns are independent until their chunks are appended to the row
//! group, so each column is encoded by whichever thread takes it, and the chunks are appended
//! in schema order, as `ArrowWriter` does.
//!
//! The row group boundaries are `ArrowWriter::write`'s, computed from the same estimates (the
//! row count limit, then the byte limit from the buffered rows' average size), so the files
//! are byte for byte those of `ArrowWriter`: `tests` in `column_writer_tests.rs` compares them.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{FieldRef, SchemaRef};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Encoding threads at most (the calling thread included): past a few, a row group's columns
/// are too few and too uneven to keep more busy.
const ENCODE_THREADS_MAX: usize = 4;

/// The writers of one schema field (a list of structs has a leaf per struct field) and what
/// encoding its last batch cost, which orders the next batch's work.
struct FieldWriters {
    writers: Vec<ArrowColumnWriter>,
    cost_ns: u64,
}

/// The row group being buffered.
struct RowGroup {
    /// One entry per schema field, in schema order.
    fields: Vec<Mutex<FieldWriters>>,
    rows: usize,
}

impl RowGroup {
    fn estimated_bytes(&mut self) -> usize {
        self.fields
            .iter_mut()
            .map(field_of)
            .flat_map(|field| field.writers.iter())
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }
}

/// The writers behind a mutex that no other thread holds any more (the scoped threads joined);
/// a poisoned one means a thread panicked, which [`run_parallel`] already turned into a panic.
fn field_of(field: &mut Mutex<FieldWriters>) -> &mut FieldWriters {
    field
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// See the module documentation.
pub struct ColumnParallelWriter<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    in_progress: Option<RowGroup>,
    max_rows: Option<usize>,
    max_bytes: Option<usize>,
    threads: usize,
}

impl<W: Write + Send> ColumnParallelWriter<W> {
    /// Writes the file header and the same key-value metadata (the Arrow schema included) as
    /// `ArrowWriter::try_new` does.
    pub fn try_new(writer: W, schema: SchemaRef, properties: WriterProperties) -> Result<Self> {
        let max_rows = properties.max_row_group_row_count();
        let max_bytes = properties.max_row_group_bytes();
        let arrow = ArrowWriter::try_new(writer, schema.clone(), Some(properties))?;
        let (file, factory) = arrow.into_serialized_writer()?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(ENCODE_THREADS_MAX);
        Ok(ColumnParallelWriter {
            file,
            factory,
            schema,
            in_progress: None,
            max_rows,
            max_bytes,
            threads,
        })
    }

    /// At most this many encoding threads (tests compare 1 and several).
    #[cfg(test)]
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Bytes written to the file so far (closed row groups).
    pub fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// The estimated encoded size of the row group being buffered.
    pub fn in_progress_size(&mut self) -> usize {
        self.in_progress
            .as_mut()
            .map_or(0, RowGroup::estimated_bytes)
    }

    /// `ArrowWriter::write`: buffers `batch`, closing a row group whenever it reaches the row
    /// or byte limit, and splitting `batch` where the limits fall inside it.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut remaining = batch.clone();
        while remaining.num_rows() > 0 {
            if self.in_progress.is_none() {
                self.in_progress = Some(self.new_row_group()?);
            }
            let Some(split_at) = self.rows_that_fit(remaining.num_rows())? else {
                // The buffered row group is full: close it and try again.
                self.flush()?;
                continue;
            };
            let rest = remaining.slice(split_at, remaining.num_rows() - split_at);
            let part = remaining.slice(0, split_at);
            self.write_columns(&part)?;
            let full = {
                let group = self.in_progress.as_mut().expect("opened above");
                self.max_rows.is_some_and(|max| group.rows >= max)
                    || self
                        .max_bytes
                        .is_some_and(|max| group.estimated_bytes() >= max)
            };
            if full {
                self.flush()?;
            }
            remaining = rest;
        }
        Ok(())
    }

    /// How many of `rows` go into the buffered row group, as `ArrowWriter::write` decides it;
    /// `None` when it must be closed first.
    fn rows_that_fit(&mut self, rows: usize) -> Result<Option<usize>> {
        let group = self.in_progress.as_mut().expect("opened by the caller");
        let buffered = group.rows;
        let mut take = match self.max_rows {
            Some(max) if buffered + rows > max => max - buffered,
            _ => rows,
        };
        if let Some(max_bytes) = self.max_bytes.filter(|_| buffered > 0) {
            let current = group.estimated_bytes();
            if current >= max_bytes {
                return Ok(None);
            }
            let average = current / buffered;
            if let Some(fit) = (max_bytes - current).checked_div(average) {
                if take > fit {
                    if fit == 0 {
                        return Ok(None);
                    }
                    take = fit;
                }
            }
        }
        Ok(Some(take))
    }

    fn new_row_group(&self) -> Result<RowGroup> {
        let index = self.file.flushed_row_groups().len();
        let mut writers = self.factory.create_column_writers(index)?.into_iter();
        let mut fields = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let leaves = leaf_count(field);
            let field_writers: Vec<ArrowColumnWriter> = writers.by_ref().take(leaves).collect();
            if field_writers.len() != leaves {
                return Err(ParquetError::General(format!(
                    "no column writer for field {}",
                    field.name()
                )));
            }
            fields.push(Mutex::new(FieldWriters {
                writers: field_writers,
                cost_ns: 0,
            }));
        }
        Ok(RowGroup { fields, rows: 0 })
    }

    /// Encodes one batch's columns into the buffered row group, a field per task, the most
    /// costly fields (by their last batch) first so that the threads finish together.
    fn write_columns(&mut self, batch: &RecordBatch) -> Result<()> {
        let group = self.in_progress.as_mut().expect("opened by the caller");
        let fields = self.schema.fields();
        let columns = batch.columns();
        let order = costliest_first(&mut group.fields);
        run_parallel(self.threads, order.len(), |task| {
            let index = order[task];
            let mut field = group.fields[index]
                .lock()
                .map_err(|_| ParquetError::General("a column writer panicked".into()))?;
            let started = Instant::now();
            write_field(&mut field.writers, &fields[index], &columns[index])?;
            field.cost_ns = started.elapsed().as_nanos() as u64;
            Ok(())
        })?;
        group.rows += batch.num_rows();
        Ok(())
    }

    /// Closes the buffered row group: the columns' last pages are compressed in parallel, then
    /// the chunks are appended in schema order.
    pub fn flush(&mut self) -> Result<()> {
        let Some(mut group) = self.in_progress.take() else {
            return Ok(());
        };
        let order = costliest_first(&mut group.fields);
        let closed: Vec<Mutex<Option<Vec<ArrowColumnChunk>>>> =
            group.fields.iter().map(|_| Mutex::new(None)).collect();
        run_parallel(self.threads, order.len(), |task| {
            let index = order[task];
            let writers = {
                let mut field = group.fields[index]
                    .lock()
                    .map_err(|_| ParquetError::General("a column writer panicked".into()))?;
                std::mem::take(&mut field.writers)
            };
            let chunks = writers
                .into_iter()
                .map(ArrowColumnWriter::close)
                .collect::<Result<Vec<_>>>()?;
            *closed[index]
                .lock()
                .map_err(|_| ParquetError::General("a column writer panicked".into()))? =
                Some(chunks);
            Ok(())
        })?;
        let mut row_group = self.file.next_row_group()?;
        for chunks in closed {
            let chunks = chunks
                .into_inner()
                .map_err(|_| ParquetError::General("a column writer panicked".into()))?
                .ok_or_else(|| ParquetError::General("a column was not closed".into()))?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut row_group)?;
            }
        }
        row_group.close()?;
        Ok(())
    }

    /// Closes the last row group, writes the footer and returns the inner writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.flush()?;
        self.file.into_inner()
    }
}

/// The number of Parquet leaf columns of an Arrow field.
fn leaf_count(field: &FieldRef) -> usize {
    use arrow_schema::DataType;
    match field.data_type() {
        DataType::Struct(children) => children.iter().map(leaf_count).sum(),
        DataType::List(child)
        | DataType::LargeList(child)
        | DataType::ListView(child)
        | DataType::LargeListView(child)
        | DataType::FixedSizeList(child, _)
        | DataType::Map(child, _) => leaf_count(child),
        _ => 1,
    }
}

fn write_field(
    writers: &mut [ArrowColumnWriter],
    field: &FieldRef,
    column: &ArrayRef,
) -> Result<()> {
    let leaves = compute_leaves(field, column)?;
    if leaves.len() != writers.len() {
        return Err(ParquetError::General(format!(
            "field {} has {} leaves, {} writers",
            field.name(),
            leaves.len(),
            writers.len()
        )));
    }
    for (writer, leaf) in writers.iter_mut().zip(&leaves) {
        writer.write(leaf)?;
    }
    Ok(())
}

/// Field indices by their last batch's cost, most costly first (ties in schema order).
fn costliest_first(fields: &mut [Mutex<FieldWriters>]) -> Vec<usize> {
    let costs: Vec<u64> = fields
        .iter_mut()
        .map(|field| field_of(field).cost_ns)
        .collect();
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(costs[index]));
    order
}

/// Runs `task(0..tasks)` on up to `threads` threads (the caller's among them), each taking the
/// next task when it is done with one; returns the first error. The helper threads inherit the
/// calling thread's priority (an export writer's is lowered).
fn run_parallel(
    threads: usize,
    tasks: usize,
    task: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let work = || -> Result<()> {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= tasks {
                return Ok(());
            }
            task(index)?;
        }
    };
    let helpers = threads.min(tasks).saturating_sub(1);
    if helpers == 0 {
        return work();
    }
    std::thread::scope(|scope| {
        let spawned: Vec<_> = (0..helpers).map(|_| scope.spawn(work)).collect();
        let mut outcome = work();
        for helper in spawned {
            let helped = match helper.join() {
                Ok(helped) => helped,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            outcome = outcome.and(helped);
        }
        outcome
    })
}
