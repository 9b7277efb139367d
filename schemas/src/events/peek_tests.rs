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

/// `{"ts_ms": 1, "events": [{"job_submitted.v1": value}]}` with `value` as raw bytes.
fn record_with_value(value: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x82, 0xa5];
    bytes.extend_from_slice(b"ts_ms");
    bytes.push(0x01);
    bytes.push(0xa6);
    bytes.extend_from_slice(b"events");
    bytes.extend_from_slice(&[0x91, 0x81]);
    let tag = b"job_submitted.v1";
    bytes.push(0xa0 | tag.len() as u8);
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(value);
    bytes
}

#[test]
fn every_messagepack_type_is_stepped_over_by_its_exact_length() {
    // A value read one byte short leaves bytes after the record (false); one byte long runs
    // past the end (false); so `true` means the extent was exact.
    let values: &[&[u8]] = &[
        &[0x05],
        &[0xff],
        &[0xc0],
        &[0xc2],
        &[0xc3],
        &[0xc4, 0x01, 0xaa],
        &[0xc5, 0x00, 0x02, 0xaa, 0xbb],
        &[0xc6, 0x00, 0x00, 0x00, 0x01, 0xaa],
        &[0xc7, 0x02, 0x05, 0xaa, 0xbb],
        &[0xc8, 0x00, 0x01, 0x05, 0xaa],
        &[0xc9, 0x00, 0x00, 0x00, 0x01, 0x05, 0xaa],
        &[0xca, 1, 2, 3, 4],
        &[0xcb, 1, 2, 3, 4, 5, 6, 7, 8],
        &[0xcc, 1],
        &[0xcd, 1, 2],
        &[0xce, 1, 2, 3, 4],
        &[0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
        &[0xd0, 1],
        &[0xd1, 1, 2],
        &[0xd2, 1, 2, 3, 4],
        &[0xd3, 1, 2, 3, 4, 5, 6, 7, 8],
        &[0xd4, 5, 1],
        &[0xd5, 5, 1, 2],
        &[0xd6, 5, 1, 2, 3, 4],
        &[0xd7, 5, 1, 2, 3, 4, 5, 6, 7, 8],
        &[
            0xd8, 5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ],
        &[0xa1, b'a'],
        &[0xd9, 0x01, b'a'],
        &[0xda, 0x00, 0x01, b'a'],
        &[0xdb, 0x00, 0x00, 0x00, 0x01, b'a'],
        &[0x92, 0xc0, 0x01],
        &[0xdc, 0x00, 0x01, 0xc0],
        &[0xdd, 0x00, 0x00, 0x00, 0x01, 0xc0],
        &[0x81, 0xa1, b'k', 0xc0],
        &[0xde, 0x00, 0x01, 0xa1, b'k', 0xc0],
        &[0xdf, 0x00, 0x00, 0x00, 0x01, 0xa1, b'k', 0xc0],
    ];
    for value in values {
        let payload = record_with_value(value);
        assert!(only_events_tagged(1, &payload, &JOB_TAGS), "{value:02x?}");
        let mut longer = payload.clone();
        longer.push(0xc0);
        assert!(
            !only_events_tagged(1, &longer, &JOB_TAGS),
            "{value:02x?} + a byte"
        );
        let shorter = &payload[..payload.len() - 1];
        assert!(
            !only_events_tagged(1, shorter, &JOB_TAGS),
            "{value:02x?} - a byte"
        );
    }
    assert!(!only_events_tagged(
        1,
        &record_with_value(&[0xc1]),
        &JOB_TAGS
    ));
}

#[test]
fn a_second_events_field_or_nesting_past_the_decoders_limit_means_decode() {
    let mut twice = record_with_value(&[0xc0]);
    twice[0] = 0x83;
    twice.push(0xa6);
    twice.extend_from_slice(b"events");
    twice.push(0x90);
    assert!(!only_events_tagged(1, &twice, &JOB_TAGS));
    // Twenty arrays deep inside an event's value is within the decoder's limit.
    let nested = |depth: usize| {
        let mut value = vec![0x91; depth];
        value.push(0xc0);
        record_with_value(&value)
    };
    assert!(only_events_tagged(1, &nested(20), &JOB_TAGS));
    assert!(!only_events_tagged(1, &nested(40), &JOB_TAGS));
}
