//! Hostile and ordinary sandbox runs: each must end in the expected outcome within its limits,
//! and leave the host as it was (no surviving process, no file outside the workspace, no
//! connection made). Limits are small so that the whole file runs in seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use agentd_sandbox::{
    apply_action_in_memory, unified_diff, CgroupMode, SandboxLimits, SandboxRun, SandboxSpec,
};
use agentd_schemas::events::{Action, SandboxOutcome};

/// The sandbox's apply helper re-executes this test binary and lands here.
#[test]
fn agentd_sandbox_internal_helper() {
    agentd_sandbox::maybe_run_internal_helper();
}

/// A real python3 executable (not a pyenv shim script, which needs the environment we strip).
fn python() -> PathBuf {
    let system = Path::new("/usr/bin/python3");
    if system.exists() {
        return system.to_path_buf();
    }
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 must be installed for the sandbox tests");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn test_limits() -> SandboxLimits {
    SandboxLimits {
        cpu_cores: 1,
        cpu_time_s: 10,
        memory_bytes: 512 * 1024 * 1024,
        wall_time_ms: 10_000,
        processes_max: 32,
        output_bytes_max: 64 * 1024,
        allowed_binaries: vec![python().to_string_lossy().into_owned()],
        ..SandboxLimits::default()
    }
}

/// A unique token, to find a run's processes and files on the host afterwards.
fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("agentd-{label}-{}-{nanos}", std::process::id())
}

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(path, content)| (path.to_string(), content.to_string()))
        .collect()
}

fn print_to_logger() -> Action {
    Action::Pattern {
        language: "python".to_string(),
        pattern: "print($A)".to_string(),
        rewrite: "logger.info($A)".to_string(),
    }
}

fn matches_nothing() -> Action {
    Action::Pattern {
        language: "python".to_string(),
        pattern: "no_such_function($A)".to_string(),
        rewrite: "other($A)".to_string(),
    }
}

