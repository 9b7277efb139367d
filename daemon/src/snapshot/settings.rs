//! The settings the log recorded, as start-up checks the config against them: the `[datasets]`
//! settings in force for the processed splits, whether any dataset record was received, and the
//! last training settings. A projection of its own so that start-up can check the config before
//! serving without waiting for the domain projections (which load behind the job API); its
//! rules are the processed splits' (`crate::domain::splits`) and the training history's,
//! and a test checks both give the same answers.

use crate::config::DatasetsConfig;
use crate::domain::splits::{judge_recorded_settings, SettingsVerdict, SplitsConfig};
use agentd_schemas::events::{DatasetSettings, Event, LogRecord, TrainingSettings};
use agentd_schemas::Lsn;
use serde::{Deserialize, Serialize};

/// What the log recorded about settings, up to the last applied record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedSettings {
    /// The `[datasets]` settings the splits follow; `None` while they follow the config's
    /// (no `dataset_settings_recorded` could be put in force yet).
    datasets_in_force: Option<DatasetSettings>,
    /// Whether the log recorded `[datasets]` settings at all.
    datasets_recorded: bool,
    /// Whether any dataset record position was received (settings can no longer change).
    records_received: bool,
    /// The last `training_settings_recorded` and its LSN.
    training: Option<(Lsn, TrainingSettings)>,
}

impl RecordedSettings {
    pub fn apply(&mut self, lsn: Lsn, record: &LogRecord) {
        for event in &record.events {
            match event {
                Event::DatasetSettingsRecorded(settings) => self.apply_datasets(settings),
                Event::DatasetRecordsIngested(batch) => {
                    // A batch receives positions `first_index..first_index + len`, none when it
                    // is empty or starts at the last position (`splits::apply_ingested`).
                    let end = batch.first_index.saturating_add(batch.records.len() as u64);
                    self.records_received |= end > batch.first_index;
                }
                Event::TrainingSettingsRecorded(settings) => {
                    self.training = Some((lsn, settings.clone()));
                }
                _ => {}
            }
        }
    }

    /// The processed splits' rule ([`judge_recorded_settings`]), on the settings alone.
    fn apply_datasets(&mut self, settings: &DatasetSettings) {
        self.datasets_recorded = true;
        let current = self
            .datasets_in_force
            .as_ref()
            .and_then(|in_force| SplitsConfig::from_settings(in_force).ok())
            .map(|(config, _counter)| config);
        let verdict = judge_recorded_settings(current.as_ref(), self.records_received, settings);
        if let SettingsVerdict::Adopt(config, _counter) = verdict {
            self.datasets_in_force = Some(config.settings());
        }
    }

    /// The `[datasets]` settings to record at start-up: `None` when the log's are the
    /// config's. A config that would change them under received records is refused.
    pub fn datasets_to_record(
        &self,
        config: &DatasetsConfig,
    ) -> Result<Option<DatasetSettings>, String> {
        let (wanted, _) = SplitsConfig::from_settings(&config.settings())
            .map_err(|error| format!("[datasets] encoding: {error}"))?;
        let wanted = wanted.settings();
        let in_force = self.datasets_in_force.as_ref().unwrap_or(&wanted);
        if *in_force == wanted {
            return Ok((!self.datasets_recorded).then_some(wanted));
        }
        if self.records_received {
            return Err(format!(
                "[datasets] in the config (encoding {}, token_cap {}, splits {}/{}/{}) differs from the settings the log's dataset records were processed with (encoding {}, token_cap {}, splits {}/{}/{}); changing them would move records between splits and change token counts. Put the recorded values back in [datasets], or ingest into a new data directory",
                wanted.encoding, wanted.token_cap, wanted.split_train, wanted.split_dev, wanted.split_test,
                in_force.encoding, in_force.token_cap, in_force.split_train, in_force.split_dev, in_force.split_test,
            ));
        }
        Ok(Some(wanted))
    }

    /// The training settings to record at start-up: `None` when the config's equal the last
    /// recorded ones. A system prompt whose text changed under the same version is refused: a
    /// version names one text, so exports that name it stay unambiguous.
    pub fn training_to_record(
        &self,
        wanted: &TrainingSettings,
    ) -> Result<Option<TrainingSettings>, String> {
        let Some((lsn, recorded)) = &self.training else {
            return Ok(Some(wanted.clone()));
        };
        if recorded == wanted {
            return Ok(None);
        }
        let (old, new) = (&recorded.system_prompt, &wanted.system_prompt);
        if old.version == new.version && old.text != new.text {
            return Err(format!(
                "the system prompt's text differs from the one the log recorded at lsn {lsn} under the same version {:?}; give the new text a new version (the `version` key of the system prompt file)",
                new.version
            ));
        }
        Ok(Some(wanted.clone()))
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
