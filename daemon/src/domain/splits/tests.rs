use super::*;
use crate::domain::tokens::TokenCounter;
use serde_json::json;

fn meta(source: &str, version: &str, num_records: u64) -> DatasetMeta {
    DatasetMeta {
        source: source.to_owned(),
        version: version.to_owned(),
        license: "MIT".to_owned(),
        downloaded_at: "2024-05-01T12:00:00Z".to_owned(),
        sha256: "0".repeat(64),
        num_records,
        url: None,
    }
}

fn record(instruction: &str, pre: &str, language: &str) -> DatasetRecord {
    DatasetRecord {
        instruction: instruction.to_owned(),
        pre: pre.to_owned(),
        post: format!("{pre}\n# edited"),
        language: language.to_owned(),
        tags: vec!["t".to_owned()],
        metadata_json: "{}".to_owned(),
    }
}

fn batch(
    source: &str,
    version: &str,
    first_index: u64,
    records: Vec<DatasetRecord>,
) -> DatasetRecordsIngested {
    DatasetRecordsIngested {
        source: source.to_owned(),
        version: version.to_owned(),
        first_index,
        records,
    }
}

fn projection(config: SplitsConfig) -> ProcessedSplits {
    let counter = TokenCounter::for_encoding(&config.encoding).unwrap();
    ProcessedSplits::new(config, counter).unwrap()
}

fn default_projection() -> ProcessedSplits {
    projection(SplitsConfig::default())
}

/// `n` distinct Python records named after `prefix`.
fn records(prefix: &str, n: usize) -> Vec<DatasetRecord> {
    (0..n)
        .map(|i| {
            record(
                &format!("{prefix} task {i}"),
                &format!("x = {i}\n"),
                "python",
            )
        })
        .collect()
}

/// (source, index) of every kept record, in log order.
fn kept_positions(splits: &ProcessedSplits) -> Vec<(String, u64)> {
    splits
        .kept_records()
        .map(|r| (r.dataset.source.clone(), r.index))
        .collect()
}

fn counts<'a>(stats: &'a DatasetStats, source: &str) -> &'a RecordCounts {
    &stats
        .datasets
        .iter()
        .find(|d| d.source == source)
        .unwrap()
        .counts
}

#[test]
fn the_first_copy_in_log_order_wins_across_datasets() {
    let mut splits = default_projection();
    splits.apply_registered(&meta("a", "1", 2));
    splits.apply_registered(&meta("b", "1", 2));
    let shared = record("Rename foo", "def foo(): pass", "python");
    // Same task with formatting noise, in another dataset and a later log record.
    let noisy = record("Rename foo  ", "def foo(): pass\r\n", "py");
    splits.apply_ingested(
        Lsn(10),
        &batch(
            "b",
            "1",
            0,
            vec![shared.clone(), record("other", "y = 1", "go")],
        ),
    );
    splits.apply_ingested(Lsn(11), &batch("a", "1", 0, vec![noisy, shared]));
    assert_eq!(
        kept_positions(&splits),
        [("b".to_owned(), 0), ("b".to_owned(), 1)]
    );
    let stats = splits.stats();
    assert_eq!(
        (counts(&stats, "a").kept, counts(&stats, "a").duplicates),
        (0, 2)
    );
    assert_eq!(
        (counts(&stats, "b").kept, counts(&stats, "b").duplicates),
        (2, 0)
    );
    assert_eq!(
        (
            stats.total.records,
            stats.total.kept,
            stats.total.duplicates
        ),
        (4, 2, 2)
    );
}

#[test]
fn duplicates_within_one_batch_keep_the_first() {
    let mut splits = default_projection();
    let same = record("Add a guard", "if x: pass", "python");
    splits.apply_ingested(
        Lsn(1),
        &batch("a", "1", 0, vec![same.clone(), same.clone(), same]),
    );
    assert_eq!(kept_positions(&splits), [("a".to_owned(), 0)]);
    assert_eq!(splits.stats().total.duplicates, 2);
}

#[test]
fn an_excluded_record_does_not_shadow_a_later_good_copy() {
    let mut splits = default_projection();
    splits.apply_ingested(
        Lsn(1),
        &batch("a", "1", 0, vec![record("Fix it", "x", "cobol")]),
    );
    splits.apply_ingested(
        Lsn(2),
        &batch("b", "1", 0, vec![record("Fix it", "x", "python")]),
    );
    assert_eq!(kept_positions(&splits), [("b".to_owned(), 0)]);
}