/// Runs a python script as the test command; `extra_args` land in its `sys.argv`.
fn run_python(script: &str, extra_args: &[&str], limits: &SandboxLimits) -> SandboxRun {
    let mut argv = vec![
        python().to_string_lossy().into_owned(),
        "-c".to_string(),
        script.to_string(),
    ];
    argv.extend(extra_args.iter().map(|a| a.to_string()));
    let spec = SandboxSpec {
        files: files(&[("app.py", "x = 1\n")]),
        action: matches_nothing(),
        test_command: Some(argv),
        keep_workspace: false,
        protected_paths: Default::default(),
        test_env: Vec::new(),
    };
    let started = Instant::now();
    let run = agentd_sandbox::run(&spec, limits).unwrap();
    eprintln!(
        "outcome={:?} exit={:?} run.duration_ms={} measured_ms={} peak_rss={:?}",
        run.outcome,
        run.exit_code,
        run.duration_ms,
        started.elapsed().as_millis(),
        run.peak_rss_bytes
    );
    run
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn infinite_loop_is_killed_at_the_wall_clock_limit() {
    let limits = SandboxLimits {
        wall_time_ms: 2_000,
        ..test_limits()
    };
    let run = run_python("while True: pass", &[], &limits);
    assert_eq!(run.outcome, SandboxOutcome::TimedOut, "{run:#?}");
    assert!(
        run.duration_ms >= 1_900 && run.duration_ms < 5_000,
        "{run:#?}"
    );
    assert!(run.stderr.contains("wall time limit"), "{}", run.stderr);
}

const FORK_BOMB: &str = "
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
";

#[test]
fn fork_bomb_is_contained_by_the_cgroup() {
    let marker = unique("forkbomb");
    let limits = SandboxLimits {
        wall_time_ms: 3_000,
        cgroup: CgroupMode::Required,
        ..test_limits()
    };
    let run = run_python(FORK_BOMB, &[&marker], &limits);
    assert!(
        matches!(
            run.outcome,
            SandboxOutcome::TimedOut | SandboxOutcome::Failed
        ),
        "{run:#?}"
    );
    assert!(processes_with(&marker).is_empty(), "fork bomb survived");
}

#[test]
fn fork_bomb_is_contained_without_a_cgroup() {
    let marker = unique("forkbomb-nocg");
    let limits = SandboxLimits {
        wall_time_ms: 3_000,
        cgroup: CgroupMode::Off,
        // Without a cgroup, RLIMIT_NPROC counts per user: a user of its own keeps the other
        // tests' processes (running as `nobody`) out of this fork bomb's budget and back.
        unprivileged_uid: 65_533,
        ..test_limits()
    };
    let run = run_python(FORK_BOMB, &[&marker], &limits);
    assert!(
        matches!(
            run.outcome,
            SandboxOutcome::TimedOut | SandboxOutcome::Failed
        ),
        "{run:#?}"
    );
    assert!(processes_with(&marker).is_empty(), "fork bomb survived");
}

#[test]
fn process_escaping_its_session_is_killed_with_the_cgroup() {
    let marker = unique("escapee");
    let script = "
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    sys.exit(0)
print('parent done')
";
    let limits = SandboxLimits {
        cgroup: CgroupMode::Required,
        ..test_limits()
    };
    let run = run_python(script, &[&marker], &limits);
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    assert!(
        processes_with(&marker).is_empty(),
        "escaped daemon survived"
    );
}

#[test]
fn memory_hog_is_killed_oom() {
    let limits = SandboxLimits {
        memory_bytes: 256 * 1024 * 1024,
        ..test_limits()
    };
    let script = "
chunks = []
while True:
    chunks.append(bytearray(16 * 1024 * 1024))
";
    let run = run_python(script, &[], &limits);
    assert_eq!(run.outcome, SandboxOutcome::KilledOom, "{run:#?}");
    assert!(run.stderr.contains("MemoryError"), "{}", run.stderr);
}

#[test]
fn task_path_escaping_the_workspace_is_rejected() {
    let outside = unique("escape-path");
    for path in [
        "../x".to_string(),
        format!("../{outside}"),
        "/tmp/abs.py".to_string(),
    ] {
        let spec = SandboxSpec {
            files: files(&[(path.as_str(), "x = 1\n")]),
            action: print_to_logger(),
            test_command: None,
            keep_workspace: false,
            protected_paths: Default::default(),
            test_env: Vec::new(),
        };
        let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
        assert_eq!(run.outcome, SandboxOutcome::Rejected, "{path}: {run:#?}");
        assert!(run.rejected_reason.is_some());
    }
    assert!(!std::env::temp_dir().join(&outside).exists());
}

#[test]
fn test_command_cannot_write_outside_the_workspace() {
    let outside = std::env::temp_dir().join(unique("outside"));
    let script = "
import sys
try:
    open(sys.argv[1], 'w').write('pwned')
    print('WROTE')
except OSError as error:
    print('BLOCKED', error.errno)
    sys.exit(3)
";
    let run = run_python(script, &[outside.to_str().unwrap()], &test_limits());
    assert!(!outside.exists(), "the sandbox wrote {}", outside.display());
    assert_eq!(run.outcome, SandboxOutcome::Failed, "{run:#?}");
    assert!(
        run.stdout.contains("BLOCKED 30"),
        "expected EROFS: {}",
        run.stdout
    );
}

#[test]
fn test_command_can_write_inside_its_workspace() {
    let script = "
open('out.txt', 'w').write('fine')
print(open('out.txt').read())
";
    let run = run_python(script, &[], &test_limits());
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    assert!(run.stdout.contains("fine"));
}

/// What the verifier relies on: the task's test files are out of the test command's reach,
/// and an action's change to one is reported but never written.
#[test]
fn protected_files_cannot_be_written_replaced_or_chmodded_by_the_test_command() {
    let script = r##"
import os
def attempt(name, action):
    try:
        action()
        print(name, "ALLOWED")
    except OSError as error:
        print(name, "DENIED", error.errno)
attempt("write", lambda: open("test_app.py", "a").write("x = 1\n"))
attempt("chmod", lambda: os.chmod("test_app.py", 0o666))
attempt("unlink", lambda: os.unlink("test_app.py"))
attempt("rename", lambda: os.rename("test_app.py", "moved.py"))
attempt("rename-dir", lambda: os.rename("tests", "tests-moved"))
attempt("write-nested", lambda: open("tests/t.py", "w").write("pass\n"))
attempt("scratch", lambda: open("scratch.txt", "w").write("ok"))
attempt("scratch-nested", lambda: open("tests/scratch.txt", "w").write("ok"))
attempt("own-file", lambda: open("app.py", "a").write("# mine\n"))
print("TEST_APP", open("test_app.py").read().strip())
"##;
    let mut argv = vec![python().to_string_lossy().into_owned(), "-c".to_string()];
    argv.push(script.to_string());
    let spec = SandboxSpec {
        files: files(&[
            ("app.py", "print('app')\n"),
            ("test_app.py", "print('original test')\n"),
            ("tests/t.py", "x = 1\n"),
        ]),
        action: print_to_logger(),
        test_command: Some(argv),
        keep_workspace: false,
        protected_paths: ["test_app.py", "tests/t.py"].map(String::from).into(),
        test_env: Vec::new(),
    };
    let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
    if !nix::unistd::geteuid().is_root() {
        // Without the switch to an unprivileged user nothing keeps the files out of reach.
        assert_eq!(run.outcome, SandboxOutcome::Rejected, "{run:#?}");
        return;
    }
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    for denied in [
        "write",
        "chmod",
        "unlink",
        "rename",
        "rename-dir",
        "write-nested",
    ] {
        assert!(
            run.stdout.contains(&format!("{denied} DENIED")),
            "{denied}: {}",
            run.stdout
        );
    }
    for allowed in ["scratch", "scratch-nested", "own-file"] {
        assert!(
            run.stdout.contains(&format!("{allowed} ALLOWED")),
            "{allowed}: {}",
            run.stdout
        );
    }
    // The action's change to the test file is in the diff, but the test ran the original.
    assert!(
        run.stdout.contains("TEST_APP print('original test')"),
        "{}",
        run.stdout
    );
    assert_eq!(run.files_changed, ["app.py", "test_app.py"]);
    assert_eq!(run.protected_changed, ["test_app.py"]);
    assert!(
        run.diff.contains("+logger.info('original test')"),
        "{}",
        run.diff
    );
}

#[test]
fn network_is_unreachable_inside_the_sandbox() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let script = "
import socket, sys
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)
    print('CONNECTED')
