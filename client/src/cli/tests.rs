use super::*;
use clap::CommandFactory;

/// Every command below `agentctl`, with its full name (`jobs list`).
fn all_commands() -> Vec<(String, clap::Command)> {
    let mut root = Cli::command();
    root.build();
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), root)];
    while let Some((name, command)) = pending.pop() {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" || sub.is_hide_set() {
                continue;
            }
            let full = format!("{name} {}", sub.get_name()).trim().to_string();
            pending.push((full.clone(), sub.clone()));
            found.push((full, sub.clone()));
        }
    }
    found
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// `--queue`, `<JOB_ID>`, `--after`...: an argument without help leaves the reader guessing.
#[test]
fn every_argument_of_every_command_has_help() {
    let mut missing = Vec::new();
    for (name, command) in all_commands() {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            let help = arg
                .get_help()
                .map(|help| help.to_string())
                .unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("agentctl {name}: {id}"));
            }
        }
    }
    assert!(missing.is_empty(), "arguments without help: {missing:#?}");
}

/// `--url` has a default (and AGENTD_URL), so no usage line may show it as required.
#[test]
fn usage_lines_show_the_daemon_options_as_optional() {
    let mut root = Cli::command();
    let usage = root.render_usage().to_string();
    assert!(!usage.contains("--url"), "{usage}");
    for (name, mut command) in all_commands() {
        let usage = command.render_usage().to_string();
        for global in ["--url", "--token", "--ca-cert"] {
            assert!(!usage.contains(global), "agentctl {name}: {usage}");
        }
    }
}

/// `sandbox run` is local: it must not advertise the daemon's URL, token or CA.
#[test]
fn sandbox_run_help_does_not_offer_daemon_options() {
    let mut root = Cli::command();
    root.build();
    let mut run = root
        .find_subcommand("sandbox")
        .and_then(|sandbox| sandbox.find_subcommand("run"))
        .unwrap()
        .clone();
    let help = run.render_long_help().to_string();
    for global in ["--url", "--token", "--ca-cert", "AGENTD_URL"] {
        assert!(!help.contains(global), "{global} in:\n{help}");
    }
    assert!(help.contains("--json"), "{help}");
    // Still accepted (and ignored), so AGENTD_URL or a shared alias does not break it.
    let parsed = Cli::try_parse_from([
        "agentctl",
        "sandbox",
        "run",
        "--url",
        "http://x:1",
        "--token",
        "t",
        "--files",
        "d",
        "--rule",
        "r.yml",
    ]);
    assert!(parsed.is_ok(), "{parsed:?}");
    // Elsewhere they are offered as before.
    let mut list = root
        .find_subcommand("jobs")
        .and_then(|jobs| jobs.find_subcommand("list"))
        .unwrap()
        .clone();
    assert!(list.render_help().to_string().contains("--url"));
}

#[test]
fn worker_help_lists_the_job_environment() {
    let mut root = Cli::command();
    root.build();
    let mut worker = root.find_subcommand("worker").unwrap().clone();
    for help in [worker.render_help(), worker.render_long_help()] {
        let help = help.to_string();
        for variable in [
            "AGENTD_URL",
            "AGENTD_TOKEN",
            "AGENTD_CA_CERT",
            "AGENTD_LEASE_ID",
        ] {
            assert!(help.contains(variable), "{variable} missing in:\n{help}");
        }
    }
}

#[test]
fn durations_and_tags_parse() {
    for (text, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("0s", 0),
    ] {
        assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
    }
    assert!(parse_duration_ms("soon").is_err());
    let bare = parse_duration_ms("60").unwrap_err();
    assert!(bare.contains("no unit") && bare.contains("60s"), "{bare}");
    assert_eq!(
        parse_key_value("gpu=a100"),
        Ok(("gpu".into(), "a100".into()))
    );
    assert!(parse_key_value("=x").is_err());
    assert!(parse_key_value("novalue").is_err());
}

/// `datasets builds`, parsed, as the command it runs (or the refusal).
fn datasets_builds(args: &[&str]) -> anyhow::Result<datasets::BuildsCommand> {
    let cli = Cli::try_parse_from(["agentctl", "datasets", "builds"].iter().chain(args))
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    let Command::Datasets(datasets::DatasetsCommand::Builds {
        command,
        dataset_key,
    }) = cli.command
    else {
        panic!("{args:?} did not parse as datasets builds");
    };
    datasets::builds_command(command, dataset_key)
}

#[test]
fn datasets_builds_refuses_a_dataset_key_before_its_subcommand() {
    use datasets::BuildsCommand;
    // Without a subcommand the key filters the listing; after `list` too.
    for args in [
        &["--dataset-key", "py-v1"][..],
        &["list", "--dataset-key", "py-v1"],
    ] {
        let command = datasets_builds(args).unwrap();
        assert!(
            matches!(&command, BuildsCommand::List { dataset_key: Some(key) } if key == "py-v1"),
            "{args:?}: {command:?}"
        );
    }
    assert!(matches!(
        datasets_builds(&[]).unwrap(),
        BuildsCommand::List { dataset_key: None }
    ));
    // Global options still go anywhere.
    assert!(matches!(
        datasets_builds(&["--json", "list"]).unwrap(),
        BuildsCommand::List { dataset_key: None }
    ));
    // Before a subcommand it would be dropped silently: refused, saying where it goes.
    let error = datasets_builds(&["--dataset-key", "py-v1", "list"])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("agentctl datasets builds list --dataset-key py-v1"),
        "{error}"
    );
    let error = datasets_builds(&["--dataset-key", "py-v1", "show", "bld_1"])
        .unwrap_err()
        .to_string();
    assert!(error.contains("--dataset-key"), "{error}");
}
