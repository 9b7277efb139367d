//! Writing export files so that a crash never leaves a half file under a final name: every file
//! is written under a `.tmp-` name, fsynced, then renamed, and the directory fsynced after the
//! renames. `manifest.json` is written the same way, last, so a directory with a manifest is a
//! complete export; a directory without one is an export a crash interrupted, and the next run
//! of the same export removes the `.tmp-` files and writes it again.
//!
//! Shards: rows go to a file until its size reaches the shard cap, then to the next. Shard names
//! carry their count (`train-00000-of-00003.parquet`), which is known only at the end, so all
//! shards are written under temp names first and renamed once every group is complete.

use super::column_writer::ColumnParallelWriter;
use super::fault;
use super::ExportError;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Prefix of files that are not complete yet.
pub const TEMP_PREFIX: &str = ".tmp-";
/// The manifest's file name.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Write buffer of a file being exported.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Top-level text columns of the export schemas written without statistics (a name that a
/// schema does not have is ignored).
const FREE_TEXT_COLUMNS: &[&str] = &[
    "prompt",
    "think",
    "diff",
    "stdout",
    "stderr",
    "state_before",
    "state_update",
    "action_pattern",
    "action_rewrite",
    "action_rule_yaml",
    "instruction",
    "pre",
    "post",
    "metadata_json",
    "ground_truth",
];

/// How Parquet files are encoded.
#[derive(Debug, Clone)]
pub struct ParquetSettings {
    pub zstd_level: i32,
    pub row_group_bytes_max: usize,
    /// Key-value metadata written into every file (schema version, LSN range, export id).
    pub metadata: Vec<(String, String)>,
}

impl ParquetSettings {
    fn properties(&self) -> Result<WriterProperties, ExportError> {
        let level = ZstdLevel::try_new(self.zstd_level)
            .map_err(|error| ExportError::Settings(format!("zstd_level: {error}")))?;
        let metadata = self
            .metadata
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
            .collect();
        let mut builder = WriterProperties::builder();
        // Min/max statistics of free text (prompts, diffs, code) help no reader's filter and
        // cost a comparison per value; ids, numbers and short names keep theirs.
        for column in FREE_TEXT_COLUMNS {
            builder = builder
                .set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::None);
        }
        Ok(builder
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_bytes(Some(self.row_group_bytes_max.max(1)))
            // The writer's name without its version: the manifest carries agentd's version, and
            // a library upgrade alone should not change every file's bytes.
            .set_created_by("agentd".to_owned())
            .set_key_value_metadata(Some(metadata))
            .build())
    }
}

