//! agentd: the daemon library. Owns the durable log, the sequencer (the one place state changes),
//! the projections and the HTTP API. It must not know about worker-side concerns (sandboxes, GPUs).

pub(crate) mod archive;
pub(crate) mod auth;
pub(crate) mod clock;
pub mod config;
pub(crate) mod data_dir;
pub(crate) mod domain;
pub(crate) mod export;
pub(crate) mod facts;
pub(crate) mod http;
pub(crate) mod limited_listener;
pub(crate) mod log;
pub(crate) mod metrics_catalog;
pub(crate) mod projection;
pub(crate) mod queue;
pub mod rebuild;
pub(crate) mod replay;
pub(crate) mod replica;
pub(crate) mod schedule;
pub(crate) mod sequencer;
pub(crate) mod server;
pub(crate) mod snapshot;
pub(crate) mod tasks;
pub(crate) mod thread_priority;
pub(crate) mod tls;

/// Stops the process after a broken invariant (failed fsync, unreadable own log). Recovery on the
/// next start replays the log; continuing could acknowledge writes that are not durable.
pub fn fatal(message: &str) -> ! {
    tracing::error!("fatal: {message}");
    eprintln!("agentd: fatal: {message}");
    std::process::exit(70)
}

pub use archive::restore::{restore, RestoreOptions};
pub use server::{run, run_replica, ReplicaOptions};

/// What `agentd bench-export` (a module of the binary, not of the library) drives: the log, the
/// replay driver, the projections an export reads and the export writer.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::data_dir::log_options;
    pub use crate::export::{view_at, write_export, ExportSettings};
    pub use crate::log::{open as open_log, LogReader};
    pub use crate::projection::domain::DomainProjections;
    pub use crate::projection::FRAMES_PER_TRANSACTION_MAX;
    pub use crate::queue::QueueState;
    pub use crate::replay::{drive, for_each_record};
    pub use crate::thread_priority::EXPORT_WRITER_NICE_ADDED;
}

/// The decoders the fuzz and legacy-log test binaries (`daemon/tests/`) feed hostile bytes.
#[doc(hidden)]
pub mod fuzz_api {
    pub use crate::domain::dataset::{validate_meta, validate_record, FieldError};
    pub use crate::domain::output_format::parse as parse_model_output;
    pub use crate::http::extract::parse_json;

    /// The log's segment reader, recovery and frame decoder.
    pub mod log {
        pub use crate::log::{
            decode_frame_for_fuzzing, open, LogError, LogOptions, LogReader, Lsn, RawFrame,
            FRAME_BYTES_MAX_DEFAULT,
        };
    }
}

#[cfg(test)]
mod module_edges_tests;
