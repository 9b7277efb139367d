//! Scheduled exports (`[[schedules]]` in agentd.toml): cron expressions (5 fields, 6 with
//! seconds, or `@daily` and the other nicknames) in an IANA time zone, evaluated with croner,
//! which follows POSIX/Vixie cron and handles daylight-saving changes (a 02:30 job on the
//! spring-forward day runs once, at the next valid time; a 01:30 job on the fall-back day runs
//! once).
//!
//! A firing is an event (`schedule_fired`) that decides the export it runs, so:
//! - a restart never repeats a slot: the next slot is computed after the last fired one, read
//!   from the log;
//! - a firing whose export was not recorded (a crash in between) is resumed at start-up with the
//!   range it decided;
//! - slots missed while the daemon was down run once at start-up (the latest of them), when
//!   `run_missed_at_startup` is true; a schedule that never fired has nothing to catch up.
//!
//! The scheduler reads the wall clock (it decides, like the sequencer); the planning functions
//! ([`Schedule::next_after`], [`missed_slot`]) take the time as an argument and are tested
//! without a clock.

use crate::export::runner::{ExportService, ScheduledExport};
use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest the scheduler sleeps before looking at the clock again (so a clock step is noticed).
const RECHECK_INTERVAL: Duration = Duration::from_secs(60);
/// Most schedules in one configuration.
pub const SCHEDULES_MAX: usize = 64;

pub use crate::config::ScheduleConfig;

/// A `[[schedules]]` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {name:?}: invalid cron expression {cron:?}: {message}")]
    Cron {
        name: String,
        cron: String,
        message: String,
    },
    #[error("schedule {name:?}: unknown time zone {timezone:?} (expected an IANA name such as UTC or Europe/Paris)")]
    TimeZone { name: String, timezone: String },
    #[error("schedule name {0:?} is used twice")]
    Duplicate(String),
    #[error("schedule name {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    Name(String),
    #[error("schedule {name:?}: {message}")]
    Export { name: String, message: String },
    #[error("at most {SCHEDULES_MAX} schedules")]
    TooMany,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub config: ScheduleConfig,
    cron: Cron,
    timezone: Tz,
}

impl Schedule {
    pub fn parse(config: &ScheduleConfig) -> Result<Schedule, ScheduleError> {
        let name_ok = !config.name.is_empty()
            && config.name.len() <= 64
            && config
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(ScheduleError::Name(config.name.clone()));
        }
        let cron = Cron::from_str(&config.cron).map_err(|error| ScheduleError::Cron {
            name: config.name.clone(),
            cron: config.cron.clone(),
            message: error.to_string(),
        })?;
        let timezone = Tz::from_str(&config.timezone).map_err(|_| ScheduleError::TimeZone {
            name: config.name.clone(),
            timezone: config.timezone.clone(),
        })?;
        crate::export::check_format(config.kind, config.format).map_err(|error| {
            ScheduleError::Export {
                name: config.name.clone(),
                message: error.to_string(),
            }
        })?;
        Ok(Schedule {
            config: config.clone(),
            cron,
            timezone,
        })
    }

    /// The first slot strictly after `ms` (ms since the Unix epoch), if the expression matches
    /// again.
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let start = self.at(ms)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last slot at or before `ms`.
    pub fn latest_at_or_before(&self, ms: u64) -> Option<u64> {
        let start = self.at(ms)?;
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        u64::try_from(previous.timestamp_millis()).ok()
    }

    fn at(&self, ms: u64) -> Option<chrono::DateTime<Tz>> {
        self.timezone
            .timestamp_millis_opt(i64::try_from(ms).ok()?)
            .single()
    }

    pub fn export(&self) -> ScheduledExport {
        ScheduledExport {
            name: self.config.name.clone(),
            kind: self.config.kind,
            format: self.config.format,
            full: self.config.full,
        }
    }
}

/// Parses every schedule; names must be unique.
pub fn parse_all(configs: &[ScheduleConfig]) -> Result<Vec<Schedule>, ScheduleError> {
    if configs.len() > SCHEDULES_MAX {
        return Err(ScheduleError::TooMany);
    }
    let mut names = std::collections::BTreeSet::new();
    configs
        .iter()
        .map(|config| {
            if !names.insert(config.name.clone()) {
                return Err(ScheduleError::Duplicate(config.name.clone()));
            }
            Schedule::parse(config)
        })
        .collect()
}

/// The slot to run at start-up for slots missed while down: the latest slot in
/// `(since, now]`, once, when the schedule catches up. `since` is the last slot it fired, or,
/// for a schedule that never fired, `last_up_ms`: the time of the log's last record before this
/// start, the last moment the daemon is known to have been up (a slot before it would have
/// fired then). An empty log has nothing to catch up.
pub fn missed_slot(
    schedule: &Schedule,
    last_fired_ms: Option<u64>,
    last_up_ms: Option<u64>,
    now_ms: u64,
) -> Option<u64> {
    let since = last_fired_ms.or(last_up_ms)?;
    if !schedule.config.run_missed_at_startup {
        return None;
    }
    schedule
        .latest_at_or_before(now_ms)
        .filter(|slot| *slot > since)
}

