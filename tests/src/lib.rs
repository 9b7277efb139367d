//! Helpers for end-to-end tests: start the real `agentd` on `127.0.0.1:0` with a temp data dir,
//! run the real `agentctl`, kill with SIGKILL, and poll with deadlines (never sleep-and-hope).

use agentd_schemas::api::{DigestResponse, ErrorBody, ProjectionDigests};
use agentd_schemas::{ErrorCode, Lsn};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary built for the same profile as this test.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} is missing: build the binaries first (cargo build --workspace --bins, same profile as the tests)", path.display());
    path
}

/// A running `agentd` process.
pub struct Daemon {
    pub child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// From [`Daemon::start_for_this_process`]: `child` is the shell that owns agentd and the
    /// directory, not agentd itself.
    shared: bool,
}

impl Daemon {
    /// Starts agentd on an ephemeral port and waits until it listens.
    pub fn start(data_dir: &Path, config: Option<&Path>) -> Daemon {
        Daemon::try_start(data_dir, config)
            .unwrap_or_else(|lines| panic!("agentd did not start:\n{}", lines.join("\n")))
    }

    /// Like `start`, but returns agentd's stderr when it exits or never listens.
    pub fn try_start(data_dir: &Path, config: Option<&Path>) -> Result<Daemon, Vec<String>> {
        Daemon::try_start_listening(data_dir, config, "127.0.0.1:0")
    }

    /// Starts agentd on a fixed address (e.g. from [`free_port`]), so that processes holding its
    /// URL (workers) reach it again after a restart.
    pub fn start_on(data_dir: &Path, config: Option<&Path>, listen: SocketAddr) -> Daemon {
        Daemon::try_start_listening(data_dir, config, &listen.to_string()).unwrap_or_else(|lines| {
            panic!("agentd did not start on {listen}:\n{}", lines.join("\n"))
        })
    }

    /// SIGKILL, then start again on the same address with the same data dir and config.
    pub fn restart_on_same_port(&mut self) {
        self.refuse_if_shared("restart_on_same_port");
        let listen = self.listen_addr();
        self.kill9();
        let next = Daemon::start_on(
            &self.data_dir.clone(),
            self.config.clone().as_deref(),
            listen,
        );
        *self = next;
    }

