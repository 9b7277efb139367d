//! `agentctl worker --gpus` against the real daemon, with a stand-in `nvidia-smi` that answers
//! with a recorded-format 8-GPU listing (`client/tests/fixtures/nvidia-smi/h100x8.csv`): one
//! slot per GPU, each job's process sees its own `CUDA_VISIBLE_DEVICES`, the auto tags route
//! jobs that require them, and a machine without nvidia-smi gets a clear refusal. The same flow
//! was run on a real H100 machine (`docs/gpu.md`, `scripts/gpu-smoke`).

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_tests::{agentctl, binary};
use serde_json::json;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const GPUS: usize = 8;

/// A stand-in nvidia-smi printing the 8-GPU fixture for the query the worker runs.
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../client/tests/fixtures/nvidia-smi/h100x8.csv");
    let script = dir.join("nvidia-smi");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in --query-gpu=*) cat '{}';; *) exit 2;; esac\n",
            fixture.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn tags(pairs: &[(&str, &str)]) -> Option<agentd_schemas::events::Tags> {
    Some(
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    )
}

#[tokio::test]
async fn one_slot_per_gpu_each_job_on_its_own_device_routed_by_auto_tags() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let nvidia_smi = fake_nvidia_smi(dir.path());
    let barrier = dir.path().join("barrier");
    std::fs::create_dir(&barrier).unwrap();
    let mut jobs = Vec::new();
    for n in 0..GPUS {
        let job = client
            .submit(&SubmitJobRequest {
                queue: "gpu".into(),
                kind: "probe".into(),
                payload: json!({ "n": n }),
                tags: tags(&[("gpu", "H100"), ("gpu_mem_gib", "80")]),
                max_attempts: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        jobs.push(job.job_id);
    }
    let elsewhere = client
        .submit(&SubmitJobRequest {
            queue: "gpu".into(),
            kind: "probe".into(),
            payload: json!({}),
            tags: tags(&[("gpu", "A100")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    // Each job marks its device, then waits (bounded) until all 8 are marked: so all 8 run at
    // once, and their devices must all differ.
    let script = format!(
        "cat >/dev/null; touch '{dir}/'\"$CUDA_VISIBLE_DEVICES\"; i=0; \
         while [ $(ls '{dir}' | wc -l) -lt {GPUS} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; \
         echo \"$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER $AGENTD_SLOT $AGENTD_GPU_UUID\"",
        dir = barrier.display()
    );
    let output = Command::new(binary("agentctl"))
        .args([
            "--url",
            &daemon.url,
            "worker",
            "--queue",
            "gpu",
            "--gpus",
            "all",
        ])
        .arg("--nvidia-smi")
        .arg(&nvidia_smi)
        .args([
            "--tag",
            "zone=test",
            "--max-jobs",
            "8",
            "--wait-ms",
            "1000",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("with 8 slot(s), tags [gpu=H100 gpu_count=8 gpu_mem_gib=80 zone=test]"),
        "{stderr}"
    );
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../client/tests/fixtures/nvidia-smi/h100x8.csv"),
    )
    .unwrap();
    let mut devices = BTreeSet::new();
    for job in jobs {
        let view = client.job(job).await.unwrap();
        assert_eq!(view.state, JobStateName::Completed, "{:?}", view.last_error);
        let line = view.result.unwrap().as_str().unwrap().to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[1], "PCI_BUS_ID");
        // The UUID is the one nvidia-smi gave for that index.
        let listed = fixture
            .lines()
            .find(|row| row.starts_with(&format!("{}, ", fields[0])))
            .unwrap();
        assert!(listed.ends_with(fields[3]), "{line} vs {listed}");
        devices.insert(fields[0].to_string());
    }
    let expected: BTreeSet<String> = (0..GPUS).map(|index| index.to_string()).collect();
    assert_eq!(devices, expected);
    assert_eq!(
        client.job(elsewhere).await.unwrap().state,
        JobStateName::Queued,
        "a job requiring an A100 must not run on the H100 worker"
    );
}

#[test]
fn gpus_on_a_machine_without_nvidia_smi_fail_with_a_clear_message() {
    let output = agentctl(
        "http://127.0.0.1:9",
        &[
            "worker",
            "--queue",
            "q",
            "--gpus",
            "all",
            "--nvidia-smi",
            "/nonexistent/nvidia-smi",
            "--",
            "true",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--gpus needs NVIDIA GPUs") && stderr.contains("was not found"),
        "{stderr}"
    );
    let output = agentctl(
        "http://127.0.0.1:9",
        &["worker", "--queue", "q", "--gpus", "zero", "--", "true"],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected `all` or GPU indices"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
