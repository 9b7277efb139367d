use super::*;
use crate::cli::Cli;
use crate::worker::ServerStatus;
use clap::Parser;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(["agentctl", "worker", "--queue", "q"].iter().chain(args))
}

#[test]
fn serve_and_episodes_per_gpu_need_gpus() {
    for args in [
        &["--serve", "vllm --port {port}", "--", "true"][..],
        &["--episodes-per-gpu", "4", "--", "true"][..],
        &["--gpus", "all", "--concurrency", "4", "--", "true"][..],
    ] {
        let error = parse(args).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                clap::error::ErrorKind::MissingRequiredArgument
                    | clap::error::ErrorKind::ArgumentConflict
            ),
            "{args:?}: {error}"
        );
    }
    assert!(parse(&[
        "--gpus",
        "all",
        "--episodes-per-gpu",
        "4",
        "--serve",
        "x",
        "--",
        "true"
    ])
    .is_ok());
}

#[test]
fn episodes_per_gpu_share_their_gpus_environment_and_server() {
    let (_status, server) = watch::channel(ServerStatus::default());
    let gpu_slots = vec![
        Slot {
            index: 0,
            env: vec![("CUDA_VISIBLE_DEVICES".into(), "6".into())],
            server: Some(server),
            actor: None,
        },
        Slot {
            index: 1,
            env: vec![("CUDA_VISIBLE_DEVICES".into(), "2".into())],
            server: None,
            actor: None,
        },
    ];
    let slots = with_episodes_per_gpu(gpu_slots, 3);
    let seen: Vec<(usize, &str, bool)> = slots
        .iter()
        .map(|slot| (slot.index, slot.env[0].1.as_str(), slot.server.is_some()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (0, "6", true),
            (1, "6", true),
            (2, "6", true),
            (3, "2", false),
            (4, "2", false),
            (5, "2", false),
        ]
    );
}

#[test]
fn complete_batch_max_is_one_by_default_and_at_most_the_routes_limit() {
    let batch_max = |args: &[&str]| match parse(args).map(|cli| cli.command) {
        Ok(crate::cli::Command::Worker(worker)) => Ok(worker.complete_batch_max),
        Ok(other) => panic!("not a worker: {other:?}"),
        Err(error) => Err(error.kind()),
    };
    assert_eq!(batch_max(&["--", "true"]), Ok(1));
    assert_eq!(
        batch_max(&["--complete-batch-max", "8", "--", "true"]),
        Ok(8)
    );
    assert_eq!(
        batch_max(&["--complete-batch-max", "10000", "--", "true"]),
        Ok(10_000)
    );
    for refused in ["0", "10001"] {
        assert_eq!(
            batch_max(&["--complete-batch-max", refused, "--", "true"]),
            Err(clap::error::ErrorKind::ValueValidation),
            "{refused}"
        );
    }
}
