//! The training settings: how rule rewards combine their checks, the system prompt of the
//! trainer views and the SFT reward threshold. Recorded in the log (`training_settings_recorded`)
//! at start-up whenever they differ from the last recorded ones, so that an export is a function
//! of the log: it uses the settings recorded at or before its `to`.

use serde::{Deserialize, Serialize};

/// `training_settings_recorded.v1`: the `[rewards]` and `[training]` settings in force from
/// this record on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrainingSettings {
    pub rewards: RewardSettings,
    pub system_prompt: SystemPrompt,
    pub sft: SftSettings,
}

/// `[rewards]`: how the rule reward of `astgrep.verify` combines its checks
/// (docs/astgrep_verify.md, "The reward").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardSettings {
    /// `all`: the product of the checks (every check must pass: a binary reward);
    /// `weighted`: the gates (`applied`, `tamper`) times the weighted mean of the
    /// scored checks (`tests`, `gold_match`, `post_match`) that apply.
    #[serde(default)]
    pub combine: RewardCombine,
    /// How `tests` scores when the job's payload does not say (`tests_reward`).
    #[serde(default)]
    pub tests: TestsReward,
    /// Weights of the scored checks, used by `combine = "weighted"`.
    #[serde(default)]
    pub weights: RewardWeights,
}

impl Default for RewardSettings {
    fn default() -> Self {
        RewardSettings {
            combine: RewardCombine::All,
            tests: TestsReward::All,
            weights: RewardWeights::default(),
        }
    }
}

/// How the checks of a rule reward combine into its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardCombine {
    /// The product of every check: 1 only when all pass.
    #[default]
    All,
    /// Gates times the weighted mean of the scored checks.
    Weighted,
}

/// How the `tests` check scores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestsReward {
    /// 1 when every test passed, else 0.
    #[default]
    All,
    /// Tests passed over the tests the pristine test files define (partial credit).
    Fraction,
}

/// Weights of the scored checks (each at least 0; a check that does not apply is left out of
/// the mean, whatever its weight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardWeights {
    #[serde(default = "one")]
    pub tests: f64,
    #[serde(default = "one")]
    pub gold_match: f64,
    #[serde(default = "one")]
    pub post_match: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for RewardWeights {
    fn default() -> Self {
        RewardWeights {
            tests: 1.0,
            gold_match: 1.0,
            post_match: 1.0,
        }
    }
}

/// The system prompt of the trainer views (`trl_sft`, `trl_grpo`, `verl_rl`): the first turn
/// of every conversation. `version` names the text; a new text needs a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPrompt {
    pub version: String,
    pub text: String,
}

/// `[training]` settings of the SFT view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SftSettings {
    /// A verified step goes to `trl_sft` only with a reward at least this.
    pub min_reward: f64,
}

impl Default for SftSettings {
    fn default() -> Self {
        SftSettings { min_reward: 1.0 }
    }
}
