//! Exports, dataset builds, schedules and replay-to-rebuild through the real binaries: ingest and
//! record steps, export incrementally with `agentctl exports run`, build a dataset, then two
//! offline `agentd rebuild --out` runs must re-create every recorded export byte for byte (and
//! each other); `--until-lsn` gives the exports as of an earlier point. A crash between writing
//! and renaming leaves no file under a final name and the next run completes the export. A
//! schedule fires, survives a SIGKILL, and never fires a slot twice.

use agentd_schemas::domain_api::{
    ActionRequest, RecordStepRequest, RewardRequest, SandboxResultRequest,
};
use agentd_schemas::events::{RewardSource, SandboxOutcome};
use agentd_tests::{agentctl, agentd, binary, eventually, write_config, Daemon};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/domain")
        .join(name)
}

pub(super) fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs agentctl with `--json` and parses its answer.
pub(super) fn ctl_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = agentctl(url, &all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "agentctl {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

pub(super) fn ingest(url: &str) {
    let output = agentctl(
        url,
        &[
            "ingest",
            "--meta",
            text(&fixture("_meta.json")),
            "--records",
            text(&fixture("normalized.jsonl")),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn record_steps(daemon: &Daemon, task: &str, steps: std::ops::Range<u32>) {
    let client = daemon.client();
    for step in steps {
        let request = RecordStepRequest {
            step,
            job_id: None,
            lease_id: None,
            model: "qwen2.5-coder".into(),
            policy_version: "v1".into(),
            sampling: None,
            prompt_tokens: Some(100),
            completion_tokens: Some(20),
            prompt: Some(format!("## Goals\n- fix {task}")),
            think: Some("use logging".into()),
            action: Some(ActionRequest::Pattern {
                language: "python".into(),
                pattern: "print($A)".into(),
                rewrite: "logger.info($A)".into(),
            }),
            raw_output: None,
            generation_ms: None,
            state_update: None,
        };
        client.record_step(task, &request).await.unwrap();
        let sandbox = SandboxResultRequest {
            exit_code: Some(0),
            outcome: SandboxOutcome::Ok,
            diff: Some("-print(x)\n+logger.info(x)\n".into()),
            stdout: Some("1 passed\n".into()),
            stderr: None,
            tests_passed: Some(1),
            tests_failed: Some(0),
            duration_ms: Some(30),
            peak_rss_bytes: None,
            lease_id: None,
        };
        client
            .record_sandbox_result(task, step, &sandbox)
            .await
            .unwrap();
        let reward = RewardRequest {
            value: 1.0,
            verified: step % 2 == 0,
            components: BTreeMap::new(),
            source: RewardSource::Rule,
            lease_id: None,
        };
        client.record_reward(task, step, &reward).await.unwrap();
    }
}

/// Every file under `dir`, by relative path.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn rebuild(data_dir: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "rebuild",
        "--data-dir",
        text(data_dir),
        "--out",
        text(out),
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = agentd(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn incremental_exports_and_builds_are_rebuilt_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, None);
    let url = daemon.url.clone();
    ingest(&url);
    record_steps(&daemon, "task-a", 0..3).await;

    let first = ctl_json(&url, &["exports", "run", "--kind", "trajectories"]);
    assert_eq!(first["created"], true, "{first}");
    let first = first["export"].clone();
    assert_eq!(first["after_lsn"], 0);
    assert_eq!(first["rows"], 3);
    // Nothing new: no export.
    let again = ctl_json(&url, &["exports", "run", "--kind", "trajectories"]);
    assert_eq!(again["created"], false, "{again}");

    record_steps(&daemon, "task-b", 0..2).await;
    let second = ctl_json(&url, &["exports", "run", "--kind", "trajectories"]);
    let second = second["export"].clone();
    assert_eq!(
        second["after_lsn"], first["to_lsn"],
        "incremental from the watermark"
    );
    assert_eq!(second["rows"], 2);
    for kind in ["processed", "trl_sft", "trl_grpo", "verl_rl"] {
        let run = ctl_json(&url, &["exports", "run", "--kind", kind]);
        assert_eq!(run["created"], true, "{kind}: {run}");
    }
    let jsonl = ctl_json(
        &url,
        &["exports", "run", "--kind", "processed", "--format", "jsonl"],
    );
    assert!(jsonl["export"]["files"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with(".jsonl"));
    let build = ctl_json(
        &url,
        &[
            "datasets",
            "build",
            "--name",
            "py-edits",
            "--version",
            "v1",
            "--strategy",
            "random",
            "--seed",
            "7",
            "--filter",
            "language=python",
        ],
    );
    assert_eq!(build["created"], true, "{build}");
    assert_eq!(build["build"]["dataset_key"], "py-edits-v1");
    let same = ctl_json(
        &url,
        &[
            "datasets",
            "build",
            "--name",
            "py-edits",
            "--version",
            "v1",
            "--strategy",
            "random",
            "--seed",
            "7",
            "--filter",
            "language=python",
        ],
    );
    assert_eq!(
        same["build"]["build_id"], build["build"]["build_id"],
        "same request, same log"
    );

    let list = ctl_json(&url, &["exports", "list"]);
    assert_eq!(list["exports"].as_array().unwrap().len(), 7);
    let show = ctl_json(
        &url,
        &["exports", "show", first["export_id"].as_str().unwrap()],
    );
    assert_eq!(
        show["manifest"]["schema_version"], 2,
        "trajectories columns are at version 2"
    );
    assert_eq!(show["manifest"]["lsn_range"]["to"], first["to_lsn"]);
    // No temp file anywhere, and every listed file is there with its recorded hash.
    let exports_root = data_dir.join("exports");
    let live = files_of(&exports_root);
    assert!(
        !live.keys().any(|name| name.contains(".tmp-")),
        "{:?}",
        live.keys()
    );
    assert_eq!(daemon.stop(), Some(0));

    // Two rebuilds: every recorded export and build re-created byte for byte.
    let out1 = dir.path().join("rebuilt-1");
    let out2 = dir.path().join("rebuilt-2");
    let report1 = rebuild(&data_dir, &out1, &[]);
    let report2 = rebuild(&data_dir, &out2, &[]);
    assert_eq!(report1, report2);
    let rebuilt = report1["exports"].as_array().unwrap();
    let recorded: Vec<&Value> = rebuilt
        .iter()
        .filter(|e| !e["matches_recorded"].is_null())
        .collect();
    assert_eq!(recorded.len(), 8, "7 exports and 1 build: {report1}");
    assert!(
        recorded.iter().all(|e| e["matches_recorded"] == true),
        "{report1}"
    );
    let files1 = files_of(&out1.join("exports"));
    assert_eq!(files1, files_of(&out2.join("exports")));
    for (name, bytes) in &live {
        assert_eq!(
            files1.get(name),
            Some(bytes),
            "{name} differs between the live export and the rebuild"
        );
    }
    // Incremental live exports versus the rebuild's full export: same trajectory rows.
    let full_dir = format!("exp_trajectories_0_{}", report1["exports_lsn"]);
    assert!(
        files1.keys().any(|name| name.starts_with(&full_dir)),
        "{full_dir}"
    );

    // As of the first export: the rebuild's full trajectory export is the first export itself.
    let out3 = dir.path().join("as-of-first");
    let to = first["to_lsn"].as_u64().unwrap().to_string();
    let report3 = rebuild(&data_dir, &out3, &["--until-lsn", &to]);
    assert_eq!(report3["lsn"].as_u64().unwrap().to_string(), to);
    let id = first["export_id"].as_str().unwrap();
    let old = files_of(&exports_root.join(id));
    assert!(!old.is_empty());
    assert_eq!(files_of(&out3.join("exports").join(id)), old);
}

/// Starts agentd with the export fault hook set.
fn start_with_fault(data_dir: &Path, fault: &str) -> (std::process::Child, String) {
    let mut child = Command::new(binary("agentd"))
        .args(["--data-dir", text(data_dir), "--listen", "127.0.0.1:0"])
        .env("AGENTD_LOG", "warn")
        .env("AGENTD_EXPORT_FAULT", fault)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("agentd listens");
    (child, url)
}

#[tokio::test]
async fn a_crash_between_write_and_rename_leaves_no_partial_file_and_the_next_run_completes() {
    for fault in ["before_rename", "after_first_rename"] {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (mut child, url) = start_with_fault(&data_dir, fault);
        ingest(&url);
        let output = agentctl(&url, &["exports", "run", "--kind", "processed"]);
        assert!(
            !output.status.success(),
            "{fault}: the daemon should have aborted"
        );
        let status = child.wait().unwrap();
        assert!(!status.success(), "{fault}: {status:?}");
        let exports = data_dir.join("exports");
        let left = files_of(&exports);
        assert!(!left.is_empty(), "{fault}: temp files were written");
        assert!(
            !left.keys().any(|name| name.ends_with("manifest.json")),
            "{fault}: {left:?}"
        );
        for (name, bytes) in &left {
            if !name.contains(".tmp-") {
                // Only `after_first_rename` leaves a final name, and that file is complete.
                assert_eq!(fault, "after_first_rename", "{name}");
                assert_eq!(
                    &bytes[bytes.len() - 4..],
                    b"PAR1",
                    "{name} is a whole Parquet file"
                );
            }
        }
        // The next run (a plain daemon) completes the same export.
        let daemon = Daemon::start(&data_dir, None);
        let run = ctl_json(&daemon.url, &["exports", "run", "--kind", "processed"]);
        assert_eq!(run["created"], true, "{run}");
        let files = files_of(&exports);
        assert!(
            !files.keys().any(|name| name.contains(".tmp-")),
            "{fault}: {:?}",
            files.keys()
        );
        let export = &run["export"];
        let dir_name = export["export_id"].as_str().unwrap();
        for file in export["files"].as_array().unwrap() {
            let path = format!("{dir_name}/{}", file["path"].as_str().unwrap());
            assert!(files.contains_key(&path), "{path}");
        }
        assert!(files.contains_key(&format!("{dir_name}/manifest.json")));
    }
}

#[tokio::test]
async fn a_schedule_fires_survives_a_kill_and_never_repeats_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[[schedules]]\nname = \"every-second\"\ncron = \"* * * * * *\"\nkind = \"trajectories\"\n",
    );
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    record_steps(&daemon, "task-a", 0..1).await;
    let url = daemon.url.clone();
    eventually(Duration::from_secs(30), "a scheduled export", || {
        let url = url.clone();
        async move {
            let list = ctl_json(&url, &["schedules", "list"]);
            let schedule = &list["schedules"][0];
            (schedule["last_completed"] == true && schedule["next_run_ms"].is_u64()).then_some(())
        }
    })
    .await;
    daemon.kill9();
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let url = daemon.url.clone();
    let before = ctl_json(&url, &["exports", "list"])["exports"]
        .as_array()
        .unwrap()
        .len();
    // Nothing new: the schedule keeps firing (two more completed slots after the restart) but
    // exports nothing new.
    let fired_before = ctl_json(&url, &["schedules", "list"])["schedules"][0]["last_run_ms"]
        .as_u64()
        .unwrap_or(0);
    eventually(
        Duration::from_secs(30),
        "two firings with nothing new",
        || {
            let url = url.clone();
            async move {
                let list = ctl_json(&url, &["schedules", "list"]);
                let schedule = &list["schedules"][0];
                let last = schedule["last_run_ms"].as_u64().unwrap_or(0);
                (schedule["last_completed"] == true && last >= fired_before + 2000).then_some(())
            }
        },
    )
    .await;
    record_steps(&daemon, "task-b", 0..2).await;
    eventually(
        Duration::from_secs(30),
        "a scheduled export of the new steps",
        || {
            let url = url.clone();
            async move {
                let exports = ctl_json(&url, &["exports", "list"])["exports"].clone();
                let exports = exports.as_array().unwrap();
                (exports.len() > before
                    && exports
                        .iter()
                        .map(|e| e["rows"].as_u64().unwrap())
                        .sum::<u64>()
                        >= 3)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(daemon.stop(), Some(0));
    // Every scheduled export has its own slot, and consecutive ranges chain.
    let report = rebuild(&data_dir, &dir.path().join("out"), &[]);
    assert!(report["exports"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["matches_recorded"] != false));
    let daemon = Daemon::start(&data_dir, None);
    let list = ctl_json(&daemon.url, &["exports", "list"]);
    let mut slots = Vec::new();
    let mut ranges = Vec::new();
    for export in list["exports"].as_array().unwrap() {
        slots.push(export["schedule"]["slot_ms"].as_u64().unwrap());
        ranges.push((
            export["after_lsn"].as_u64().unwrap(),
            export["to_lsn"].as_u64().unwrap(),
        ));
    }
    let unique: std::collections::BTreeSet<_> = slots.iter().collect();
    assert_eq!(unique.len(), slots.len(), "a slot fired twice: {slots:?}");
    // A firing with nothing new names the previous export again; it never exports (to, to].
    assert!(
        ranges.iter().all(|(after, to)| after < to),
        "an empty range was exported: {ranges:?}"
    );
    ranges.sort();
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "incremental ranges chain: {ranges:?}");
    }
}

/// Trainers on other machines fetch exports and builds over HTTP: `agentctl exports download`
/// writes every file checked against its recorded sha256, ranges are served 206, a path the log
/// did not record for the id is 404, and `datasets latest` resolves the newest build of a key.
#[tokio::test]
async fn exports_and_builds_download_over_http_with_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let url = daemon.url.clone();
    ingest(&url);
    let export = ctl_json(&url, &["exports", "run", "--kind", "trl_grpo"]);
    let export_id = export["export"]["export_id"].as_str().unwrap().to_owned();
    let export_dir = PathBuf::from(export["export"]["dir"].as_str().unwrap());
    let out = dir.path().join("downloaded");
    let answer = ctl_json(
        &url,
        &["exports", "download", &export_id, "--out", text(&out)],
    );
    let files = answer["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in export["export"]["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join(path)).unwrap(),
            std::fs::read(export_dir.join(path)).unwrap(),
            "{path}"
        );
    }
    // A byte range, a range past the end, and a path outside the export.
    let first = export["export"]["files"][0]["path"].as_str().unwrap();
    let encoded: String = first.replace('/', "%2F");
    // Building an agentd client installs reqwest's TLS provider for the plain client below.
    let _client = daemon.client();
    let http = reqwest::Client::new();
    let route = format!("{url}/v1/exports/{export_id}/files/{encoded}");
    let partial = http
        .get(&route)
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status().as_u16(), 206);
    let length = std::fs::metadata(export_dir.join(first)).unwrap().len();
    assert_eq!(
        partial.headers()["content-range"].to_str().unwrap(),
        format!("bytes 0-3/{length}")
    );
    assert_eq!(&partial.bytes().await.unwrap()[..], b"PAR1");
    let past = http
        .get(&route)
        .header("range", format!("bytes={length}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(past.status().as_u16(), 416);
    let body: Value = past.json().await.unwrap();
    assert_eq!(body["code"], "range_not_satisfiable");
    let outside = http
        .get(format!(
            "{url}/v1/exports/{export_id}/files/..%2F..%2Fmanifest.json"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status().as_u16(), 404);
    // Builds: the latest of a key, listed by key, downloaded by id.
    for limit in ["1", "2"] {
        ctl_json(
            &url,
            &[
                "datasets",
                "build",
                "--name",
                "py",
                "--version",
                "v1",
                "--view",
                "trl_grpo",
                "--limit",
                limit,
            ],
        );
    }
    let latest = ctl_json(&url, &["datasets", "latest", "py-v1"]);
    assert_eq!(latest["rows"], 2, "the newest build: {latest}");
    let listed = ctl_json(&url, &["datasets", "builds", "--dataset-key", "py-v1"]);
    assert_eq!(listed["builds"].as_array().unwrap().len(), 2);
    let none = ctl_json(&url, &["datasets", "builds", "--dataset-key", "other-v1"]);
    assert!(none["builds"].as_array().unwrap().is_empty());
    let build_out = dir.path().join("build");
    ctl_json(
        &url,
        &[
            "datasets",
            "latest",
            "py-v1",
            "--download",
            text(&build_out),
        ],
    );
    let build_dir = PathBuf::from(latest["dir"].as_str().unwrap());
    for file in latest["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(build_out.join(path)).unwrap(),
            std::fs::read(build_dir.join(path)).unwrap()
        );
    }
}

/// A rebuild's full exports are cut and named as the live daemon's are: by the last record that
/// is not an export record. So the live `--full` export and the rebuild's are the same export
/// (same id, byte-identical), even though export records follow it in the log.
#[tokio::test]
async fn a_rebuilds_full_exports_are_the_live_full_exports_of_the_same_point() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, None);
    let url = daemon.url.clone();
    ingest(&url);
    record_steps(&daemon, "task-a", 0..3).await;
    let live = ctl_json(
        &url,
        &["exports", "run", "--kind", "trajectories", "--full"],
    );
    let live_id = live["export"]["export_id"].as_str().unwrap().to_owned();
    // More export records after it: they must not move the rebuild's cut.
    ctl_json(&url, &["exports", "run", "--kind", "processed", "--full"]);
    let out = dir.path().join("rebuilt");
    let report = rebuild(&data, &out, &[]);
    let exports = report["exports"].as_array().unwrap();
    let full: Vec<&Value> = exports
        .iter()
        .filter(|export| {
            export["export_id"]
                .as_str()
                .unwrap()
                .starts_with("exp_trajectories_0_")
        })
        .collect();
    assert_eq!(full.len(), 1, "one full trajectories export: {exports:?}");
    assert_eq!(full[0]["export_id"], live_id.as_str());
    assert_eq!(full[0]["matches_recorded"], true);
    let to = live_id.rsplit('_').next().unwrap();
    for kind in ["trl_sft", "trl_grpo", "verl_rl"] {
        let id = format!("exp_{kind}_0_{to}");
        assert!(
            exports
                .iter()
                .any(|export| export["export_id"] == id.as_str()),
            "{id} in {exports:?}"
        );
    }
    let live_dir = PathBuf::from(live["export"]["dir"].as_str().unwrap());
    assert_eq!(
        files_of(&live_dir),
        files_of(&out.join("exports").join(&live_id)),
        "file by file"
    );
}

