//! The daemon's `fdatasync` times over a bench run, from the `agentd_log_fsync_seconds`
//! histogram of `/metrics` read before and after: a durable acknowledgement waits for at least
//! one group commit's `fdatasync`, so its distribution is the floor under the ack latency, and
//! printing it beside the ack percentiles says how much of them is the disk.

use serde::Serialize;

/// The histogram's family name in the daemon's `/metrics`.
const FAMILY: &str = "agentd_log_fsync_seconds";

/// One reading of the histogram: cumulative counts per upper bound (seconds), ascending.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FsyncHistogram {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum_seconds: f64,
}

/// The `fdatasync` calls made between two readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct FsyncSummary {
    pub(super) calls: u64,
    pub(super) mean_ms: f64,
    /// Upper bounds of the histogram buckets holding the 50th and 99th percentile call: the
    /// daemon keeps buckets, not samples, so these are "at most" figures.
    pub(super) p50_at_most_ms: Option<f64>,
    pub(super) p99_at_most_ms: Option<f64>,
}

impl FsyncHistogram {
    /// Reads the histogram from Prometheus text; `None` when the family is absent.
    pub(super) fn parse(text: &str) -> Option<FsyncHistogram> {
        let mut buckets = Vec::new();
        let (mut count, mut sum_seconds) = (None, None);
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else {
                continue;
            };
            let Some((series, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            if let Some(labels) = series.strip_prefix("_bucket{le=\"") {
                let bound = labels.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                buckets.push((bound, value.parse().ok()?));
            } else if series == "_count" {
                count = value.parse().ok();
            } else if series == "_sum" {
                sum_seconds = value.parse().ok();
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(FsyncHistogram {
            buckets,
            count: count?,
            sum_seconds: sum_seconds?,
        })
    }

    /// What happened between `before` and this reading (both of one daemon).
    pub(super) fn since(&self, before: &FsyncHistogram) -> FsyncSummary {
        let calls = self.count.saturating_sub(before.count);
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let earlier = before
                    .buckets
                    .iter()
                    .find(|(other, _)| *other == bound)
                    .map_or(0, |&(_, count)| count);
                (bound, cumulative.saturating_sub(earlier))
            })
            .collect();
        let seconds = (self.sum_seconds - before.sum_seconds).max(0.0);
        FsyncSummary {
            calls,
            mean_ms: if calls == 0 {
                0.0
            } else {
                seconds * 1e3 / calls as f64
            },
            p50_at_most_ms: bucket_bound_ms(&buckets, calls, 0.50),
            p99_at_most_ms: bucket_bound_ms(&buckets, calls, 0.99),
        }
    }
}

/// The upper bound (ms) of the first bucket holding the `quantile` call; `None` without calls
/// or when it falls in the unbounded bucket.
fn bucket_bound_ms(buckets: &[(f64, u64)], calls: u64, quantile: f64) -> Option<f64> {
    if calls == 0 {
        return None;
    }
    let rank = (quantile * calls as f64).ceil().max(1.0) as u64;
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= rank)
        .map(|(bound, _)| bound * 1e3)
        .filter(|bound| bound.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(counts: [u64; 4], sum: f64) -> String {
        format!(
            "# TYPE agentd_log_fsync_seconds histogram\n\
             agentd_log_fsync_seconds_bucket{{le=\"0.00025\"}} {}\n\
             agentd_log_fsync_seconds_bucket{{le=\"0.0005\"}} {}\n\
             agentd_log_fsync_seconds_bucket{{le=\"0.001\"}} {}\n\
             agentd_log_fsync_seconds_bucket{{le=\"+Inf\"}} {}\n\
             agentd_log_fsync_seconds_sum {sum}\n\
             agentd_log_fsync_seconds_count {}\n\
             agentd_log_group_commits_total 9\n",
            counts[0], counts[1], counts[2], counts[3], counts[3]
        )
    }

    #[test]
    fn the_calls_between_two_readings_are_summarized_from_their_buckets() {
        let before = FsyncHistogram::parse(&text([10, 10, 10, 10], 0.002)).unwrap();
        // 100 more calls: 60 within 0.25 ms, 39 more within 0.5 ms, one over 1 ms.
        let after = FsyncHistogram::parse(&text([70, 109, 109, 110], 0.032)).unwrap();
        let summary = after.since(&before);
        assert_eq!(summary.calls, 100);
        assert!((summary.mean_ms - 0.3).abs() < 1e-9, "{summary:?}");
        assert_eq!(summary.p50_at_most_ms, Some(0.25));
        assert_eq!(summary.p99_at_most_ms, Some(0.5));
    }

    #[test]
    fn a_quantile_in_the_unbounded_bucket_and_an_idle_run_give_no_bound() {
        let before = FsyncHistogram::parse(&text([0, 0, 0, 0], 0.0)).unwrap();
        let after = FsyncHistogram::parse(&text([0, 0, 0, 3], 0.009)).unwrap();
        assert_eq!(after.since(&before).p50_at_most_ms, None);
        let idle = before.since(&before);
        assert_eq!((idle.calls, idle.p99_at_most_ms), (0, None));
    }

    #[test]
    fn text_without_the_family_reads_as_none() {
        assert_eq!(
            FsyncHistogram::parse("agentd_log_group_commits_total 3\n"),
            None
        );
    }
}
