//! At the archiver's start, one listing of `<url>/log/` compares what the manifest names with
//! what the bucket holds: an object that is missing or shorter than the manifest says (a partial
//! upload, an operator's mistake, a lifecycle rule) is put again from the local log when the
//! local bytes still have the manifest's sha256; chunk objects the manifest does not name (left
//! by a pass stopped between its manifest and its deletes) are handed back as garbage.
//!
//! An object of the right size but other bytes is not detected here (that would mean reading
//! the whole archive at every start): restore checks every byte against the manifest and
//! refuses it, naming the object.

use super::location::ArchiveStore;
use super::manifest::{Manifest, ManifestSegment};
use super::segments::{read_range, sha256_hex};
use super::uploader::PassError;
use futures_util::StreamExt;
use object_store::{PutOptions, PutPayload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Re-uploads the named objects the bucket lacks (or holds short) from the local log; returns
/// the unnamed chunk objects under `log/`, to delete.
pub async fn check_objects(
    store: &ArchiveStore,
    manifest: &Manifest,
    log_dir: &Path,
) -> Result<Vec<String>, PassError> {
    let listed = list_log_objects(store).await?;
    let mut named = std::collections::HashSet::new();
    for entry in &manifest.segments {
        for (object, from, to, sha256) in needed_objects(entry) {
            named.insert(object.clone());
            let size = listed.get(&object).copied();
            if size.is_some_and(|size| size >= to - from) {
                continue;
            }
            let what = size.map_or("missing".to_owned(), |size| {
                format!("{size} bytes, {} expected", to - from)
            });
            let local = log_dir.join(&entry.name);
            match reupload(store, &object, &local, from, to, &sha256).await {
                Ok(()) => {
                    tracing::warn!(object = %object, "repaired an archived object ({what}) from the local log")
                }
                Err(detail) => tracing::error!(
                    object = %object,
                    "an archived object is {what} and cannot be repaired from the local log: {detail}; restores past lsn {} will be refused",
                    entry.first_lsn
                ),
            }
        }
    }
    Ok(listed
        .into_keys()
        .filter(|object| object.contains(".seg.part-") && !named.contains(object))
        .collect())
}

/// `(object, from, to, sha256)` of each object an entry names.
fn needed_objects(entry: &ManifestSegment) -> Vec<(String, u64, u64, String)> {
    if entry.sealed {
        return vec![(entry.name.clone(), 0, entry.bytes, entry.sha256.clone())];
    }
    entry
        .parts
        .iter()
        .map(|part| (part.object.clone(), part.from, part.to, part.sha256.clone()))
        .collect()
}

/// Object names (relative to `log/`) and sizes.
async fn list_log_objects(store: &ArchiveStore) -> Result<HashMap<String, u64>, PassError> {
    let mut listing = store.store.list(Some(&store.log_prefix));
    let mut objects = HashMap::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|source| PassError::Store {
            what: format!("cannot list {} in", store.log_prefix),
            store_url: store.url.clone(),
            source,
        })?;
        if let Some(name) = meta.location.filename() {
            objects.insert(name.to_owned(), meta.size);
        }
    }
    Ok(objects)
}

async fn reupload(
    store: &ArchiveStore,
    object: &str,
    local: &Path,
    from: u64,
    to: u64,
    sha256: &str,
) -> Result<(), String> {
    let path: PathBuf = local.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || read_range(&path, from, to))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    if sha256_hex(&bytes) != sha256 {
        return Err(format!(
            "{} bytes {from} to {to} do not have the manifest's sha256",
            local.display()
        ));
    }
    store
        .store
        .put_opts(
            &store.segment_path(object),
            PutPayload::from(bytes),
            PutOptions::default(),
        )
        .await
        .map(|_| ())
        .map_err(|error| error.to_string())
}
