//! The Prometheus recorder: installed once per process, with the histogram buckets the
//! daemon's timings and batch sizes need, and every family of the catalog described.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the recorder; `None` when the process already has one (a second daemon in one
/// test process).
pub(super) fn install() -> Option<PrometheusHandle> {
    let seconds_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let size_buckets = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("agentd_log_group_commit_frames".into()),
                &size_buckets,
            )
        });
    match builder.and_then(|builder| builder.install_recorder()) {
        Ok(handle) => {
            crate::metrics_catalog::describe_and_register();
            Some(handle)
        }
        Err(error) => {
            // Only one recorder per process: a second daemon in one test process has none.
            tracing::warn!("metrics recorder not installed: {error}");
            None
        }
    }
}
