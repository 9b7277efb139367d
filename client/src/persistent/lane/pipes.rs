//! The lane's plumbing: reading the actor's pipes (cancel-safe, in a `select!` loop), writing
//! its stdin from a task of its own, and the lane's own log.

use super::{
    LaneSettings, LOG_CLOSE_WAIT, LONG_LINE_HEAD_BYTES, STDERR_LINE_BYTES_MAX,
    STDIN_LINES_QUEUED_MAX,
};
use crate::model_server;
use crate::persistent::protocol::ACTOR_LINE_BYTES_MAX;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Reads a chunk of stderr; `None` (and the pipe dropped) at its end. Pending forever once the
/// pipe is gone, so it can sit in a `select!` loop.
pub(super) async fn read_some(
    stderr: &mut Option<ChildStderr>,
    buffer: &mut [u8],
) -> Option<Vec<u8>> {
    let Some(pipe) = stderr.as_mut() else {
        return std::future::pending().await;
    };
    match pipe.read(buffer).await {
        Ok(0) | Err(_) => {
            *stderr = None;
            None
        }
        Ok(read) => Some(buffer[..read].to_vec()),
    }
}

/// Resolves once the worker stops (or the sender is gone). The watch's guard stays inside, so
/// the future is `Send` whatever `select!` keeps of its output.
pub(super) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _stopped_or_sender_gone = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Sleeps until `deadline`, or forever without one.
pub(super) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One task writes the actor's stdin, so a full pipe blocks only it; dropping the returned
/// sender closes the stdin once queued lines are written.
pub(super) fn spawn_stdin_writer(mut stdin: tokio::process::ChildStdin) -> mpsc::Sender<Vec<u8>> {
    let (sender, mut lines) = mpsc::channel::<Vec<u8>>(STDIN_LINES_QUEUED_MAX);
    tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                // The actor closed its stdin or died; the lane notices the exit.
                return;
            }
        }
    });
    sender
}

/// What [`LineReader::next`] read.
pub(super) enum ReadLine {
    /// A line, without its newline.
    Line(Vec<u8>),
    /// A line over [`ACTOR_LINE_BYTES_MAX`]: its first bytes; the rest was dropped.
    TooLong(Vec<u8>),
    Eof,
}

/// Splits stdout into lines of at most [`ACTOR_LINE_BYTES_MAX`]. Cancel-safe: the only await is
/// `fill_buf`, and a partial line lives in the reader, not in the future.
pub(super) struct LineReader {
    reader: Option<BufReader<ChildStdout>>,
    partial: Vec<u8>,
    /// The line being read passed the cap: its head, while the rest is skipped.
    too_long_head: Option<Vec<u8>>,
}

impl LineReader {
    pub(super) fn new(stdout: Option<ChildStdout>) -> LineReader {
        LineReader {
            reader: stdout.map(BufReader::new),
            partial: Vec::new(),
            too_long_head: None,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    pub(super) async fn next(&mut self) -> ReadLine {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return ReadLine::Eof;
            };
            let buffer = match reader.fill_buf().await {
                Ok(buffer) if !buffer.is_empty() => buffer,
                // The end (or a broken pipe): a last line without a newline still counts.
                _ => {
                    self.reader = None;
                    if let Some(head) = self.too_long_head.take() {
                        return ReadLine::TooLong(head);
                    }
                    if !self.partial.is_empty() {
                        return ReadLine::Line(std::mem::take(&mut self.partial));
                    }
                    return ReadLine::Eof;
                }
            };
            let newline = buffer.iter().position(|byte| *byte == b'\n');
            let taken = newline.unwrap_or(buffer.len());
            if self.too_long_head.is_none() {
                if self.partial.len() + taken > ACTOR_LINE_BYTES_MAX {
                    let mut head = std::mem::take(&mut self.partial);
                    head.extend_from_slice(&buffer[..taken]);
                    head.truncate(LONG_LINE_HEAD_BYTES);
                    self.too_long_head = Some(head);
                } else {
                    self.partial.extend_from_slice(&buffer[..taken]);
                }
            }
            let consumed = newline.map_or(taken, |at| at + 1);
            reader.consume(consumed);
            if newline.is_some() {
                if let Some(head) = self.too_long_head.take() {
                    return ReadLine::TooLong(head);
                }
                return ReadLine::Line(std::mem::take(&mut self.partial));
            }
        }
    }
}

/// Where an actor's output goes while it runs no job: `<log-dir>/actor-slot<N>.log` (rotated at
/// the job log cap, one old file kept), or the worker's stderr line by line.
pub(super) struct LaneLog {
    prefix: String,
    file: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// A line not yet printed on the worker's stderr (no newline yet).
    partial: Vec<u8>,
}

impl LaneLog {
    pub(super) fn new(settings: &LaneSettings, slot: usize) -> LaneLog {
        let (file, writer) = match &settings.log_dir {
            Some(dir) => {
                let (file, writer) = model_server::spawn_log_writer(
                    dir.join(format!("actor-slot{slot}.log")),
                    settings.log_bytes_max,
                );
                (Some(file), Some(writer))
            }
            None => (None, None),
        };
        LaneLog {
            prefix: format!("agentctl worker: actor of slot {slot}: "),
            file,
            writer,
            partial: Vec::new(),
        }
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) {
        if let Some(file) = &self.file {
            // The writer lives as long as the lane; gone means the output is dropped.
            let _writer_gone = file.send(bytes.to_vec()).await;
            return;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(newline) = self.partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=newline).collect();
            eprintln!(
                "{}{}",
                self.prefix,
                String::from_utf8_lossy(&line[..line.len() - 1])
            );
        }
        if self.partial.len() > STDERR_LINE_BYTES_MAX {
            self.flush_partial();
        }
    }

    /// A line of the worker's own, in the file only (the worker already printed it).
    pub(super) async fn note(&mut self, line: &str) {
        if let Some(file) = &self.file {
            let _writer_gone = file.send(line.as_bytes().to_vec()).await;
        }
    }

    /// Waits (bounded) until everything sent is in the file: the worker exits right after.
    pub(super) async fn close(mut self) {
        self.flush_partial();
        self.file = None;
        if let Some(writer) = self.writer.take() {
            let _written_or_gave_up = tokio::time::timeout(LOG_CLOSE_WAIT, writer).await;
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            eprintln!("{}{}", self.prefix, String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests;
