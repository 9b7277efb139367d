//! GPU discovery for `agentctl worker --gpus`, on recorded and constructed `nvidia-smi` answers
//! (`fixtures/nvidia-smi/README.md` says which is which): parsing, selection, the tags a worker
//! advertises, the environment of each slot, and the errors a machine without GPUs gets.

use agentd_client::gpu::{
    self, auto_tags, merge_tags, parse_query_gpu, select, GpuError, GpuInfo, GpuSelection,
};
use agentd_schemas::events::Tags;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nvidia-smi")
        .join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn env_of(slot: &agentd_client::worker::Slot, key: &str) -> String {
    slot.env
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("{key} not set in {slot:?}"))
}

#[test]
fn recorded_single_h100_parses_into_one_slot_and_tags() {
    let gpus = parse_query_gpu(&fixture("h100x1.csv")).unwrap();
    assert_eq!(
        gpus,
        [GpuInfo {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: Some(81_559),
            uuid: "GPU-b52da589-e2aa-3be0-a71a-3b4ddee4e448".into(),
        }]
    );
    assert_eq!(
        auto_tags(&gpus).unwrap(),
        tags(&[("gpu", "H100"), ("gpu_count", "1"), ("gpu_mem_gib", "80")])
    );
    let slots = gpu::slots(&gpus);
    assert_eq!(slots.len(), 1);
    assert_eq!(env_of(&slots[0], "CUDA_VISIBLE_DEVICES"), "0");
    assert_eq!(env_of(&slots[0], "CUDA_DEVICE_ORDER"), "PCI_BUS_ID");
    assert_eq!(
        env_of(&slots[0], "AGENTD_GPU_UUID"),
        "GPU-b52da589-e2aa-3be0-a71a-3b4ddee4e448"
    );
}

#[test]
fn eight_gpus_give_eight_slots_each_with_its_own_device() {
    let gpus = parse_query_gpu(&fixture("h100x8.csv")).unwrap();
    assert_eq!(gpus.len(), 8);
    let all = select(&gpus, &GpuSelection::All).unwrap();
    let devices: Vec<String> = gpu::slots(&all)
        .iter()
        .map(|slot| env_of(slot, "CUDA_VISIBLE_DEVICES"))
        .collect();
    assert_eq!(devices, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(auto_tags(&all).unwrap()["gpu_count"], "8");

    let some = select(&gpus, &"6,2".parse().unwrap()).unwrap();
    let slots = gpu::slots(&some);
    assert_eq!(
        slots.iter().map(|slot| slot.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(env_of(&slots[0], "CUDA_VISIBLE_DEVICES"), "6");
    assert_eq!(env_of(&slots[1], "CUDA_VISIBLE_DEVICES"), "2");
    assert_eq!(env_of(&slots[1], "AGENTD_GPU_UUID"), gpus[2].uuid);
    assert_eq!(auto_tags(&some).unwrap()["gpu_count"], "2");

    let error = select(&gpus, &"8".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("GPU 8 does not exist") && error.contains("7: NVIDIA H100"),
        "{error}"
    );
}

#[test]
fn odd_lines_crlf_unknown_memory_units_and_commas_in_names_parse() {
    let gpus = parse_query_gpu(&fixture("a100_odd.csv")).unwrap();
    let summary: Vec<(u32, &str, Option<u64>)> = gpus
        .iter()
        .map(|gpu| (gpu.index, gpu.name.as_str(), gpu.memory_total_mib))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "NVIDIA A100-SXM4-40GB", Some(40_960)),
            (1, "NVIDIA A100-SXM4-40GB", None),
            (2, "NVIDIA A100-SXM4-40GB", Some(40_960)),
            (3, "NVIDIA A100, Custom, Edition", Some(40_960)),
        ]
    );
    assert!(gpus.iter().all(|gpu| !gpu.uuid.ends_with('\r')));
    // One GPU's memory is unknown: no memory tag rather than a wrong one.
    assert_eq!(
        auto_tags(&gpus).unwrap(),
        tags(&[("gpu", "A100"), ("gpu_count", "4")])
    );
    let known = select(&gpus, &"0,2".parse().unwrap()).unwrap();
    assert_eq!(auto_tags(&known).unwrap()["gpu_mem_gib"], "40");
}

