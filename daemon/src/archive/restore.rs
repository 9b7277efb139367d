//! `agentd restore --from URL --data-dir D [--until-lsn N]`: download the archived segments the
//! manifest names, check each against its sha256, cut the last one at record N, check the whole
//! log with the log's own recovery, and only then move it into `D/log`. The daemon started on D
//! rebuilds its projections from that log as at any start.

use super::location::{ArchiveStore, StorageUrl, StorageUrlError};
use super::manifest::{Manifest, ManifestError, ManifestPart, ManifestSegment};
use super::segments::{read_verified, sha256_hex, LocalSegment};
use crate::data_dir::DataPaths;
use crate::log::{self, LogError, LogOptions, LogReader};
use object_store::GetOptions;
use std::path::{Path, PathBuf};

/// Name of the directory segments are downloaded into before they are checked; removed by the
/// next restore if one was interrupted.
const STAGING_DIR: &str = "log.restoring";

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The storage URL the daemon archived to (`[storage] url`).
    pub from: String,
    pub data_dir: PathBuf,
    /// Keep records up to this LSN only (a record boundary); `None`: everything archived.
    pub until_lsn: Option<u64>,
    /// The daemon's `[log] frame_bytes_max`: frames longer than it are not trusted.
    pub frame_bytes_max: u32,
}

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Last LSN of the restored log.
    pub last_lsn: u64,
    /// Last LSN the archive holds.
    pub archive_last_lsn: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// Why a restore was refused or failed. Nothing is moved into `D/log` unless all checks pass.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Url(#[from] StorageUrlError),
    #[error("refusing to restore into {}: {detail}", data_dir.display())]
    DataDir { data_dir: PathBuf, detail: String },
    #[error("no log archive at {url}: {object} does not exist")]
    NoArchive { url: String, object: String },
    #[error("cannot download {object} from {url}: {source}")]
    Download {
        url: String,
        object: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    #[error("--until-lsn 0 keeps no record: give an lsn from 1 to the archive's last (leave --until-lsn off to restore everything)")]
    UntilZero,
    #[error("--until-lsn {until_lsn} is past the end of the archive at {url}, which holds lsns 1 to {last_lsn}")]
    UntilPastEnd {
        url: String,
        until_lsn: u64,
        last_lsn: u64,
    },
    #[error("the archive at {url} holds no record yet")]
    EmptyArchive { url: String },
    #[error("archived segment {object} is damaged: {detail}")]
    Damaged { object: String, detail: String },
    #[error("the downloaded log does not verify, restore refused: {0}")]
    Verify(#[from] LogError),
    #[error("restore I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a restore task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Restores the archive at `options.from` into `options.data_dir`. A refused or failed restore
/// leaves the directory as it found it: what it created (the directory itself, its `LOCK`, the
/// staging directory) is removed, and nothing that was there before is touched.
pub async fn restore(options: RestoreOptions) -> Result<RestoreReport, RestoreError> {
    if options.until_lsn == Some(0) {
        return Err(RestoreError::UntilZero);
    }
    let store = StorageUrl::parse(&options.from)?.open()?;
    let created = CreatedByRestore::before(&options.data_dir);
    let outcome = restore_into(&store, &options).await;
    if outcome.is_err() {
        created.remove();
    }
    outcome
}

/// What existed before a restore started, so a failed one removes only what it created.
struct CreatedByRestore {
    data_dir: PathBuf,
    data_dir_existed: bool,
    lock_existed: bool,
    /// A staging directory left by an interrupted restore is kept as it was found.
    staging_existed: bool,
}

impl CreatedByRestore {
    fn before(data_dir: &Path) -> CreatedByRestore {
        CreatedByRestore {
            data_dir: data_dir.to_path_buf(),
            data_dir_existed: data_dir.exists(),
            lock_existed: data_dir.join(crate::data_dir::DATA_DIR_LOCK).exists(),
            staging_existed: data_dir.join(STAGING_DIR).exists(),
        }
    }

    /// Removes the staging directory, the lock file and the data directory if this restore
    /// created them (the directory only when empty: `remove_dir`, never a recursive delete).
    /// Failures are only logged: the restore's own error is what the operator needs.
    fn remove(self) {
        let mut removals = Vec::new();
        if !self.staging_existed {
            let staging = self.data_dir.join(STAGING_DIR);
            removals.push((staging.clone(), std::fs::remove_dir_all(&staging)));
        }
        if !self.lock_existed {
            let lock = self.data_dir.join(crate::data_dir::DATA_DIR_LOCK);
            removals.push((lock.clone(), std::fs::remove_file(&lock)));
        }
        if !self.data_dir_existed {
            removals.push((self.data_dir.clone(), std::fs::remove_dir(&self.data_dir)));
        }
        for (path, outcome) in removals {
            match outcome {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "cannot clean up after the refused restore: {error}")
                }
                _ => {}
            }
        }
    }
}