/// With a storage URL, exports and dataset builds are copied to object storage under
/// `exports/<id>/` and `datasets/<key>/<build_id>/`, byte for byte, manifest included; the
/// API's views give the URL (recorded in the log, not in the manifest), the builds CLI shows
/// it, and a rebuild without the daemon's config writes the same manifests. Under scripts/test-s3 (a real S3 server), pyarrow
/// then reads the export straight from the bucket (`AGENTD_TEST_PYTHON`).
#[tokio::test]
async fn exports_and_builds_are_copied_to_object_storage_with_their_urls() {
    let dir = tempfile::tempdir().unwrap();
    let storage = match std::env::var("AGENTD_TEST_STORAGE_URL") {
        Ok(base) => format!(
            "{}/exports-{}",
            base.trim_end_matches('/'),
            std::process::id()
        ),
        Err(_) => format!("file://{}", dir.path().join("bucket").display()),
    };
    let config = write_config(dir.path(), &format!("[storage]\nurl = \"{storage}\"\n"));
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, Some(&config));
    let url = daemon.url.clone();
    ingest(&url);
    record_steps(&daemon, "task-a", 0..3).await;
    let bucket = super::archive::Bucket::of(&storage);

    let export = ctl_json(&url, &["exports", "run", "--kind", "trajectories"])["export"].clone();
    let export_id = export["export_id"].as_str().unwrap();
    let export_url = format!("{storage}/exports/{export_id}/");
    assert_eq!(export["url"], export_url.as_str(), "{export}");
    let local = files_of(Path::new(export["dir"].as_str().unwrap()));
    assert!(local.contains_key("manifest.json"));
    for (path, bytes) in &local {
        let copied = bucket.get(&format!("exports/{export_id}/{path}")).await;
        assert_eq!(copied.as_ref(), Some(bytes), "exports/{export_id}/{path}");
    }
    let export_manifest: Value = serde_json::from_slice(&local["manifest.json"]).unwrap();
    // The manifest is a function of the log alone: where the copy went is in the log's record
    // and the views, not in the manifest.
    assert!(export_manifest.get("url").is_none(), "{export_manifest:#}");

    let build = ctl_json(
        &url,
        &[
            "datasets",
            "build",
            "--name",
            "py",
            "--version",
            "v1",
            "--view",
            "trl_grpo",
        ],
    );
    let build_id = build["build"]["build_id"].as_str().unwrap().to_owned();
    let build_url = format!("{storage}/datasets/py-v1/{build_id}/");
    assert_eq!(build["build"]["url"], build_url.as_str(), "{build}");
    let local = files_of(Path::new(build["build"]["dir"].as_str().unwrap()));
    for (path, bytes) in &local {
        let key = format!("datasets/py-v1/{build_id}/{path}");
        assert_eq!(bucket.get(&key).await.as_ref(), Some(bytes), "{key}");
    }
    // The builds commands: list, show, latest, download (and the old forms still answer).
    let listed = ctl_json(
        &url,
        &["datasets", "builds", "list", "--dataset-key", "py-v1"],
    );
    assert_eq!(listed["builds"][0]["build_id"], build_id.as_str());
    let old_form = ctl_json(&url, &["datasets", "builds", "--dataset-key", "py-v1"]);
    assert_eq!(old_form, listed);
    let shown = ctl_json(&url, &["datasets", "builds", "show", &build_id]);
    assert_eq!(shown["url"], build_url.as_str());
    // A second build of the key, labelled, over a later log prefix (the parent is the newest
    // build of the key recorded by a build's `to`): its lineage names the first as parent, the
    // source dataset with its license and sha256, the settings in force and the labels.
    record_steps(&daemon, "task-b", 0..1).await;
    let labelled = ctl_json(
        &url,
        &[
            "datasets",
            "build",
            "--name",
            "py",
            "--version",
            "v1",
            "--view",
            "trl_grpo",
            "--limit",
            "1",
            "--training-run-id",
            "run-7",
            "--session-id",
            "nb/1",
        ],
    )["build"]
        .clone();
    let latest = ctl_json(&url, &["datasets", "builds", "latest", "py-v1"]);
    assert_eq!(latest["build_id"], labelled["build_id"]);
    let labelled_dir = Path::new(labelled["dir"].as_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(labelled_dir.join("manifest.json")).unwrap())
            .unwrap();
    let lineage = &manifest["dataset"]["lineage"];
    assert_eq!(
        lineage["parent_build_id"],
        build_id.as_str(),
        "{manifest:#}"
    );
    assert_eq!(lineage["training_run_id"], "run-7");
    assert_eq!(lineage["session_id"], "nb/1");
    assert_eq!(manifest["dataset"]["request"]["training_run_id"], "run-7");
    let sources = lineage["sources"].as_array().unwrap();
    assert!(!sources.is_empty(), "{lineage:#}");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("_meta.json")).unwrap()).unwrap();
    assert_eq!(sources[0]["license"], meta["license"], "{lineage:#}");
    assert!(
        sources[0]["sha256"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(meta["sha256"].as_str().unwrap()),
        "{lineage:#}"
    );
    assert!(lineage["settings"]["zstd_level"].is_number(), "{lineage:#}");
    // `builds show` prints the lineage and labels.
    let labelled_id = labelled["build_id"].as_str().unwrap();
    let shown = agentctl(&url, &["datasets", "builds", "show", labelled_id]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    for expected in [
        format!("parent:   {build_id}"),
        "run:      run-7".to_owned(),
        "session:  nb/1".to_owned(),
        format!("license {}", meta["license"].as_str().unwrap()),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in\n{shown}");
    }
    let refused = agentctl(
        &url,
        &[
            "datasets",
            "build",
            "--name",
            "py",
            "--version",
            "v1",
            "--session-id",
            "a b",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("session_id: 1 to 128 characters"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = dir.path().join("fetched");
    ctl_json(
        &url,
        &[
            "datasets",
            "builds",
            "download",
            &build_id,
            "--out",
            text(&out),
        ],
    );
    for (path, bytes) in &local {
        if path != "manifest.json" {
            assert_eq!(&std::fs::read(out.join(path)).unwrap(), bytes, "{path}");
        }
    }
    let shown_text = agentctl(&url, &["datasets", "builds", "show", &build_id]);
    assert!(
        String::from_utf8_lossy(&shown_text.stdout).contains(&build_url),
        "{}",
        String::from_utf8_lossy(&shown_text.stdout)
    );

    // The manifests do not depend on the storage URL: a rebuild without the daemon's config
    // (no URL) writes the same manifests, so it compares with the live daemon.
    let output = agentd(&[
        "rebuild",
        "--data-dir",
        text(&data),
        "--out",
        text(&dir.path().join("rebuilt")),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let exports = report["exports"].as_array().unwrap();
    let rebuilt = exports
        .iter()
        .find(|export| export["export_id"] == export_id)
        .unwrap_or_else(|| panic!("{export_id} in {exports:?}"));
    assert_eq!(rebuilt["matches_recorded"], true, "{rebuilt}");
    for export in exports
        .iter()
        .filter(|export| !export["matches_recorded"].is_null())
    {
        assert_eq!(export["matches_recorded"], true, "{export}");
    }

    if let (Ok(python), Some(rest)) = (
        std::env::var("AGENTD_TEST_PYTHON"),
        storage.strip_prefix("s3://"),
    ) {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
        let script = r#"
import json, sys
import pyarrow.fs as fs, pyarrow.parquet as pq
endpoint, folder = sys.argv[1], sys.argv[2]
s3 = fs.S3FileSystem(endpoint_override=endpoint, scheme="http")
manifest = json.loads(s3.open_input_stream(folder + "manifest.json").readall())
rows = 0
for file in manifest["files"]:
    table = pq.read_table(folder + file["path"], filesystem=s3)
    assert table.num_rows == file["rows"], (file, table.num_rows)
    rows += table.num_rows
print(json.dumps({"rows": rows, "columns": table.column_names}))
"#;
        let output = std::process::Command::new(python)
            .args(["-c", script, endpoint.trim_start_matches("http://")])
            .arg(format!("{rest}/exports/{export_id}/"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let read: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(read["rows"], export_manifest["rows"], "{read}");
        assert!(read["columns"]
            .as_array()
            .unwrap()
            .contains(&Value::from("task_id")));
        eprintln!(
            "pyarrow read {} rows of {export_id} from the bucket",
            read["rows"]
        );
    }
}

/// A copy to object storage that fails does not fail the export: it is recorded with its local
/// files (no URL yet), the failure is counted, and the copy is retried with backoff until it
/// succeeds; then the log records it and the views give the URL, and the bucket holds every
/// file and the manifest. The store is a `file://` directory whose `exports` is made a plain
/// file, so no object can be put under it until the test removes it.
#[tokio::test]
async fn a_failed_copy_to_object_storage_leaves_the_export_recorded_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let bucket_dir = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    std::fs::write(bucket_dir.join("exports"), b"in the way").unwrap();
    let storage = format!("file://{}", bucket_dir.display());
    let config = write_config(dir.path(), &format!("[storage]\nurl = \"{storage}\"\n"));
    let data = dir.path().join("data");
    let daemon = Daemon::start(&data, Some(&config));
    let url = daemon.url.clone();
    ingest(&url);
    record_steps(&daemon, "task-a", 0..2).await;

    let export = ctl_json(&url, &["exports", "run", "--kind", "trajectories"])["export"].clone();
    let export_id = export["export_id"].as_str().unwrap().to_owned();
    assert!(export.get("url").is_none(), "not copied yet: {export}");
    assert!(Path::new(export["dir"].as_str().unwrap())
        .join("manifest.json")
        .is_file());
    let failures = super::archive::metric(&url, "agentd_export_copy_failures_total").await;
    assert!(failures.unwrap_or(0.0) >= 1.0, "{failures:?}");

    std::fs::remove_file(bucket_dir.join("exports")).unwrap();
    let export_url = format!("{storage}/exports/{export_id}/");
    let shown = eventually(Duration::from_secs(30), "the copy retried", || {
        let url = url.clone();
        let export_id = export_id.clone();
        async move {
            let shown = ctl_json(&url, &["exports", "show", &export_id]);
            (!shown["export"]["url"].is_null()).then_some(shown)
        }
    })
    .await;
    assert_eq!(shown["export"]["url"], export_url.as_str(), "{shown}");
    let local = files_of(Path::new(export["dir"].as_str().unwrap()));
    let copied = files_of(&bucket_dir.join("exports").join(&export_id));
    assert_eq!(copied, local, "every file and the manifest, byte for byte");
    // The local files gone (a data disk restored from the archive holds the log, not the
    // exports): a download is served from the copy in the bucket.
    let first = shown["export"]["files"][0]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_file(Path::new(export["dir"].as_str().unwrap()).join(&first)).unwrap();
    let encoded = first.replace('/', "%2F");
    let answer = agentd_tests::http()
        .get(format!("{url}/v1/exports/{export_id}/files/{encoded}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let served = answer.bytes().await.unwrap();
    let stored = std::fs::read(bucket_dir.join("exports").join(&export_id).join(&first)).unwrap();
    assert!(served[..] == stored[..], "the bucket's copy, byte for byte");
    // The later copy is an export record: it does not move the next export's range.
    let again = ctl_json(&url, &["exports", "run", "--kind", "trajectories"]);
    assert_eq!(again["created"], false, "{again}");
}
