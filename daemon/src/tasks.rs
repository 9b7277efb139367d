//! Background tasks with a shutdown signal and a completion guard (the shape mini-redis uses):
//! every task gets the signal, every task holds a clone of the guard, and shutdown is "send the
//! signal, then wait until every guard is dropped", bounded by the grace period. Only a task
//! still running when the grace period is over is aborted (an export cut short leaves only temp
//! files and no event; the next run of it writes it again), so the stop never waits twice.

use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The receiving side of the shutdown signal, handed to tasks that stop by themselves.
pub type ShutdownSignal = watch::Receiver<bool>;

/// Waits until `signal` turns true (or its sender is gone, which means the same).
pub async fn shutdown_requested(signal: &mut ShutdownSignal) {
    let _sender_gone_means_stop = signal.wait_for(|stop| *stop).await;
}

/// The daemon's background tasks (gauges, scheduler, export runner).
pub struct Tasks {
    signal: watch::Sender<bool>,
    /// Cloned into every task; `done_rx` sees the channel close once all clones are dropped.
    guard: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
    /// Every task spawned or adopted, for the abort after the grace period.
    handles: Vec<tokio::task::AbortHandle>,
}

impl Tasks {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (guard, done_rx) = mpsc::channel(1);
        Tasks {
            signal,
            guard,
            done_rx,
            handles: Vec::new(),
        }
    }

    /// A receiver of the shutdown signal, for a task that finishes its current work and stops
    /// on its own when it turns true.
    pub fn signal(&self) -> ShutdownSignal {
        self.signal.subscribe()
    }

    /// Spawns a task that watches [`Self::signal`] itself.
    pub fn spawn(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        let guard = self.guard.clone();
        let task = tokio::spawn(async move {
            future.await;
            drop(guard);
        });
        self.handles.push(task.abort_handle());
    }

    /// Spawns a periodic task with no work worth finishing: it runs until the signal, then is
    /// dropped at its next await point.
    pub fn spawn_until_shutdown(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        let mut signal = self.signal();
        self.spawn(async move {
            tokio::select! {
                () = future => {}
                () = shutdown_requested(&mut signal) => {}
            }
        });
    }

    /// Counts a task spawned elsewhere (it stops when its inputs close) as one of ours.
    pub fn adopt(&mut self, handle: tokio::task::JoinHandle<()>) {
        self.handles.push(handle.abort_handle());
        self.spawn(async move {
            let _finished_or_panicked = handle.await;
        });
    }

    /// Sends the signal and waits up to `grace` for every task to finish; aborts those still
    /// running then (dropping what they hold, such as sequencer handles, so the stop can go
    /// on). Returns false when some had to be aborted.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let Tasks {
            signal,
            guard,
            mut done_rx,
            handles,
        } = self;
        let _no_receivers_is_fine = signal.send(true);
        drop(guard);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_ok() {
            return true;
        }
        for handle in &handles {
            handle.abort();
        }
        false
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_task_and_stops_periodic_ones() {
        let mut tasks = Tasks::new();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut signal = tasks.signal();
        let seen = finished.clone();
        tasks.spawn(async move {
            shutdown_requested(&mut signal).await;
            // Work that finishes after the signal is waited for.
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        tasks.spawn_until_shutdown(std::future::pending());
        assert!(tasks.shutdown(Duration::from_secs(10)).await);
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_still_running_after_the_grace_period_is_aborted() {
        let mut tasks = Tasks::new();
        let held = std::sync::Arc::new(());
        let in_task = held.clone();
        tasks.spawn(async move {
            let _holds = in_task;
            std::future::pending::<()>().await;
        });
        assert!(!tasks.shutdown(Duration::from_millis(20)).await);
        // The aborted task drops what it held (as the export runner drops its sequencer
        // handle), bounded so a task that is never dropped fails the test.
        let dropped = async {
            while std::sync::Arc::strong_count(&held) > 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), dropped)
            .await
            .expect("the aborted task dropped its state");
    }
}
