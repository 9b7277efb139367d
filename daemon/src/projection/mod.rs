//! Projections: state materialised from the durable log, rebuildable at any time.
//!
//! The job projection lives in redb (`<data-dir>/projections/jobs.redb`) together with its
//! applied LSN in the same transaction. One projector thread tails the log: whenever the durable
//! LSN moves, it reads the new frames from disk, applies them, and publishes its applied LSN so
//! readers can wait for their own writes. Commits use redb's non-durable mode (the log is the
//! source of truth; after a crash the projection catches up from its last durable commit), with
//! a durable commit every [`DURABLE_COMMIT_INTERVAL`] and at shutdown.
//!
//! Architecture invariant: a projection only ever reads frames up to the durable LSN, so it
//! never contains an event that a crash could take back.

pub mod domain;
pub mod jobs;

use crate::replay::{ApplyError, DriveError, Projection, ReplayError};
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Bump when the shape or meaning of anything stored in the projection changes: an older file
/// is then rebuilt from the log at start.
pub const JOBS_PROJECTION_VERSION: u64 = 2;
/// How often the projector makes its progress durable (bounds catch-up work after a crash).
pub const DURABLE_COMMIT_INTERVAL: Duration = Duration::from_secs(2);
/// Frames applied per redb transaction.
pub const FRAMES_PER_TRANSACTION_MAX: usize = 4096;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_APPLIED_LSN: &str = "applied_lsn";
const META_VERSION: &str = "projection_version";

/// Why a projection could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Jobs(#[from] jobs::JobsError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("a projection cannot apply the log: {0}")]
    Apply(ApplyError),
    #[error("cannot prepare projection directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<DriveError> for ProjectionError {
    fn from(error: DriveError) -> Self {
        match error {
            DriveError::Replay(error) => ProjectionError::Replay(error),
            DriveError::Apply(error) => match error.downcast::<ProjectionError>() {
                Ok(ours) => *ours,
                Err(other) => ProjectionError::Apply(other),
            },
        }
    }
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    Existing {
        applied_lsn: Lsn,
    },
    Created,
    /// The file was unreadable or of another version; it was replaced by an empty one.
    Recreated {
        reason: String,
    },
}

