//! The serialized types of agentd and nothing else.
//!
//! This crate owns every byte format that leaves a process: the log record (MessagePack) and its
//! events, and the HTTP request/response bodies (JSON). It must not contain behaviour beyond
//! encoding, decoding, upcasting and validation of shapes; state machines live in the daemon.
//!
//! Architecture invariant: an event variant, once released, is never renamed, renumbered or given
//! a new meaning. A change adds a new versioned variant and an upcaster in [`events::upcast`],
//! with a fixture of the old bytes under `migrations/`.

pub mod api;
pub mod domain_api;
pub mod error_code;
pub mod events;
pub mod export_api;
pub mod ids;
pub mod json_text;
pub mod projection;

pub use error_code::ErrorCode;
pub use ids::{JobId, LeaseId, Lsn, RolloutId};
pub use json_text::JsonText;
