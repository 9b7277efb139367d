//! The writer: group commit, sequencing, shutdown and durability notifications.

use super::*;
use crate::log::{AppendError, BatchObservation};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_are_group_committed() {
    const TASKS: u64 = 64;
    const APPENDS_PER_TASK: u64 = 250;
    const TOTAL: u64 = TASKS * APPENDS_PER_TASK;
    let temp = tempfile::tempdir().unwrap();
    let mut options = test_options(temp.path());
    let observed_frames = Arc::new(AtomicU64::new(0));
    let observed = observed_frames.clone();
    options.on_batch = Some(Arc::new(move |batch: &BatchObservation| {
        assert!(batch.frames > 0 && batch.fsyncs > 0);
        observed.fetch_add(batch.frames as u64, Ordering::Relaxed);
    }));
    let (log, _) = open(options).unwrap();
    let writer = log.start_writer();
    // The single sequencer: assigns the next lsn and queues the frame under one lock, so queue
    // order is lsn order. Each task then waits for its own fsync, as a request handler would.
    let sequencer = Arc::new(tokio::sync::Mutex::new(1u64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let writer = writer.clone();
        let sequencer = sequencer.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for index in 0..APPENDS_PER_TASK {
                let payload = format!("task {task} append {index}").into_bytes();
                let receiver = {
                    let mut next_lsn = sequencer.lock().await;
                    let receiver = writer.enqueue(Lsn(*next_lsn), 1, payload.clone()).await;
                    *next_lsn += 1;
                    receiver.unwrap()
                };
                let lsn = receiver.await.unwrap().unwrap();
                acknowledged.push((lsn, payload));
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let stats = writer.stats();
    writer.shutdown().await;

    acknowledged.sort();
    let lsns: Vec<u64> = acknowledged.iter().map(|(lsn, _)| lsn.0).collect();
    assert_eq!(lsns, (1..=TOTAL).collect::<Vec<_>>());
    assert_eq!(stats.frames, TOTAL);
    assert_eq!(observed_frames.load(Ordering::Relaxed), TOTAL);
    assert!(
        stats.batches < TOTAL,
        "no group commit: {} batches for {TOTAL} frames",
        stats.batches
    );
    let stored = read_all(temp.path());
    assert_eq!(stored.len() as u64, TOTAL);
    for (frame, (lsn, payload)) in stored.iter().zip(&acknowledged) {
        assert_eq!((&frame.lsn, &frame.payload), (lsn, payload));
    }
    println!(
        "group commit, {TASKS} appenders each awaiting its fsync: {TOTAL} frames in {:.3}s = \
         {:.0} frames/s, {} batches ({:.1} frames/batch), mean fdatasync {:.1} us",
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64(),
        stats.batches,
        stats.frames as f64 / stats.batches as f64,
        stats.fsync_micros_total as f64 / stats.batches as f64,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_from_one_sequencer_fill_batches() {
    const FRAMES: u64 = 100_000;
    const PAYLOAD_BYTES: usize = 100;
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = open(test_options(temp.path())).unwrap();
    let writer = log.start_writer();
    let mut durable = writer.subscribe_durable();
    let started = Instant::now();
    // Await acknowledgements in a second task so the queue never stops being fed.
    let (receivers_tx, mut receivers_rx) = tokio::sync::mpsc::channel(1024);
    let acknowledger = tokio::spawn(async move {
        let mut count = 0u64;
        while let Some((lsn, receiver)) = receivers_rx.recv().await {
            let receiver: crate::log::writer::AppendReceiver = receiver;
            assert_eq!(receiver.await.unwrap(), Ok(Lsn(lsn)));
            count += 1;
        }
        count
    });
    for lsn in 1..=FRAMES {
        let receiver = writer
            .enqueue(Lsn(lsn), 1, vec![lsn as u8; PAYLOAD_BYTES])
            .await
            .unwrap();
        receivers_tx.send((lsn, receiver)).await.unwrap();
    }
    drop(receivers_tx);
    assert_eq!(acknowledger.await.unwrap(), FRAMES);
    let elapsed = started.elapsed();
    let stats = writer.stats();
    assert_eq!(writer.durable_lsn(), Lsn(FRAMES));
    assert_eq!(*durable.borrow_and_update(), Lsn(FRAMES));
    writer.shutdown().await;
    assert_eq!(stats.frames, FRAMES);
    assert_eq!(stats.bytes, FRAMES * (20 + PAYLOAD_BYTES as u64));
    println!(
        "pipelined, one sequencer: {FRAMES} frames of {PAYLOAD_BYTES} bytes in {:.3}s = {:.0} \
         frames/s ({:.1} MB/s), {} batches ({:.1} frames/batch), mean fdatasync {:.1} us",
        elapsed.as_secs_f64(),
        FRAMES as f64 / elapsed.as_secs_f64(),
        stats.bytes as f64 / elapsed.as_secs_f64() / 1e6,
        stats.batches,
        stats.frames as f64 / stats.batches as f64,
        stats.fsync_micros_total as f64 / stats.batches as f64,
    );
    assert_eq!(
        open(test_options(temp.path())).unwrap().1.last_lsn,
        Lsn(FRAMES)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_out_of_sequence_or_too_large_are_rejected_and_not_written() {
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = open(test_options(temp.path())).unwrap();
    let writer = log.start_writer();
    let out_of_sequence = |expected: u64, got: u64| {
        Err(AppendError::OutOfSequence {
            expected: Lsn(expected),
            got: Lsn(got),
        })
    };
    assert_eq!(
        writer.append(Lsn(2), 1, payload_for(2)).await,
        out_of_sequence(1, 2)
    );
    assert_eq!(
        writer.append(Lsn(1), version_for(1), payload_for(1)).await,
        Ok(Lsn(1))
    );
    assert_eq!(
        writer.append(Lsn(1), 1, payload_for(1)).await,
        out_of_sequence(2, 1)
    );
    assert_eq!(
        writer.append(Lsn(3), 1, payload_for(3)).await,
        out_of_sequence(2, 3)
    );
    assert_eq!(
        writer.append(Lsn(0), 1, vec![]).await,
        out_of_sequence(2, 0)
    );
    let too_large = vec![0; TEST_FRAME_BYTES_MAX as usize + 1];
    assert_eq!(
        writer.append(Lsn(2), 1, too_large).await,
        Err(AppendError::FrameTooLarge {
            bytes: TEST_FRAME_BYTES_MAX as usize + 1,
            max: TEST_FRAME_BYTES_MAX
        })
    );
    let largest = vec![7; TEST_FRAME_BYTES_MAX as usize];
    assert_eq!(writer.append(Lsn(2), 1, largest.clone()).await, Ok(Lsn(2)));
    assert_eq!(writer.durable_lsn(), Lsn(2));
    assert_eq!(writer.stats().frames, 2);
    writer.shutdown().await;
    let frames = read_all(temp.path());
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], expected_frame(1));
    assert_eq!(frames[1].payload, largest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_several_clones_drains_the_queue_and_closes() {
    const FRAMES: u64 = 2000;
    let temp = tempfile::tempdir().unwrap();
    let (log, _) = open(test_options(temp.path())).unwrap();
    let writer = log.start_writer();
    let mut receivers = Vec::new();
    for lsn in 1..=FRAMES {
        let receiver = writer
            .enqueue(Lsn(lsn), version_for(lsn), payload_for(lsn))
            .await
            .unwrap();
        receivers.push(receiver);
    }
    let late_writer = writer.clone();
    tokio::join!(writer.clone().shutdown(), writer.shutdown());
    for (index, receiver) in receivers.into_iter().enumerate() {
        assert_eq!(receiver.await.unwrap(), Ok(Lsn(index as u64 + 1)));
    }
    assert_eq!(late_writer.durable_lsn(), Lsn(FRAMES));
    assert_eq!(
        late_writer.append(Lsn(FRAMES + 1), 1, vec![]).await,
        Err(AppendError::Closed)
    );
    late_writer.shutdown().await;
    recover_and_check(test_options(temp.path()), FRAMES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_lsn_and_its_watch_follow_every_batch() {
    let temp = tempfile::tempdir().unwrap();
    write_log(test_options(temp.path()), 1..=3).await;
    let (log, _) = open(test_options(temp.path())).unwrap();
    let writer = log.start_writer();
    let mut durable = writer.subscribe_durable();
    assert_eq!(*durable.borrow_and_update(), Lsn(3));
    assert_eq!(writer.durable_lsn(), Lsn(3));
    for lsn in 4..=6 {
        let appended = writer.append(Lsn(lsn), version_for(lsn), payload_for(lsn));
        assert_eq!(appended.await, Ok(Lsn(lsn)));
        // Published before the append was answered.
        assert_eq!(writer.durable_lsn(), Lsn(lsn));
        assert!(durable.has_changed().unwrap());
        assert_eq!(*durable.borrow_and_update(), Lsn(lsn));
    }
    writer.shutdown().await;
    recover_and_check(test_options(temp.path()), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_other_than_disk_full_is_fatal_and_stops_the_writer() {
    let temp = tempfile::tempdir().unwrap();
    write_log(test_options(temp.path()), 1..=3).await;
    let fatal_messages = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut options = test_options(temp.path());
    let recorded = fatal_messages.clone();
    options.on_fatal = Arc::new(move |message: &str| {
        recorded.lock().unwrap().push(message.to_string());
    });
    let (mut log, _) = open(options).unwrap();
    log.active.make_writes_fail();
    let writer = log.start_writer();
    assert_eq!(
        writer.append(Lsn(4), 1, payload_for(4)).await,
        Err(AppendError::Closed),
        "a frame whose write failed is never acknowledged"
    );
    assert_eq!(writer.durable_lsn(), Lsn(3));
    assert_eq!(
        writer.append(Lsn(4), 1, payload_for(4)).await,
        Err(AppendError::Closed),
        "nothing is written after a fatal error"
    );
    writer.shutdown().await;
    let messages = fatal_messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("write to"), "{messages:?}");
    recover_and_check(test_options(temp.path()), 3);
}
