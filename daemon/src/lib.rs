//! agentd: the daemon library. Owns the durable log, the sequencer (the one place state changes),
//! the projections and the HTTP API. It must not know about worker-side concerns (sandboxes, GPUs).

pub mod domain;
pub mod log;
