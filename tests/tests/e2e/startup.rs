//! How `agentd` refuses to start: one `error: ...` line on stderr with the cause chain, each
//! cause once, exit status 1, and no stack backtrace even under `RUST_BACKTRACE=1`.

use agentd_tests::{binary, write_config};
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `agentd ARGS` with backtraces on; returns (exit code, stderr).
fn start(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary("agentd"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("AGENTD_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `agentd --config CONFIG` on a free port with `DIR/data`.
fn start_with_backtraces(dir: &Path, config: &Path) -> (Option<i32>, String) {
    let data = dir.join("data");
    start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ])
}

fn assert_one_error_without_backtrace(stderr: &str, starts: &str) {
    let error = stderr
        .lines()
        .position(|line| line.starts_with("error: "))
        .map(|start| stderr.lines().skip(start).collect::<Vec<_>>().join("\n"))
        .unwrap_or_else(|| panic!("no `error: ` line in {stderr}"));
    assert!(error.starts_with(starts), "{error}");
    assert_eq!(
        error.matches("TOML parse error").count(),
        1,
        "the TOML error is printed once: {error}"
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "no backtrace: {stderr}"
    );
}

#[test]
fn a_malformed_tokens_file_is_one_error_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "tokens = [ { name = \"ops\", role = \"admin\"\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[auth]\ntokens_file = \"{}\"\n",
            tokens.to_str().unwrap().replace('\\', "\\\\")
        ),
    );
    let (code, stderr) = start_with_backtraces(dir.path(), &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_without_backtrace(
        &stderr,
        &format!(
            "error: invalid tokens file {}: TOML parse error",
            tokens.display()
        ),
    );
}

#[test]
fn a_malformed_config_is_one_error_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[server]\nlisten = 5\n");
    let (code, stderr) = start_with_backtraces(dir.path(), &config);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_without_backtrace(
        &stderr,
        &format!(
            "error: invalid config file {}: TOML parse error",
            config.display()
        ),
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the refusal"
    );
}

/// Runs `agentd --data-dir DATA --listen ADDRESS`.
fn start_on(data: &Path, address: &str) -> (Option<i32>, String) {
    start(&["--data-dir", data.to_str().unwrap(), "--listen", address])
}

#[test]
fn a_taken_port_is_one_error_and_leaves_no_new_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (code, stderr) = start_on(&data, &address);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: cannot listen on {address}")),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "a start refused for its port leaves no data directory it created"
    );

    // An existing data directory is kept as it was.
    std::fs::create_dir_all(&data).unwrap();
    let (code, stderr) = start_on(&data, &address);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(data.is_dir(), "an existing data directory is never removed");
}
