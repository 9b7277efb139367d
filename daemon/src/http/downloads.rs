//! Downloading the files of exports and dataset builds over HTTP, for trainers on other
//! machines without access to the daemon's disk (`docs/exports.md`, "Downloads"):
//!
//! - `GET /v1/exports/{id}/files/{path}`: a file of a recorded export (`exp_...`) or dataset
//!   build (`bld_...`), `path` as its manifest lists it, percent-encoded (`/` as `%2F`). Only
//!   files the log recorded for that id are served, so no path can reach outside it. Single
//!   byte ranges (`Range: bytes=a-b`, `a-`, `-n`) are answered 206; the ETag is the file's
//!   recorded SHA-256.
//! - `GET /v1/datasets/builds/{dataset_key}/latest`: the newest build of a dataset key.

use super::error::ApiError;
use super::{ApiResult, AppState, SharedState};
use crate::export::files::MANIFEST_NAME;
use crate::export::ledger::ExportLedger;
use crate::http::extract::ApiPath as Path;
use agentd_schemas::events::ExportedFile;
use agentd_schemas::export_api::{DatasetBuildView, ExportManifest};
use agentd_schemas::ErrorCode;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Where a recorded export's or build's files are, and which they are.
fn recorded_files(ledger: &ExportLedger, id: &str) -> Option<RecordedFiles> {
    if let Some(export) = ledger.export(id) {
        return Some(RecordedFiles {
            dir: export.event.dir.clone(),
            files: export.event.files.clone(),
            copied_to: export.copied_to.clone(),
        });
    }
    ledger.build(id).map(|build| RecordedFiles {
        dir: build.event.dir.clone(),
        files: build.event.files.clone(),
        copied_to: build.copied_to.clone(),
    })
}

/// What the log says about an export's or build's files.
struct RecordedFiles {
    /// Relative to the exports root.
    dir: String,
    files: Vec<ExportedFile>,
    /// Its folder in object storage, when the log records a copy.
    copied_to: Option<String>,
}

/// A listed file that cannot be opened on the daemon's disk (removed, or a data disk restored
/// from the archive, which holds the log but not the export files): 404, naming the copy in
/// object storage when the log records one, else how to get the files back.
fn gone_from_disk(listed: &Listed, error: &std::io::Error) -> ApiError {
    let Listed {
        export_id,
        file,
        copied_to,
        ..
    } = listed;
    let path = &file.path;
    match copied_to {
        Some(url) => ApiError::not_found(format!(
            "{path} of {export_id} is not on the daemon's disk ({error}); its copy is at {url}{path}"
        )),
        None => ApiError::not_found(format!(
            "{path} of {export_id} cannot be read: {error} (an export is a function of the log: `agentd rebuild --out DIR` writes it again)"
        )),
    }
}

