use super::*;

fn attempt(job: u64, attempt: u32) -> AttemptInfo {
    AttemptInfo {
        job_id: JobId(job),
        lease_id: LeaseId(40 + attempt as u64),
        attempt,
        worker_id: "box-1".into(),
        started_at_ms: 1_767_225_600_000,
    }
}

fn settings(dir: &Path, file_bytes_max: u64) -> JobLogSettings {
    JobLogSettings {
        dir: Some(dir.to_path_buf()),
        file_bytes_max,
        tail_bytes: LOG_TAIL_BYTES_MAX,
    }
}

async fn run_attempt(
    settings: &JobLogSettings,
    info: &AttemptInfo,
    chunks: &[&[u8]],
    end: &str,
) -> Option<String> {
    let log = AttemptLog::start(settings, info);
    let sink = log.sink();
    for chunk in chunks {
        sink.write(chunk).await;
    }
    log.finish(end, Some("result: 42")).await
}

#[tokio::test]
async fn attempts_append_with_a_header_and_an_end_line() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), LOG_FILE_BYTES_MAX_DEFAULT);
    let tail = run_attempt(
        &settings,
        &attempt(7, 1),
        &[b"to stdout\n", b"to stderr, no newline"],
        "== attempt 1 failed (retryable): exit status 1",
    )
    .await;
    run_attempt(
        &settings,
        &attempt(7, 2),
        &[b"second\n"],
        "== attempt 2 completed",
    )
    .await;
    let text = std::fs::read_to_string(dir.path().join("job_7.log")).unwrap();
    assert_eq!(
        text,
        "== attempt 1, lease lease_41, 2026-01-01T00:00:00.000Z, worker box-1\n\
         to stdout\n\
         to stderr, no newline\n\
         == attempt 1 failed (retryable): exit status 1\n\
         == attempt 2, lease lease_42, 2026-01-01T00:00:00.000Z, worker box-1\n\
         second\n\
         == attempt 2 completed\n"
    );
    // The tail is the attempt's own part of the log.
    assert_eq!(
        tail.unwrap(),
        "== attempt 1, lease lease_41, 2026-01-01T00:00:00.000Z, worker box-1\n\
         to stdout\n\
         to stderr, no newline\n\
         == attempt 1 failed (retryable): exit status 1\n"
    );
}

#[tokio::test]
async fn a_capped_file_keeps_its_head_a_marker_and_every_attempts_lines() {
    let dir = tempfile::tempdir().unwrap();
    let header_bytes = attempt(3, 1).header_line().len() as u64;
    // Room for the header and 10 bytes of output.
    let settings = settings(dir.path(), header_bytes + 10);
    let tail = run_attempt(
        &settings,
        &attempt(3, 1),
        &[b"0123456", b"789abcdef", b"more and more"],
        "== attempt 1 completed",
    )
    .await
    .unwrap();
    run_attempt(
        &settings,
        &attempt(3, 2),
        &[b"dropped"],
        "== attempt 2 completed",
    )
    .await;
    let text = std::fs::read_to_string(dir.path().join("job_3.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "0123456789");
    assert!(
        lines[2].starts_with("== log capped at ") && lines[2].contains("--log-max-bytes"),
        "{text}"
    );
    assert_eq!(lines[3], "== attempt 1 completed");
    assert!(lines[4].starts_with("== attempt 2, lease lease_42"));
    assert!(lines[5].starts_with("== log capped at "), "{text}");
    assert_eq!(lines[6], "== attempt 2 completed");
    assert_eq!(lines.len(), 7, "{text}");
    assert!(!text.contains("more and more") && !text.contains("dropped"));
    // The tail is not capped by the file: it has the end of the output.
    assert!(
        tail.ends_with("abcdefmore and more\n== attempt 1 completed\n"),
        "{tail}"
    );
}

#[test]
fn the_cap_admits_a_prefix_and_marks_once() {
    let mut cap = FileCap::new(10, 4);
    assert_eq!(
        cap.admit(5),
        Admitted {
            keep: 5,
            mark_capped: false
        }
    );
    assert_eq!(
        cap.admit(5),
        Admitted {
            keep: 1,
            mark_capped: true
        }
    );
    assert_eq!(
        cap.admit(5),
        Admitted {
            keep: 0,
            mark_capped: false
        }
    );
    // A file already past its cap (an earlier attempt) marks again for the new attempt.
    let mut full = FileCap::new(10, 12);
    assert_eq!(
        full.admit(1),
        Admitted {
            keep: 0,
            mark_capped: true
        }
    );
}

#[test]
fn the_tail_keeps_the_last_bytes_on_a_character_boundary() {
    let mut tail = TailBuffer::new(8);
    tail.push(b"abc");
    tail.push(b"defghij");
    assert_eq!(tail.text().unwrap(), "cdefghij");
    tail.push("é€".as_bytes()); // 2 + 3 bytes
    assert_eq!(tail.text().unwrap(), "hijé€");
    // A cut through a character drops the partial character.
    let mut tail = TailBuffer::new(3);
    tail.push("a€b".as_bytes());
    assert_eq!(tail.text().unwrap(), "b");
    let mut invalid = TailBuffer::new(4);
    invalid.push(&[0xff, 0xfe, b'x']);
    let text = invalid.text().unwrap();
    assert!(text.len() <= 4 && text.ends_with('x'), "{text:?}");
    assert_eq!(TailBuffer::new(0).text(), None);
    let mut big = TailBuffer::new(LOG_TAIL_BYTES_MAX);
    big.push(&vec![b'y'; 3 * LOG_TAIL_BYTES_MAX]);
    assert_eq!(big.text().unwrap().len(), LOG_TAIL_BYTES_MAX);
}

#[tokio::test]
async fn a_silent_attempt_gets_its_result_in_the_end_line() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), LOG_FILE_BYTES_MAX_DEFAULT);
    // A built-in prints nothing; its end line says what came of it.
    let tail = run_attempt(&settings, &attempt(9, 1), &[], "== attempt 1 completed")
        .await
        .unwrap();
    assert!(
        tail.ends_with("\n== attempt 1 completed, result: 42\n"),
        "{tail}"
    );
    let text = std::fs::read_to_string(dir.path().join("job_9.log")).unwrap();
    assert_eq!(text, tail);
}