/// The restore itself, holding the data directory's lock until it returns.
async fn restore_into(
    store: &ArchiveStore,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    let _lock = prepare_data_dir(&options.data_dir)?;
    let manifest = fetch_manifest(store).await?;
    let until_lsn = match options.until_lsn {
        _ if manifest.last_lsn == 0 => {
            return Err(RestoreError::EmptyArchive {
                url: store.url.clone(),
            });
        }
        Some(until_lsn) if until_lsn > manifest.last_lsn => {
            return Err(RestoreError::UntilPastEnd {
                url: store.url.clone(),
                until_lsn,
                last_lsn: manifest.last_lsn,
            });
        }
        Some(until_lsn) => until_lsn,
        None => manifest.last_lsn,
    };
    let wanted: Vec<ManifestSegment> = manifest
        .segments
        .iter()
        .filter(|segment| segment.first_lsn <= until_lsn)
        .cloned()
        .collect();
    let staging = options.data_dir.join(STAGING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    let mut downloaded = 0;
    for entry in &wanted {
        downloaded += download_segment(store, entry, &staging).await?;
    }
    let last = wanted.last().cloned().ok_or(RestoreError::EmptyArchive {
        url: store.url.clone(),
    })?;
    let frame_bytes_max = options.frame_bytes_max;
    let staged = staging.clone();
    let last_bytes = last.bytes;
    let kept_bytes = tokio::task::spawn_blocking(move || {
        cut_and_verify(&staged, &last, until_lsn, frame_bytes_max)
    })
    .await??;
    let log_dir = DataPaths::new(&options.data_dir).log;
    if log_dir.exists() {
        // prepare_data_dir checked that it holds no segment.
        std::fs::remove_dir_all(&log_dir).map_err(io_error(&log_dir))?;
    }
    std::fs::rename(&staging, &log_dir).map_err(io_error(&log_dir))?;
    sync_dir(&options.data_dir)?;
    Ok(RestoreReport {
        last_lsn: until_lsn,
        archive_last_lsn: manifest.last_lsn,
        segments: wanted.len(),
        // What the restored log holds: the last segment counts as cut.
        bytes: downloaded - last_bytes + kept_bytes,
    })
}

/// Creates the data directory, takes its lock (no daemon may start on it meanwhile) and refuses
/// one that holds a log or projections already.
fn prepare_data_dir(data_dir: &Path) -> Result<std::fs::File, RestoreError> {
    let refuse = |detail: String| RestoreError::DataDir {
        data_dir: data_dir.to_path_buf(),
        detail,
    };
    std::fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let lock = crate::data_dir::lock_data_dir(data_dir)
        .map_err(|error| refuse(format!("{error:#}")))?
        .ok_or_else(|| refuse("an agentd is running on it".to_owned()))?;
    let paths = DataPaths::new(data_dir);
    for (dir, what) in [(&paths.log, "a log"), (&paths.projections, "projections")] {
        let first = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(dir)(error)),
        };
        if let Some(entry) = first {
            let path = entry.map_err(io_error(dir))?.path();
            return Err(refuse(format!(
                "it already holds {what} ({}); restore into a new or empty data directory",
                path.display()
            )));
        }
    }
    Ok(lock)
}

pub(crate) async fn fetch_manifest(store: &ArchiveStore) -> Result<Manifest, RestoreError> {
    let path = store.manifest_path();
    let bytes = match store.store.get_opts(&path, GetOptions::default()).await {
        Ok(found) => found.bytes().await,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RestoreError::NoArchive {
                url: store.url.clone(),
                object: path.to_string(),
            })
        }
        Err(error) => Err(error),
    }
    .map_err(|source| RestoreError::Download {
        url: store.url.clone(),
        object: path.to_string(),
        source,
    })?;
    Ok(Manifest::from_json(&bytes)?)
}