#[test]
fn counts_per_dataset_and_in_total() {
    let mut splits = projection(SplitsConfig {
        token_cap: 30,
        ..SplitsConfig::default()
    });
    splits.apply_registered(&meta("a", "1", 5));
    let long = "word ".repeat(100);
    splits.apply_ingested(
        Lsn(3),
        &batch(
            "a",
            "1",
            0,
            vec![
                record("one", "x = 1", "Python"),
                record("two", "let x = 2;", "rust"),
                record("three", "x = 3", "COBOL"),
                record("four", &long, "python"),
                record("one", "x = 1", "python3"),
            ],
        ),
    );
    splits.apply_ingested(
        Lsn(4),
        &batch(
            "b",
            "2",
            0,
            vec![record("five", "y = 5", "go"), record("six", "", "cobol ")],
        ),
    );
    let stats = splits.stats();
    let a = counts(&stats, "a");
    assert_eq!(
        (
            a.records,
            a.kept,
            a.duplicates,
            a.over_token_cap,
            a.unknown_language,
            a.resent
        ),
        (5, 2, 1, 1, 1, 0)
    );
    assert_eq!(a.languages, BTreeMap::from([("python", 1), ("rust", 1)]));
    assert_eq!(a.splits.train + a.splits.dev + a.splits.test, 2);
    assert_eq!(
        a.unknown_language_names,
        BTreeMap::from([("cobol".to_owned(), 1)])
    );

    let b = counts(&stats, "b");
    assert_eq!((b.records, b.kept, b.unknown_language), (2, 1, 1));
    assert_eq!(stats.total.records, 7);
    assert_eq!(stats.total.kept, 3);
    assert_eq!(
        stats.total.languages,
        BTreeMap::from([("go", 1), ("python", 1), ("rust", 1)])
    );
    assert_eq!(
        stats.total.unknown_language_names,
        BTreeMap::from([("cobol".to_owned(), 2)])
    );
    assert_eq!(stats.encoding, "o200k_base");
    assert_eq!(stats.token_cap, 30);

    // Token stats match the kept records' own counts of their counted text.
    let counter = TokenCounter::for_encoding("o200k_base").unwrap();
    let mut tokens: Vec<usize> = splits
        .kept_records()
        .map(|r| counter.count(&counted_text(&r.record)))
        .collect();
    assert_eq!(
        tokens,
        splits.kept_records().map(|r| r.tokens).collect::<Vec<_>>()
    );
    tokens.sort_unstable();
    assert_eq!(
        stats.total.total_tokens,
        tokens.iter().sum::<usize>() as u64
    );
    assert_eq!(
        stats.total.avg_tokens,
        Some(tokens.iter().sum::<usize>() as f64 / 3.0)
    );
    assert_eq!(stats.total.p95_tokens, tokens.last().copied());

    // Per language and split agrees with the records themselves.
    for kept in splits.kept_records() {
        let cell = stats.total.language_splits[kept.language.as_str()];
        let expected = SplitCounts {
            train: u64::from(kept.split == Split::Train),
            dev: u64::from(kept.split == Split::Dev),
            test: u64::from(kept.split == Split::Test),
        };
        assert_eq!(cell, expected, "{}", kept.language);
    }
}

#[test]
fn stats_serialize_with_flat_dataset_entries() {
    let mut splits = default_projection();
    splits.apply_ingested(
        Lsn(1),
        &batch("a", "1", 0, vec![record("one", "x = 1", "python")]),
    );
    let value = serde_json::to_value(splits.stats()).unwrap();
    let dataset = &value["datasets"][0];
    assert_eq!(dataset["source"], json!("a"));
    assert_eq!(dataset["records"], json!(1));
    assert_eq!(dataset["languages"], json!({"python": 1}));
    let split = splits.kept_records().next().unwrap().split.as_str();
    assert_eq!(dataset["language_splits"]["python"][split], json!(1));
    assert_eq!(value["total"]["p95_tokens"], dataset["p95_tokens"]);
}

#[test]
fn over_the_cap_is_counted_and_the_cap_is_inclusive() {
    let counter = TokenCounter::for_encoding("o200k_base").unwrap();
    let at_cap = record("Rename the function", "def foo(): return 1", "python");
    let cap = counter.count(&counted_text(&at_cap));
    let mut splits = projection(SplitsConfig {
        token_cap: cap,
        ..SplitsConfig::default()
    });
    let over = record(
        "Rename the function please",
        "def foo(): return 1",
        "python",
    );
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, vec![at_cap, over]));
    assert_eq!(kept_positions(&splits), [("a".to_owned(), 0)]);
    assert_eq!(splits.stats().total.over_token_cap, 1);
    assert_eq!(splits.kept_records().next().unwrap().tokens, cap);
}

