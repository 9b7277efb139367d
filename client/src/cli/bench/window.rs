//! Windows: consumers' observations cut into windows of completed jobs, each with its jobs/s and
//! enqueue-to-lease percentiles.

use serde::Serialize;
use std::time::Instant;
use tokio::sync::mpsc;

/// Observations (leases, completions) in flight from consumers to the window accumulator.
pub(super) const OBSERVATIONS_CAPACITY: usize = 8192;

/// What consumers tell the window accumulator.
#[derive(Debug)]
pub(super) enum Observation {
    /// A lease response handed out a job.
    Leased { enqueue_to_lease_ms: f64 },
    /// The daemon acknowledged the completion of `jobs` jobs.
    Completed { jobs: u64, at: Instant },
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct WindowReport {
    index: u64,
    /// Jobs completed before this window began.
    completed_before: u64,
    /// Jobs completed in it: the window size, fewer in a last partial window, a few more when a
    /// bulk completion crosses the boundary.
    pub(super) jobs: u64,
    pub(super) seconds: f64,
    pub(super) jobs_per_s: f64,
    /// Of the jobs leased in this window.
    pub(super) enqueue_to_lease: LatencySummary,
}

/// Cuts the stream of observations into windows of `window_jobs` completed jobs.
#[derive(Debug)]
pub(super) struct WindowAccumulator {
    window_jobs: u64,
    window_start: Instant,
    /// The latest completion seen: the end of the window when it closes.
    last_completion_at: Instant,
    completed_before: u64,
    completed_in_window: u64,
    /// Bounded by the window size plus the jobs leased but not yet completed.
    enqueue_to_lease_ms: Vec<f64>,
    windows: Vec<WindowReport>,
}

impl WindowAccumulator {
    pub(super) fn new(window_jobs: u64, run_start: Instant) -> WindowAccumulator {
        WindowAccumulator {
            window_jobs,
            window_start: run_start,
            last_completion_at: run_start,
            completed_before: 0,
            completed_in_window: 0,
            enqueue_to_lease_ms: Vec::new(),
            windows: Vec::new(),
        }
    }

    /// Takes one observation; answers the window it closed, if any.
    fn observe(&mut self, observation: Observation) -> Option<&WindowReport> {
        match observation {
            Observation::Leased {
                enqueue_to_lease_ms,
            } => {
                self.enqueue_to_lease_ms.push(enqueue_to_lease_ms);
                None
            }
            Observation::Completed { jobs, at } => {
                self.completed_in_window += jobs;
                self.last_completion_at = self.last_completion_at.max(at);
                if self.completed_in_window < self.window_jobs {
                    return None;
                }
                Some(self.close_window())
            }
        }
    }

    /// Closes the last window if it has completions; answers it.
    fn close_partial_window(&mut self) -> Option<&WindowReport> {
        if self.completed_in_window == 0 {
            return None;
        }
        Some(self.close_window())
    }

    fn close_window(&mut self) -> &WindowReport {
        let seconds = self
            .last_completion_at
            .duration_since(self.window_start)
            .as_secs_f64();
        let jobs = self.completed_in_window;
        let samples = std::mem::take(&mut self.enqueue_to_lease_ms);
        self.windows.push(WindowReport {
            index: self.windows.len() as u64,
            completed_before: self.completed_before,
            jobs,
            seconds: round3(seconds),
            jobs_per_s: per_second(jobs, seconds),
            enqueue_to_lease: LatencySummary::from_samples(samples),
        });
        self.completed_before += jobs;
        self.completed_in_window = 0;
        self.window_start = self.last_completion_at;
        // Just pushed, so there is a last one.
        &self.windows[self.windows.len() - 1]
    }
}

/// Runs the accumulator until every consumer has dropped its sender; prints each window as it
/// closes when `lines` gives the label to print them with (the shape and its completion mode,
/// so every printed figure says how it was measured).
pub(super) async fn accumulate(
    mut received: mpsc::Receiver<Observation>,
    mut accumulator: WindowAccumulator,
    lines: Option<String>,
) -> Vec<WindowReport> {
    while let Some(observation) = received.recv().await {
        if let (Some(window), Some(label)) = (accumulator.observe(observation), &lines) {
            print_window_line(label, window);
        }
    }
    if let (Some(window), Some(label)) = (accumulator.close_partial_window(), &lines) {
        print_window_line(label, window);
    }
    accumulator.windows
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct LatencySummary {
    pub(super) count: usize,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

impl LatencySummary {
    pub(super) fn from_samples(mut samples_ms: Vec<f64>) -> LatencySummary {
        samples_ms.sort_by(|a, b| a.total_cmp(b));
        LatencySummary {
            count: samples_ms.len(),
            p50_ms: round3(percentile(&samples_ms, 0.50)),
            p99_ms: round3(percentile(&samples_ms, 0.99)),
            max_ms: round3(samples_ms.last().copied().unwrap_or(0.0)),
        }
    }
}

pub(super) fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (count as f64 / seconds).round()
}

pub(super) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

pub(super) fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn print_window_line(label: &str, window: &WindowReport) {
    println!(
        "{label} window {:>3}: after {:>9} done, {:>7} jobs in {:>6.2} s = {:>7.0} jobs/s; \
         enqueue->lease ({:>7} leased) p50 {:>8.3} ms  p99 {:>8.3} ms",
        window.index,
        window.completed_before,
        window.jobs,
        window.seconds,
        window.jobs_per_s,
        window.enqueue_to_lease.count,
        window.enqueue_to_lease.p50_ms,
        window.enqueue_to_lease.p99_ms
    );
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn windows_close_every_window_jobs_and_the_rest_closes_at_the_end() {
        let start = Instant::now();
        let mut accumulator = WindowAccumulator::new(2, start);
        let at = |ms| start + Duration::from_millis(ms);
        let leased = |ms| Observation::Leased {
            enqueue_to_lease_ms: ms,
        };
        assert!(accumulator.observe(leased(1.0)).is_none());
        assert!(accumulator.observe(leased(3.0)).is_none());
        let done = |ms| Observation::Completed {
            jobs: 1,
            at: at(ms),
        };
        assert!(accumulator.observe(done(100)).is_none());
        let first = accumulator.observe(done(500)).cloned().unwrap();
        assert_eq!((first.index, first.completed_before, first.jobs), (0, 0, 2));
        assert_eq!(first.jobs_per_s, 4.0);
        assert_eq!(first.enqueue_to_lease.p99_ms, 3.0);
        accumulator.observe(leased(7.0));
        accumulator.observe(done(1500));
        let last = accumulator.close_partial_window().cloned().unwrap();
        assert_eq!((last.index, last.completed_before, last.jobs), (1, 2, 1));
        assert_eq!(last.seconds, 1.0);
        assert_eq!(last.enqueue_to_lease.p50_ms, 7.0);
        assert!(accumulator.close_partial_window().is_none());
    }
}
