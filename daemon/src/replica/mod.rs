//! Read replicas (`agentd replica --from URL`, docs/storage.md "Read replicas"): a daemon that
//! follows the primary's log archive into a local copy of the log and serves the read-only API
//! from the same projections a replay builds. `follower.rs` copies and applies, `verify.rs`
//! checks the local log against the archive at the first poll, `status.rs` is
//! its progress (`GET /healthz`'s `replica`, the `agentd_replica_*` gauges); the replica's life
//! (open, start, stop) is `server/replica.rs`, its 405 answers `http/read_only.rs`.
//!
//! Architecture invariants:
//! - A replica appends nothing of its own: its local log holds only bytes copied from the
//!   archive, in the same segment files, so it is byte-identical to a prefix of the primary's
//!   (`log/follow.rs` checks every frame; the sequencer in the replica role refuses appends).
//! - A record is published as durable (so the projector and reads see it) only after it is
//!   synced locally and applied to the queue state and the export ledger.

mod follower;
pub mod status;
mod verify;

pub use follower::{follow, Follower};
pub use status::ReplicaStatus;

use std::sync::Arc;
use std::time::Duration;

/// How often the `agentd_replica_*` gauges are published.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes zeros on a primary, so the `agentd_replica_*` families exist from start-up (the
/// alert and the dashboard see "no lag" rather than "no data"), as the catalog documents.
pub fn publish_on_primary() {
    metrics::gauge!("agentd_replica_lag_seconds").set(0.0);
    metrics::gauge!("agentd_replica_lag_records").set(0.0);
    metrics::gauge!("agentd_replica_applied_lsn").set(0.0);
    metrics::gauge!("agentd_replica_archive_last_lsn").set(0.0);
}

/// Publishes the replica's lag and LSNs every [`GAUGE_INTERVAL`].
pub async fn publish_gauges(status: Arc<ReplicaStatus>) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tick.tick().await;
        let health = status.health(crate::clock::now_ms());
        metrics::gauge!("agentd_replica_lag_seconds").set(health.lag_seconds);
        metrics::gauge!("agentd_replica_lag_records").set(health.lag_records as f64);
        metrics::gauge!("agentd_replica_applied_lsn").set(health.applied_lsn.0 as f64);
        metrics::gauge!("agentd_replica_archive_last_lsn").set(health.archive_last_lsn.0 as f64);
    }
}
