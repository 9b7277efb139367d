//! The projector's catch-up reads only the frames it applies, however large the segment it tails
//! has grown (the regression behind "throughput collapses as the log grows"). Measured in bytes
//! read from the log, never in time.

use super::*;
use crate::config::Config;
use agentd_schemas::events::{encode_record, Event, JobSubmitted, RECORD_FORMAT_VERSION};
use agentd_schemas::JobId;

/// Jobs already in the log before the measured catch-ups: several MiB of one segment.
const JOBS_BEFORE: u64 = 30_000;

fn submit_record(job: u64) -> Vec<u8> {
    encode_record(&LogRecord {
        ts_ms: 1_767_225_600_000 + job,
        actor: Some("test".into()),
        events: vec![Event::JobSubmitted(JobSubmitted {
            job_id: JobId(job),
            queue: "default".into(),
            kind: "bench".into(),
            payload_json: format!(r#"{{"data":"{}"}}"#, "x".repeat(100)),
            priority: 0,
            run_at_ms: 1_767_225_600_000 + job,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: Default::default(),
            task_id: None,
            idempotency_key: None,
        })],
    })
}

async fn append_jobs(writer: &crate::log::LogWriter, jobs: std::ops::RangeInclusive<u64>) {
    let mut pending = Vec::new();
    for job in jobs {
        let receiver = writer
            .enqueue(Lsn(job), RECORD_FORMAT_VERSION, submit_record(job))
            .await
            .unwrap();
        pending.push(receiver);
    }
    for receiver in pending {
        receiver.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_catch_up_reads_the_frames_it_applies_not_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let options = crate::data_dir::log_options(&Config::default(), dir.path().join("log"));
    let (log, _) = crate::log::open(options).unwrap();
    let reader = log.reader();
    let writer = log.start_writer();
    let (store, _) = ProjectionStore::open(&dir.path().join("projections")).unwrap();

    append_jobs(&writer, 1..=JOBS_BEFORE).await;
    store
        .catch_up(&reader, writer.durable_lsn(), |_| {})
        .unwrap();
    let segment_bytes = writer.stats().bytes;

    let mut applied = JOBS_BEFORE;
    for round in 0..100u64 {
        let last = applied + 1 + round % 5;
        let written_before = writer.stats().bytes;
        append_jobs(&writer, applied + 1..=last).await;
        let new_frame_bytes = writer.stats().bytes - written_before;
        let read_before = reader.bytes_read();
        let caught_up = store
            .catch_up(&reader, writer.durable_lsn(), |_| {})
            .unwrap();
        let read = reader.bytes_read() - read_before;
        assert_eq!(caught_up, Lsn(last));
        // The new frames plus the segment header checked on open, and nothing of the
        // earlier frames, whose bytes are a thousand times more.
        assert!(
            read <= new_frame_bytes + 24,
            "round {round}: the catch-up of {} frames ({new_frame_bytes} bytes) read {read} \
             bytes of a {segment_bytes}-byte segment",
            last - applied
        );
        applied = last;
    }
    assert!(
        segment_bytes > 1000 * 200,
        "segment of {segment_bytes} bytes"
    );
    writer.shutdown().await;
}
