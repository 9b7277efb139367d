//! The group-committing writer: one thread drains a bounded queue, writes each batch with one
//! `write_all` and makes it durable with one `fdatasync`, then answers every frame of the batch.
//!
//! Durable throughput is fsyncs per second times frames per fsync, so everything here is about
//! keeping many frames per fsync and little work per frame (the encode buffer is reused).

pub(crate) use super::active::ActiveSegment;
use super::active::{roll, WriteFailure};
use super::frame::{encode_frame, FRAME_HEADER_BYTES};
use super::index::{Mark, OffsetIndex};
use super::segment::SEGMENT_HEADER_BYTES;
use super::{AppendError, BatchObserver, FatalHook, LogOptions, Lsn};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The answer to one queued frame: its lsn once durable, or why it was not written.
pub type AppendReceiver = oneshot::Receiver<Result<Lsn, AppendError>>;

/// Counters of the writer since it started, for tests. Each field only grows.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Batches that made at least one frame durable (each took one fdatasync per segment written).
    pub batches: u64,
    /// Frames made durable.
    pub frames: u64,
    /// Frame bytes made durable, headers included.
    pub bytes: u64,
    /// Time spent in fdatasync, in microseconds.
    pub fsync_micros_total: u64,
}

/// One durable batch, handed to [`LogOptions::on_batch`] so the daemon can keep histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchObservation {
    /// Frames made durable by the batch.
    pub frames: usize,
    /// Frame bytes written, headers included.
    pub bytes: usize,
    /// fdatasync calls: one, plus one per segment rolled inside the batch.
    pub fsyncs: usize,
    /// Time spent in those fdatasync calls.
    pub fsync_duration: Duration,
    /// Time from taking the first frame off the queue to having answered every frame.
    pub batch_duration: Duration,
}

/// A handle for appending to the log. Clones share one writer thread.
#[derive(Clone)]
pub struct LogWriter {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) shared: Arc<WriterShared>,
    pub(super) frame_bytes_max: u32,
}

impl LogWriter {
    /// Queues a frame and waits until it is durable (its fdatasync returned). `lsn` must be the
    /// next lsn after the previously queued frame: the caller, a single sequencer, assigns lsns.
    pub async fn append(
        &self,
        lsn: Lsn,
        format_version: u8,
        payload: Vec<u8>,
    ) -> Result<Lsn, AppendError> {
        let receiver = self.enqueue(lsn, format_version, payload).await?;
        receiver.await.unwrap_or(Err(AppendError::Closed))
    }

    /// Queues a frame and returns once it is queued, with a receiver for its outcome, so that a
    /// sequencer can keep assigning lsns while earlier frames wait for their fsync. Waits only
    /// while the queue is full (backpressure).
    pub async fn enqueue(
        &self,
        lsn: Lsn,
        format_version: u8,
        payload: Vec<u8>,
    ) -> Result<AppendReceiver, AppendError> {
        if payload.len() > self.frame_bytes_max as usize {
            return Err(AppendError::FrameTooLarge {
                bytes: payload.len(),
                max: self.frame_bytes_max,
            });
        }
        let (reply, receiver) = oneshot::channel();
        let frame = PendingFrame {
            lsn: lsn.0,
            format_version,
            payload,
            reply,
        };
        self.commands
            .send(Command::Append(frame))
            .await
            .map_err(|_closed| AppendError::Closed)?;
        Ok(receiver)
    }