/// Downloads one archived segment into `staging`: a sealed one is its object, an unsealed one
/// the concatenation of its parts. Each object's prefix is checked against its sha256 as it
/// comes, and the whole segment against the entry's, before the file is written.
async fn download_segment(
    store: &ArchiveStore,
    entry: &ManifestSegment,
    staging: &Path,
) -> Result<u64, RestoreError> {
    let pieces = if entry.sealed {
        vec![entry.whole_prefix_part()]
    } else {
        entry.parts.clone()
    };
    let mut segment = Vec::with_capacity(entry.bytes as usize);
    for piece in &pieces {
        let bytes = download_piece(store, piece).await?;
        segment.extend_from_slice(&bytes);
    }
    let sha256 = sha256_hex(&segment);
    if sha256 != entry.sha256 {
        return Err(RestoreError::Damaged {
            object: store.describe(&store.segment_path(&entry.name)),
            detail: format!(
                "sha256 of its {} bytes put together from {} part(s) is {sha256}, the manifest says {}",
                entry.bytes,
                pieces.len(),
                entry.sha256
            ),
        });
    }
    let file_path = staging.join(&entry.name);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::File::create_new(&file_path).map_err(io_error(&file_path))?;
        file.write_all(&segment).map_err(io_error(&file_path))?;
        file.sync_all().map_err(io_error(&file_path))
    })
    .await??;
    Ok(entry.bytes)
}

/// The bytes one object holds for the manifest: the first `to - from` bytes of it, checked
/// against the part's sha256. A missing or short object is named as a partial upload.
pub(crate) async fn download_piece(
    store: &ArchiveStore,
    piece: &ManifestPart,
) -> Result<bytes::Bytes, RestoreError> {
    let path = store.segment_path(&piece.object);
    let damaged = |detail: String| RestoreError::Damaged {
        object: store.describe(&path),
        detail,
    };
    let download_error = |source| RestoreError::Download {
        url: store.url.clone(),
        object: path.to_string(),
        source,
    };
    let object = match store.store.get_opts(&path, GetOptions::default()).await {
        Ok(found) => found.bytes().await.map_err(download_error)?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(damaged(
                "it is missing but the manifest lists it (a partial upload? an archiver started on the original data directory puts it again)".to_owned()
            ))
        }
        Err(error) => return Err(download_error(error)),
    };
    let wanted = piece.len_bytes();
    let Some(prefix) = object.get(..wanted as usize) else {
        return Err(damaged(format!(
            "it is {} bytes but the manifest lists {wanted} (a partial upload?)",
            object.len()
        )));
    };
    let sha256 = sha256_hex(prefix);
    if sha256 != piece.sha256 {
        return Err(damaged(format!(
            "sha256 of its first {wanted} bytes is {sha256}, the manifest says {}",
            piece.sha256
        )));
    }
    Ok(object.slice(..wanted as usize))
}

/// Cuts the last segment after record `until_lsn` (found by the log's reader, so at a frame
/// boundary), then runs the log's recovery over the whole directory: headers, CRCs, contiguous
/// LSNs, sealed segments intact to their end. A torn tail would mean the archive held a partial
/// frame, so it is refused rather than repaired. Returns the last segment's length after the cut.
fn cut_and_verify(
    staging: &Path,
    last: &ManifestSegment,
    until_lsn: u64,
    frame_bytes_max: u32,
) -> Result<u64, RestoreError> {
    let last_path = staging.join(&last.name);
    let mut kept_bytes = last.bytes;
    if until_lsn < last.last_lsn {
        let reader = LogReader::open(staging, frame_bytes_max)?;
        let segment = LocalSegment {
            first_lsn: last.first_lsn,
            path: last_path.clone(),
            len_bytes: last.bytes,
        };
        let kept = read_verified(&reader, &segment, until_lsn, false).map_err(|error| {
            RestoreError::Damaged {
                object: last.name.clone(),
                detail: error.to_string(),
            }
        })?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&last_path)
            .map_err(io_error(&last_path))?;
        file.set_len(kept.entry.bytes)
            .map_err(io_error(&last_path))?;
        file.sync_all().map_err(io_error(&last_path))?;
        kept_bytes = kept.entry.bytes;
    }
    let mut options = LogOptions::new(staging);
    options.frame_bytes_max = frame_bytes_max;
    let (recovered, report) = log::open(options)?;
    drop(recovered);
    if let Some(torn) = report.truncated {
        return Err(RestoreError::Damaged {
            object: last.name.clone(),
            detail: format!("it ends in a partial frame ({})", torn.reason),
        });
    }
    if report.last_lsn.0 != until_lsn {
        return Err(RestoreError::Damaged {
            object: last.name.clone(),
            detail: format!(
                "the restored log ends at lsn {}, expected lsn {until_lsn}",
                report.last_lsn.0
            ),
        });
    }
    Ok(kept_bytes)
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(io_error(dir))
}
