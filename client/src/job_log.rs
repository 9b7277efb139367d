//! Job logs kept on the worker's box (`agentctl worker --log-dir DIR`): each job's output, as it
//! comes, in `DIR/<job_id>.log`, and the short tail of each attempt that the worker sends with
//! its completion or failure (`log_tail`, shown by `GET /v1/jobs/{id}`).
//!
//! File format (plain text, one file per job, appended per attempt on this box):
//!
//! ```text
//! == attempt 1, lease lease_7, 2026-12-06T09:24:56.123Z, worker box-3-17
//! <stdout and stderr of the attempt, interleaved as they came>
//! == attempt 1 completed
//! ```
//!
//! **Cap** (`--log-max-bytes`, default 16 MiB per file): the *first* bytes are kept and a
//! `== log capped ...` marker line says where output was dropped. The head is kept rather than
//! the tail because the file is only ever appended to (no rewrite while a job runs), and the last
//! 8 KiB of each attempt are kept anyway: they go to the daemon as `log_tail`. The `==` header
//! and end lines of each attempt are always written, so a capped file still tells which
//! attempts ran here and how they ended; the file passes the cap only by those lines and one
//! marker per attempt.
//!
//! **Retention** (`--log-retention`, default 7 days): files named `job_<n>.log` whose last change
//! is older are deleted when the worker starts and then every hour. Nothing else in the directory
//! is touched.
//!
//! Writing a log never fails a job: if the directory cannot be written (disk full, permissions),
//! the worker says so once on stderr and the job runs on, with its tail still sent.

use crate::cli::output::format_ms;
use agentd_schemas::api::LOG_TAIL_BYTES_MAX;
use agentd_schemas::{JobId, LeaseId};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// Where the README tells operators to keep job logs (the systemd unit's `LogsDirectory`).
pub const RECOMMENDED_LOG_DIR: &str = "/var/log/agentd-worker";
/// Default cap of one job's log file.
pub const LOG_FILE_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Default age after which a job's log file is deleted.
pub const LOG_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old log files are looked for while the worker runs.
pub const RETENTION_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Output chunks of one attempt waiting for the writer; a slow disk slows the job's pipes down
/// instead of growing memory.
pub const OUTPUT_CHUNKS_QUEUED_MAX: usize = 64;
/// Most bytes of an error or result repeated in an attempt's end line.
pub const END_LINE_DETAIL_BYTES_MAX: usize = 1024;

/// How a worker keeps job output.
#[derive(Debug, Clone)]
pub struct JobLogSettings {
    /// `--log-dir`; `None` keeps no files (the tail is still sent).
    pub dir: Option<PathBuf>,
    /// `--log-max-bytes`: cap of one job's file.
    pub file_bytes_max: u64,
    /// `--log-tail-bytes`: how much of an attempt's end is sent to the daemon (0: nothing), at
    /// most [`LOG_TAIL_BYTES_MAX`].
    pub tail_bytes: usize,
}

impl Default for JobLogSettings {
    fn default() -> Self {
        JobLogSettings {
            dir: None,
            file_bytes_max: LOG_FILE_BYTES_MAX_DEFAULT,
            tail_bytes: LOG_TAIL_BYTES_MAX,
        }
    }
}

/// The file of a job's log in `dir`: `<dir>/job_<n>.log`.
pub fn log_path(dir: &Path, job_id: JobId) -> PathBuf {
    dir.join(format!("{job_id}.log"))
}

/// Who runs an attempt, for its header line.
#[derive(Debug, Clone)]
pub struct AttemptInfo {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    pub attempt: u32,
    pub worker_id: String,
    /// Wall-clock time the attempt started, in ms since the epoch.
    pub started_at_ms: u64,
}

impl AttemptInfo {
    /// `== attempt N, lease L, <time>, worker W`
    pub fn header_line(&self) -> String {
        format!(
            "== attempt {}, lease {}, {}, worker {}\n",
            self.attempt,
            self.lease_id,
            format_ms(self.started_at_ms),
            self.worker_id
        )
    }
}

