//! With a storage URL (`[storage] url`), a finished export or dataset build is copied to object
//! storage, where trainers on other machines read it (pyarrow, DuckDB, Spark, Ray Data):
//! `<url>/exports/<export_id>/...` and `<url>/datasets/<dataset_key>/<build_id>/...`, the
//! same relative paths as on the daemon's disk. Data files go first and `manifest.json` last,
//! so a reader that finds a manifest finds every file it lists, complete (each object is put
//! whole, or by a multipart upload that only appears when complete).
//!
//! The copy is not a source of truth: the files are written and fsynced locally first (a pure
//! function of the log, as always). A copy that succeeds is named in the export's record
//! (`copied_to`); one that fails leaves the export recorded locally and is retried with backoff
//! (`copies.rs`), a later success recorded as `export_copied`. A multipart upload that fails
//! is aborted, so no incomplete upload is left behind (`upload_tests.rs` checks it with a store
//! that refuses parts, and with a local read that fails).

use super::files::MANIFEST_NAME;
use super::ExportError;
use crate::archive::ArchiveStore;
use agentd_schemas::events::ExportedFile;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Files up to this size are put in one request; larger ones by a multipart upload.
const SINGLE_PUT_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Part size of a multipart upload (S3 takes 5 MiB to 5 GiB).
const MULTIPART_CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// Parts in flight at once during a multipart upload.
const MULTIPART_CONCURRENCY: usize = 4;

/// The sizes that decide how a file is put: always [`UPLOAD_SIZES`], except in the unit tests,
/// which use a few bytes so that a multipart upload of many parts needs no 100 MiB file.
#[derive(Debug, Clone, Copy)]
struct UploadSizes {
    single_put_bytes_max: u64,
    multipart_chunk_bytes: usize,
    multipart_concurrency: usize,
}

const UPLOAD_SIZES: UploadSizes = UploadSizes {
    single_put_bytes_max: SINGLE_PUT_BYTES_MAX,
    multipart_chunk_bytes: MULTIPART_CHUNK_BYTES,
    multipart_concurrency: MULTIPART_CONCURRENCY,
};

/// Where an export's directory (relative to the exports root: `<export_id>` or
/// `datasets/<key>/<build_id>`) goes under the storage URL.
pub fn object_dir(relative: &str) -> String {
    if relative.starts_with("datasets/") {
        relative.to_owned()
    } else {
        format!("exports/{relative}")
    }
}

/// The URL of an export's directory in the store, ending in `/`: a file's URL is this plus
/// its manifest path.
pub fn url_of(store_url: &str, relative: &str) -> String {
    format!(
        "{}/{}/",
        store_url.trim_end_matches('/'),
        object_dir(relative)
    )
}

/// Copies the `files` of the export in `dir` (relative to `root`, the exports root) to the
/// store, `manifest.json` last.
pub async fn copy_to_store(
    store: &ArchiveStore,
    root: &Path,
    dir: &str,
    files: &[ExportedFile],
) -> Result<(), ExportError> {
    let local_dir = root.join(dir);
    let names = files
        .iter()
        .map(|file| file.path.as_str())
        .chain([MANIFEST_NAME]);
    for name in names {
        let key = object_key(store, dir, name)?;
        upload_file(store, &local_dir.join(name), &key).await?;
    }
    Ok(())
}

pub fn object_key(
    store: &ArchiveStore,
    relative: &str,
    name: &str,
) -> Result<ObjectPath, ExportError> {
    let prefix = store.root.to_string();
    let key = if prefix.is_empty() {
        format!("{}/{name}", object_dir(relative))
    } else {
        format!("{prefix}/{}/{name}", object_dir(relative))
    };
    ObjectPath::parse(&key)
        .map_err(|error| ExportError::Invalid(format!("{key} is not a valid object key: {error}")))
}

async fn upload_file(
    store: &ArchiveStore,
    local: &Path,
    key: &ObjectPath,
) -> Result<(), ExportError> {
    upload_file_sized(store, local, key, UPLOAD_SIZES).await
}

async fn upload_file_sized(
    store: &ArchiveStore,
    local: &Path,
    key: &ObjectPath,
    sizes: UploadSizes,
) -> Result<(), ExportError> {
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|error| ExportError::io(local, error))?;
    let len = file
        .metadata()
        .await
        .map_err(|error| ExportError::io(local, error))?
        .len();
    if len > sizes.single_put_bytes_max {
        return upload_multipart(store, &mut file, local, key, sizes).await;
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .await
        .map_err(|error| ExportError::io(local, error))?;
    store
        .store
        .put(key, PutPayload::from(bytes))
        .await
        .map_err(|error| upload_error(store, key, error.to_string()))?;
    Ok(())
}

fn upload_error(store: &ArchiveStore, key: &ObjectPath, detail: String) -> ExportError {
    ExportError::Upload {
        object: store.describe(key),
        detail,
    }
}

/// Puts the bytes of `reader` (the file `local`) at `key` by a multipart upload, aborted when
/// anything fails. Generic over the reader so a test can make the local read fail midway.
async fn upload_multipart(
    store: &ArchiveStore,
    reader: &mut (impl AsyncRead + Unpin),
    local: &Path,
    key: &ObjectPath,
    sizes: UploadSizes,
) -> Result<(), ExportError> {
    let upload = store
        .store
        .put_multipart(key)
        .await
        .map_err(|error| upload_error(store, key, error.to_string()))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, sizes.multipart_chunk_bytes);
    match write_parts(&mut writer, reader, local, sizes).await {
        // `finish` aborts the upload itself when a part or the completion fails.
        Ok(()) => writer
            .finish()
            .await
            .map(|_| ())
            .map_err(|error| upload_error(store, key, error.to_string())),
        // A part or a local read failed: abort, so the store drops the parts already sent
        // instead of keeping an incomplete upload (billed, and invisible to listings).
        Err(error) => {
            if let Err(abort_error) = writer.abort().await {
                tracing::warn!(object = %store.describe(key), "cannot abort the multipart upload: {abort_error}");
            }
            Err(match error {
                PartError::Local(error) => error,
                PartError::Store(detail) => upload_error(store, key, detail),
            })
        }
    }
}

/// Why sending the parts of a multipart upload stopped.
enum PartError {
    /// Reading the local file failed.
    Local(ExportError),
    /// The store refused a part.
    Store(String),
}

/// Sends the reader's bytes as parts, at most `multipart_concurrency` in flight. A refused part
/// shows here only once that many are in flight; with fewer, `finish` finds it.
async fn write_parts(
    writer: &mut WriteMultipart,
    reader: &mut (impl AsyncRead + Unpin),
    local: &Path,
    sizes: UploadSizes,
) -> Result<(), PartError> {
    let mut buffer = vec![0; sizes.multipart_chunk_bytes];
    loop {
        let read = reader
            .read(&mut buffer)
            .await
            .map_err(|error| PartError::Local(ExportError::io(local, error)))?;
        if read == 0 {
            return Ok(());
        }
        writer
            .wait_for_capacity(sizes.multipart_concurrency)
            .await
            .map_err(|error| PartError::Store(error.to_string()))?;
        writer.write(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_and_builds_have_their_own_folders() {
        assert_eq!(
            url_of("s3://b/p/", "exp_trajectories_0_9"),
            "s3://b/p/exports/exp_trajectories_0_9/"
        );
        assert_eq!(
            url_of("gs://b", "datasets/code-v1/bld_x"),
            "gs://b/datasets/code-v1/bld_x/"
        );
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
mod upload_tests;
