//! Segment rolls and reads across many segments.

use super::*;
use crate::log::frame::FRAME_HEADER_BYTES;
use crate::log::segment::{parse_segment_file_name, SEGMENT_HEADER_BYTES};

const SEGMENT_BYTES_MAX: u64 = (SEGMENT_HEADER_BYTES + 2 * (FRAME_HEADER_BYTES + 40)) as u64;
const BIG_PAYLOAD_BYTES: usize = 500;

fn roll_options(dir: &Path) -> LogOptions {
    let mut options = test_options(dir);
    options.segment_bytes_max = SEGMENT_BYTES_MAX;
    options
}

/// Payloads as in `payload_for`, except lsn 150 which is larger than a whole segment.
fn roll_frame(lsn: u64) -> RawFrame {
    let mut frame = expected_frame(lsn);
    if lsn == 150 {
        frame.payload = vec![0xEE; BIG_PAYLOAD_BYTES];
    }
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_roll_across_many_segments_and_read_back_from_any_position() {
    const FRAMES: u64 = 300;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let (log, _) = open(roll_options(dir)).unwrap();
    let writer = log.start_writer();
    // Small pipelined bursts, so rolls happen both between and inside batches.
    for burst in (1..=FRAMES).collect::<Vec<_>>().chunks(7) {
        let mut receivers = Vec::new();
        for &lsn in burst {
            let frame = roll_frame(lsn);
            let receiver = writer
                .enqueue(Lsn(lsn), frame.format_version, frame.payload)
                .await
                .unwrap();
            receivers.push(receiver);
        }
        for (receiver, &lsn) in receivers.into_iter().zip(burst) {
            assert_eq!(receiver.await.unwrap(), Ok(Lsn(lsn)));
        }
    }
    writer.shutdown().await;

    // Every segment is named by its first frame, is within the size limit unless it holds one
    // frame only, and the big frame sits alone.
    let files = segment_files(dir);
    assert!(
        files.len() > 100,
        "expected many segments, got {}",
        files.len()
    );
    let mut next_lsn = 1;
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_file_name(name), Some(next_lsn), "{name}");
        let frames = read_segment_lsns(path);
        assert_eq!(frames.first(), Some(&next_lsn), "{name}");
        let len_bytes = std::fs::metadata(path).unwrap().len();
        assert!(
            len_bytes <= SEGMENT_BYTES_MAX || frames.len() == 1,
            "{name}"
        );
        if frames.contains(&150) {
            assert_eq!(frames, vec![150], "the oversized frame goes alone");
        }
        next_lsn += frames.len() as u64;
    }
    assert_eq!(next_lsn, FRAMES + 1);

    let all: Vec<RawFrame> = (1..=FRAMES).map(roll_frame).collect();
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    for after in 0..=FRAMES {
        for up_to in [after, after + 1, after + 13, FRAMES, u64::MAX] {
            let got = reader
                .frames(Lsn(after), Lsn(up_to))
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let end = up_to.min(FRAMES) as usize;
            let start = (after as usize).min(end);
            assert_eq!(got, all[start..end], "after {after} up to {up_to}");
        }
    }

    let (log, report) = open(roll_options(dir)).unwrap();
    assert_eq!(report.last_lsn, Lsn(FRAMES));
    assert_eq!(report.segments, files.len());
    assert_eq!(report.frames_scanned, FRAMES);
    assert_eq!(report.truncated, None);
    let writer = log.start_writer();
    assert_eq!(
        writer.append(Lsn(FRAMES + 1), 1, vec![1; 60]).await,
        Ok(Lsn(FRAMES + 1))
    );
    writer.shutdown().await;
    assert_eq!(open(roll_options(dir)).unwrap().1.last_lsn, Lsn(FRAMES + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_opened_before_rolls_still_finds_later_segments() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let (log, _) = open(roll_options(dir)).unwrap();
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    let writer = log.start_writer();
    append_all(&writer, 1..=40).await;
    let durable = writer.durable_lsn();
    assert_eq!(durable, Lsn(40));
    for after in [0, 17, 38] {
        let got = reader
            .frames(Lsn(after), durable)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(got, expected_frames(after + 1..=40));
    }
    writer.shutdown().await;
}

#[test]
fn a_reader_reports_damage_with_file_and_offset() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(write_log(test_options(dir), 1..=5));
    let segment = segment_files(dir).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    // Frames before the damaged one come back; the damaged one is an error, then nothing.
    let mut frames = reader.frames(Lsn(0), Lsn(5));
    for lsn in 1..=4 {
        assert_eq!(frames.next().unwrap().unwrap(), expected_frame(lsn));
    }
    let error = frames.next().unwrap().unwrap_err().to_string();
    assert!(error.contains("00000000000000000001.seg"), "{error}");
    assert!(error.contains("bad crc"), "{error}");
    assert!(frames.next().is_none());
    // Skipping over the damaged frame by its header does not look at its payload.
    assert_eq!(reader.frames(Lsn(5), Lsn(9)).count(), 0);
}

fn read_segment_lsns(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut lsns = Vec::new();
    while offset < bytes.len() {
        let payload_len =
            u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        lsns.push(u64::from_le_bytes(
            bytes[offset + 8..offset + 16].try_into().unwrap(),
        ));
        offset += FRAME_HEADER_BYTES + payload_len;
    }
    lsns
}