#[tokio::test]
async fn without_a_log_dir_only_the_tail_is_kept() {
    let tail = run_attempt(
        &JobLogSettings::default(),
        &attempt(1, 1),
        &[b"hello\n"],
        "== attempt 1 completed",
    )
    .await
    .unwrap();
    assert!(tail.ends_with("hello\n== attempt 1 completed\n"), "{tail}");
    let none = run_attempt(
        &JobLogSettings {
            tail_bytes: 0,
            ..JobLogSettings::default()
        },
        &attempt(1, 1),
        &[b"hello\n"],
        "== attempt 1 completed",
    )
    .await;
    assert_eq!(none, None);
}

#[tokio::test]
async fn an_unwritable_log_dir_does_not_stop_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let tail = run_attempt(
        &settings(&blocker, LOG_FILE_BYTES_MAX_DEFAULT),
        &attempt(2, 1),
        &[b"out\n"],
        "== attempt 1 completed",
    )
    .await
    .unwrap();
    assert!(tail.contains("out\n"));
}

#[test]
fn retention_deletes_only_old_job_logs() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let eight_days_ago = now - Duration::from_secs(8 * 86_400);
    let write = |name: &str, modified: SystemTime| {
        let path = dir.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(modified).unwrap();
    };
    write("job_1.log", eight_days_ago);
    write("job_2.log", now - Duration::from_secs(86_400));
    write("notes.txt", eight_days_ago);
    write("job_x.log", eight_days_ago);
    write("job_3.log.bak", eight_days_ago);
    let report = sweep_old_logs(dir.path(), Duration::from_secs(7 * 86_400), now).unwrap();
    assert_eq!(
        report,
        SweepReport {
            removed: 1,
            kept: 1
        }
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["job_2.log", "job_3.log.bak", "job_x.log", "notes.txt"]
    );
    // A directory that does not exist yet has nothing to sweep.
    assert_eq!(
        sweep_old_logs(&dir.path().join("missing"), Duration::from_secs(1), now).unwrap(),
        SweepReport::default()
    );
}

#[test]
fn retention_parses_days_and_prints_back() {
    assert_eq!(
        parse_retention("7d").unwrap(),
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(
        parse_retention("12h").unwrap(),
        Duration::from_secs(12 * 3600)
    );
    assert_eq!(parse_retention("90s").unwrap(), Duration::from_secs(90));
    assert!(parse_retention("0d").is_err());
    assert!(parse_retention("7").is_err());
    assert!(parse_retention("soon").is_err());
    assert_eq!(format_retention(LOG_RETENTION_DEFAULT), "7d");
    assert_eq!(format_retention(Duration::from_secs(90)), "90s");
}

#[test]
fn first_bytes_cut_on_a_character_boundary() {
    assert_eq!(first_bytes_of("short", 10), "short");
    assert_eq!(first_bytes_of("aé", 2), "a...");
}
