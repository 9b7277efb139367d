//! Pure domain logic: the rules that turn logged data into state, with no clock, no randomness and
//! no IO (the tokenizer vocabularies are compiled in). The sequencer and projections call these
//! functions on replay, so every function here must give the same answer on every run and machine.
//!
//! - [`tokens`]: token counting with the OpenAI BPE encodings.
//! - [`agent_state`]: merging and rendering the structured per-task agent state.
//! - [`dataset`]: the ingestion contract (`_meta.json`, records), languages, dedup keys, splits.
//! - [`splits`]: the processed-splits projection built from dataset events.
//! - [`step_language`]: the language of a step's action, for the trajectory stats by language.
//! - [`decide`]: how the sequencer decides each domain write against the fact index
//!   ([`crate::facts`], which the queue state holds, so it lives beside both modules rather than
//!   in either: the queue state depends on it, domain decisions depend on the queue state).
//!
//! Architecture invariant: nothing in this module reads the clock, the environment, the file
//! system or a random source, and nothing iterates a `HashMap` where the order can be observed.

pub mod agent_state;
pub mod dataset;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod output_format;
pub mod record_verification;
pub mod splits;
pub mod step_language;
pub mod tokens;
