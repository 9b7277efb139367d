//! The training settings projection: every `training_settings_recorded` event by LSN, so an
//! export as of `to` uses the settings recorded at or before `to` (the same ones a rebuild of
//! that range finds), and `GET /v1/settings` shows the latest.

use agentd_schemas::events::TrainingSettings;
use agentd_schemas::Lsn;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The recorded training settings, by the LSN that recorded them.
#[derive(Debug, Default)]
pub struct TrainingHistory {
    by_lsn: BTreeMap<Lsn, Arc<TrainingSettings>>,
}

impl TrainingHistory {
    pub fn apply(&mut self, lsn: Lsn, settings: TrainingSettings) {
        self.by_lsn.insert(lsn, Arc::new(settings));
    }

    /// The settings in force at `to`: the last recorded at or before it. `None` for a range
    /// of a log written before any were recorded (the trainer views then keep their older
    /// shape: no system prompt, SFT by the verified flag alone).
    pub fn at(&self, to: Lsn) -> Option<Arc<TrainingSettings>> {
        self.by_lsn
            .range(..=to)
            .next_back()
            .map(|(_, settings)| settings.clone())
    }

    /// The last recorded settings and their LSN.
    pub fn latest(&self) -> Option<(Lsn, Arc<TrainingSettings>)> {
        self.by_lsn
            .last_key_value()
            .map(|(lsn, settings)| (*lsn, settings.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentd_schemas::events::{RewardSettings, SftSettings, SystemPrompt};

    fn settings(version: &str) -> TrainingSettings {
        TrainingSettings {
            rewards: RewardSettings::default(),
            system_prompt: SystemPrompt {
                version: version.into(),
                text: "t".into(),
            },
            sft: SftSettings::default(),
        }
    }

    #[test]
    fn settings_in_force_are_the_last_recorded_at_or_before_the_lsn() {
        let mut history = TrainingHistory::default();
        assert!(history.at(Lsn(10)).is_none());
        history.apply(Lsn(5), settings("v1"));
        history.apply(Lsn(9), settings("v2"));
        assert!(history.at(Lsn(4)).is_none());
        assert_eq!(history.at(Lsn(5)).unwrap().system_prompt.version, "v1");
        assert_eq!(history.at(Lsn(8)).unwrap().system_prompt.version, "v1");
        assert_eq!(history.at(Lsn(9)).unwrap().system_prompt.version, "v2");
        assert_eq!(history.latest().unwrap().0, Lsn(9));
    }
}
