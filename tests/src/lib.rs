//! Helpers for end-to-end tests: start the real `agentd` on `127.0.0.1:0` with a temp data dir,
//! run the real `agentctl`, kill with SIGKILL, and poll with deadlines (never sleep-and-hope).

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
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(listen);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .env("AGENTD_LOG", "warn")
            .stdin(Stdio::null())
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
                child: Some(child),
                url,
                data_dir: data_dir.to_path_buf(),
                config: config.map(Path::to_path_buf),
                stderr: lines,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
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