    /// The last lsn known durable. Everything up to it may be read and applied.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable_lsn.load(Ordering::Acquire))
    }

    /// A receiver that changes after every durable batch, for readers that follow the log.
    pub fn subscribe_durable(&self) -> watch::Receiver<Lsn> {
        self.shared.durable_watch.subscribe()
    }

    /// Counters since the writer started (tests check group commit with them).
    #[cfg(test)]
    pub fn stats(&self) -> WriterStats {
        let stats = &self.shared.stats;
        WriterStats {
            batches: stats.batches.load(Ordering::Relaxed),
            frames: stats.frames.load(Ordering::Relaxed),
            bytes: stats.bytes.load(Ordering::Relaxed),
            fsync_micros_total: stats.fsync_micros_total.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer: frames queued before this call (from any clone) are written and made
    /// durable, later appends get [`AppendError::Closed`], and the thread is joined. Safe to call
    /// from several clones; each call returns once the thread has exited.
    pub async fn shutdown(self) {
        if self.commands.send(Command::Shutdown).await.is_err() {
            // The writer already stopped taking commands (another clone shut it down, or it
            // stopped on a fatal error); waiting for its exit below is all that is left.
        }
        let mut exited = self.shared.exited.subscribe();
        // `wait_for` fails only when the sender is dropped, and `self.shared` owns the sender.
        if exited.wait_for(|&has_exited| has_exited).await.is_err() {
            tracing::error!("log writer exit signal vanished");
        }
        let handle = lock(&self.shared.thread).take();
        if let Some(handle) = handle {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_panic)) => tracing::error!("log writer thread panicked"),
                Err(join_error) => tracing::error!(%join_error, "joining the log writer failed"),
            }
        }
    }
}

/// Spawns the writer thread. A failure to spawn is fatal: without a writer nothing is durable.
pub(crate) fn start(
    options: LogOptions,
    active: ActiveSegment,
    last_lsn: Lsn,
    index: Arc<OffsetIndex>,
) -> LogWriter {
    let (commands, receiver) = mpsc::channel(options.queue_capacity);
    let (durable_watch, _) = watch::channel(last_lsn);
    let (exited, _) = watch::channel(false);
    let shared = Arc::new(WriterShared {
        durable_lsn: AtomicU64::new(last_lsn.0),
        durable_watch,
        stats: StatsCounters::default(),
        thread: Mutex::new(None),
        exited,
    });
    let writer_thread = WriterThread {
        dir: options.dir.clone(),
        segment_bytes_max: options.segment_bytes_max,
        preallocate_bytes: options.preallocate_bytes,
        batch_frames_max: options.batch_frames_max,
        batch_bytes_max: options.batch_bytes_max,
        on_fatal: options.on_fatal.clone(),
        on_batch: options.on_batch.clone(),
        active,
        next_lsn: last_lsn.0 + 1,
        shared: shared.clone(),
        buffer: Vec::with_capacity(options.batch_bytes_max.min(1 << 20)),
        replies: Vec::with_capacity(options.batch_frames_max.min(4096)),
        runs: Vec::new(),
        planned_len_bytes: 0,
        index,
    };
    let spawned = std::thread::Builder::new()
        .name("log-writer".to_string())
        .spawn(move || writer_thread.run(receiver));
    match spawned {
        Ok(handle) => *lock(&shared.thread) = Some(handle),
        Err(error) => {
            // The receiver went down with the closure, so every append answers `Closed`.
            shared.exited.send_replace(true);
            let message = format!("cannot spawn the log-writer thread: {error}");
            tracing::error!("{message}");
            (options.on_fatal)(&message);
        }
    }
    LogWriter {
        commands,
        shared,
        frame_bytes_max: options.frame_bytes_max,
    }
}

pub(super) enum Command {
    Append(PendingFrame),
    /// Close the queue: frames already in it are still written, later sends fail.
    Shutdown,
}

pub(super) struct PendingFrame {
    lsn: u64,
    format_version: u8,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<Lsn, AppendError>>,
}

pub(super) struct WriterShared {
    pub(super) durable_lsn: AtomicU64,
    pub(super) durable_watch: watch::Sender<Lsn>,
    pub(super) stats: StatsCounters,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    /// Set to true when the writer thread ends, however it ends.
    pub(super) exited: watch::Sender<bool>,
}

#[derive(Default)]
pub(super) struct StatsCounters {
    batches: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    fsync_micros_total: AtomicU64,
}

