//! The command lines users type: `agentctl --help` and `agentd --help` list every command and
//! option. A snapshot, so that a command or option added, renamed or removed shows up in review
//! (`UPDATE_EXPECT=1 cargo test ...` rewrites the expected text).

use agentd_tests::binary;
use expect_test::{expect, Expect};
use std::process::{Command, Stdio};

/// Runs `name --help` with an empty environment (clap shows the values of `AGENTD_*`
/// variables it reads, which would make the text differ between machines) and checks its text.
fn check_help(name: &str, args: &[&str], expected: Expect) {
    let output = Command::new(binary(name))
        .args(args)
        .arg("--help")
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run {name}: {error}"));
    assert!(
        output.status.success(),
        "{name} --help: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Trailing spaces (clap pads the blank lines of long help) are invisible to a reader and
    // would not survive an editor that trims them from the expected text.
    let text: String = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect();
    expected.assert_eq(&text);
}

#[test]
fn agentctl_help_lists_every_command_and_global_option() {
    check_help(
        "agentctl",
        &[],
        expect![[r#"
            agentctl: submit and inspect jobs, run workers (the sandbox and the astgrep.verify built-in), and administer agentd.

            Usage: agentctl [OPTIONS] <COMMAND>

            Commands:
              submit        Submit one job, many from a JSONL file (one payload per line), or a group of episode jobs of one task (--rollouts N)
              jobs          List, show, cancel or retry jobs
              queues        List queues, pause or resume one
              events        Read the event log
              worker        Lease jobs and run a command (`-- ./handle.sh`) or a built-in (`--builtin astgrep.verify`) for each; `--gpus all` runs one slot per GPU
              sandbox       Run one ast-grep action in the sandbox locally and print the result
              verify        Judge an astgrep.verify payload locally, as the worker would, and print the reward (records nothing; for reward functions: `--json`, exit 0 with a verdict, 2 invalid input)
              tokens        Create bearer tokens for the daemon's access control
              ingest        Register a dataset and stream its normalized records (`--meta _meta.json --records x.jsonl`)
              datasets      List datasets, or report counts per dataset, language and split
              state         Show a task's agent state or its update history
              trajectories  Show a task's trajectory, or teacher precision and reward stats
              rollouts      List a task's rollouts, or show one rollout with its steps
              groups        Show a group of rollouts: rewards, mean, standard deviation, advantages
              exports       List recorded exports, show one, or run one now (Parquet for trainers; docs/exports.md)
              schedules     List scheduled exports with their next and last run
              bench         Measure submit throughput, end-to-end jobs/s and latencies against a running daemon
              help          Print this message or the help of the given subcommand(s)

            Options:
                  --url <URL>          Daemon URL, http:// or https:// [env: AGENTD_URL=] [default: http://127.0.0.1:7070]
                  --token <TOKEN>      Bearer token, when the daemon requires one [env: AGENTD_TOKEN]
                  --ca-cert <CA_CERT>  PEM file of the CA that signed the daemon's TLS certificate, for https:// URLs [env: AGENTD_CA_CERT=]
                  --json               Print machine-readable JSON instead of text
              -h, --help               Print help
              -V, --version            Print version
        "#]],
    );
}

#[test]
fn agentd_help_lists_its_commands_and_options() {
    check_help(
        "agentd",
        &[],
        expect![[r#"
            agentd: an event-sourced job queue for code-agent training fleets.

            With no subcommand it runs the daemon: every change is an event in an append-only log under the data directory, answered only once it is on disk.

            Usage: agentd [OPTIONS] [COMMAND]

            Commands:
              bench-export  Benchmark replay (events/s) and a trajectory export (rows/s, MB/s) on a synthetic log, with pyarrow's JSONL-to-Parquet path side by side when --python is given
              restore       Download the log archived at a storage URL ([storage] url), verify it (sha256 against the archive's manifest, every frame's CRC and LSN) and lay it out in --data-dir, which must hold no log yet; `agentd` then starts on it with every record as of the last archived LSN
              replica       Run a read replica: follow the log a primary archives at a storage URL into --data-dir and serve the read-only API from it (jobs, queues, events, tasks, rollouts, datasets, stats, exports); writes answer 405 `read_only_replica` naming the primary, and `GET /healthz` shows the replica's lag
              rebuild       Replay the log into fresh projections and print a digest of each (same log, same digests)
              help          Print this message or the help of the given subcommand(s)

            Options:
                  --data-dir <DATA_DIR>
                      Data directory holding the log and projections [default: ./agentd-data, or the config's server.data_dir]

                      [env: AGENTD_DATA_DIR=]

                  --listen <LISTEN>
                      Address to listen on [default: 127.0.0.1:7070, or the config's server.listen]

                      [env: AGENTD_LISTEN=]

                  --config <CONFIG>
                      TOML config file (see configs/agentd.toml); every key is optional

                      [env: AGENTD_CONFIG=]

                  --insecure-no-auth
                      Serve a non-loopback address without bearer tokens (anyone who can connect may do anything)

              -h, --help
                      Print help (see a summary with '-h')

              -V, --version
                      Print version
        "#]],
    );
}
