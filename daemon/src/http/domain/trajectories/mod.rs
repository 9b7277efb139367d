//! Trajectory routes: record a step (with its optional state update, in the same log record),
//! attach a sandbox result and a reward to a step, read a trajectory, and the stats behind
//! teacher precision.
//!
//! Every write exists twice: under a rollout (`/v1/rollouts/{rollout_id}/steps...`) and under a
//! task (`/v1/tasks/{task_id}/steps...`), which records into the task's default rollout (the
//! one a task had before rollouts existed). Both parse and bound-check the body here and let the
//! sequencer decide ([`crate::domain::decide`]): each step index of a rollout is recorded once
//! (409 `conflict` for a second), and so are a step's sandbox result and reward; a sandbox result
//! or reward for a step not recorded is 404, as is an unknown rollout.
//!
//! `steps.rs` records steps, `facts.rs` their sandbox results and rewards, `views.rs` reads.

mod facts;
mod steps;
mod views;

// The handlers with their `#[utoipa::path]` companions, as `routes!` names them.
pub use facts::*;
pub use steps::*;
pub use views::*;