#[test]
fn garbage_is_refused_with_the_line_that_did_not_parse() {
    for (name, expected) in [
        ("driver_failure.txt", "line 1"),
        ("with_header.csv", "index is not a number"),
    ] {
        let error = parse_query_gpu(&fixture(name)).unwrap_err();
        assert!(matches!(error, GpuError::Parse { .. }), "{name}: {error}");
        assert!(error.to_string().contains(expected), "{name}: {error}");
    }
    for (text, expected) in [
        ("0, NVIDIA H100, lots, GPU-1", "not a number of MiB"),
        (
            "0, NVIDIA H100, 1, GPU-1\n0, NVIDIA H100, 1, GPU-2",
            "index listed twice",
        ),
        ("x, NVIDIA H100, 1, GPU-1", "index is not a number"),
        ("0, , 1, GPU-1", "empty GPU name"),
        ("0, NVIDIA H100, 1, ", "malformed uuid"),
        (
            "\u{0}\u{1}binary",
            "expected `index, name, memory.total, uuid`",
        ),
    ] {
        let error = parse_query_gpu(text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    assert_eq!(parse_query_gpu(&fixture("empty.csv")).unwrap(), []);
    assert!(matches!(
        select(&[], &GpuSelection::All),
        Err(GpuError::NoGpus)
    ));
}

#[test]
fn mixed_models_get_no_guessed_gpu_tag_and_user_tags_win() {
    let gpus = parse_query_gpu(&fixture("mixed.csv")).unwrap();
    let error = auto_tags(&gpus).unwrap_err().to_string();
    assert!(
        error.contains("A100, H100") && error.contains("one worker per model"),
        "{error}"
    );
    let h100 = select(&gpus, &"0".parse().unwrap()).unwrap();
    let merged = merge_tags(
        auto_tags(&h100).unwrap(),
        &tags(&[("gpu", "H100-SXM"), ("zone", "a")]),
    );
    assert_eq!(
        merged,
        tags(&[
            ("gpu", "H100-SXM"),
            ("gpu_count", "1"),
            ("gpu_mem_gib", "80"),
            ("zone", "a")
        ])
    );
}

/// A fake nvidia-smi: a script that prints `stdout` and exits with `code`, after checking it
/// was asked the query the parser expects.
fn fake_nvidia_smi(dir: &Path, stdout: &str, code: i32) -> PathBuf {
    let data = dir.join("answer.txt");
    std::fs::write(&data, stdout).unwrap();
    let script = dir.join("nvidia-smi");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"{} {}\" ] || {{ echo \"unexpected arguments: $*\" >&2; exit 99; }}\ncat '{}'\nexit {code}\n",
            gpu::NVIDIA_SMI_ARGS[0],
            gpu::NVIDIA_SMI_ARGS[1],
            data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn discovery_runs_nvidia_smi_and_says_clearly_when_there_are_no_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let good = fake_nvidia_smi(dir.path(), &fixture("h100x8.csv"), 0);
    let gpus = gpu::discover(good.to_str().unwrap()).await.unwrap();
    assert_eq!(gpus.len(), 8);

    let missing = gpu::discover("/nonexistent/nvidia-smi").await.unwrap_err();
    assert!(matches!(missing, GpuError::NvidiaSmiMissing { .. }));
    let message = missing.to_string();
    assert!(
        message.contains("needs NVIDIA GPUs")
            && message.contains("not found")
            && message.contains("without --gpus"),
        "{message}"
    );

    let failing_dir = tempfile::tempdir().unwrap();
    let failing = fake_nvidia_smi(failing_dir.path(), &fixture("driver_failure.txt"), 9);
    let message = gpu::discover(failing.to_str().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("couldn't communicate with the NVIDIA driver") && message.contains("9"),
        "{message}"
    );

    let empty_dir = tempfile::tempdir().unwrap();
    let empty = fake_nvidia_smi(empty_dir.path(), "", 0);
    assert!(matches!(
        gpu::discover(empty.to_str().unwrap()).await,
        Err(GpuError::NoGpus)
    ));
}
