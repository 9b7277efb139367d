//! Every Prometheus metric family `GET /metrics` serves, in one list: its name, type, labels and
//! help text. At start-up [`describe_and_register`] gives each family its `# HELP` line and
//! registers the counters (and unlabelled histograms) whose series are known in advance at zero,
//! so a rate over them works from the first scrape and an alert on "more than zero" sees the zero.
//!
//! The list is the one source of the metric documentation: a unit test checks that every
//! `counter!`/`gauge!`/`histogram!` call in `daemon/src` names a family listed here with the same
//! type, that every listed family is used, and that README's "Metrics" table is this list
//! rendered ([`markdown_table`]). `ops/prometheus/alerts.yml` and `ops/grafana/agentd.json` are
//! checked against a live scrape by `scripts/test-promtool`.
//!
//! Not here: recording. Each family is recorded where its event happens (the sequencer, the log
//! writer's batch hook, the HTTP layer, the gauge tasks).

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    #[cfg(test)]
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Which series of a family exist, and so which ones can be registered at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// One series without labels.
    Single,
    /// One label whose values are all known in advance: a series for each.
    Fixed {
        label: &'static str,
        values: &'static [&'static str],
    },
    /// Labels whose values come from clients, the configuration or the traffic: a series
    /// appears when its first value is recorded. `note` says where the values come from.
    Open {
        labels: &'static [&'static str],
        note: &'static str,
    },
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricFamily {
    pub name: &'static str,
    pub kind: MetricKind,
    pub series: Series,
    /// The `# HELP` text: what one unit of the value is, and when it changes.
    pub help: &'static str,
}

/// The reasons `agentd_auth_failures_total` counts (`http/auth_layer.rs`).
pub const AUTH_FAILURE_REASONS: &[&str] = &["unauthorized", "forbidden"];
/// `ExportKind::as_str` of every export kind (a unit test keeps them equal).
pub const EXPORT_KINDS: &[&str] = &[
    "trajectories",
    "trl_sft",
    "trl_grpo",
    "verl_rl",
    "processed",
];
/// The objects `agentd_archive_uploads_total` counts (`archive/uploader.rs`).
pub const ARCHIVE_OBJECTS: &[&str] = &["sealed_segment", "active_segment", "manifest"];
/// The job events `agentd_job_events_total` counts, by their log name without the version.
pub const JOB_EVENTS: &[&str] = &[
    "job_submitted",
    "job_leased",
    "job_completed",
    "job_failed",
    "job_cancelled",
    "job_retried",
];
/// The sandbox outcomes of `agentd_sandbox_results` (`SandboxOutcome::as_str`).
pub const SANDBOX_OUTCOMES: &[&str] = &["ok", "failed", "timed_out", "killed_oom", "rejected"];
/// The reward sources of `agentd_rewards` (`source_name`).
pub const REWARD_SOURCES: &[&str] = &["rule", "teacher", "human"];
/// The reward histogram, rendered from the trajectory projection at each scrape rather than
/// recorded (`projection::domain::gauges::render_reward_histogram`).
pub const REWARD_VALUE_HISTOGRAM: &str = "agentd_reward_value";