/// Milliseconds since the epoch now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Where a handler writes its job's output (cloneable; stdout and stderr readers share it).
#[derive(Debug, Clone)]
pub struct OutputSink {
    sender: mpsc::Sender<WriterMessage>,
}

impl OutputSink {
    /// Hands output to the attempt's writer, waiting while it is behind.
    pub async fn write(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // The writer lives until `AttemptLog::finish`, which runs after the handler returned.
        let _writer_gone_after_finish = self
            .sender
            .send(WriterMessage::Output(bytes.to_vec()))
            .await;
    }
}

/// One attempt's log: a writer task that appends output to the job's file (when there is a log
/// dir) and keeps the tail for the daemon.
pub struct AttemptLog {
    sink: OutputSink,
    writer: tokio::task::JoinHandle<()>,
}

impl AttemptLog {
    /// Opens the job's file (creating the directory) and writes the attempt's header line.
    pub fn start(settings: &JobLogSettings, attempt: &AttemptInfo) -> AttemptLog {
        let (sender, receiver) = mpsc::channel(OUTPUT_CHUNKS_QUEUED_MAX);
        let writer = tokio::spawn(write_attempt(settings.clone(), attempt.clone(), receiver));
        AttemptLog {
            sink: OutputSink { sender },
            writer,
        }
    }

    pub fn sink(&self) -> OutputSink {
        self.sink.clone()
    }

    /// Writes `end_line` after everything written so far (with `, <silent_detail>` when the
    /// attempt wrote no output) and returns the attempt's tail (up to `tail_bytes`, cut at a
    /// character boundary; `None` when disabled).
    pub async fn finish(self, end_line: &str, silent_detail: Option<&str>) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .sink
            .sender
            .send(WriterMessage::Finish {
                end_line: end_line.trim_end().to_string(),
                silent_detail: silent_detail.map(str::to_string),
                reply,
            })
            .await;
        let tail = match sent {
            Ok(()) => answer.await.ok().flatten(),
            Err(_) => None,
        };
        drop(self.sink);
        // The writer returns right after answering; a panic in it lost only the log.
        let _writer_result = self.writer.await;
        tail
    }
}

#[derive(Debug)]
enum WriterMessage {
    Output(Vec<u8>),
    Finish {
        end_line: String,
        silent_detail: Option<String>,
        reply: oneshot::Sender<Option<String>>,
    },
}

async fn write_attempt(
    settings: JobLogSettings,
    attempt: AttemptInfo,
    mut receiver: mpsc::Receiver<WriterMessage>,
) {
    let mut tail = TailBuffer::new(settings.tail_bytes.min(LOG_TAIL_BYTES_MAX));
    let mut file = match &settings.dir {
        Some(dir) => LogFile::open(dir, attempt.job_id, settings.file_bytes_max).await,
        None => None,
    };
    let header = attempt.header_line();
    tail.push(header.as_bytes());
    if let Some(log) = file.as_mut() {
        log.write_line(&header).await;
    }
    let mut tail_at_line_start = true;
    let mut silent = true;
    while let Some(message) = receiver.recv().await {
        match message {
            WriterMessage::Output(bytes) => {
                silent = false;
                tail.push(&bytes);
                tail_at_line_start = bytes.ends_with(b"\n");
                if let Some(log) = file.as_mut() {
                    log.write_output(&bytes).await;
                }
            }
            WriterMessage::Finish {
                end_line,
                silent_detail,
                reply,
            } => {
                let line = match silent_detail.filter(|_| silent) {
                    Some(detail) => format!("{end_line}, {detail}\n"),
                    None => format!("{end_line}\n"),
                };
                if !tail_at_line_start {
                    tail.push(b"\n");
                }
                tail.push(line.as_bytes());
                if let Some(log) = file.as_mut() {
                    log.write_line(&line).await;
                }
                let _asker_may_be_gone = reply.send(tail.text());
                return;
            }
        }
    }
}

/// A job's log file opened for one attempt.
struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    cap: FileCap,
    /// The last byte written was a newline (assumed for a file written before), so a `==` line
    /// starts a line of its own.
    at_line_start: bool,
    /// Set after the first write error: said once, then the file is left alone.
    broken: bool,
}