except OSError as error:
    print('BLOCKED', error)
    sys.exit(3)
";
    let run = run_python(script, &[&port], &test_limits());
    assert_eq!(run.outcome, SandboxOutcome::Failed, "{run:#?}");
    assert!(run.stdout.contains("BLOCKED"), "{}", run.stdout);
    let accepted = listener.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the sandbox reached the host: {accepted:?}"
    );
}

#[test]
fn stdout_flood_is_truncated_and_counted() {
    let script = "
import sys
chunk = 'x' * 1_000_000
for _ in range(10):
    sys.stdout.write(chunk)
sys.stdout.flush()
";
    let limits = test_limits();
    let run = run_python(script, &[], &limits);
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{}", run.stderr);
    assert_eq!(run.stdout_bytes, 10_000_000);
    assert_eq!(run.stdout.len(), limits.output_bytes_max);
    assert!(run.duration_ms < 5_000, "{}", run.duration_ms);
}

#[test]
fn rule_matching_nothing_gives_an_empty_diff() {
    let spec = SandboxSpec {
        files: files(&[("app.py", "x = 1\n")]),
        action: Action::Rule {
            yaml:
                "id: none\nlanguage: python\nrule:\n  pattern: never_called($A)\nfix: other($A)\n"
                    .to_string(),
        },
        test_command: None,
        keep_workspace: false,
        protected_paths: Default::default(),
        test_env: Vec::new(),
    };
    let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    assert_eq!(run.diff, "");
    assert!(run.files_changed.is_empty());
}

