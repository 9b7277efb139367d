//! The recorded settings answer start-up's checks as the domain projections did, and the
//! `[datasets]` rule follows the processed splits' (`ProcessedSplits::apply_settings`).

use super::*;
use crate::projection::domain::DomainProjections;
use agentd_schemas::events::{DatasetRecord, DatasetRecordsIngested, SystemPrompt};

fn datasets(encoding: &str, token_cap: usize) -> DatasetsConfig {
    DatasetsConfig {
        encoding: encoding.to_owned(),
        token_cap,
        ..DatasetsConfig::default()
    }
}

fn at(events: Vec<Event>) -> LogRecord {
    LogRecord {
        ts_ms: 1,
        actor: None,
        events,
    }
}

fn ingest(records: usize) -> Event {
    Event::DatasetRecordsIngested(DatasetRecordsIngested {
        source: "s".into(),
        version: "v1".into(),
        first_index: 0,
        records: (0..records)
            .map(|n| DatasetRecord {
                instruction: format!("instruction {n}"),
                pre: "a = 1".into(),
                post: "a = 2".into(),
                language: "python".into(),
                tags: Vec::new(),
                metadata_json: "{}".into(),
            })
            .collect(),
    })
}

fn settings_event(config: &DatasetsConfig) -> Event {
    Event::DatasetSettingsRecorded(config.settings())
}

/// Applies `records` to both the recorded settings and fresh domain projections built with
/// `built_with`, and checks the splits in force agree.
fn both(built_with: &DatasetsConfig, records: &[LogRecord]) -> RecordedSettings {
    let mut recorded = RecordedSettings::default();
    let domain = DomainProjections::new(built_with).unwrap();
    for (n, record) in records.iter().enumerate() {
        let lsn = Lsn(n as u64 + 1);
        recorded.apply(lsn, record);
        domain.apply_record(lsn, record.clone());
    }
    let in_force = domain.datasets().splits().config().settings();
    let wanted = SplitsConfig::from_settings(&built_with.settings())
        .unwrap()
        .0
        .settings();
    assert_eq!(
        recorded.datasets_in_force.clone().unwrap_or(wanted),
        in_force
    );
    recorded
}

#[test]
fn a_fresh_log_records_the_configs_settings_once() {
    let config = DatasetsConfig::default();
    let fresh = both(&config, &[]);
    assert!(fresh.datasets_to_record(&config).unwrap().is_some());
    let recorded = both(&config, &[at(vec![settings_event(&config)])]);
    assert_eq!(recorded.datasets_to_record(&config).unwrap(), None);
}

#[test]
fn settings_change_until_records_arrive_and_are_refused_after() {
    let first = DatasetsConfig::default();
    let other = datasets("cl100k_base", 4096);
    let before_records = both(&first, &[at(vec![settings_event(&first)])]);
    assert_eq!(
        before_records.datasets_to_record(&other).unwrap(),
        Some(
            SplitsConfig::from_settings(&other.settings())
                .unwrap()
                .0
                .settings()
        )
    );
    let with_records = both(
        &first,
        &[at(vec![settings_event(&first)]), at(vec![ingest(2)])],
    );
    let refused = with_records.datasets_to_record(&other).unwrap_err();
    assert!(refused.contains("differs from the settings"), "{refused}");
    // Settings recorded after records and differing are not put in force (the splits' rule).
    let late = both(
        &first,
        &[
            at(vec![settings_event(&first)]),
            at(vec![ingest(1)]),
            at(vec![settings_event(&other)]),
        ],
    );
    assert!(late.datasets_to_record(&other).is_err());
    // An empty ingest batch receives no position.
    let empty = both(
        &first,
        &[at(vec![settings_event(&first)]), at(vec![ingest(0)])],
    );
    assert!(empty.datasets_to_record(&other).is_ok());
}

#[test]
fn training_settings_are_recorded_when_they_change_and_a_prompt_text_needs_a_new_version() {
    let wanted = crate::config::Config::default()
        .training_settings()
        .unwrap();
    let none = RecordedSettings::default();
    assert_eq!(
        none.training_to_record(&wanted).unwrap(),
        Some(wanted.clone())
    );
    let mut recorded = RecordedSettings::default();
    recorded.apply(
        Lsn(7),
        &at(vec![Event::TrainingSettingsRecorded(wanted.clone())]),
    );
    assert_eq!(recorded.training_to_record(&wanted).unwrap(), None);
    let mut changed_text = wanted.clone();
    changed_text.system_prompt = SystemPrompt {
        text: format!("{} (edited)", wanted.system_prompt.text),
        ..wanted.system_prompt.clone()
    };
    let refused = recorded.training_to_record(&changed_text).unwrap_err();
    assert!(refused.contains("lsn 7"), "{refused}");
    let mut new_version = changed_text.clone();
    new_version.system_prompt.version = format!("{}-2", wanted.system_prompt.version);
    assert_eq!(
        recorded.training_to_record(&new_version).unwrap(),
        Some(new_version.clone())
    );
}
