use super::only_events_tagged;
use crate::events::{encode_record, AfterFailure, Event, JobSubmitted, LogRecord};
use crate::{JobId, LeaseId};

const JOB_TAGS: [&str; 3] = ["job_submitted.v1", "job_completed.v1", "queue_paused.v1"];

fn submitted(payload_json: String) -> Event {
    Event::JobSubmitted(JobSubmitted {
        job_id: JobId(1),
        queue: "q".into(),
        kind: "k".into(),
        payload_json,
        priority: -3,
        run_at_ms: u64::MAX,
        max_attempts: 3,
        lease_ttl_ms: 30_000,
        tags: [("gpu".to_owned(), "a100".to_owned())].into(),
        task_id: Some("t".into()),
        idempotency_key: None,
    })
}

fn completed(result_json: Option<String>, log_tail: Option<String>) -> Event {
    Event::JobCompleted {
        job_id: JobId(1),
        lease_id: LeaseId(2),
        result_json,
        log_tail,
    }
}

fn record(events: Vec<Event>) -> Vec<u8> {
    encode_record(&LogRecord {
        ts_ms: 1_700_000_000_000,
        actor: Some("tester".into()),
        events,
    })
}

#[test]
fn a_record_of_listed_events_only_is_recognised_whatever_their_values_hold() {
    // Strings of every length class (fix, 8, 16 and 32-bit lengths), maps, negative and
    // 64-bit integers, absent and present options: the value is stepped over by its length.
    for length in [0, 31, 32, 255, 256, 65_535, 65_536, 200_000] {
        let payload = record(vec![
            submitted("x".repeat(length)),
            completed(Some("{}".into()), Some("é".repeat(length / 2))),
            completed(None, None),
            Event::QueuePaused { queue: "q".into() },
        ]);
        assert!(
            only_events_tagged(1, &payload, &JOB_TAGS),
            "length {length}"
        );
    }
    assert!(
        only_events_tagged(1, &record(Vec::new()), &JOB_TAGS),
        "no events: nothing to apply"
    );
    // Many events: the array's 16-bit length.
    let many = record((0..40).map(|_| completed(None, None)).collect());
    assert!(only_events_tagged(1, &many, &JOB_TAGS));
}

#[test]
fn any_event_outside_the_list_means_decode() {
    let failed = Event::JobFailed {
        job_id: JobId(1),
        lease_id: LeaseId(2),
        error: "e".into(),
        retryable: true,
        after: AfterFailure::Retry { run_at_ms: 5 },
        log_tail: None,
    };
    assert!(!only_events_tagged(
        1,
        &record(vec![failed.clone()]),
        &JOB_TAGS
    ));
    assert!(!only_events_tagged(
        1,
        &record(vec![submitted("{}".into()), failed]),
        &JOB_TAGS
    ));
    assert!(!only_events_tagged(
        1,
        &record(vec![submitted("{}".into())]),
        &["job_submitted"]
    ));
}

#[test]
fn other_versions_and_damaged_payloads_mean_decode() {
    let payload = record(vec![submitted("{}".into())]);
    assert!(!only_events_tagged(2, &payload, &JOB_TAGS));
    for cut in 0..payload.len() {
        assert!(
            !only_events_tagged(1, &payload[..cut], &JOB_TAGS),
            "cut at {cut}"
        );
    }
    assert!(!only_events_tagged(1, &[0xc1], &JOB_TAGS));
    assert!(
        !only_events_tagged(1, &[0x90], &JOB_TAGS),
        "an array, not a map"
    );
    // A map without `events`.
    let no_events = rmp_serde::to_vec_named(&serde_json::json!({"ts_ms": 1})).unwrap();
    assert!(!only_events_tagged(1, &no_events, &JOB_TAGS));
    // Nested deeper than any record: refused, not recursed into.
    let mut deep = vec![0x81, 0xa6];
    deep.extend_from_slice(b"events");
    deep.push(0x91);
    deep.push(0x81);
    let tag = b"job_submitted.v1";
    deep.push(0xa0 | tag.len() as u8);
    deep.extend_from_slice(tag);
    deep.extend(std::iter::repeat_n(0x91, 10_000));
    deep.push(0xc0);
    assert!(!only_events_tagged(1, &deep, &JOB_TAGS));
}