/// Every family, grouped as README lists them.
pub const FAMILIES: &[MetricFamily] = &[
    // The log.
    MetricFamily {
        name: "agentd_events_appended_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Events appended to the log (a record holds one or more events).",
    },
    MetricFamily {
        name: "agentd_log_group_commits_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Group commits of the log writer: one write and one fdatasync each.",
    },
    MetricFamily {
        name: "agentd_log_bytes_written_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Bytes of frames written to the log's segment files.",
    },
    MetricFamily {
        name: "agentd_log_fsync_seconds",
        kind: MetricKind::Histogram,
        series: Series::Single,
        help: "Time of each group commit's fdatasync, in seconds.",
    },
    MetricFamily {
        name: "agentd_log_group_commit_frames",
        kind: MetricKind::Histogram,
        series: Series::Single,
        help: "Frames (records) made durable by each group commit.",
    },
    MetricFamily {
        name: "agentd_data_dir_free_bytes",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Bytes available to agentd on the data directory's file system (statvfs f_bavail), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_data_dir_size_bytes",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Size in bytes of the data directory's file system (statvfs f_blocks), refreshed every 2 s.",
    },
    // The log archive on object storage ([storage] url; all 0 when none is configured).
    MetricFamily {
        name: "agentd_archive_lag_seconds",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Seconds the oldest durable record not yet in the log archive has waited (0 when the archive holds the durable log), refreshed every 1 s.",
    },
    MetricFamily {
        name: "agentd_archive_pending_bytes",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Bytes of local segment files not yet in the log archive, refreshed every 1 s.",
    },
    MetricFamily {
        name: "agentd_archive_pending_segments",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Local segment files holding records not yet in the log archive, refreshed every 1 s.",
    },
    MetricFamily {
        name: "agentd_archive_last_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Last LSN the log archive's manifest covers: what a restore gets back.",
    },
    MetricFamily {
        name: "agentd_archive_uploads_total",
        kind: MetricKind::Counter,
        series: Series::Fixed {
            label: "object",
            values: ARCHIVE_OBJECTS,
        },
        help: "Objects uploaded to the log archive: sealed_segment (a rolled segment, final), active_segment (a chunk of the active segment's new durable bytes), manifest.",
    },
    MetricFamily {
        name: "agentd_archive_upload_failures_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Archive passes that failed (read, verification or upload error), each retried with backoff up to 60 s.",
    },
    MetricFamily {
        name: "agentd_archive_segments_read_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Archived segments downloaded to read records that local retention deleted from the data disk (start-up, rebuild, old event pages).",
    },
    MetricFamily {
        name: "agentd_log_segments_evicted_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Local segment files deleted by local retention ([storage] local_retention_ms) after the archive was found to hold them with the same sha256.",
    },
    MetricFamily {
        name: "agentd_log_local_first_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "First LSN held by a local segment file: 1 unless local retention deleted archived segments, whose records are then read from the archive.",
    },
    // Start-up: the sequencer-state snapshots and the domain projections loading behind the job
    // API (`snapshot`, `projection/domain/load.rs`).
    MetricFamily {
        name: "agentd_snapshot_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "LSN of the newest snapshot of the sequencer state this process wrote, 0 until it writes one (start-up replays only the records after the newest one).",
    },
    MetricFamily {
        name: "agentd_startup_snapshot_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "LSN of the snapshot this start loaded (0: none; the sequencer state was replayed from the start of the log).",
    },
    MetricFamily {
        name: "agentd_domain_loaded",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "1 once the domain projections are loaded after a start; 0 while they load from the log (domain routes answer 503 `loading`, the job API serves).",
    },
    MetricFamily {
        name: "agentd_domain_load_applied_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Last LSN the domain projections' loader applied while loading after a start.",
    },
    MetricFamily {
        name: "agentd_domain_load_seconds",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Seconds the domain projections took to load from the log after this start.",
    },
    // A read replica following the archive (`agentd replica`; all 0 on a primary).
    MetricFamily {
        name: "agentd_replica_lag_seconds",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "0 while this read replica has applied everything the last log archive manifest it read names and its last poll succeeded; otherwise seconds since it last had (it grows while a copy is behind, while polls fail, and once it stopped following). 0 on a primary; refreshed every 1 s.",
    },
    MetricFamily {
        name: "agentd_replica_lag_records",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Records the log archive holds that this read replica has not applied yet (0 on a primary), refreshed every 1 s.",
    },
    MetricFamily {
        name: "agentd_replica_applied_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Last LSN this read replica applied to every projection: what its reads answer from (0 on a primary).",
    },
    MetricFamily {
        name: "agentd_replica_archive_last_lsn",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "The log archive's last LSN as of this read replica's last manifest read (0 on a primary).",
    },
    MetricFamily {
        name: "agentd_replica_poll_failures_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Polls of the log archive by this read replica that failed (manifest or object unreadable or damaged), each retried at the next poll interval.",
    },
    // Jobs, queues and leases.
    MetricFamily {
        name: "agentd_job_events_total",
        kind: MetricKind::Counter,
        series: Series::Fixed {
            label: "event",
            values: JOB_EVENTS,
        },
        help: "Job events appended to the log, by event: job_submitted, job_leased, job_completed, job_failed (retried later or dead), job_cancelled, job_retried (a dead job put back).",
    },
    MetricFamily {
        name: "agentd_queue_depth",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["queue", "state"],
            note: "queue names come from clients; state is scheduled, queued, leased, completed, dead or cancelled",
        },
        help: "Jobs per queue and state, refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_queue_paused",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["queue"],
            note: "queue names come from clients",
        },
        help: "1 while the queue is paused (no leases), else 0; refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_leases_active",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Jobs leased to a worker right now, over all queues; refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_lease_expirations_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Leases that expired without a heartbeat, completion or failure (the job was retried or went dead).",
    },
    MetricFamily {
        name: "agentd_job_enqueue_to_start_seconds",
        kind: MetricKind::Histogram,
        series: Series::Single,
        help: "Seconds a job waited from when it could run (submission or run_at) to its lease.",
    },
    MetricFamily {
        name: "agentd_job_start_to_finish_seconds",
        kind: MetricKind::Histogram,
        series: Series::Open {
            labels: &["queue", "kind"],
            note: "queue and job kind names come from clients",
        },
        help: "Seconds a job ran, from its lease to its completion or failure, per queue and job kind.",
    },
    // HTTP and connections.
    MetricFamily {
        name: "agentd_http_requests_total",
        kind: MetricKind::Counter,
        series: Series::Open {
            labels: &["route", "method", "status"],
            note: "a series per route template, method and status code answered",
        },
        help: "HTTP requests answered, by route template, method and status code.",
    },
    MetricFamily {
        name: "agentd_http_request_duration_seconds",
        kind: MetricKind::Histogram,
        series: Series::Open {
            labels: &["route"],
            note: "a series per route template requested",
        },
        help: "Seconds from a request's arrival to its answer, per route template.",
    },
    MetricFamily {
        name: "agentd_auth_failures_total",
        kind: MetricKind::Counter,
        series: Series::Fixed {
            label: "reason",
            values: AUTH_FAILURE_REASONS,
        },
        help: "Requests refused by access control: unauthorized (missing or unknown token, 401), forbidden (the token's role lacks the permission, 403).",
    },
    MetricFamily {
        name: "agentd_tls_handshake_failures_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "TLS handshakes that failed or took longer than 10 s (0 when TLS is off).",
    },
    MetricFamily {
        name: "agentd_connections_idle_closed_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Connections the daemon closed after they sat idle past their timeout.",
    },
    // Exports and schedules.
    MetricFamily {
        name: "agentd_export_rows_total",
        kind: MetricKind::Counter,
        series: Series::Fixed {
            label: "kind",
            values: EXPORT_KINDS,
        },
        help: "Rows written by exports, per export kind.",
    },
    MetricFamily {
        name: "agentd_export_copy_failures_total",
        kind: MetricKind::Counter,
        series: Series::Single,
        help: "Copies of a recorded export or dataset build to object storage that failed; each is retried with backoff up to 60 s.",
    },
    MetricFamily {
        name: "agentd_export_duration_seconds",
        kind: MetricKind::Histogram,
        series: Series::Open {
            labels: &["kind"],
            note: "a series per export kind run since start",
        },
        help: "Seconds each export took to write its files, per export kind.",
    },
    MetricFamily {
        name: "agentd_schedule_next_slot_timestamp_seconds",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["schedule"],
            note: "a series per [[schedules]] entry",
        },
        help: "Unix time of the slot the schedule fires next; a slot in the past is due and not yet fired, or its export is still running.",
    },
    MetricFamily {
        name: "agentd_schedule_failures_total",
        kind: MetricKind::Counter,
        series: Series::Open {
            labels: &["schedule"],
            note: "a series per [[schedules]] entry, at 0 from start-up",
        },
        help: "Scheduled firings whose export could not be recorded or failed (retried after 1 s; a logged firing resumes at the next start).",
    },
    // Rollouts, trajectories and rewards.
    MetricFamily {
        name: "agentd_actor_step_seconds",
        kind: MetricKind::Histogram,
        series: Series::Single,
        help: "Model generation time of each step posted with generation_ms, in seconds.",
    },
    MetricFamily {
        name: "agentd_trajectory_steps",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["model"],
            note: "the first 64 models by name",
        },
        help: "Steps recorded per model, refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_trajectory_verified_steps",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["model"],
            note: "the first 64 models by name",
        },
        help: "Steps with a verified reward per model, refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_teacher_precision",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["model"],
            note: "the first 64 models by name, once one of their steps has a reward",
        },
        help: "Verified rewards over rewarded steps per model (0 to 1), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_teacher_precision_by_policy",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["model", "policy_version"],
            note: "the first 64 (model, policy version) pairs by name",
        },
        help: "Verified rewards over rewarded steps per model and policy version (0 to 1), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_teacher_precision_by_language",
        kind: MetricKind::Gauge,
        series: Series::Open {
            labels: &["language"],
            note: "at most 25: the canonical language names and unknown",
        },
        help: "Verified rewards over rewarded steps per language of the step's action (0 to 1), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_sandbox_results",
        kind: MetricKind::Gauge,
        series: Series::Fixed {
            label: "outcome",
            values: SANDBOX_OUTCOMES,
        },
        help: "Sandbox results recorded in the log per outcome (a count replayed at start, so it never drops on restart), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_rewards",
        kind: MetricKind::Gauge,
        series: Series::Fixed {
            label: "source",
            values: REWARD_SOURCES,
        },
        help: "Rewards recorded in the log per source (a count replayed at start), refreshed every 2 s.",
    },
    MetricFamily {
        name: "agentd_rewards_verified",
        kind: MetricKind::Gauge,
        series: Series::Single,
        help: "Verified rewards recorded in the log (a count replayed at start), refreshed every 2 s.",
    },
    MetricFamily {
        name: REWARD_VALUE_HISTOGRAM,
        kind: MetricKind::Histogram,
        series: Series::Single,
        help: "Values of the rewards recorded in the log (replayed at start), buckets -1, -0.5, then tenths from 0 to 1.",
    },
];

