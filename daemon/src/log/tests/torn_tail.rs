//! A crash can leave any prefix of the last write on disk. Cutting the log at every byte inside
//! its last frames must recover exactly the frames wholly before the cut, and appending must go on.

use super::*;
use crate::log::frame::FRAME_HEADER_BYTES;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::TornTail;

const FRAMES: u64 = 12;
const CUT_FRAMES: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_every_byte_of_the_last_frames_in_one_segment() {
    check_every_cut(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_every_byte_of_the_last_frames_across_segment_rolls() {
    // About two frames per segment, so the cuts cross segment headers too.
    check_every_cut(Some(
        (SEGMENT_HEADER_BYTES + 2 * (FRAME_HEADER_BYTES + 30)) as u64,
    ))
    .await;
}

/// The log as one byte stream: each segment file's bytes in lsn order, with where frames end.
struct Stream {
    /// (file name, bytes) per segment.
    segments: Vec<(String, Vec<u8>)>,
    /// Offset in the stream just after each frame; index `i` is lsn `i + 1`.
    frame_ends: Vec<usize>,
}

impl Stream {
    fn read(dir: &Path) -> Stream {
        let mut segments = Vec::new();
        let mut frame_ends = Vec::new();
        let mut stream_offset = 0;
        for path in segment_files(dir) {
            let bytes = std::fs::read(&path).unwrap();
            let mut offset = SEGMENT_HEADER_BYTES;
            while offset < bytes.len() {
                let payload_len =
                    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
                offset += FRAME_HEADER_BYTES + payload_len;
                frame_ends.push(stream_offset + offset);
            }
            stream_offset += bytes.len();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            segments.push((name, bytes));
        }
        Stream {
            segments,
            frame_ends,
        }
    }

    fn len(&self) -> usize {
        self.segments.iter().map(|(_, bytes)| bytes.len()).sum()
    }

    /// Writes the first `cut` bytes of the stream into `dir` as segment files. A segment whose
    /// start is exactly at the cut is written empty (the file was created, nothing reached it).
    fn write_cut(&self, dir: &Path, cut: usize) {
        std::fs::create_dir_all(dir).unwrap();
        let mut segment_start = 0;
        for (name, bytes) in &self.segments {
            if segment_start > cut {
                break;
            }
            let kept = bytes.len().min(cut - segment_start);
            std::fs::write(dir.join(name), &bytes[..kept]).unwrap();
            segment_start += bytes.len();
        }
    }
}

async fn check_every_cut(segment_bytes_max: Option<u64>) {
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("original");
    let options_for = |dir: &Path| {
        let mut options = test_options(dir);
        if let Some(segment_bytes_max) = segment_bytes_max {
            options.segment_bytes_max = segment_bytes_max;
        }
        options
    };
    write_log(options_for(&original), 1..=FRAMES).await;
    let stream = Stream::read(&original);
    assert_eq!(stream.frame_ends.len() as u64, FRAMES);
    if segment_bytes_max.is_some() {
        assert!(stream.segments.len() > 3, "the test needs several segments");
    }

    let first_cut = stream.frame_ends[(FRAMES - CUT_FRAMES - 1) as usize];
    for cut in first_cut..=stream.len() {
        let dir = temp.path().join(format!("cut-{cut}"));
        stream.write_cut(&dir, cut);
        let complete_frames = stream.frame_ends.iter().filter(|&&end| end <= cut).count() as u64;

        let report = recover_and_check(options_for(&dir), complete_frames);
        if segment_bytes_max.is_none() {
            let last_frame_end = stream.frame_ends[complete_frames as usize - 1];
            let expected_truncation = (cut != last_frame_end).then(|| TornTail {
                path: dir.join(&stream.segments[0].0),
                offset: last_frame_end as u64,
                bytes_removed: (cut - last_frame_end) as u64,
                reason: String::new(),
            });
            let truncation = report.truncated.clone().map(|torn| TornTail {
                reason: String::new(),
                ..torn
            });
            assert_eq!(truncation, expected_truncation, "cut at byte {cut}");
        }

        // Appending goes on from the recovered end, and that survives another recovery.
        write_log(options_for(&dir), complete_frames + 1..=complete_frames + 2).await;
        recover_and_check(options_for(&dir), complete_frames + 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_segment_headers_left_by_a_crash_while_rolling_are_removed() {
    struct Case {
        name: &'static str,
        /// Bytes of a next segment file after a complete log of 5 frames.
        partial_segment: Vec<u8>,
    }
    let full_header = crate::log::segment::encode_segment_header(6);
    let cases = [
        Case {
            name: "empty file",
            partial_segment: Vec::new(),
        },
        Case {
            name: "half a header",
            partial_segment: full_header[..11].to_vec(),
        },
        Case {
            name: "header of zeros (size reached disk, data did not)",
            partial_segment: vec![0; SEGMENT_HEADER_BYTES],
        },
    ];
    for case in cases {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        write_log(test_options(dir), 1..=5).await;
        let partial_path = dir.join("00000000000000000006.seg");
        std::fs::write(&partial_path, &case.partial_segment).unwrap();

        let report = recover_and_check(test_options(dir), 5);
        let torn = report.truncated.expect(case.name);
        assert_eq!(torn.path, partial_path, "{}", case.name);
        assert_eq!(torn.bytes_removed, case.partial_segment.len() as u64);
        assert!(!partial_path.exists(), "{}", case.name);
        assert_eq!(report.segments, 1, "{}", case.name);

        write_log(test_options(dir), 6..=8).await;
        recover_and_check(test_options(dir), 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_empty_last_segment_is_kept() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(test_options(dir), 1..=4).await;
    let header = crate::log::segment::encode_segment_header(5);
    std::fs::write(dir.join("00000000000000000005.seg"), header).unwrap();
    let report = recover_and_check(test_options(dir), 4);
    assert_eq!(report.truncated, None);
    assert_eq!(report.segments, 2);
    write_log(test_options(dir), 5..=6).await;
    recover_and_check(test_options(dir), 6);
    assert_eq!(segment_files(dir).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_directory_is_an_empty_log_and_is_created_if_missing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("not").join("yet");
    let report = recover_and_check(test_options(&dir), 0);
    assert_eq!(report.frames_scanned, 0);
    assert_eq!(report.truncated, None);
    assert_eq!(segment_files(&dir).len(), 1);
    write_log(test_options(&dir), 1..=3).await;
    let report = recover_and_check(test_options(&dir), 3);
    assert_eq!(report.frames_scanned, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_followed_by_a_partial_one_was_sealed_and_must_be_intact() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(test_options(dir), 1..=5).await;
    let sealed = segment_files(dir).remove(0);
    let bytes = std::fs::read(&sealed).unwrap();
    std::fs::write(&sealed, &bytes[..bytes.len() - 1]).unwrap();
    std::fs::write(dir.join("00000000000000000006.seg"), b"AGTD").unwrap();
    let error = open(test_options(dir)).unwrap_err().to_string();
    assert!(error.contains("00000000000000000001.seg"), "{error}");
    assert!(error.contains("incomplete frame"), "{error}");
    assert!(error.contains("sealed segment"), "{error}");
}