/// The next slot to wait for: after the last fired one, and never one already due before
/// `started_ms` (those are the missed slots, handled at start-up).
pub fn next_slot(schedule: &Schedule, last_fired_ms: Option<u64>, started_ms: u64) -> Option<u64> {
    let from = last_fired_ms.map_or(started_ms, |last| last.max(started_ms));
    schedule.next_after(from)
}

fn wall_ms() -> u64 {
    crate::clock::now_ms()
}

/// Runs the schedules until `stop` turns true: resumes interrupted firings, runs missed slots
/// once, then fires each slot as it comes.
///
/// `last_up_ms` is the time of the last record in the log before this start ([`missed_slot`]).
pub async fn run(
    schedules: Arc<Vec<Schedule>>,
    service: ExportService,
    last_up_ms: Option<u64>,
    mut stop: watch::Receiver<bool>,
) {
    // Each schedule's failure count exists from start-up, so an alert on its increase sees 0.
    for schedule in schedules.iter() {
        let name = schedule.config.name.clone();
        metrics::counter!("agentd_schedule_failures_total", "schedule" => name).increment(0);
    }
    resume_interrupted(&service).await;
    if schedules.is_empty() {
        return;
    }
    let started_ms = wall_ms();
    for schedule in schedules.iter() {
        let last = last_fired(&service, schedule);
        if let Some(slot) = missed_slot(schedule, last, last_up_ms, started_ms) {
            fire(&service, schedule, slot).await;
        }
    }
    loop {
        let (due, next_wake) = due_slots(&schedules, &service, started_ms, wall_ms());
        for (slot, schedule) in due.iter() {
            // A slot that is due is fired once, even if more slots of it passed meanwhile (an
            // export slower than the schedule's period): the next wait starts after the latest.
            let latest = schedule
                .latest_at_or_before(wall_ms())
                .unwrap_or(*slot)
                .max(*slot);
            fire(&service, schedule, latest).await;
        }
        if !due.is_empty() {
            continue;
        }
        let wait = next_wake
            .map(|wake| Duration::from_millis(wake.saturating_sub(wall_ms())))
            .unwrap_or(RECHECK_INTERVAL)
            .min(RECHECK_INTERVAL);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs the exports of firings that were logged but whose export was not (a crash in between),
/// with the range each firing decided.
async fn resume_interrupted(service: &ExportService) {
    for fired in service.with_ledger(|ledger| ledger.pending_fired()) {
        let name = fired.schedule.clone();
        match service.resume(fired).await {
            Ok(run) => {
                tracing::info!(schedule = %name, export_id = ?run.export_id, "resumed an interrupted scheduled export")
            }
            Err(error) => {
                tracing::error!(schedule = %name, "cannot resume the scheduled export: {error}")
            }
        }
    }
}

/// The slot a schedule fired last, as the log recorded it.
fn last_fired(service: &ExportService, schedule: &Schedule) -> Option<u64> {
    service.with_ledger(|ledger| {
        ledger
            .last_fired(&schedule.config.name)
            .map(|fired| fired.event.slot_ms)
    })
}

/// The schedules whose next slot is due at `now_ms`, in slot then name order, and when the
/// earliest of the others comes (`None`: none will). Publishes each next slot as a gauge.
fn due_slots<'a>(
    schedules: &'a [Schedule],
    service: &ExportService,
    started_ms: u64,
    now_ms: u64,
) -> (Vec<(u64, &'a Schedule)>, Option<u64>) {
    let mut due: Vec<(u64, &Schedule)> = Vec::new();
    let mut next_wake: Option<u64> = None;
    for schedule in schedules {
        let Some(slot) = next_slot(schedule, last_fired(service, schedule), started_ms) else {
            continue;
        };
        // A slot left in the past (not fired, or its export still running) is what the
        // "scheduled export overdue" alert looks for.
        let name = schedule.config.name.clone();
        metrics::gauge!("agentd_schedule_next_slot_timestamp_seconds", "schedule" => name)
            .set(slot as f64 / 1000.0);
        if slot <= now_ms {
            due.push((slot, schedule));
        } else {
            next_wake = Some(next_wake.map_or(slot, |wake: u64| wake.min(slot)));
        }
    }
    due.sort_by_key(|(slot, schedule)| (*slot, schedule.config.name.clone()));
    (due, next_wake)
}

async fn fire(service: &ExportService, schedule: &Schedule, slot_ms: u64) {
    let name = &schedule.config.name;
    match service.fire(schedule.export(), slot_ms).await {
        Ok(run) => {
            tracing::info!(schedule = %name, slot_ms, export_id = ?run.export_id, "schedule fired")
        }
        Err(error) => {
            // The firing may not be logged (e.g. disk full): wait for the next slot rather than
            // retry in a tight loop. A logged firing whose export failed resumes at the next start.
            tracing::error!(schedule = %name, slot_ms, "scheduled export failed: {error}");
            metrics::counter!("agentd_schedule_failures_total", "schedule" => name.clone())
                .increment(1);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentd_schemas::events::{ExportFormat, ExportKind};

    fn schedule(cron: &str, timezone: &str) -> Schedule {
        Schedule::parse(&ScheduleConfig {
            name: "nightly".into(),
            cron: cron.into(),
            timezone: timezone.into(),
            kind: ExportKind::Trajectories,
            format: ExportFormat::Parquet,
            full: false,
            run_missed_at_startup: true,
        })
        .unwrap()
    }

    fn ms(rfc3339: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn five_fields_nicknames_and_time_zones() {
        let daily = schedule("@daily", "UTC");
        assert_eq!(
            daily.next_after(ms("2026-03-01T10:00:00Z")),
            Some(ms("2026-03-02T00:00:00Z"))
        );
        let paris = schedule("0 3 * * *", "Europe/Paris");
        assert_eq!(
            paris.next_after(ms("2026-01-10T12:00:00Z")),
            Some(ms("2026-01-11T02:00:00Z"))
        );
        // Weekday 1 is Monday (POSIX), not Sunday: 2026-03-02 is a Monday.
        let monday = schedule("0 0 * * 1", "UTC");
        assert_eq!(
            monday.next_after(ms("2026-02-28T00:00:00Z")),
            Some(ms("2026-03-02T00:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_once_and_fall_back_once() {
        // Europe/Paris skips 02:00-03:00 on 2026-03-29 and repeats 02:00-03:00 on 2026-10-25.
        let at_0230 = schedule("30 2 * * *", "Europe/Paris");
        let spring = at_0230.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        let after_spring = at_0230.next_after(spring).unwrap();
        assert!(spring > ms("2026-03-28T12:00:00Z") && spring < ms("2026-03-30T00:00:00Z"));
        assert_eq!(after_spring, ms("2026-03-30T00:30:00Z"));
        let fall = at_0230.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        let after_fall = at_0230.next_after(fall).unwrap();
        assert!(fall < ms("2026-10-25T02:00:00Z"));
        assert_eq!(after_fall, ms("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn missed_slots_run_once_since_the_last_firing_or_the_last_record() {
        let hourly = schedule("0 * * * *", "UTC");
        let now = ms("2026-05-01T10:20:00Z");
        // Never fired and an empty log: nothing to catch up.
        assert_eq!(missed_slot(&hourly, None, None, now), None);
        // Never fired, the daemon last wrote at 09:50 and was down through 10:00: its first
        // slot was missed, and runs once.
        let up_at_0950 = Some(ms("2026-05-01T09:50:00Z"));
        assert_eq!(
            missed_slot(&hourly, None, up_at_0950, now),
            Some(ms("2026-05-01T10:00:00Z"))
        );
        // Never fired, last record at 10:05: no slot passed while down.
        assert_eq!(
            missed_slot(&hourly, None, Some(ms("2026-05-01T10:05:00Z")), now),
            None
        );
        // Fired at 06:00, down until 10:20: one catch-up run, for 10:00 (the last firing wins
        // over the last record).
        assert_eq!(
            missed_slot(&hourly, Some(ms("2026-05-01T06:00:00Z")), up_at_0950, now),
            Some(ms("2026-05-01T10:00:00Z"))
        );
        // Fired at 10:00 already: nothing missed, the next is 11:00, not 10:00 again.
        let last = Some(ms("2026-05-01T10:00:00Z"));
        assert_eq!(missed_slot(&hourly, last, up_at_0950, now), None);
        assert_eq!(
            next_slot(&hourly, last, now),
            Some(ms("2026-05-01T11:00:00Z"))
        );
        let mut off = hourly.clone();
        off.config.run_missed_at_startup = false;
        assert_eq!(
            missed_slot(&off, Some(ms("2026-05-01T06:00:00Z")), None, now),
            None
        );
        assert_eq!(
            next_slot(&off, Some(ms("2026-05-01T06:00:00Z")), now),
            Some(ms("2026-05-01T11:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_their_name() {
        let mut config = schedule("@daily", "UTC").config;
        config.cron = "61 * * * *".into();
        assert!(Schedule::parse(&config)
            .unwrap_err()
            .to_string()
            .contains("nightly"));
        config.cron = "@daily".into();
        config.timezone = "Mars/Olympus".into();
        assert!(Schedule::parse(&config).is_err());
        config.timezone = "UTC".into();
        config.format = ExportFormat::Jsonl;
        assert!(Schedule::parse(&config).is_err());
        config.format = ExportFormat::Parquet;
        assert!(parse_all(&[config.clone(), config]).is_err());
    }
}