    /// The address the daemon listens on, from its URL.
    pub fn listen_addr(&self) -> SocketAddr {
        self.url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("cannot read an address from {}", self.url))
    }

    fn try_start_listening(
        data_dir: &Path,
        config: Option<&Path>,
        listen: &str,
    ) -> Result<Daemon, Vec<String>> {
        let mut command = Command::new(binary("agentd"));
        command
            .args(daemon_args(data_dir, config, listen))
            .stdin(Stdio::null());
        Daemon::launch(command, data_dir, config)
    }

    /// Starts agentd on an ephemeral port in a fresh directory that lives as long as this test
    /// process, for a fixture that tests share from a `static` (which is never dropped): a
    /// shell between this process and agentd waits on a pipe from this process, and when the
    /// process exits (the pipe closes) it kills agentd with SIGKILL and removes the directory.
    /// [`Daemon::kill9`] (and so dropping it) closes the pipe too; `stop`, `restart` and
    /// `restart_on_same_port` panic on such a daemon (they are for daemons from
    /// [`Daemon::start`] and [`Daemon::start_on`]).
    pub fn start_for_this_process(config_text: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let config = write_config(&dir, config_text);
        let data_dir = dir.join("data");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // A background job of a non-interactive shell reads /dev/null, so agentd never
            // takes the pipe; `read` returns at its end of file. The shell closes its own
            // stderr once agentd runs, so agentd alone holds the pipe `launch` reads: when
            // agentd exits (e.g. at once, on a bad config) the reader sees the end at once
            // instead of waiting out the start timeout.
            .arg(r#"dir=$1; shift; "$@" & daemon=$!; exec 2>&-; read -r _; kill -9 "$daemon"; wait; rm -rf "$dir""#)
            .arg("sh")
            .arg(&dir)
            .arg(binary("agentd"))
            .args(daemon_args(&data_dir, Some(&config), "127.0.0.1:0"))
            .stdin(Stdio::piped());
        Daemon::launch(command, &data_dir, Some(&config))
            .unwrap_or_else(|lines| panic!("agentd did not start:\n{}", lines.join("\n")))
    }

    /// Starts `agentd replica --from FROM` over `data_dir` on an ephemeral port (with `args`
    /// after), and waits until it listens. `stop` and `kill9` work on it; `restart` does not
    /// (it would start a primary).
    pub fn start_replica(data_dir: &Path, from: &str, args: &[&str]) -> Daemon {
        let mut command = Command::new(binary("agentd"));
        command
            .args(["replica", "--from", from, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null());
        Daemon::launch(command, data_dir, None)
            .unwrap_or_else(|lines| panic!("agentd replica did not start:\n{}", lines.join("\n")))
    }

    /// Spawns `command` (agentd, or a shell that runs it) and waits until agentd says where it
    /// listens; on failure returns what it wrote to stderr.
    fn launch(
        mut command: Command,
        data_dir: &Path,
        config: Option<&Path>,
    ) -> Result<Daemon, Vec<String>> {
        command
            .env("AGENTD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn agentd");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = url_tx.send(url);
                }
                sink.lock().unwrap().push(line);
            }
        });
        match url_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(Daemon {
                shared: child.stdin.is_some(),
                child: Some(child),
                url,
                data_dir: data_dir.to_path_buf(),
                config: config.map(Path::to_path_buf),
                stderr: lines,
            }),
            Err(_) => {
                // For the shell of `start_for_this_process`, closing the lifeline makes it kill
                // agentd and remove the kept directory; `child.kill()` would kill only the shell.
                end_with_sigkill(child);
                // Give the reader thread a moment to collect the last lines.
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && Arc::strong_count(&lines) > 1 {
                    std::thread::yield_now();
                }
                let collected = lines.lock().unwrap().clone();
                Err(collected)
            }
        }
    }

    pub fn client(&self) -> agentd_client::Client {
        agentd_client::Client::new(&self.url, None).expect("client")
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.take() {
            end_with_sigkill(child);
        }
    }

    /// Panics on a daemon from [`Daemon::start_for_this_process`]: its child is the shell (its
    /// pid is not agentd's), and its directory is removed once agentd is killed.
    fn refuse_if_shared(&self, what: &str) {
        assert!(
            !self.shared,
            "Daemon::{what} is for daemons from Daemon::start or Daemon::start_on; this one is \
             from Daemon::start_for_this_process (shared by tests, its child is a shell)"
        );
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        self.refuse_if_shared("stop");
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agentd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts on a new port with the same data dir and config.
    pub fn restart(&mut self) {
        self.refuse_if_shared("restart");
        self.kill9();
        let next = Daemon::start(&self.data_dir.clone(), self.config.clone().as_deref());
        *self = next;
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// SIGKILL for agentd, then wait for `child`. A child with a stdin is the shell of
/// [`Daemon::start_for_this_process`]: closing that pipe makes it kill agentd with SIGKILL and
/// remove its directory.
fn end_with_sigkill(mut child: Child) {
    match child.stdin.take() {
        Some(lifeline) => drop(lifeline),
        None => {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}

/// agentd's arguments for a data dir, an optional config and a listen address.
fn daemon_args(data_dir: &Path, config: Option<&Path>, listen: &str) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        data_dir.into(),
        "--listen".into(),
        listen.into(),
    ];
    if let Some(config) = config {
        args.extend(["--config".into(), config.into()]);
    }
    args
}

/// A loopback address with a port that was free a moment ago (the OS picked it for a socket that
/// is closed again), for a daemon that must come back on the same port after a restart. Another
/// process could take it in between; on a test machine that is rare enough.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// Runs `agentctl` against `url` and returns its output.
pub fn agentctl(url: &str, args: &[&str]) -> Output {
    Command::new(binary("agentctl"))
        .arg("--url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agentctl")
}

/// Runs `agentd` with arguments (e.g. `rebuild`) and returns its output.
pub fn agentd(args: &[&str]) -> Output {
    Command::new(binary("agentd"))
        .args(args)
        .env("AGENTD_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run agentd")
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agentd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A fixture file under `tests/fixtures/`, e.g. `fixture("domain/_meta.json")`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

/// A path as an argument for `agentctl` or `agentd`.
pub fn path_text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// What one `agentctl` run printed, and whether it exited 0.
#[derive(Debug)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// Asserts the run succeeded and returns its standard output.
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "agentctl failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

/// Runs `agentctl` against `url` and returns its exit verdict and output as text.
pub fn agentctl_text(url: &str, args: &[&str]) -> CtlOutput {
    let output = agentctl(url, args);
    CtlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `agentctl --json ARGS`, asserts it succeeded, and decodes what it printed as `T`.
pub fn agentctl_typed<T: DeserializeOwned>(url: &str, args: &[&str]) -> T {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    decode(&agentctl_text(url, &all).ok())
}

/// Decodes JSON text as `T`, naming the text when it does not fit.
pub fn decode<T: DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("not a {}: {error}\n{text}", std::any::type_name::<T>()))
}

/// A plain HTTP client, for routes the typed client does not cover, status codes and non-JSON
/// bodies. reqwest is built without a default TLS crypto provider; building an agentd client
/// installs one, so do that first.
pub fn http() -> reqwest::Client {
    agentd_client::Client::new("http://127.0.0.1:1", None).expect("agentd client");
    reqwest::Client::new()
}

/// `GET url+path`: asserts a 2xx answer and returns its body as text.
pub async fn get_text(url: &str, path: &str) -> String {
    let response = http().get(format!("{url}{path}")).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    body
}

/// `GET url+path`: asserts a 2xx answer and decodes its body as `T` (one of the
/// `agentd_schemas` answer types), so a test asserts on fields, not on JSON paths.
pub async fn get_typed<T: DeserializeOwned>(url: &str, path: &str) -> T {
    decode(&get_text(url, path).await)
}

/// `GET url+path` as untyped JSON, for comparing whole answers.
pub async fn get_json(url: &str, path: &str) -> Value {
    get_typed(url, path).await
}

/// `POST url+path` with a JSON body; returns the status and the JSON answer.
pub async fn post_json(url: &str, path: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `POST url+path` that the daemon must refuse with `code` (and the status that code has);
/// returns the error body for further checks of its message.
pub async fn post_refused(url: &str, path: &str, body: Value, code: ErrorCode) -> ErrorBody {
    let (status, answer) = post_json(url, path, body).await;
    let error: ErrorBody = serde_json::from_value(answer.clone())
        .unwrap_or_else(|error| panic!("POST {path}: not an error body: {error}: {answer}"));
    assert_eq!(
        (status, ErrorCode::parse(&error.code)),
        (code.status(), Some(code)),
        "POST {path}: {answer}"
    );
    error
}

/// `GET /v1/admin/digest`, checking that every digest is a hex sha256.
pub async fn digest(url: &str) -> DigestResponse {
    let digest: DigestResponse = get_typed(url, "/v1/admin/digest").await;
    let ProjectionDigests {
        queue,
        jobs,
        datasets,
        agent_state,
        trajectories,
    } = &digest.projections;
    for (name, hex) in [
        ("queue", queue),
        ("jobs", jobs),
        ("datasets", datasets),
        ("agent_state", agent_state),
        ("trajectories", trajectories),
    ] {
        assert!(
            hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{name} is not a sha256: {digest:?}"
        );
    }
    digest
}

/// What `agentd rebuild --json` prints: the LSN it reached and the digests under the names
/// `GET /v1/admin/digest` uses (and more that the tests do not read). The daemon's report type
/// is written, never read, so it has no `Deserialize`.
#[derive(Debug, Deserialize)]
pub struct RebuildReport {
    pub lsn: Lsn,
    #[serde(flatten)]
    pub projections: ProjectionDigests,
}

/// `agentd rebuild --json` of `data_dir` into the fresh directory `out`, with `config` if given;
/// asserts it succeeded.
pub fn rebuild(data_dir: &Path, config: Option<&Path>, out: &Path) -> RebuildReport {
    let mut args = vec!["rebuild"];
    if let Some(config) = config {
        args.extend(["--config", path_text(config)]);
    }
    args.extend([
        "--data-dir",
        path_text(data_dir),
        "--out",
        path_text(out),
        "--json",
    ]);
    let output = agentd(&args);
    assert!(
        output.status.success(),
        "agentd rebuild: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    decode(&String::from_utf8_lossy(&output.stdout))
}

/// Whether process `pid` is alive and not a zombie (a killed orphan waits for init to reap it;
/// it does no work).
pub fn is_running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}