#[test]
fn valid_rewrite_shows_in_the_diff_and_the_tests_see_it() {
    let before = files(&[
        (
            "app.py",
            "import logging\nlogger = logging.getLogger()\nprint(x)\n",
        ),
        ("test_app.py", "import app\n"),
    ]);
    let spec = SandboxSpec {
        files: before.clone(),
        action: print_to_logger(),
        test_command: Some(vec![
            python().to_string_lossy().into_owned(),
            "-c".to_string(),
            "print(open('app.py').read()); print('TESTS passed=1 failed=0')".to_string(),
        ]),
        keep_workspace: false,
        protected_paths: Default::default(),
        test_env: Vec::new(),
    };
    let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
    let gold = unified_diff(
        &before,
        &apply_action_in_memory(&before, &print_to_logger()).unwrap(),
    );
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    assert_eq!(run.diff, gold);
    assert!(
        run.diff.contains("-print(x)\n+logger.info(x)\n"),
        "{}",
        run.diff
    );
    assert_eq!(run.files_changed, ["app.py"]);
    assert!(run.stdout.contains("logger.info(x)"));
    assert_eq!((run.tests_passed, run.tests_failed), (Some(1), Some(0)));
}

#[test]
fn invalid_rule_is_rejected() {
    let spec = SandboxSpec {
        files: files(&[("app.py", "x = 1\n")]),
        action: Action::Rule {
            yaml: "id: bad\nlanguage: python\nrule:\n  pattern: print($A)\n".to_string(),
        },
        test_command: None,
        keep_workspace: false,
        protected_paths: Default::default(),
        test_env: Vec::new(),
    };
    let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Rejected, "{run:#?}");
    assert!(run.rejected_reason.unwrap().contains("fix"));
}

/// Set in the copy of this binary that runs without CAP_SYS_ADMIN.
const DEPRIVILEGED_ENV: &str = "AGENTD_SANDBOX_TEST_DEPRIVILEGED";

/// When the kernel refuses a namespace, the sandbox refuses to run rather than run exposed.
/// The test re-runs itself under `setpriv` without CAP_SYS_ADMIN, where `unshare` fails.
#[test]
fn refused_namespaces_fail_closed() {
    if std::env::var_os(DEPRIVILEGED_ENV).is_some() {
        let run = run_python("print('ran')", &[], &test_limits());
        assert_eq!(run.outcome, SandboxOutcome::Rejected, "{run:#?}");
        let reason = run.rejected_reason.unwrap_or_default();
        assert!(reason.contains("network isolation unavailable"), "{reason}");

        let network_optional = SandboxLimits {
            require_network_isolation: false,
            ..test_limits()
        };
        let run = run_python("print('ran')", &[], &network_optional);
        assert_eq!(run.outcome, SandboxOutcome::Rejected, "{run:#?}");
        let reason = run.rejected_reason.unwrap_or_default();
        assert!(
            reason.contains("filesystem isolation unavailable"),
            "{reason}"
        );

        let unconfined = SandboxLimits {
            read_only_host_filesystem: false,
            ..network_optional
        };
        let run = run_python("print('ran')", &[], &unconfined);
        assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
        assert!(run.stdout.contains("ran"));
        return;
    }
    let this_test = "refused_namespaces_fail_closed";
    let status = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"])
        .arg(std::env::current_exe().unwrap())
        .args([this_test, "--exact", "--nocapture", "--test-threads=1"])
        .env(DEPRIVILEGED_ENV, "1")
        .status()
        .expect("setpriv (util-linux) is needed to drop CAP_SYS_ADMIN");
    assert!(status.success(), "the deprivileged run failed: {status}");
}

#[test]
fn disallowed_binaries_are_rejected() {
    let commands: [&[&str]; 4] = [
        &["curl", "http://127.0.0.1/"],
        &["/bin/sh", "-c", "true"],
        &["./app.py"],
        &[],
    ];
    for argv in commands {
        let spec = SandboxSpec {
            files: files(&[("app.py", "x = 1\n")]),
            action: print_to_logger(),
            test_command: Some(argv.iter().map(|a| a.to_string()).collect()),
            keep_workspace: false,
            protected_paths: Default::default(),
            test_env: Vec::new(),
        };
        let run = agentd_sandbox::run(&spec, &test_limits()).unwrap();
        assert_eq!(run.outcome, SandboxOutcome::Rejected, "{argv:?}: {run:#?}");
        assert!(run.rejected_reason.is_some());
    }
}
