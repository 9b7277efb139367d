//! `agentctl`: the command-line client of agentd.

use agentd_client::cli::{verify, Cli, Command};
use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    // The sandbox re-executes this binary as its confined helper; that must happen before
    // anything else (no runtime, no argument parsing).
    agentd_client::sandbox::maybe_run_internal_helper();
    // `Cli::parse()`, keeping the matches: `verify` needs to know where its `--url` came from.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.format(&mut Cli::command()).exit(),
    };
    // `verify` is started once per completion by reward functions: no multi-threaded runtime,
    // and exit statuses of its own (2: invalid input, 1: no verdict).
    if let Command::Verify(args) = cli.command {
        return verify::main(verify::keep_url_from_command_line(args, &matches), cli.json);
    }
    // Commands that only print (`jobs list | head`) die quietly on a closed pipe, like other
    // Unix tools, instead of panicking in `println!`. Not the worker, the sandbox or the bench:
    // they write to their children's pipes and must see EPIPE as an error, not die of it.
    if !matches!(
        cli.command,
        Command::Worker(_) | Command::Sandbox(_) | Command::Bench(_)
    ) {
        die_quietly_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentctl: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agentd_client::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentctl: {}", agentd_client::cli::error_report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Restores the default action of SIGPIPE (termination), which Rust's runtime sets to ignored.
#[allow(unsafe_code)]
fn die_quietly_on_closed_stdout() {
    // SAFETY: installs the default disposition for one signal before any thread or child
    // exists; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