impl LogFile {
    async fn open(dir: &Path, job_id: JobId, bytes_max: u64) -> Option<LogFile> {
        let path = log_path(dir, job_id);
        let opened = async {
            create_log_dir(dir).await?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            let length = file.metadata().await?.len();
            Ok::<_, std::io::Error>((file, length))
        };
        match opened.await {
            Ok((file, length)) => Some(LogFile {
                path,
                file,
                cap: FileCap::new(bytes_max, length),
                at_line_start: true,
                broken: false,
            }),
            Err(error) => {
                eprintln!(
                    "agentctl worker: cannot open the job log {}: {error}; {job_id} runs without one",
                    path.display()
                );
                None
            }
        }
    }

    /// A header, end or marker line (ending in a newline), on a line of its own, written
    /// whatever the cap (see the module doc).
    async fn write_line(&mut self, line: &str) {
        if !self.at_line_start {
            self.cap.count_exempt(1);
            self.write(b"\n").await;
        }
        self.cap.count_exempt(line.len());
        self.write(line.as_bytes()).await;
    }

    async fn write_output(&mut self, bytes: &[u8]) {
        let admitted = self.cap.admit(bytes.len());
        if admitted.keep > 0 {
            self.write(&bytes[..admitted.keep]).await;
        }
        if admitted.mark_capped {
            self.write_line(&capped_marker(self.cap.bytes_max)).await;
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        self.at_line_start = bytes.ends_with(b"\n");
        // Flushed per chunk: the file shows output as it comes (`tail -f`, `jobs logs`).
        let written = async {
            self.file.write_all(bytes).await?;
            self.file.flush().await
        };
        if let Err(error) = written.await {
            eprintln!(
                "agentctl worker: writing the job log {} failed: {error}; the rest of this attempt is not kept there",
                self.path.display()
            );
            self.broken = true;
        }
    }
}

fn capped_marker(bytes_max: u64) -> String {
    format!(
        "== log capped at {bytes_max} bytes (--log-max-bytes): further output of this attempt is not kept in this file; its last bytes go to the daemon (agentctl jobs logs)\n"
    )
}

/// Creates the log directory, readable by its owner and group only (job output can hold
/// anything a job prints).
async fn create_log_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The size bookkeeping of one log file: how much of a chunk of output still fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCap {
    bytes_max: u64,
    written: u64,
    /// A marker was written in this attempt: the rest of the attempt is dropped silently.
    marked: bool,
}

/// What [`FileCap::admit`] lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Bytes of the chunk to write (a prefix).
    pub keep: usize,
    /// Write the capped marker after them (once per attempt).
    pub mark_capped: bool,
}

impl FileCap {
    /// A cap of `bytes_max` on a file that already holds `written` bytes.
    pub fn new(bytes_max: u64, written: u64) -> FileCap {
        FileCap {
            bytes_max,
            written,
            marked: false,
        }
    }

    pub fn admit(&mut self, len: usize) -> Admitted {
        let room = self.bytes_max.saturating_sub(self.written);
        let keep = (len as u64).min(room) as usize;
        self.written += keep as u64;
        let mark_capped = keep < len && !self.marked;
        self.marked |= mark_capped;
        Admitted { keep, mark_capped }
    }

    /// Lines written past the cap still take room (they count toward a later attempt's cap).
    pub fn count_exempt(&mut self, len: usize) {
        self.written += len as u64;
    }
}

/// The last `max` bytes of a stream.
#[derive(Debug, Clone)]
pub struct TailBuffer {
    bytes: VecDeque<u8>,
    max: usize,
}

