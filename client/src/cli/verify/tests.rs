use super::*;

#[test]
fn rewards_parse_from_json_with_defaults_and_refuse_unknown_keys() {
    let settings = parse_rewards(r#"{"combine": "weighted"}"#).unwrap();
    assert_eq!(settings.combine, RewardCombine::Weighted);
    assert_eq!(settings.tests, TestsReward::All);
    assert_eq!(settings.weights.post_match, 1.0);
    let settings = parse_rewards(r#"{"tests": "fraction", "weights": {"gold_match": 0}}"#).unwrap();
    assert_eq!(
        (
            settings.tests,
            settings.weights.gold_match,
            settings.weights.tests
        ),
        (TestsReward::Fraction, 0.0, 1.0)
    );
    for (text, expected) in [
        (r#"{"combine": "mean"}"#, "unknown variant `mean`"),
        (r#"{"weight_tests": 2}"#, "unknown field `weight_tests`"),
        (r#"{"weights": {"test": 2}}"#, "unknown field `test`"),
        ("combine=weighted", "expected {\"combine\""),
        (
            "@/nonexistent/rewards.json",
            "cannot read /nonexistent/rewards.json",
        ),
    ] {
        let error = parse_rewards(text).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_INVALID);
        assert!(error.to_string().contains(expected), "{text}: {error}");
    }
}

#[test]
fn only_a_url_on_the_command_line_reads_a_daemon() {
    use clap::{CommandFactory, FromArgMatches};
    let url_of = |argv: &[&str]| {
        let matches = super::super::Cli::command()
            .try_get_matches_from(argv)
            .unwrap();
        let cli = super::super::Cli::from_arg_matches(&matches).unwrap();
        let super::super::Command::Verify(args) = cli.command else {
            panic!("not verify: {argv:?}");
        };
        keep_url_from_command_line(args, &matches).url
    };
    // The global --url has a default; it must not count as given.
    assert_eq!(url_of(&["agentctl", "verify", "--payload", "p.json"]), None);
    for argv in [
        &[
            "agentctl",
            "verify",
            "--payload",
            "p.json",
            "--url",
            "http://d:1",
        ][..],
        &[
            "agentctl",
            "--url",
            "http://d:1",
            "verify",
            "--payload",
            "p.json",
        ][..],
    ] {
        assert_eq!(url_of(argv).as_deref(), Some("http://d:1"), "{argv:?}");
    }
    let both = super::super::Cli::command().try_get_matches_from([
        "agentctl",
        "verify",
        "--payload",
        "p",
        "--url",
        "http://d:1",
        "--rewards",
        "{}",
    ]);
    assert!(both.is_err(), "--rewards and --url conflict");
}

#[test]
fn reading_stops_past_the_cap() {
    assert_eq!(
        read_capped(&b"12345"[..], 5).unwrap(),
        Some(b"12345".to_vec())
    );
    assert_eq!(read_capped(&b"123456"[..], 5).unwrap(), None);
}

#[test]
fn the_rewards_are_described_in_one_line() {
    assert_eq!(
        describe_rewards(&RewardSettings::default()),
        "combine all; tests all"
    );
    let weighted: RewardSettings = serde_json::from_str(
        r#"{"combine": "weighted", "tests": "fraction", "weights": {"tests": 2.5}}"#,
    )
    .unwrap();
    assert_eq!(
        describe_rewards(&weighted),
        "combine weighted; tests fraction; weights tests 2.5, gold_match 1, post_match 1"
    );
}
