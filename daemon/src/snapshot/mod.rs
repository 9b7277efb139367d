//! Snapshots of the sequencer's in-memory state: a cache for fast restarts, never a source of truth.
pub mod file;
