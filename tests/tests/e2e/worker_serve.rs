//! `agentctl worker --gpus all --episodes-per-gpu 4 --serve '...'` against the real daemon, with
//! a stand-in `nvidia-smi` listing two GPUs and a stand-in model server (a python3 stdlib HTTP
//! server with `/health` and `/gpu`): both servers come up on their ports, 8 jobs run at once,
//! each on its GPU and pointed at that GPU's server; killing one server mid-run gets it
//! restarted and that GPU's running jobs retried, and every job completes exactly once. SIGTERM
//! stops the servers after the drain.

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_tests::{binary, eventually, free_port, is_running};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 16;
const EPISODES_PER_GPU: usize = 4;

/// Two GPUs of one model, in the format the worker's query gets.
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    let script = dir.join("nvidia-smi");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in --query-gpu=*) \
         printf '0, NVIDIA H100 80GB HBM3, 81559, GPU-00000000-0000-0000-0000-000000000000\\n\
         1, NVIDIA H100 80GB HBM3, 81559, GPU-11111111-1111-1111-1111-111111111111\\n';; \
         *) exit 2;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// The stand-in model server: `server.py PORT GPU`; appends its pid to `server-GPU.pids` once it
/// listens.
const SERVER_PY: &str = r#"
import http.server, json, os, sys
port, gpu = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
        elif self.path == "/gpu":
            body = json.dumps({"gpu": gpu, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "server-%s.pids" % gpu), "a") as pids:
    pids.write("%d\n" % os.getpid())
print("stand-in model server for GPU %s on port %d" % (gpu, port), flush=True)
server.serve_forever()
"#;

/// The job: asks its server which GPU it serves, marks `running/JOB-ATTEMPT-GPU`, waits (bounded)
/// for `release`, and prints what it saw.
const JOB_PY: &str = r#"
import json, os, sys, time, urllib.request
sys.stdin.read()
here = os.path.dirname(os.path.abspath(__file__))
url, cuda = os.environ["AGENTD_MODEL_URL"], os.environ["CUDA_VISIBLE_DEVICES"]
answer = json.load(urllib.request.urlopen(url + "/gpu", timeout=10))
started = time.monotonic()
open(os.path.join(here, "running", "%s-%s-%s" % (os.environ["AGENTD_JOB_ID"], os.environ["AGENTD_ATTEMPT"], cuda)), "w").close()
deadline = time.time() + 120
while not os.path.exists(os.path.join(here, "release")) and time.time() < deadline:
    time.sleep(0.05)
print(json.dumps({"cuda": cuda, "url": url, "server_gpu": answer["gpu"], "server_cuda": answer["cuda"],
                  "started": started, "ended": time.monotonic()}))
"#;

/// The worker and every server it started: killed on drop, so a failing test leaves nothing.
struct ServingWorker {
    worker: Option<Child>,
    dir: PathBuf,
}

impl ServingWorker {
    fn server_pids(&self, gpu: u32) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join(format!("server-{gpu}.pids")))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }
}

