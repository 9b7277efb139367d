//! What the storage tests (`archive.rs`, `retention.rs`, `replica.rs`) share: the storage URL
//! (a `file://` directory, or a prefix of the S3 bucket scripts/test-s3 names in
//! `AGENTD_TEST_STORAGE_URL`), a daemon config with small segments and a short archive
//! interval, the objects under the URL read and damaged behind the daemon's back (`Bucket`),
//! metric scrapes, and the waits on the archive.

use agentd_client::Client;
use agentd_schemas::api::{LeaseGrant, LeaseRequest};
use agentd_schemas::JobId;
use agentd_tests::{eventually, write_config, Daemon};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `AGENTD_TEST_STORAGE_URL` with a prefix of this test's own, else the `file://` directory
/// `dir/name`. Tests run in parallel in one process: the temp dir's name keeps their prefixes
/// apart.
pub(crate) fn storage_url(dir: &Path, name: &str) -> String {
    match std::env::var("AGENTD_TEST_STORAGE_URL") {
        Ok(base) => format!(
            "{}/{name}-{}-{}",
            base.trim_end_matches('/'),
            std::process::id(),
            dir.file_name().unwrap().to_string_lossy()
        ),
        Err(_) => format!("file://{}", dir.join(name).display()),
    }
}

/// A config archiving to `url` every 100 ms, with 4 KiB segments so the log rolls many times
/// (sealed uploads, chunked active segments) and fast retries; `storage_extra` is added to
/// `[storage]` (local retention).
pub(crate) fn storage_config(dir: &Path, url: &str, storage_extra: &str) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[storage]\nurl = \"{url}\"\narchive_interval_ms = 100\n{storage_extra}\n\
             [log]\nsegment_bytes_max = 4096\n\n\
             [queue]\nretry_backoff_base_ms = 10\nretry_backoff_max_ms = 50\n"
        ),
    )
}

/// The value of an unlabelled metric in a `/metrics` scrape.
pub(crate) async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Leases the next job of `queue` (one must be queued).
pub(crate) async fn lease_one(client: &Client, queue: &str) -> LeaseGrant {
    client
        .lease(&LeaseRequest {
            worker_id: "w".into(),
            queues: vec![queue.into()],
            tags: None,
            max_jobs: Some(1),
            wait_ms: Some(0),
        })
        .await
        .unwrap()
        .leases
        .pop()
        .expect("a queued job")
}

/// Each job as `GET /v1/jobs/{id}` answers it.
pub(crate) async fn views(client: &Client, ids: &[JobId]) -> Vec<Value> {
    let mut views = Vec::new();
    for id in ids {
        views.push(serde_json::to_value(client.job(*id).await.unwrap()).unwrap());
    }
    views
}

/// The segment file names of a log directory, sorted.
pub(crate) fn segment_names(log_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

/// Waits until the archive holds the whole durable log and nothing is pending; returns that
/// LSN.
pub(crate) async fn wait_until_archived(daemon: &Daemon) -> u64 {
    let client = daemon.client();
    eventually(
        Duration::from_secs(120),
        "the archive to catch up",
        || async {
            let durable = client.health().await.ok()?.durable_lsn.0;
            let archived = metric(&daemon.url, "agentd_archive_last_lsn").await?;
            let pending = metric(&daemon.url, "agentd_archive_pending_bytes").await?;
            let segments = metric(&daemon.url, "agentd_archive_pending_segments").await?;
            let lag = metric(&daemon.url, "agentd_archive_lag_seconds").await?;
            (archived as u64 == durable && pending == 0.0 && segments == 0.0 && lag == 0.0)
                .then_some(durable)
        },
    )
    .await
}

/// The objects under a storage URL, read and damaged behind the daemon's back: the directory of
/// a `file://` URL, or the bucket of an `s3://` one through plain path-style HTTP requests to
/// the local S3 server (`AWS_ENDPOINT_URL`; moto accepts unsigned requests).
pub(crate) enum Bucket {
    Dir(std::path::PathBuf),
    S3 { base: String, bucket: String },
}

impl Bucket {
    pub(crate) fn of(url: &str) -> Bucket {
        if let Some(path) = url.strip_prefix("file://") {
            return Bucket::Dir(path.into());
        }
        let rest = url.strip_prefix("s3://").expect("a file:// or s3:// URL");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL with s3://");
        Bucket::S3 {
            base: format!("{}/{bucket}/{prefix}", endpoint.trim_end_matches('/')),
            bucket: bucket.to_owned(),
        }
    }

    fn object_url(base: &str, key: &str) -> String {
        format!("{}/{key}", base.trim_end_matches('/'))
    }

    /// A request to the local S3 server with an `Authorization` header. moto answers an
    /// anonymous object GET with 403 (the object's ACL is private) but, with IAM checks off
    /// (its default), accepts any signature: the test reads, damages and lists the bucket
    /// behind the daemon's back without signing requests itself.
    fn s3_request(method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, url).header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=agentd-test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host, Signature=00",
        )
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Bucket::Dir(root) => std::fs::read(root.join(key)).ok(),
            Bucket::S3 { base, .. } => {
                let response = Self::s3_request(reqwest::Method::GET, Self::object_url(base, key))
                    .send()
                    .await
                    .unwrap();
                if !response.status().is_success() {
                    return None;
                }
                Some(response.bytes().await.unwrap().to_vec())
            }
        }
    }

    pub(crate) async fn put(&self, key: &str, bytes: Vec<u8>) {
        match self {
            Bucket::Dir(root) => std::fs::write(root.join(key), bytes).unwrap(),
            Bucket::S3 { base, .. } => {
                let response = Self::s3_request(reqwest::Method::PUT, Self::object_url(base, key))
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{response:?}");
            }
        }
    }

    pub(crate) async fn delete(&self, key: &str) {
        match self {
            Bucket::Dir(root) => std::fs::remove_file(root.join(key)).unwrap(),
            Bucket::S3 { base, .. } => {
                let response =
                    Self::s3_request(reqwest::Method::DELETE, Self::object_url(base, key))
                        .send()
                        .await
                        .unwrap();
                assert!(response.status().is_success(), "{response:?}");
            }
        }
    }

    /// Object names under `log/`.
    pub(crate) async fn log_objects(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Bucket::Dir(root) => std::fs::read_dir(root.join("log"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Bucket::S3 { base, bucket } => {
                let (endpoint, prefix) = base.split_once(&format!("/{bucket}/")).unwrap();
                let listing = Self::s3_request(
                    reqwest::Method::GET,
                    format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}/log/&max-keys=1000"),
                )
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
                listing
                    .split("<Key>")
                    .skip(1)
                    .filter_map(|rest| rest.split("</Key>").next())
                    .filter_map(|key| key.rsplit('/').next().map(str::to_owned))
                    .collect()
            }
        };
        names.sort();
        names
    }

    pub(crate) async fn manifest(&self) -> Value {
        serde_json::from_slice(&self.get("log/manifest.json").await.expect("a manifest")).unwrap()
    }
}