/// A run of consecutive frames of one batch that go to one segment.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The run starts a new segment named by `first_lsn` (the previous one is full).
    starts_segment: bool,
    first_lsn: u64,
    buffer_start: usize,
    buffer_end: usize,
    /// Index in `replies` just after this run's last frame.
    replies_end: usize,
}

struct WriterThread {
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Zeros kept written ahead of the last frame (`active.rs`); 0 appends to the file's end.
    preallocate_bytes: u64,
    batch_frames_max: usize,
    batch_bytes_max: usize,
    on_fatal: FatalHook,
    on_batch: Option<BatchObserver>,
    active: ActiveSegment,
    /// The lsn the next accepted frame must carry.
    next_lsn: u64,
    shared: Arc<WriterShared>,
    /// Encoded frames of the current batch; reused so the hot path does not allocate.
    buffer: Vec<u8>,
    /// Replies of the accepted frames of the current batch, in lsn order.
    replies: Vec<oneshot::Sender<Result<Lsn, AppendError>>>,
    runs: Vec<Run>,
    /// Length the segment written last in this batch will have once the batch is written.
    planned_len_bytes: u64,
    /// Told where each durable run ends, so readers seek there instead of scanning.
    index: Arc<OffsetIndex>,
}

impl WriterThread {
    fn run(self, commands: mpsc::Receiver<Command>) {
        let _exit_signal = ExitSignal(self.shared.clone());
        // `serve` owns the queue and the pending replies, so they are gone (and every waiting
        // appender answered) before the exit signal fires.
        self.serve(commands);
    }