#[test]
fn earlier_records_never_move_when_more_arrive() {
    let mut splits = default_projection();
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, records("a", 300)));
    let before: Vec<(u64, Split)> = splits.kept_records().map(|r| (r.index, r.split)).collect();
    assert!(
        Split::ALL
            .iter()
            .all(|s| before.iter().any(|(_, split)| split == s)),
        "all splits used"
    );

    splits.apply_ingested(Lsn(2), &batch("b", "1", 0, records("b", 300)));
    splits.apply_ingested(Lsn(3), &batch("a", "1", 300, records("a-more", 300)));
    let after: Vec<(u64, Split)> = splits
        .kept_records()
        .take(before.len())
        .map(|r| (r.index, r.split))
        .collect();
    assert_eq!(after, before);

    // A different batching of the same records splits them the same way.
    let mut rebatched = default_projection();
    let all = records("a", 300);
    for (lsn, chunk) in all.chunks(7).enumerate() {
        rebatched.apply_ingested(
            Lsn(lsn as u64 + 1),
            &batch("a", "1", (lsn * 7) as u64, chunk.to_vec()),
        );
    }
    let rebatched: Vec<(u64, Split)> = rebatched
        .kept_records()
        .map(|r| (r.index, r.split))
        .collect();
    assert_eq!(rebatched, before);
}

#[test]
fn resending_a_batch_changes_nothing_but_the_resent_count() {
    let mut splits = default_projection();
    splits.apply_registered(&meta("a", "1", 4));
    let first = batch("a", "1", 0, records("a", 4));
    splits.apply_ingested(Lsn(1), &first);
    let kept_before: Vec<ProcessedRecord> = splits.kept_records().cloned().collect();
    let mut stats_before = splits.stats();

    splits.apply_ingested(Lsn(2), &first);
    let kept_after: Vec<ProcessedRecord> = splits.kept_records().cloned().collect();
    assert_eq!(kept_after, kept_before);
    let mut stats_after = splits.stats();
    assert_eq!(stats_after.total.resent, 4);
    stats_before.total.resent = 0;
    stats_after.total.resent = 0;
    stats_before.datasets[0].counts.resent = 0;
    stats_after.datasets[0].counts.resent = 0;
    assert_eq!(stats_after, stats_before);
    assert!(splits.datasets()[0].complete);
}

#[test]
fn an_overlapping_batch_adds_only_new_positions() {
    let mut splits = default_projection();
    let all = records("a", 5);
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, all[..3].to_vec()));
    splits.apply_ingested(Lsn(2), &batch("a", "1", 2, all[2..].to_vec()));
    let lsns: Vec<(u64, u64)> = splits.kept_records().map(|r| (r.index, r.lsn.0)).collect();
    assert_eq!(lsns, [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2)]);
    let stats = splits.stats();
    assert_eq!((stats.total.records, stats.total.resent), (5, 1));
}

#[test]
fn kept_records_carry_their_text_and_origin() {
    let mut splits = default_projection();
    let original = record("Wrap the call", "foo()", "ts");
    splits.apply_ingested(Lsn(42), &batch("a", "v2", 7, vec![original.clone()]));
    let kept = splits.kept_records().next().unwrap();
    assert_eq!(*kept.record, original);
    assert_eq!(
        (
            kept.dataset.source.as_str(),
            kept.dataset.version.as_str(),
            kept.index,
            kept.lsn
        ),
        ("a", "v2", 7, Lsn(42))
    );
    assert_eq!(kept.language, Language::TypeScript);
    assert_eq!(
        kept.dedup_key_hex(),
        hex::encode(dedup_key("Wrap the call", "foo()"))
    );
    assert_eq!(
        kept.split,
        assign_split(&kept.dedup_key, &SplitWeights::default())
    );
}