impl Drop for ServingWorker {
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            let _already_gone = worker.kill();
            let _reaped = worker.wait();
        }
        for gpu in 0..2 {
            for pid in self.server_pids(gpu) {
                let _already_gone = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A base port whose next port was free too, a moment ago.
fn two_free_ports() -> u16 {
    loop {
        let base = free_port().port();
        if base < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", base + 1)).is_ok() {
            return base;
        }
    }
}

fn markers(dir: &Path) -> Vec<(String, u32, String)> {
    std::fs::read_dir(dir.join("running"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let mut parts = name.splitn(3, '-');
            Some((
                parts.next()?.to_string(),
                parts.next()?.parse().ok()?,
                parts.next()?.to_string(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_server_per_gpu_many_episodes_per_gpu_and_a_killed_server_is_restarted() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let root = dir.path().to_path_buf();
    let nvidia_smi = fake_nvidia_smi(&root);
    std::fs::write(root.join("server.py"), SERVER_PY).unwrap();
    std::fs::write(root.join("job.py"), JOB_PY).unwrap();
    std::fs::create_dir(root.join("running")).unwrap();
    let port_base = two_free_ports();
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        let job = client
            .submit(&SubmitJobRequest {
                queue: "serve".into(),
                kind: "episode".into(),
                payload: json!({ "n": n }),
                max_attempts: Some(3),
                ..Default::default()
            })
            .await
            .unwrap();
        jobs.push(job.job_id);
    }
    let stderr_path = root.join("worker.stderr");
    let serve = format!(
        "exec python3 '{}' {{port}} {{gpu}}",
        root.join("server.py").display()
    );
    let worker = Command::new(binary("agentctl"))
        .args([
            "--url",
            &daemon.url,
            "worker",
            "--queue",
            "serve",
            "--gpus",
            "all",
        ])
        .arg("--nvidia-smi")
        .arg(&nvidia_smi)
        .args(["--episodes-per-gpu", &EPISODES_PER_GPU.to_string()])
        .args(["--serve", &serve])
        .args(["--serve-port-base", &port_base.to_string()])
        .args([
            "--serve-check-interval",
            "1s",
            "--serve-ready-timeout",
            "60s",
        ])
        .arg("--serve-log-dir")
        .arg(root.join("logs"))
        .args(["--wait-ms", "500", "--drain-timeout-s", "5", "--json", "--"])
        .arg("python3")
        .arg(root.join("job.py"))
        .stdin(Stdio::null())
        .stdout(File::create(root.join("worker.stdout")).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut rig = ServingWorker {
        worker: Some(worker),
        dir: root.clone(),
    };
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // The first wave: 4 jobs on each GPU at once, all held until released.
    let first_wave = eventually(Duration::from_secs(60), "8 jobs running at once", || {
        let found = markers(&root);
        async move { (found.len() >= 8).then_some(found) }
    })
    .await;
    assert_eq!(first_wave.len(), 8, "more jobs than slots: {first_wave:?}");
    let per_gpu: BTreeMap<&str, usize> =
        first_wave
            .iter()
            .fold(BTreeMap::new(), |mut counts, (_, _, gpu)| {
                *counts.entry(gpu.as_str()).or_default() += 1;
                counts
            });
    assert_eq!(
        per_gpu,
        BTreeMap::from([("0", 4), ("1", 4)]),
        "{first_wave:?}"
    );
    let on_gpu_1: BTreeSet<String> = first_wave
        .iter()
        .filter(|(_, _, gpu)| gpu == "1")
        .map(|(job, _, _)| job.clone())
        .collect();

    // Kill GPU 1's server: it is restarted, and its four jobs are stopped and retried.
    let killed = rig.server_pids(1)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually(
        Duration::from_secs(60),
        "GPU 1's server to be restarted",
        || {
            let restarted = rig.server_pids(1).len() >= 2;
            async move { restarted.then_some(()) }
        },
    )
    .await;
    // GPU 1's slots take jobs again once the new server is ready: four more markers.
    eventually(
        Duration::from_secs(60),
        "GPU 1's slots to run jobs again",
        || {
            let found = markers(&root);
            async move { (found.len() >= 12).then_some(()) }
        },
    )
    .await;
    std::fs::write(root.join("release"), "").unwrap();

    eventually(Duration::from_secs(120), "every job to complete", || {
        let client = client.clone();
        let jobs = jobs.clone();
        async move {
            for job in jobs {
                if client.job(job).await.ok()?.state != JobStateName::Completed {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;

    let mut intervals = Vec::new();
    for job in &jobs {
        let view = client.job(*job).await.unwrap();
        let result: Value = view.result.clone().unwrap();
        let cuda = result["cuda"].as_str().unwrap();
        // Each job saw its GPU, and its URL was that GPU's server.
        assert_eq!(result["server_gpu"], cuda, "{result}");
        assert_eq!(result["server_cuda"], cuda, "{result}");
        let gpu: u16 = cuda.parse().unwrap();
        assert_eq!(
            result["url"],
            format!("http://127.0.0.1:{}", port_base + gpu),
            "{result}"
        );
        let history = view.history.unwrap();
        let completions = history
            .iter()
            .filter(|entry| entry.event == "job_completed")
            .count();
        assert_eq!(completions, 1, "{job} completed {completions} times");
        if on_gpu_1.contains(&job.to_string()) {
            assert!(
                view.attempt >= 2,
                "{job} ran on the killed server but was not retried"
            );
            assert!(
                history.iter().any(|entry| entry.event == "job_failed"
                    && entry.retryable == Some(true)
                    && entry
                        .error
                        .as_deref()
                        .is_some_and(|error| error.contains("model server"))),
                "{history:?}"
            );
        }
        intervals.push((
            result["started"].as_f64().unwrap(),
            result["ended"].as_f64().unwrap(),
        ));
    }
    // Never more than 8 at once among the attempts that completed.
    let most_at_once = intervals
        .iter()
        .map(|(start, _)| {
            intervals
                .iter()
                .filter(|(other_start, other_end)| other_start <= start && start < other_end)
                .count()
        })
        .max()
        .unwrap();
    assert!(most_at_once <= 8, "{most_at_once} jobs ran at once");

    let text = stderr();
    assert!(text.contains("with 8 slot(s)"), "{text}");
    for gpu in 0..2 {
        assert!(
            text.contains(&format!("model server of GPU {gpu}: ready")),
            "{text}"
        );
    }
    assert!(text.contains("model server of GPU 1: exited"), "{text}");
    let log = std::fs::read_to_string(root.join("logs/gpu1.log")).unwrap();
    assert_eq!(
        log.matches("stand-in model server for GPU 1").count(),
        2,
        "{log}"
    );

    // SIGTERM: the worker drains, then stops both servers and exits 0.
    let mut worker = rig.worker.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not stop: {}",
            stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{}", stderr());
    assert!(
        stderr().contains("stopping 2 model server(s)"),
        "{}",
        stderr()
    );
    for gpu in 0..2 {
        for pid in rig.server_pids(gpu) {
            assert!(
                !is_running(pid),
                "server {pid} of GPU {gpu} outlived the worker"
            );
        }
    }
}
