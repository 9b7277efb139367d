//! `agentctl`: the command-line client of agentd.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // The sandbox re-executes this binary as its confined helper; that must happen before
    // anything else (no runtime, no argument parsing).
    agentd_client::sandbox::maybe_run_internal_helper();
    let cli = agentd_client::cli::Cli::parse();
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