/// A file that counts and hashes what is written through it.
struct HashingFile {
    file: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl HashingFile {
    fn create(path: &Path) -> Result<Self, ExportError> {
        let file = File::create(path).map_err(|error| ExportError::io(path, error))?;
        Ok(HashingFile {
            file: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Flushes and fsyncs; returns (bytes, sha256 hex).
    fn finish(self, path: &Path) -> Result<(u64, String), ExportError> {
        let file = self
            .file
            .into_inner()
            .map_err(|error| ExportError::io(path, error.into_error()))?;
        file.sync_all()
            .map_err(|error| ExportError::io(path, error))?;
        Ok((self.bytes, hex::encode(self.hasher.finalize())))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A complete file under its temp name, waiting for its final name.
#[derive(Debug, Clone)]
pub struct TempShard {
    temp_path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The shards of one group (`processed/python/train`), all written, not yet renamed.
#[derive(Debug, Clone)]
pub struct FinishedGroup {
    /// Relative path prefix of the final names, e.g. `processed/python/train`.
    pub prefix: String,
    pub extension: &'static str,
    pub shards: Vec<TempShard>,
}

/// Writes one group of Parquet shards.
pub struct ParquetShards {
    dir: PathBuf,
    prefix: String,
    schema: SchemaRef,
    properties: WriterProperties,
    shard_bytes_max: u64,
    current: Option<(ColumnParallelWriter<HashingFile>, PathBuf, u64)>,
    done: Vec<TempShard>,
}

impl ParquetShards {
    /// `prefix` is relative to `dir` (`trajectories`, `processed/python/train`).
    pub fn new(
        dir: &Path,
        prefix: &str,
        schema: SchemaRef,
        settings: &ParquetSettings,
        shard_bytes_max: u64,
    ) -> Result<Self, ExportError> {
        Ok(ParquetShards {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
            schema,
            properties: settings.properties()?,
            shard_bytes_max: shard_bytes_max.max(1),
            current: None,
            done: Vec::new(),
        })
    }

    /// Appends a batch; closes the shard once it reached the cap.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.current.is_none() {
            let path = temp_path(&self.dir, &self.prefix, self.done.len(), "parquet");
            let file = HashingFile::create(&path)?;
            let writer =
                ColumnParallelWriter::try_new(file, self.schema.clone(), self.properties.clone())?;
            self.current = Some((writer, path, 0));
        }
        let Some((writer, _, rows)) = self.current.as_mut() else {
            unreachable!("set just above");
        };
        writer.write(batch)?;
        *rows += batch.num_rows() as u64;
        let size = writer.bytes_written() as u64 + writer.in_progress_size() as u64;
        if size >= self.shard_bytes_max {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), ExportError> {
        if let Some((writer, path, rows)) = self.current.take() {
            let file = writer.into_inner()?;
            let (bytes, sha256) = file.finish(&path)?;
            self.done.push(TempShard {
                temp_path: path,
                rows,
                bytes,
                sha256,
            });
        }
        Ok(())
    }

    /// Closes the last shard. A group without rows writes one empty shard when `keep_empty`
    /// (so a reader finds the columns), none otherwise.
    pub fn finish(mut self, keep_empty: bool) -> Result<FinishedGroup, ExportError> {
        if self.done.is_empty() && self.current.is_none() && keep_empty {
            let path = temp_path(&self.dir, &self.prefix, 0, "parquet");
            let file = HashingFile::create(&path)?;
            let writer =
                ColumnParallelWriter::try_new(file, self.schema.clone(), self.properties.clone())?;
            self.current = Some((writer, path, 0));
        }
        self.close_current()?;
        Ok(FinishedGroup {
            prefix: self.prefix,
            extension: "parquet",
            shards: self.done,
        })
    }
}

/// Batches waiting for the writer thread of a [`PipelinedShards`].
const PIPELINED_BATCHES_IN_FLIGHT: usize = 2;

/// A [`ParquetShards`] on its own thread: the caller builds the next batch from the projections
/// while the previous one is encoded and zstd-compressed (itself on several threads, see
/// [`super::column_writer`]; encoding is the larger part). Batches are written in the order
/// given, so the files are byte for byte those of [`ParquetShards`] alone.
pub struct PipelinedShards {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    thread: Option<std::thread::JoinHandle<Result<ParquetShards, ExportError>>>,
}

impl PipelinedShards {
    pub fn spawn(mut shards: ParquetShards) -> Result<Self, ExportError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(PIPELINED_BATCHES_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("export-writer".into())
            .spawn(move || {
                crate::thread_priority::lower_this_thread(
                    crate::thread_priority::EXPORT_WRITER_NICE_ADDED,
                    "export-writer",
                );
                for batch in rx {
                    shards.write(&batch)?;
                }
                Ok(shards)
            })
            .map_err(|source| ExportError::io(Path::new("export writer thread"), source))?;
        Ok(PipelinedShards {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a batch to the writer thread; reports the thread's error once it has stopped.
    pub fn write(&mut self, batch: RecordBatch) -> Result<(), ExportError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped, which it does only on an error.
        match self.join() {
            Ok(_) => Err(ExportError::Invalid(
                "the export writer stopped early".into(),
            )),
            Err(error) => Err(error),
        }
    }

    /// Waits for every batch to be written, then closes the last shard.
    pub fn finish(mut self, keep_empty: bool) -> Result<FinishedGroup, ExportError> {
        self.join()?.finish(keep_empty)
    }

    fn join(&mut self) -> Result<ParquetShards, ExportError> {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return Err(ExportError::Invalid(
                "the export writer was already joined".into(),
            ));
        };
        match thread.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for PipelinedShards {
    /// An export abandoned on an error still waits for its writer, so no thread writes into the
    /// export directory after the export returned.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes one group of JSON Lines shards.
pub struct JsonlShards {
    dir: PathBuf,
    prefix: String,
    shard_bytes_max: u64,
    current: Option<(HashingFile, PathBuf, u64)>,
    done: Vec<TempShard>,
}

impl JsonlShards {
    pub fn new(dir: &Path, prefix: &str, shard_bytes_max: u64) -> Self {
        JsonlShards {
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
            shard_bytes_max: shard_bytes_max.max(1),
            current: None,
            done: Vec::new(),
        }
    }

    /// Appends one row (a JSON object without its newline).
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), ExportError> {
        if self.current.is_none() {
            let path = temp_path(&self.dir, &self.prefix, self.done.len(), "jsonl");
            self.current = Some((HashingFile::create(&path)?, path, 0));
        }
        let Some((file, path, rows)) = self.current.as_mut() else {
            unreachable!("set just above");
        };
        file.write_all(line)
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|error| ExportError::io(path, error))?;
        *rows += 1;
        if file.bytes >= self.shard_bytes_max {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), ExportError> {
        if let Some((file, path, rows)) = self.current.take() {
            let (bytes, sha256) = file.finish(&path)?;
            self.done.push(TempShard {
                temp_path: path,
                rows,
                bytes,
                sha256,
            });
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<FinishedGroup, ExportError> {
        self.close_current()?;
        Ok(FinishedGroup {
            prefix: self.prefix,
            extension: "jsonl",
            shards: self.done,
        })
    }
}

/// One file under its final name, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Renames every shard of every group to `{prefix}-{i:05}-of-{n:05}.{ext}` and fsyncs the
/// directories. Files come back sorted by path.
pub fn publish(dir: &Path, groups: Vec<FinishedGroup>) -> Result<Vec<FinalFile>, ExportError> {
    fault::maybe_abort(fault::Point::BeforeRename);
    let mut files = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut renamed = 0usize;
    for group in groups {
        let count = group.shards.len();
        for (index, shard) in group.shards.into_iter().enumerate() {
            let relative = format!(
                "{}-{index:05}-of-{count:05}.{}",
                group.prefix, group.extension
            );
            let final_path = dir.join(&relative);
            if let Some(parent) = final_path.parent() {
                std::fs::create_dir_all(parent).map_err(|error| ExportError::io(parent, error))?;
                dirs.insert(parent.to_path_buf());
            }
            std::fs::rename(&shard.temp_path, &final_path)
                .map_err(|error| ExportError::io(&final_path, error))?;
            renamed += 1;
            if renamed == 1 {
                fault::maybe_abort(fault::Point::AfterFirstRename);
            }
            files.push(FinalFile {
                path: relative,
                rows: shard.rows,
                bytes: shard.bytes,
                sha256: shard.sha256,
            });
        }
    }
    dirs.insert(dir.to_path_buf());
    for path in &dirs {
        sync_dir(path)?;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Writes `bytes` to `dir/name` through a temp file, fsync and rename, then fsyncs `dir`.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
    let temp = dir.join(format!("{TEMP_PREFIX}{name}"));
    let mut file = File::create(&temp).map_err(|error| ExportError::io(&temp, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| ExportError::io(&temp, error))?;
    drop(file);
    let target = dir.join(name);
    std::fs::rename(&temp, &target).map_err(|error| ExportError::io(&target, error))?;
    sync_dir(dir)
}

/// Makes `dir` (and its parents) exist and removes the `.tmp-` files a crashed run left in it.
pub fn prepare_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|error| ExportError::io(dir, error))?;
    let entries = std::fs::read_dir(dir).map_err(|error| ExportError::io(dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| ExportError::io(dir, error))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|error| ExportError::io(&path, error))?;
        }
    }
    Ok(())
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn temp_path(dir: &Path, prefix: &str, index: usize, extension: &str) -> PathBuf {
    // Temp files live in the export's top directory (same filesystem as every final name, so the
    // rename is atomic); the group prefix is flattened into the name.
    let flat = prefix.replace('/', "__");
    dir.join(format!("{TEMP_PREFIX}{flat}-{index:05}.{extension}"))
}

fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| ExportError::io(dir, error))
}