/// The redb file holding the job projection.
pub struct ProjectionStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl ProjectionStore {
    /// Opens the projection, replacing it with an empty one when it is corrupt or of an older
    /// version (the caller then catches it up from the log).
    pub fn open(dir: &Path) -> Result<(ProjectionStore, OpenOutcome), ProjectionError> {
        std::fs::create_dir_all(dir).map_err(|source| ProjectionError::Io {
            path: dir.into(),
            source,
        })?;
        let path = dir.join("jobs.redb");
        let existed = path.exists();
        let reason = match Database::create(&path) {
            Ok(db) => match read_meta(&db) {
                Ok((Some(version), applied_lsn)) if version == JOBS_PROJECTION_VERSION => {
                    let store = ProjectionStore {
                        db: Arc::new(db),
                        path,
                    };
                    return Ok((store, OpenOutcome::Existing { applied_lsn }));
                }
                Ok((Some(version), _)) => Some(format!(
                    "projection version {version}, this build uses {JOBS_PROJECTION_VERSION}"
                )),
                Ok((None, _)) if !existed => None,
                Ok((None, _)) => Some("no projection version recorded".to_string()),
                Err(error) => Some(error.to_string()),
            },
            Err(error) => Some(format!("unreadable: {error}")),
        };
        if reason.is_some() {
            std::fs::remove_file(&path).map_err(|source| ProjectionError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let db = Database::create(&path).map_err(jobs::storage)?;
        let txn = db.begin_write().map_err(jobs::storage)?;
        {
            let mut meta = txn.open_table(META).map_err(jobs::storage)?;
            meta.insert(META_VERSION, JOBS_PROJECTION_VERSION)
                .map_err(jobs::storage)?;
            meta.insert(META_APPLIED_LSN, 0).map_err(jobs::storage)?;
        }
        jobs::create_tables(&txn)?;
        txn.commit().map_err(jobs::storage)?;
        let outcome = match reason {
            Some(reason) => OpenOutcome::Recreated { reason },
            None => OpenOutcome::Created,
        };
        Ok((
            ProjectionStore {
                db: Arc::new(db),
                path,
            },
            outcome,
        ))
    }

    /// [`Self::open`] for a log that ends at `log_last_lsn`: a projection ahead of the log (the
    /// log was replaced, for example by a restore) cannot be trusted and is replaced by an
    /// empty one, which the caller catches up. With [`Self::open`] (which resets a corrupt or
    /// older-version file), this decides when the running daemon resets the job projection;
    /// `agentd rebuild` always starts from an empty one.
    pub fn open_following(
        dir: &Path,
        log_last_lsn: Lsn,
    ) -> Result<(ProjectionStore, OpenOutcome), ProjectionError> {
        let (store, outcome) = ProjectionStore::open(dir)?;
        if store.applied_lsn()? <= log_last_lsn {
            return Ok((store, outcome));
        }
        let path = store.path.clone();
        drop(store);
        std::fs::remove_file(&path).map_err(|source| ProjectionError::Io {
            path: path.clone(),
            source,
        })?;
        let (store, _) = ProjectionStore::open(dir)?;
        Ok((
            store,
            OpenOutcome::Recreated {
                reason: "projection was ahead of the log".into(),
            },
        ))
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn applied_lsn(&self) -> Result<Lsn, ProjectionError> {
        Ok(read_meta(&self.db).map_err(jobs::storage)?.1)
    }

    /// Applies records (in LSN order, all after the applied LSN) in one transaction.
    pub fn apply(
        &self,
        records: &[(Lsn, LogRecord)],
        durability: Durability,
    ) -> Result<(), ProjectionError> {
        let Some((last_lsn, _)) = records.last() else {
            return Ok(());
        };
        let mut txn = self.db.begin_write().map_err(jobs::storage)?;
        txn.set_durability(durability).map_err(jobs::storage)?;
        if records
            .iter()
            .any(|(_, record)| jobs::has_job_events(record))
        {
            let mut tables = jobs::JobTables::open(&txn)?;
            for (lsn, record) in records {
                tables.apply_record(*lsn, record)?;
            }
            tables.finish()?;
        }
        txn.open_table(META)
            .map_err(jobs::storage)?
            .insert(META_APPLIED_LSN, last_lsn.0)
            .map_err(jobs::storage)?;
        txn.commit().map_err(jobs::storage)?;
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub fn persist(&self) -> Result<(), ProjectionError> {
        let mut txn = self.db.begin_write().map_err(jobs::storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(jobs::storage)?;
        txn.commit().map_err(jobs::storage)?;
        Ok(())
    }

    /// Catches up from the applied LSN to `up_to`, calling `progress` after each transaction
    /// (the projector drives its own list of projections: `projector.rs`).
    #[cfg(test)]
    pub fn catch_up(
        &self,
        log: &(impl crate::log::LogSource + ?Sized),
        up_to: Lsn,
        progress: impl FnMut(Lsn),
    ) -> Result<Lsn, ProjectionError> {
        let mut jobs = StoredJobs::new(self)?;
        let after = jobs.applied;
        let batch = FRAMES_PER_TRANSACTION_MAX;
        Ok(crate::replay::drive(
            log,
            after,
            up_to,
            batch,
            &mut [&mut jobs],
            progress,
        )?)
    }

    pub fn digest(&self) -> Result<String, ProjectionError> {
        Ok(jobs::digest(&self.db)?)
    }

    /// [`Self::digest`] and the applied LSN, read in one transaction: the digest covers
    /// exactly the records up to that LSN, even while the projector commits more.
    pub fn digest_with_applied_lsn(&self) -> Result<(Lsn, String), ProjectionError> {
        let txn = self.db.begin_read().map_err(jobs::storage)?;
        let applied = txn
            .open_table(META)
            .map_err(jobs::storage)?
            .get(META_APPLIED_LSN)
            .map_err(jobs::storage)?
            .map(|value| value.value())
            .unwrap_or(0);
        Ok((Lsn(applied), jobs::digest_in(&txn)?))
    }
}

/// The job projection as a [`Projection`] for the driver: records it already holds are
/// skipped (start-up replays from the start of the log for the in-memory projections while
/// this one resumes from its own applied LSN), and each batch is one non-durable transaction
/// (see [`ProjectionStore::persist`]).
pub struct StoredJobs<'a> {
    store: &'a ProjectionStore,
    applied: Lsn,
}

impl<'a> StoredJobs<'a> {
    pub fn new(store: &'a ProjectionStore) -> Result<Self, ProjectionError> {
        Ok(StoredJobs {
            applied: store.applied_lsn()?,
            store,
        })
    }
}

impl Projection for StoredJobs<'_> {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        let held = records.partition_point(|(lsn, _)| *lsn <= self.applied);
        let new = &records[held..];
        let Some(&(last, _)) = new.last() else {
            return Ok(());
        };
        self.store.apply(new, Durability::None)?;
        self.applied = last;
        Ok(())
    }
}

fn read_meta(db: &Database) -> Result<(Option<u64>, Lsn), redb::Error> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, Lsn::ZERO)),
        Err(error) => return Err(error.into()),
    };
    let version = meta.get(META_VERSION)?.map(|value| value.value());
    let applied = meta
        .get(META_APPLIED_LSN)?
        .map(|value| value.value())
        .unwrap_or(0);
    Ok((version, Lsn(applied)))
}

/// Lets readers wait until the projection reflects a given LSN. A reader that has to wait
/// tells the projector so (its demand), and the projector applies at once instead of letting
/// frames gather for up to [`projector::COALESCE_WINDOW`].
#[derive(Clone)]
pub struct AppliedWatch {
    rx: watch::Receiver<Lsn>,
    demand: Arc<watch::Sender<Lsn>>,
}

impl AppliedWatch {
    /// The last lsn the projections have applied.
    pub fn applied_lsn(&self) -> Lsn {
        *self.rx.borrow()
    }

    /// Waits until the projection has applied `lsn`, or `timeout` passes (then returns false).
    pub async fn wait_for(&self, lsn: Lsn, timeout: Duration) -> bool {
        if *self.rx.borrow() >= lsn {
            return true;
        }
        self.demand.send_if_modified(|wanted| {
            let raise = lsn > *wanted;
            if raise {
                *wanted = lsn;
            }
            raise
        });
        let mut rx = self.rx.clone();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= lsn))
            .await
            .is_ok_and(|result| result.is_ok())
    }
}

mod projector;
pub use projector::{spawn_projector, Keeper};

#[cfg(test)]
mod catch_up_tests;

#[cfg(test)]
mod list_tests;