impl TailBuffer {
    pub fn new(max: usize) -> TailBuffer {
        TailBuffer {
            bytes: VecDeque::with_capacity(max.min(LOG_TAIL_BYTES_MAX)),
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.max == 0 {
            return;
        }
        let bytes = &bytes[bytes.len().saturating_sub(self.max)..];
        let overflow = (self.bytes.len() + bytes.len()).saturating_sub(self.max);
        self.bytes.drain(..overflow);
        self.bytes.extend(bytes);
    }

    /// The tail as text: a character cut at the start dropped, invalid UTF-8 replaced, and
    /// still at most `max` bytes (a replacement character takes 3).
    pub fn text(&self) -> Option<String> {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        // Continuation bytes (0b10xxxxxx) at the start are the rest of a character cut off.
        let cut_character = bytes
            .iter()
            .take(3)
            .take_while(|byte| (**byte & 0b1100_0000) == 0b1000_0000)
            .count();
        let text = String::from_utf8_lossy(&bytes[cut_character..]);
        let text = last_bytes_of(&text, self.max);
        (!text.is_empty()).then(|| text.to_string())
    }
}

/// The longest suffix of `text` of at most `max` bytes that starts on a character boundary.
pub fn last_bytes_of(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The first `max` bytes of `text` (on a character boundary), with `...` when cut.
pub fn first_bytes_of(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What a retention sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub removed: u64,
    pub kept: u64,
}

/// Deletes the job logs (`job_<n>.log`) in `dir` last changed more than `retention` before
/// `now`. Blocking: run it with `spawn_blocking`. A missing directory has nothing to sweep.
pub fn sweep_old_logs(
    dir: &Path,
    retention: Duration,
    now: SystemTime,
) -> std::io::Result<SweepReport> {
    let mut report = SweepReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(error) => return Err(error),
    };
    let Some(oldest_kept) = now.checked_sub(retention) else {
        return Ok(report);
    };
    for entry in entries {
        let entry = entry?;
        if !is_job_log_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let metadata = match entry.metadata() {
            Ok(metadata) if metadata.is_file() => metadata,
            // Gone since the listing, or not a file: not ours to delete.
            _ => continue,
        };
        let modified = metadata.modified()?;
        if modified < oldest_kept {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => report.removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        } else {
            report.kept += 1;
        }
    }
    Ok(report)
}

/// `job_<digits>.log`: the only files a sweep may delete.
fn is_job_log_name(name: &str) -> bool {
    name.strip_prefix(JobId::PREFIX)
        .and_then(|rest| rest.strip_suffix(".log"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Sweeps `dir` every [`RETENTION_SWEEP_INTERVAL`] (the first after one interval: the worker
/// sweeps once with [`sweep_and_report`] before it leases), until the task is dropped.
pub async fn keep_retention(dir: PathBuf, retention: Duration) {
    let mut interval = tokio::time::interval_at(
        tokio::time::Instant::now() + RETENTION_SWEEP_INTERVAL,
        RETENTION_SWEEP_INTERVAL,
    );
    loop {
        interval.tick().await;
        sweep_and_report(&dir, retention).await;
    }
}

/// One retention sweep off the async workers, reported on stderr when it removed something or
/// failed (a failure is an operating error: the worker goes on and tries again later).
pub async fn sweep_and_report(dir: &Path, retention: Duration) {
    let sweep_dir = dir.to_path_buf();
    let swept = tokio::task::spawn_blocking(move || {
        sweep_old_logs(&sweep_dir, retention, SystemTime::now())
    })
    .await;
    match swept {
        Ok(Ok(report)) if report.removed > 0 => eprintln!(
            "agentctl worker: removed {} job log(s) older than {} from {}",
            report.removed,
            format_retention(retention),
            dir.display()
        ),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => eprintln!(
            "agentctl worker: cleaning old job logs in {} failed: {error}; will try again in an hour",
            dir.display()
        ),
        Err(error) => eprintln!("agentctl worker: cleaning old job logs failed: {error}"),
    }
}

/// Parses a retention like `7d`, `12h`, `30m` or `90s` (`--log-retention`).
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_s) = if let Some(number) = text.strip_suffix('d') {
        (number, 86_400)
    } else if let Some(number) = text.strip_suffix('h') {
        (number, 3600)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1)
    } else {
        return Err(format!(
            "expected a duration like 7d, 12h, 30m or 90s, got {text:?}"
        ));
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("expected a duration like 7d, 12h, 30m or 90s, got {text:?}"))?;
    if value == 0 {
        return Err("the retention must be more than 0".into());
    }
    value
        .checked_mul(unit_s)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `7d`, `12h`, `30m` or `90s`, the largest unit that divides it.
pub fn format_retention(retention: Duration) -> String {
    let seconds = retention.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests;
