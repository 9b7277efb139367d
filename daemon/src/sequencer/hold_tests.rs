//! The digest hold pauses appends, not acknowledgements: while it is in force, frames already
//! in flight are answered as they become durable, and new commands wait, in order, until it
//! ends.

use super::*;
use crate::replay::for_each_record;
use agentd_schemas::events::{Event, LogRecord};

/// A sequencer over `state` (records not in the log) and a log in `dir`, not started.
pub(super) fn sequencer_in(dir: &std::path::Path, state: QueueState) -> (Sequencer, LogWriter) {
    let options = crate::data_dir::log_options(&crate::config::Config::default(), dir.into());
    let (log, _) = crate::log::open(options).unwrap();
    let reader = log.reader();
    let writer = log.start_writer();
    let sequencer = Sequencer::new(
        state,
        writer.clone(),
        SequencerOptions {
            limits: QueueLimits::default(),
            log: reader,
            lease_wait_ms_max: 30_000,
            lease_waiters_max: 10,
        },
    );
    (sequencer, writer)
}

fn start(sequencer: Sequencer) -> (SequencerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    (SequencerHandle { tx }, tokio::spawn(sequencer.run(rx)))
}

/// Well under [`DIGEST_HOLD_MAX`]: a wait bounded by this fails if only the hold's own time
/// limit ended the hold.
const WELL_INSIDE_THE_HOLD: Duration = Duration::from_secs(5);

/// Waits until a command sent on `handle` sits in the sequencer's channel (so a release that
/// follows comes after it), bounded.
async fn until_queued(handle: &SequencerHandle) {
    let queued = async {
        while handle.tx.capacity() == COMMAND_QUEUE_CAPACITY {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WELL_INSIDE_THE_HOLD, queued)
        .await
        .expect("the command reached the sequencer's channel");
}

fn settings_event() -> AppendInternal {
    AppendInternal {
        events: vec![Event::QueuePaused {
            queue: "during-the-hold".into(),
        }],
    }
}

#[tokio::test]
async fn a_hold_acknowledges_frames_in_flight_and_appends_commands_sent_during_it_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sequencer, writer) = sequencer_in(dir.path(), QueueState::new());
    // A frame the writer has not made durable yet; the test decides when it is.
    let (make_durable, durable) = oneshot::channel();
    let (acknowledge, mut acknowledged) = oneshot::channel();
    sequencer.in_flight.push_back(InFlight {
        rx: durable,
        on_durable: Box::new(move |outcome| {
            let _test_reads_it = acknowledge.send(outcome);
        }),
    });
    let (handle, task) = start(sequencer);
    let (release, released) = oneshot::channel();
    let digest = handle
        .call(HoldForDigest { release: released }, None)
        .await
        .unwrap();
    assert_eq!(digest.lsn, Lsn::ZERO);

    let during = tokio::spawn({
        let handle = handle.clone();
        async move { handle.call(settings_event(), None).await }
    });
    until_queued(&handle).await;
    make_durable.send(Ok(Lsn(1))).unwrap();
    // Well inside DIGEST_HOLD_MAX: an acknowledgement that waited for the hold would miss it.
    let outcome = tokio::time::timeout(WELL_INSIDE_THE_HOLD, &mut acknowledged)
        .await
        .expect("the frame in flight is acknowledged while the hold lasts");
    assert_eq!(outcome.unwrap().unwrap(), Lsn(1));

    // Given time to run, the command sent during the hold is not appended. (An absence cannot
    // be polled for: on a very slow machine this could pass without proving much, never fail
    // wrongly.)
    let mut during = during;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut during)
            .await
            .is_err(),
        "a command sent during the hold was answered before its release"
    );
    assert_eq!(writer.durable_lsn(), Lsn::ZERO);

    release.send(()).unwrap();
    let lsn = tokio::time::timeout(WELL_INSIDE_THE_HOLD, during)
        .await
        .expect("the release, not the hold's time limit, ended the hold")
        .unwrap()
        .unwrap();
    assert_eq!(lsn, Lsn(1), "appended right after the digest's LSN");
    assert_eq!(writer.durable_lsn(), Lsn(1));
    drop(handle);
    task.await.unwrap();
    writer.shutdown().await;
}

/// A holder that drops its release ends the hold; the command that waited is the next record
/// after the digest's LSN.
#[tokio::test]
async fn a_dropped_release_ends_the_hold_and_the_waiting_command_lands_right_after_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, writer) = sequencer_in(dir.path(), QueueState::new());
    let reader = sequencer.log.clone();
    let (handle, task) = start(sequencer);
    let first = handle.call(settings_event(), None).await.unwrap();
    let (release, released) = oneshot::channel();
    let digest = handle
        .call(HoldForDigest { release: released }, None)
        .await
        .unwrap();
    assert_eq!(digest.lsn, first);
    let during = tokio::spawn({
        let handle = handle.clone();
        async move { handle.call(settings_event(), None).await }
    });
    until_queued(&handle).await;
    drop(release);
    let second = tokio::time::timeout(WELL_INSIDE_THE_HOLD, during)
        .await
        .expect("dropping the release, not the hold's time limit, ended the hold")
        .unwrap()
        .unwrap();
    assert_eq!(second, first.next());
    let mut records: Vec<(Lsn, LogRecord)> = Vec::new();
    for_each_record(&reader, Lsn::ZERO, second, |lsn, record| {
        records.push((lsn, record));
        Ok(())
    })
    .unwrap();
    assert_eq!(records.len(), 2);
    drop(handle);
    task.await.unwrap();
    writer.shutdown().await;
}