#[test]
fn dataset_summaries_compare_received_with_registered() {
    let mut splits = default_projection();
    splits.apply_registered(&meta("a", "1", 3));
    splits.apply_registered(&meta("b", "1", 1));
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, records("a", 2)));
    splits.apply_ingested(Lsn(2), &batch("b", "1", 0, records("b", 1)));
    splits.apply_ingested(Lsn(3), &batch("c", "0", 0, records("c", 1)));
    let summaries: Vec<(String, u64, Option<u64>, bool, bool)> = splits
        .datasets()
        .into_iter()
        .map(|d| {
            (
                d.source,
                d.records_received,
                d.records_expected,
                d.complete,
                d.meta.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summaries,
        [
            ("a".to_owned(), 2, Some(3), false, true),
            ("b".to_owned(), 1, Some(1), true, true),
            ("c".to_owned(), 1, None, false, false),
        ]
    );
    // A later registration (only a lost race logs one) changes nothing: the first meta stands.
    splits.apply_registered(&meta("a", "1", 2));
    assert!(!splits.datasets()[0].complete);
    assert_eq!(splits.datasets()[0].records_expected, Some(3));
    assert_eq!(splits.stats().total.records, 4);
}

#[test]
fn unknown_language_names_are_bounded() {
    let mut splits = default_projection();
    let many: Vec<DatasetRecord> = (0..100)
        .map(|i| record(&format!("t{i}"), "x", &format!("lang{i:03}")))
        .collect();
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, many));
    let stats = splits.stats();
    assert_eq!(stats.total.unknown_language, 100);
    assert_eq!(
        stats.total.unknown_language_names.len(),
        stats::UNKNOWN_LANGUAGE_NAMES_MAX
    );
    assert!(stats.total.unknown_language_names.contains_key("lang000"));
    assert!(!stats.total.unknown_language_names.contains_key("lang099"));
}

/// A log with every kind of outcome, to build twice.
fn replay(splits: &mut ProcessedSplits) {
    splits.apply_registered(&meta("a", "1", 40));
    splits.apply_registered(&DatasetMeta {
        url: Some("https://example.com/b".to_owned()),
        ..meta("b", "2", 10)
    });
    splits.apply_ingested(Lsn(1), &batch("a", "1", 0, records("a", 20)));
    splits.apply_ingested(Lsn(2), &batch("b", "2", 0, records("a", 5)));
    splits.apply_ingested(
        Lsn(3),
        &batch(
            "a",
            "1",
            20,
            vec![
                record("c", "x", "cobol"),
                record("d", &"w ".repeat(3000), "go"),
            ],
        ),
    );
    splits.apply_ingested(Lsn(4), &batch("a", "1", 0, records("a", 3)));
}

#[test]
fn two_builds_from_the_same_log_have_the_same_digest() {
    let mut first = default_projection();
    let mut second = default_projection();
    replay(&mut first);
    replay(&mut second);
    assert_eq!(first.digest(), second.digest());
    assert_eq!(first.digest().len(), 64);

    // Any difference in input or configuration shows.
    let mut third = default_projection();
    replay(&mut third);
    third.apply_ingested(Lsn(5), &batch("b", "2", 5, records("new", 1)));
    assert_ne!(third.digest(), first.digest());
    let mut other_weights = projection(SplitsConfig {
        weights: SplitWeights {
            train: 80,
            dev: 10,
            test: 10,
        },
        ..SplitsConfig::default()
    });
    replay(&mut other_weights);
    assert_ne!(other_weights.digest(), first.digest());
}

#[test]
fn the_digest_format_is_stable() {
    // A regression value: if this changes, bump the digest version in `digest.rs`.
    let mut splits = default_projection();
    replay(&mut splits);
    assert_eq!(
        splits.digest(),
        "471e7d4d4d067399aadff5e9b424ce9cd1f4b14b95722654c41e6f75b973c1a7"
    );
}

#[test]
fn configuration_errors() {
    let o200k = TokenCounter::for_encoding("o200k_base").unwrap();
    let zero = SplitsConfig {
        weights: SplitWeights {
            train: 0,
            dev: 0,
            test: 0,
        },
        ..SplitsConfig::default()
    };
    assert_eq!(
        ProcessedSplits::new(zero, Arc::clone(&o200k)).unwrap_err(),
        SplitsConfigError::Weights(InvalidSplitWeights)
    );
    let cl100k = SplitsConfig {
        encoding: "cl100k_base".to_owned(),
        ..SplitsConfig::default()
    };
    assert_eq!(
        ProcessedSplits::new(cl100k, o200k).unwrap_err().to_string(),
        "the token counter counts \"o200k_base\" but the configuration names \"cl100k_base\""
    );
}