    fn serve(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let batch_started = Instant::now();
            self.planned_len_bytes = self.active.len_bytes;
            self.accept(first, &mut commands);
            while self.replies.len() < self.batch_frames_max
                && self.buffer.len() < self.batch_bytes_max
            {
                match commands.try_recv() {
                    Ok(command) => self.accept(command, &mut commands),
                    Err(_empty_or_closed) => break,
                }
            }
            if self.replies.is_empty() {
                continue;
            }
            if let Err(message) = self.commit_batch(batch_started) {
                tracing::error!(error = %message, "log writer stopped on a fatal error");
                (self.on_fatal)(&message);
                // Dropping `commands` and the pending replies answers everyone `Closed`.
                return;
            }
        }
        // A clean stop leaves the segment ending at its last frame. Not fatal if it fails:
        // recovery reads the zeros after the last frame as preallocated space.
        if let Err(message) = self.active.trim() {
            tracing::warn!(error = %message, "log writer could not cut the preallocated end of its segment");
        }
    }

    fn accept(&mut self, command: Command, commands: &mut mpsc::Receiver<Command>) {
        let frame = match command {
            Command::Append(frame) => frame,
            Command::Shutdown => {
                commands.close();
                return;
            }
        };
        if frame.lsn != self.next_lsn {
            reply(
                frame.reply,
                Err(AppendError::OutOfSequence {
                    expected: Lsn(self.next_lsn),
                    got: Lsn(frame.lsn),
                }),
            );
            return;
        }
        let frame_bytes = (FRAME_HEADER_BYTES + frame.payload.len()) as u64;
        let segment_has_frames = self.planned_len_bytes > SEGMENT_HEADER_BYTES as u64;
        let starts_segment =
            segment_has_frames && self.planned_len_bytes + frame_bytes > self.segment_bytes_max;
        if starts_segment || self.runs.is_empty() {
            self.runs.push(Run {
                starts_segment,
                first_lsn: frame.lsn,
                buffer_start: self.buffer.len(),
                buffer_end: self.buffer.len(),
                replies_end: self.replies.len(),
            });
            if starts_segment {
                self.planned_len_bytes = SEGMENT_HEADER_BYTES as u64;
            }
        }
        encode_frame(
            &mut self.buffer,
            frame.lsn,
            frame.format_version,
            &frame.payload,
        );
        self.replies.push(frame.reply);
        self.planned_len_bytes += frame_bytes;
        self.next_lsn += 1;
        // `runs` is non-empty: a run was pushed above if there was none.
        if let Some(run) = self.runs.last_mut() {
            run.buffer_end = self.buffer.len();
            run.replies_end = self.replies.len();
        }
    }

    /// Writes and syncs the batch run by run, then publishes and answers. `Err` is fatal.
    fn commit_batch(&mut self, batch_started: Instant) -> Result<(), String> {
        let first_lsn = self.next_lsn - self.replies.len() as u64;
        let mut durable_frames = 0;
        let mut durable_bytes = 0;
        let mut fsyncs = 0;
        let mut fsync_duration = Duration::ZERO;
        let mut disk_full = false;
        for run in &self.runs {
            let outcome = if run.starts_segment {
                roll(&self.dir, &mut self.active, run.first_lsn)
            } else {
                Ok(())
            };
            let outcome = outcome.and_then(|()| {
                self.active.write_and_sync(
                    &self.buffer[run.buffer_start..run.buffer_end],
                    self.preallocate_bytes,
                )
            });
            match outcome {
                Ok(duration) => {
                    fsyncs += 1;
                    fsync_duration += duration;
                    // Recorded before `publish`, so a reader woken by the new durable lsn
                    // already finds where the frames before it end.
                    self.index.record(
                        self.active.first_lsn,
                        Mark {
                            lsn: first_lsn + run.replies_end as u64,
                            offset: self.active.len_bytes,
                        },
                    );
                    durable_frames = run.replies_end;
                    durable_bytes += run.buffer_end - run.buffer_start;
                }
                Err(WriteFailure::DiskFull) => {
                    disk_full = true;
                    break;
                }
                Err(WriteFailure::Fatal(message)) => return Err(message),
            }
        }
        if durable_frames > 0 {
            let durable_lsn = first_lsn + durable_frames as u64 - 1;
            self.publish(durable_lsn, durable_frames, durable_bytes, fsync_duration);
        }
        if disk_full {
            // The sequencer resends from the first frame that was not written.
            self.next_lsn = first_lsn + durable_frames as u64;
            tracing::warn!(
                lsn = self.next_lsn,
                frames = self.replies.len() - durable_frames,
                "log disk is full; appends are rejected until space returns"
            );
        }
        for (index, sender) in self.replies.drain(..).enumerate() {
            let outcome = if index < durable_frames {
                Ok(Lsn(first_lsn + index as u64))
            } else {
                Err(AppendError::DiskFull)
            };
            reply(sender, outcome);
        }
        self.buffer.clear();
        self.runs.clear();
        if let (Some(observer), true) = (&self.on_batch, durable_frames > 0) {
            observer(&BatchObservation {
                frames: durable_frames,
                bytes: durable_bytes,
                fsyncs,
                fsync_duration,
                batch_duration: batch_started.elapsed(),
            });
        }
        Ok(())
    }

    /// Makes `durable_lsn` visible: atomics first, so anyone answered below already sees it.
    fn publish(&self, durable_lsn: u64, frames: usize, bytes: usize, fsync_duration: Duration) {
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.frames.fetch_add(frames as u64, Ordering::Relaxed);
        stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let fsync_micros = u64::try_from(fsync_duration.as_micros()).unwrap_or(u64::MAX);
        stats
            .fsync_micros_total
            .fetch_add(fsync_micros, Ordering::Relaxed);
        self.shared
            .durable_lsn
            .store(durable_lsn, Ordering::Release);
        self.shared.durable_watch.send_replace(Lsn(durable_lsn));
    }
}

fn reply(sender: oneshot::Sender<Result<Lsn, AppendError>>, outcome: Result<Lsn, AppendError>) {
    if sender.send(outcome).is_err() {
        // The appender stopped waiting; the outcome stands whether or not anyone reads it.
    }
}

/// Tells `shutdown` callers that the thread is gone, on every exit path including a panic.
struct ExitSignal(Arc<WriterShared>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        self.0.exited.send_replace(true);
    }
}

/// The mutex only guards the join handle; a panic while holding it leaves nothing inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}
