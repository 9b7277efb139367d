//! `agentctl bench` against the real daemon: the latency shape's report carries the daemon's own
//! `fdatasync` figures over the run (read from `/metrics` before and after), the floor under the
//! acknowledgement latency it reports.

use agentd_tests::{agentctl, Daemon};
use serde_json::Value;

#[tokio::test]
async fn the_latency_shape_reports_the_daemons_fdatasync_calls_over_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let args = [
        "--json",
        "bench",
        "--shape",
        "latency",
        "--rate",
        "40",
        "--rate-seconds",
        "1",
        "--consumers",
        "2",
    ];
    let output = agentctl(&daemon.url, &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["submits"], 40, "{report}");
    assert_eq!(report["completed"], 40, "{report}");
    let fsync = &report["log_fsync"];
    let calls = fsync["calls"]
        .as_u64()
        .unwrap_or_else(|| panic!("{report}"));
    // Every acknowledged record (a submit, a lease, a completion per job at most) was made
    // durable by some group commit, each of which holds at least one: 120 calls at most.
    assert!((1..=120).contains(&calls), "{report}");
    assert!(fsync["mean_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert!(fsync["p50_at_most_ms"].as_f64().is_some(), "{report}");
    assert!(report.get("log_fsync_unread").is_none(), "{report}");
}
