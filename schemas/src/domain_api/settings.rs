//! The training settings in force, as the log recorded them.

use serde::{Deserialize, Serialize};

/// `GET /v1/settings`: the training settings in force, as the log recorded them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingsResponse {
    /// The `[rewards]` and `[training]` settings last recorded (`training_settings_recorded`);
    /// null only in a log no daemon of this version has started on yet.
    pub training: Option<crate::events::TrainingSettings>,
    /// The LSN of the record that holds them.
    #[schema(value_type = Option<u64>)]
    pub training_lsn: Option<crate::Lsn>,
}
