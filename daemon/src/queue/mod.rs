//! The job queue as a state machine: [`state::QueueState`] is the in-memory projection of every
//! job's lifecycle, changed only by [`state::QueueState::apply`]; [`decide`] validates commands
//! against it and decides the events to append. Neither reads a clock, randomness or IO: the
//! sequencer passes time and random numbers in.

pub mod decide;
pub mod limits;
pub mod state;

pub use decide::DecideError;
pub use limits::QueueLimits;
pub use state::{JobStatus, QueueState};

#[cfg(test)]
mod tests;
