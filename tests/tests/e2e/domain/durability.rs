//! The domain projections survive a SIGKILL, and an offline `agentd rebuild` of the log gives
//! the digests the daemon served, with the dataset settings the log recorded.

use super::DomainDaemon;
use agentd_tests::{digest, rebuild, Daemon};

#[tokio::test]
async fn a_sigkill_and_restart_change_no_domain_answer_and_no_digest() {
    let (mut domain, episodes) = DomainDaemon::seeded().await;
    // One episode finished, one still leased, as a crash would find them.
    domain
        .client()
        .complete(episodes.a.lease_id, None)
        .await
        .unwrap();
    let answers = domain.answers().await;
    let served = digest(domain.url()).await;
    domain.daemon.restart();
    assert_eq!(domain.answers().await, answers);
    assert_eq!(digest(domain.url()).await, served);
}

#[tokio::test]
async fn an_offline_rebuild_prints_the_digests_the_daemon_served() {
    let (mut domain, _episodes) = DomainDaemon::seeded().await;
    let served = digest(domain.url()).await;
    assert_eq!(domain.daemon.stop(), Some(0));
    let rebuilt = rebuild(
        &domain.data_dir,
        Some(&domain.config),
        &domain.dir.path().join("rebuilt"),
    );
    assert_eq!(rebuilt.lsn, served.lsn);
    assert_eq!(rebuilt.projections, served.projections);
}

/// The splits follow the `[datasets]` settings recorded in the log, not the config a replay
/// runs with.
#[tokio::test]
async fn dataset_splits_follow_the_settings_in_the_log_and_a_daemon_configured_otherwise_refuses_to_start(
) {
    let mut domain = DomainDaemon::start();
    domain.ingest();
    let served = digest(domain.url()).await;
    assert_eq!(domain.daemon.stop(), Some(0));
    // A rebuild with the default config (token_cap 2000, not 64) gives the same digests...
    let rebuilt = rebuild(
        &domain.data_dir,
        None,
        &domain.dir.path().join("rebuilt-default"),
    );
    assert_eq!(rebuilt.projections.datasets, served.projections.datasets);
    // ...and a daemon whose config would change them under existing records refuses to start.
    let refused = Daemon::try_start(&domain.data_dir, None)
        .err()
        .expect("must refuse to start");
    let refusal = refused.join("\n");
    for expected in [
        "differs from the settings the log's dataset records were processed with",
        "token_cap 2000",
        "token_cap 64",
    ] {
        assert!(refusal.contains(expected), "{expected:?} in {refusal}");
    }
}
