//! Datasets: `agentctl ingest` and what it reports, the stats the API and the CLI show, and
//! what the dataset routes refuse.

use super::{
    cli_dataset_stats, dataset_stats, shared, DomainDaemon, IngestSummary, SOURCE, VERSION,
};
use agentd_schemas::domain_api::IngestRecordsResponse;
use agentd_schemas::ErrorCode;
use agentd_tests::{agentctl_text, decode, fixture, path_text, post_json, post_refused, Daemon};
use expect_test::expect;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[tokio::test]
async fn ingest_keeps_three_of_six_records_and_counts_the_duplicate_unknown_and_over_cap_ones() {
    // The whole summary, so that every count is checked and a new field shows up in review.
    let summary: Value = decode(&shared().ingest_output);
    expect![[r#"
        {
          "accepted": 6,
          "count_matches": true,
          "duplicate": 1,
          "kept": 3,
          "num_records": 6,
          "over_token_cap": 1,
          "records_in_file": 6,
          "records_received": 6,
          "registered": true,
          "rejected": 0,
          "rejected_lines": [],
          "resent": 0,
          "sent": 6,
          "source": "fixture/commitpack-mini",
          "unknown_language": 1,
          "version": "2024-05"
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&summary).unwrap());
}

#[tokio::test]
async fn dataset_stats_count_kept_records_by_language_and_split_within_the_token_cap() {
    let stats = dataset_stats(shared().url()).await;
    let total = &stats.total;
    assert_eq!(
        (
            total.records,
            total.kept,
            total.duplicates,
            total.over_token_cap,
            total.unknown_language,
        ),
        (6, 3, 1, 1, 1),
        "{stats:#?}"
    );
    assert_eq!(
        total.languages,
        BTreeMap::from([
            ("java".to_owned(), 1),
            ("javascript".to_owned(), 1),
            ("python".to_owned(), 1)
        ])
    );
    assert_eq!(
        total.unknown_language_names,
        BTreeMap::from([("cobol".to_owned(), 1)])
    );
    assert_eq!(total.resent, 0);
    assert_eq!(total.splits.train + total.splits.dev + total.splits.test, 3);
    assert!(total.p95_tokens.unwrap() <= 64, "{stats:#?}");
    assert_eq!(
        (
            stats.datasets[0].source.as_str(),
            stats.datasets[0].version.as_str()
        ),
        (SOURCE, VERSION)
    );
    assert_eq!(stats.token_cap, 64);
}

#[tokio::test]
async fn ingesting_the_same_version_again_registers_nothing_and_moves_no_count() {
    let domain = DomainDaemon::start();
    let first = domain.ingest();
    assert!(first.registered && first.count_matches, "{first:?}");
    let before = dataset_stats(domain.url()).await;

    let again = domain.ingest();
    assert_eq!(
        (again.registered, again.accepted, again.resent),
        (false, 0, 6)
    );
    let after = dataset_stats(domain.url()).await;
    // Positions already received are dropped before anything is written.
    assert_eq!(after.total.resent, 0);
    assert_eq!(
        (
            after.total.records,
            after.total.kept,
            &after.total.languages,
            after.total.splits
        ),
        (
            before.total.records,
            before.total.kept,
            &before.total.languages,
            before.total.splits
        ),
        "counts moved on re-ingest"
    );
    // Every count, not only those above: the duplicate, the over-cap and unknown-language
    // records, the unknown names and the token statistics stay as the first ingest left them.
    assert_eq!(after, before, "stats moved on re-ingest");
    assert_eq!(
        (
            after.total.records,
            after.total.kept,
            after.total.duplicates,
            after.total.over_token_cap,
            after.total.unknown_language,
        ),
        (6, 3, 1, 1, 1)
    );
    assert_eq!(
        after.total.unknown_language_names,
        BTreeMap::from([("cobol".to_owned(), 1)])
    );
    assert!(after.total.p95_tokens.unwrap() <= 64, "{after:#?}");
}

#[tokio::test]
async fn agentctl_prints_dataset_stats_as_the_api_answers_them_and_as_a_markdown_table() {
    let url = shared().url();
    assert_eq!(cli_dataset_stats(url), dataset_stats(url).await);
    let markdown = agentctl_text(url, &["datasets", "stats", "--format", "markdown"]).ok();
    expect![[r#"
        ## Datasets

        Token counts in `o200k_base`; records over 64 tokens are excluded.

        | dataset | records | kept | duplicates | over token cap | unknown language | resent | train | dev | test | avg tokens | p95 tokens |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
        | fixture/commitpack-mini 2024-05 | 6 | 3 | 1 | 1 | 1 | 0 | 3 | 0 | 0 | 25.0 | 33 |
        | **total** | 6 | 3 | 1 | 1 | 1 | 0 | 3 | 0 | 0 | 25.0 | 33 |

        ## Kept records per language

        | language | train | dev | test | total |
        |---|---:|---:|---:|---:|
        | java | 1 | 0 | 0 | 1 |
        | javascript | 1 | 0 | 0 | 1 |
        | python | 1 | 0 | 0 | 1 |

        Unknown languages: `cobol` (1)
    "#]].assert_eq(&markdown);
    let list = agentctl_text(url, &["datasets", "list"]).ok();
    expect![[r#"
        SOURCE                           VERSION      LICENSE            EXPECTED   RECEIVED COMPLETE
        fixture/commitpack-mini          2024-05      MIT                       6          6      yes
    "#]].assert_eq(&list);
}

#[tokio::test]
async fn registering_other_meta_for_a_version_conflicts_and_records_of_an_unknown_dataset_are_not_found(
) {
    let url = shared().url();
    let mut meta: Value = decode(&std::fs::read_to_string(fixture("domain/_meta.json")).unwrap());
    meta["num_records"] = json!(7);
    let refused = post_refused(url, "/v1/datasets", meta, ErrorCode::Conflict).await;
    assert!(refused.message.contains("num_records"), "{refused:?}");
    post_refused(
        url,
        "/v1/datasets/nobody/1/records",
        json!({"records": []}),
        ErrorCode::NotFound,
    )
    .await;
}

#[tokio::test]
async fn ingest_reports_bad_lines_and_the_count_mismatch_then_a_fixed_file_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let meta = fixture("domain/bad_meta.json");
    let bad = fixture("domain/bad.jsonl");
    let failed = agentctl_text(
        &daemon.url,
        &[
            "ingest",
            "--meta",
            path_text(&meta),
            "--records",
            path_text(&bad),
        ],
    );
    assert!(
        !failed.success,
        "a file with bad lines must fail: {failed:?}"
    );
    let stderr = &failed.stderr;
    assert!(stderr.contains("line 2: $: not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: post: is required"), "{stderr}");
    assert!(stderr.contains("record count mismatch"), "{stderr}");
    assert!(
        stderr.contains("the daemon holds 1 of the 3 records"),
        "{stderr}"
    );
    assert!(failed.stdout.contains("MISMATCH"), "{}", failed.stdout);

    // The same command on the fixed file adds exactly the two missing records.
    let fixed = fixture("domain/fixed.jsonl");
    let summary: IngestSummary = agentd_tests::agentctl_typed(
        &daemon.url,
        &[
            "ingest",
            "--meta",
            path_text(&meta),
            "--records",
            path_text(&fixed),
        ],
    );
    assert_eq!(
        (summary.accepted, summary.resent, summary.records_received),
        (2, 1, 3)
    );
    assert!(summary.count_matches);

    // Over the HTTP API a batch answers per record: position and field.
    let (status, body) = post_json(
        &daemon.url,
        "/v1/datasets/fixture%2Fbad-lines/1/records",
        json!({"first_index": 10, "records": [
            {"instruction": "a", "pre": "", "post": "", "language": "go"},
            {"instruction": "b", "pre": "", "post": "", "language": "go", "tags": ["ok", " "]},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: IngestRecordsResponse = serde_json::from_value(body).unwrap();
    assert_eq!((answer.accepted, answer.rejected), (1, 1));
    let rejected = &answer.rejected_records[0];
    assert_eq!((rejected.index, rejected.field.as_str()), (11, "tags[1]"));
}