/// `GET /v1/exports/{id}/files/{path}`.
#[utoipa::path(
    get, path = "/v1/exports/{export_id}/files/{path}", tag = "exports",
    params(
        ("export_id" = String, Path, description = "An export id (`exp_...`) or a dataset build id (`bld_...`)"),
        ("path" = String, Path, description = "The file's path as the manifest lists it, percent-encoded (`trl_sft%2Ftrain-00000-of-00001.parquet`)"),
    ),
    responses(
        // The content type follows the file's extension (`content_type` below).
        (status = 200, description = "The whole file", content(
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/x-ndjson"),
            (serde_json::Value = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        (status = 206, description = "The byte range asked for (`Range: bytes=...`)", content(
            (Vec<u8> = "application/vnd.apache.parquet"),
            (Vec<u8> = "application/x-ndjson"),
            (Vec<u8> = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        (status = 404, description = "`not_found`: no such export or build, or no such file in it (or it is gone from disk)", body = agentd_schemas::api::ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn file(
    State(state): State<SharedState>,
    Path((export_id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let listed = listed_file(&state, &export_id, &path)?;
    let (length, body_at) = match tokio::fs::File::open(&listed.on_disk).await {
        Ok(opened) => {
            let length = opened
                .metadata()
                .await
                .map_err(|error| ApiError::internal("reading a file's size", error))?
                .len();
            (length, Source::Disk(opened))
        }
        // Not on this disk but copied to the store (run on a read replica, or a data directory
        // restored from the archive): streamed from the store, sized as the log recorded it.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            match (&listed.copied_to, &state.exports.settings.storage) {
                (Some(_), Some(store)) => (listed.file.bytes, Source::Store(store.clone())),
                _ => return Err(gone_from_disk(&listed, &error)),
            }
        }
        Err(error) => return Err(gone_from_disk(&listed, &error)),
    };
    let (status, start, count) = match requested_range(&headers, &path, length) {
        Ok(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Ok(None) => (StatusCode::OK, 0, length),
        Err(unsatisfiable) => return Ok(*unsatisfiable),
    };
    let body = body_at.body(&listed, start, count).await?;
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    for (name, value) in file_headers(&listed.file, count) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + count - 1;
        if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{length}")) {
            response_headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// The manifest of the export or build in `dir` (a view's: under the exports root): from the
/// daemon's disk, else, when `copied`, from its copy in the store; `None` when neither is
/// readable.
pub(super) async fn read_manifest(
    service: &crate::export::runner::ExportService,
    dir: &str,
    copied: bool,
) -> Result<Option<ExportManifest>, ApiError> {
    let path = std::path::PathBuf::from(dir).join(MANIFEST_NAME);
    let local = tokio::task::spawn_blocking(move || std::fs::read(path).ok())
        .await
        .map_err(|error| ApiError::internal("reading a manifest", error))?;
    let bytes = match (local, &service.settings.storage) {
        (Some(bytes), _) => Some(bytes),
        (None, Some(store)) if copied => {
            let relative = std::path::Path::new(dir)
                .strip_prefix(&service.settings.root)
                .ok()
                .and_then(|relative| relative.to_str());
            match relative {
                Some(relative) => stored_manifest(store, relative).await,
                None => None,
            }
        }
        (None, _) => None,
    };
    Ok(bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

async fn stored_manifest(store: &crate::archive::ArchiveStore, relative: &str) -> Option<Vec<u8>> {
    let key = crate::export::upload::object_key(store, relative, MANIFEST_NAME).ok()?;
    let got = object_store::ObjectStoreExt::get(&store.store, &key)
        .await
        .ok()?;
    got.bytes().await.ok().map(|bytes| bytes.to_vec())
}

/// Where a download's bytes come from.
enum Source {
    Disk(tokio::fs::File),
    Store(crate::archive::ArchiveStore),
}

impl Source {
    /// The body of `count` bytes from `start`.
    async fn body(self, listed: &Listed, start: u64, count: u64) -> Result<Body, ApiError> {
        match self {
            Source::Disk(mut opened) => {
                opened
                    .seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|error| ApiError::internal("seeking in a file", error))?;
                Ok(Body::from_stream(tokio_util::io::ReaderStream::new(
                    opened.take(count),
                )))
            }
            Source::Store(store) => {
                let key = crate::export::upload::object_key(&store, &listed.dir, &listed.file.path)
                    .map_err(|error| ApiError::internal("naming a stored file", error))?;
                let options = object_store::GetOptions {
                    range: (count > 0)
                        .then(|| object_store::GetRange::Bounded(start..start + count)),
                    ..Default::default()
                };
                let got = store.store.get_opts(&key, options).await.map_err(|error| {
                    ApiError::new(
                        ErrorCode::Unavailable,
                        format!("{} of {} is not on the daemon's disk and reading its copy failed: {}: {error}", listed.file.path, listed.export_id, store.describe(&key)),
                    )
                })?;
                Ok(Body::from_stream(got.into_stream()))
            }
        }
    }
}

/// A file of a recorded export or build.
struct Listed {
    export_id: String,
    /// The export's or build's folder, relative to the exports root (and the storage URL).
    dir: String,
    /// Where it is on the daemon's disk.
    on_disk: std::path::PathBuf,
    /// Its manifest entry, as the log recorded it.
    file: ExportedFile,
    copied_to: Option<String>,
}

/// Where the file `path` of a recorded export or build is, and its manifest entry; 404 for an
/// id not recorded or a path its manifest does not list.
fn listed_file(state: &AppState, export_id: &str, path: &str) -> Result<Listed, ApiError> {
    let service = &state.exports;
    let recorded = service
        .with_ledger(|ledger| recorded_files(ledger, export_id))
        .ok_or_else(|| {
            ApiError::not_found(format!("no export or build {export_id:?} is recorded"))
        })?;
    let file = recorded
        .files
        .into_iter()
        .find(|file| file.path == path)
        .ok_or_else(|| ApiError::not_found(format!("{export_id} has no file {path:?}")))?;
    Ok(Listed {
        export_id: export_id.to_owned(),
        on_disk: service.settings.root.join(&recorded.dir).join(&file.path),
        dir: recorded.dir,
        file,
        copied_to: recorded.copied_to,
    })
}

/// The inclusive byte range the `Range` header asks of `path` (`None`: the whole file), or the
/// 416 answer for a range that starts past its end (boxed: a `Response` is large beside the
/// range, and the answer is rare).
fn requested_range(
    headers: &HeaderMap,
    path: &str,
    length: u64,
) -> Result<Option<(u64, u64)>, Box<Response>> {
    let Some(text) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    match parse_range(text, length) {
        RangeAsked::Ignored => Ok(None),
        RangeAsked::Bytes(start, end) => Ok(Some((start, end))),
        RangeAsked::Unsatisfiable => {
            let mut response = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("{path} has {length} bytes; the range {text:?} starts past its end"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            Err(Box::new(response))
        }
    }
}

/// The headers of a file answer of `count` bytes: its type, length, ETag (its recorded SHA-256)
/// and a download name.
fn file_headers(listed: &ExportedFile, count: u64) -> [(header::HeaderName, String); 5] {
    let file_name = listed.path.rsplit('/').next().unwrap_or(&listed.path);
    [
        (header::CONTENT_TYPE, content_type(&listed.path).to_owned()),
        (header::CONTENT_LENGTH, count.to_string()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (header::ETAG, format!("\"{}\"", listed.sha256)),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file_name}\""),
        ),
    ]
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".parquet") {
        "application/vnd.apache.parquet"
    } else if path.ends_with(".jsonl") {
        "application/x-ndjson"
    } else if path.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// What a `Range` header asks of a file of `length` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsked {
    /// Not one byte range we serve (several ranges, another unit, bad syntax): the whole file,
    /// as RFC 9110 allows.
    Ignored,
    /// Inclusive bounds within the file.
    Bytes(u64, u64),
    /// Starts at or past the end (416).
    Unsatisfiable,
}

fn parse_range(text: &str, length: u64) -> RangeAsked {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeAsked::Ignored;
    };
    if spec.contains(',') {
        return RangeAsked::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsked::Ignored;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAsked::Unsatisfiable,
            Some(suffix) if length > 0 => {
                RangeAsked::Bytes(length.saturating_sub(suffix), length - 1)
            }
            Some(_) => RangeAsked::Unsatisfiable,
            None => RangeAsked::Ignored,
        },
        // `a-`: from a to the end.
        (false, true) => match number(first) {
            Some(start) if start < length => RangeAsked::Bytes(start, length - 1),
            Some(_) => RangeAsked::Unsatisfiable,
            None => RangeAsked::Ignored,
        },
        // `a-b`.
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => RangeAsked::Ignored,
            (Some(start), Some(_)) if start >= length => RangeAsked::Unsatisfiable,
            (Some(start), Some(end)) => RangeAsked::Bytes(start, end.min(length - 1)),
            _ => RangeAsked::Ignored,
        },
        (true, true) => RangeAsked::Ignored,
    }
}

/// `GET /v1/datasets/builds/{dataset_key}/latest`: the newest build of a dataset key.
#[utoipa::path(
    get, path = "/v1/datasets/builds/{dataset_key}/latest", tag = "exports",
    params(("dataset_key" = String, Path, description = "`name-version` of the dataset")),
    responses(
        (status = 200, description = "The build recorded last for this dataset key", body = DatasetBuildView),
        (status = 404, description = "`not_found`: no build of this dataset key", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn latest_build(
    State(state): State<SharedState>,
    Path(dataset_key): Path<String>,
) -> ApiResult<Json<DatasetBuildView>> {
    let service = &state.exports;
    service
        .with_ledger(|ledger| {
            ledger
                .builds()
                .iter()
                .rev()
                .find(|build| build.event.dataset_key == dataset_key)
                .map(|build| super::exports::build_view(service, build))
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!("no build of dataset {dataset_key:?} is recorded"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110_for_one_byte_range() {
        use RangeAsked::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-200", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=95-", 100), Bytes(95, 99));
        assert_eq!(parse_range("bytes=-10", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-120", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=x-1", 100), Ignored);
        assert_eq!(parse_range("bytes=-", 100), Ignored);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
    }
}
