//! HTTP bodies of the domain routes: datasets and their processed splits, per-task agent state,
//! trajectory steps, sandbox results and rewards (`docs/domain.md`, "HTTP API").
//!
//! Requests reject unknown fields, like every other request of the API. Where an event type of
//! [`crate::events`] is also the natural answer shape (a dataset's meta, an agent state, an
//! action), the answer reuses it, so the log and the API cannot drift apart; requests that carry
//! such a shape have their own strict copy, because the event types accept unknown fields (they
//! must keep decoding records written by newer builds).
//!
//! One file per concern, every type re-exported here, so `domain_api::X` names each of them.

mod datasets;
mod rollouts;
mod rules;
mod settings;
mod state;
mod trajectories;

pub use datasets::*;
pub use rollouts::*;
pub use rules::*;
pub use settings::*;
pub use state::*;
pub use trajectories::*;