/// The family named `name`.
pub fn family(name: &str) -> Option<&'static MetricFamily> {
    FAMILIES.iter().find(|family| family.name == name)
}

/// Gives every family its help text and registers the series known in advance at zero: each
/// counter's single or fixed series, and each unlabelled histogram (empty buckets). Gauges are
/// left to their tasks, which set them within 2 s (a gauge registered at 0 would read as "no
/// free disk" or "no leases" until then). Call once, after the recorder is installed.
pub fn describe_and_register() {
    for family in FAMILIES {
        match family.kind {
            MetricKind::Counter => metrics::describe_counter!(family.name, family.help),
            MetricKind::Gauge => metrics::describe_gauge!(family.name, family.help),
            MetricKind::Histogram => metrics::describe_histogram!(family.name, family.help),
        }
        match (family.kind, family.series) {
            (MetricKind::Counter, Series::Single) => metrics::counter!(family.name).increment(0),
            (MetricKind::Counter, Series::Fixed { label, values }) => {
                for value in values {
                    metrics::counter!(family.name, label => *value).increment(0);
                }
            }
            // The reward histogram is rendered at each scrape, never recorded.
            (MetricKind::Histogram, Series::Single) if family.name != REWARD_VALUE_HISTOGRAM => {
                // Registering the handle is enough for the exporter to render empty buckets.
                let _registered = metrics::histogram!(family.name);
            }
            _ => {}
        }
    }
}

/// The families as the Markdown table README's "Metrics" section shows (a test keeps the
/// README equal to it).
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut table =
        String::from("| metric | type | labels | meaning |\n| --- | --- | --- | --- |\n");
    for family in FAMILIES {
        let labels = match family.series {
            Series::Single => String::new(),
            Series::Fixed { label, values } => format!("`{label}`: {}", values.join(", ")),
            Series::Open { labels, note } => {
                let names: Vec<String> = labels.iter().map(|label| format!("`{label}`")).collect();
                format!("{} ({note})", names.join(", "))
            }
        };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            family.name,
            family.kind.as_str(),
            labels,
            family.help
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Every `metrics::counter!("agentd_...")`, `gauge!` and `histogram!` call with a literal
    /// name in `dir`, as (name, kind, where).
    fn names_in_code(dir: &Path, found: &mut Vec<(String, MetricKind, PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                names_in_code(&path, found);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (macro_name, kind) in [
                ("counter!(", MetricKind::Counter),
                ("gauge!(", MetricKind::Gauge),
                ("histogram!(", MetricKind::Histogram),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let line_start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
                    if text[line_start..at].trim_start().starts_with("//") {
                        continue; // a comment naming a macro
                    }
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(literal) = rest.strip_prefix('"') else {
                        continue; // a name passed in a variable, as in this module
                    };
                    let name = &literal[..literal.find('"').unwrap()];
                    let is_name = !name.is_empty()
                        && name
                            .bytes()
                            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
                    if !is_name {
                        continue; // the macro names in this scan, as string literals
                    }
                    found.push((name.to_owned(), kind, path.clone()));
                }
            }
        }
    }

    #[test]
    fn every_metric_in_the_code_is_in_the_catalog_with_its_type_and_every_listed_one_is_used() {
        let mut found = Vec::new();
        names_in_code(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(
            found.len() > 20,
            "the scan found the metric calls: {found:?}"
        );
        let mut used = BTreeMap::new();
        for (name, kind, path) in &found {
            let family = family(name).unwrap_or_else(|| {
                panic!(
                    "{name} ({}) is not in metrics_catalog::FAMILIES",
                    path.display()
                )
            });
            assert_eq!(family.kind, *kind, "{name} in {}", path.display());
            used.insert(name.as_str(), ());
        }
        for family in FAMILIES {
            assert!(
                used.contains_key(family.name) || family.name == REWARD_VALUE_HISTOGRAM,
                "{} is listed but nothing records it",
                family.name
            );
            assert!(family.name.starts_with("agentd_"), "{}", family.name);
            assert_eq!(
                family.kind == MetricKind::Counter,
                family.name.ends_with("_total"),
                "counters and only counters end in _total: {}",
                family.name
            );
            assert!(
                !["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| family.name.ends_with(suffix)),
                "{} ends in a histogram series suffix",
                family.name
            );
            assert!(!family.help.is_empty() && !family.help.contains('\n'));
        }
        let mut names: Vec<&str> = FAMILIES.iter().map(|family| family.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is listed twice");
    }

    #[test]
    fn readme_lists_the_catalog() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README's \"Metrics\" section should hold this table (from metrics_catalog::FAMILIES):\n{table}"
        );
    }

    #[test]
    fn fixed_label_values_match_the_code_that_records_them() {
        let kinds: Vec<&str> = agentd_schemas::events::ExportKind::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        assert_eq!(kinds, EXPORT_KINDS);
        use agentd_schemas::events::SandboxOutcome;
        let outcomes: Vec<&str> = [
            SandboxOutcome::Ok,
            SandboxOutcome::Failed,
            SandboxOutcome::TimedOut,
            SandboxOutcome::KilledOom,
            SandboxOutcome::Rejected,
        ]
        .iter()
        .map(|outcome| outcome.as_str())
        .collect();
        assert_eq!(outcomes, SANDBOX_OUTCOMES);
        use agentd_schemas::events::RewardSource;
        let sources: Vec<&str> = [
            RewardSource::Rule,
            RewardSource::Teacher,
            RewardSource::Human,
        ]
        .into_iter()
        .map(crate::projection::domain::trajectories::source_name)
        .collect();
        assert_eq!(sources, REWARD_SOURCES);
    }

    #[test]
    fn registered_families_render_with_help_and_zeros() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &[0.1, 1.0],
            )
            .unwrap()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("agentd_log_group_commit_frames".into()),
                &[1.0, 2.0],
            )
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe_and_register);
        let text = handle.render();
        for expected in [
            "# HELP agentd_auth_failures_total Requests refused by access control",
            "# TYPE agentd_auth_failures_total counter",
            "agentd_auth_failures_total{reason=\"forbidden\"} 0",
            "agentd_auth_failures_total{reason=\"unauthorized\"} 0",
            "agentd_tls_handshake_failures_total 0",
            "agentd_job_events_total{event=\"job_completed\"} 0",
            "agentd_export_rows_total{kind=\"verl_rl\"} 0",
            "# TYPE agentd_log_fsync_seconds histogram",
            "agentd_log_fsync_seconds_count 0",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        assert!(
            !text.contains("agentd_data_dir_free_bytes"),
            "gauges wait for their task"
        );
    }
}
