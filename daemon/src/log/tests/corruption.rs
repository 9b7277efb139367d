//! Damage that is not a torn tail must stop startup with an error naming the file and offset;
//! damage that is indistinguishable from a torn tail is truncated.

use super::*;
use crate::log::frame::FRAME_HEADER_BYTES;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::LogError;

/// Changes the bytes of a segment file.
type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

/// Byte offsets at which frames start in a single-segment log written by `write_log`.
fn frame_starts(lsns: std::ops::RangeInclusive<u64>) -> Vec<usize> {
    let mut offset = SEGMENT_HEADER_BYTES;
    lsns.map(|lsn| {
        let start = offset;
        offset += FRAME_HEADER_BYTES + payload_for(lsn).len();
        start
    })
    .collect()
}

fn assert_corrupt(error: LogError, path: &Path, offset: u64, detail_contains: &str, case: &str) {
    let message = error.to_string();
    let LogError::Corrupt {
        path: error_path,
        offset: error_offset,
        detail,
    } = error
    else {
        panic!("{case}: expected Corrupt, got {message}");
    };
    assert_eq!(error_path, path, "{case}: {message}");
    assert_eq!(error_offset, offset, "{case}: {message}");
    assert!(detail.contains(detail_contains), "{case}: {message}");
    let file_name = path.file_name().unwrap().to_str().unwrap();
    assert!(message.contains(file_name), "{case}: {message}");
    assert!(
        message.contains(&format!("at byte {offset}")),
        "{case}: {message}"
    );
    assert!(message.contains("refusing to start"), "{case}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_followed_by_valid_frames_in_the_active_segment_is_refused() {
    const FRAMES: u64 = 10;
    let starts = frame_starts(1..=FRAMES);
    // Frame 5 is the damaged one unless the case says otherwise.
    let start = |lsn: u64| starts[lsn as usize - 1];
    struct Case<'a> {
        name: &'static str,
        damage: Damage<'a>,
        offset: usize,
        detail_contains: &'static str,
    }
    let flip = |at: usize| Box::new(move |bytes: &mut Vec<u8>| bytes[at] ^= 0x10);
    let cases = vec![
        Case {
            name: "bit flip in a payload",
            damage: flip(start(5) + FRAME_HEADER_BYTES + 1),
            offset: start(5),
            detail_contains: "bad crc",
        },
        Case {
            name: "bit flip in a length",
            damage: Box::new(move |bytes| bytes[start(5)] ^= 0x01),
            offset: start(5),
            detail_contains: "",
        },
        Case {
            name: "bit flip in a crc",
            damage: flip(start(5) + 5),
            offset: start(5),
            detail_contains: "bad crc",
        },
        Case {
            name: "bit flip in an lsn",
            damage: flip(start(5) + 8),
            offset: start(5),
            detail_contains: "bad crc",
        },
        Case {
            name: "bit flip in a format version",
            damage: flip(start(2) + 16),
            offset: start(2),
            detail_contains: "bad crc",
        },
        Case {
            name: "bit flip in the first frame",
            damage: flip(start(1) + 10),
            offset: start(1),
            detail_contains: "bad crc",
        },
        Case {
            name: "length over the maximum",
            damage: Box::new(move |bytes| {
                bytes[start(3)..start(3) + 4].copy_from_slice(&u32::MAX.to_le_bytes())
            }),
            offset: start(3),
            detail_contains: "over the maximum",
        },
        Case {
            name: "a frame zeroed (a lost page)",
            damage: Box::new(move |bytes| bytes[start(4)..start(5)].fill(0)),
            offset: start(4),
            detail_contains: "follows at byte",
        },
        Case {
            name: "a frame missing",
            damage: Box::new(move |bytes| {
                bytes.drain(start(5)..start(6));
            }),
            offset: start(5),
            detail_contains: "lsn gap",
        },
    ];
    for case in cases {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        write_log(test_options(dir), 1..=FRAMES).await;
        let segment = segment_files(dir).remove(0);
        let mut bytes = std::fs::read(&segment).unwrap();
        (case.damage)(&mut bytes);
        std::fs::write(&segment, &bytes).unwrap();

        let error = open(test_options(dir)).unwrap_err();
        assert_corrupt(
            error,
            &segment,
            case.offset as u64,
            case.detail_contains,
            case.name,
        );
        // Refusing must not have repaired anything.
        assert_eq!(std::fs::read(&segment).unwrap(), bytes, "{}", case.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_sealed_segment_is_refused() {
    const FRAMES: u64 = 30;
    let segment_bytes_max = (SEGMENT_HEADER_BYTES + 3 * (FRAME_HEADER_BYTES + 20)) as u64;
    struct Case {
        name: &'static str,
        /// Damages the segment files; returns the file and offset the error must name.
        damage: fn(&[PathBuf]) -> (PathBuf, u64),
        detail_contains: &'static str,
    }
    let cases = [
        Case {
            name: "bit flip in the last frame of a sealed segment",
            damage: |files| {
                let mut bytes = std::fs::read(&files[1]).unwrap();
                let last_frame_start = last_frame_start(&bytes);
                bytes[last_frame_start + 4] ^= 0x01; // in the stored crc
                std::fs::write(&files[1], &bytes).unwrap();
                (files[1].clone(), last_frame_start as u64)
            },
            detail_contains: "bad crc",
        },
        Case {
            name: "sealed segment cut short",
            damage: |files| {
                let bytes = std::fs::read(&files[2]).unwrap();
                std::fs::write(&files[2], &bytes[..bytes.len() - 1]).unwrap();
                (files[2].clone(), last_frame_start(&bytes) as u64)
            },
            detail_contains: "incomplete frame",
        },
        Case {
            name: "sealed segment lost its last frame",
            damage: |files| {
                let bytes = std::fs::read(&files[2]).unwrap();
                std::fs::write(&files[2], &bytes[..last_frame_start(&bytes)]).unwrap();
                (files[3].clone(), 0)
            },
            detail_contains: "lsn gap",
        },
        Case {
            name: "segment missing",
            damage: |files| {
                std::fs::remove_file(&files[1]).unwrap();
                (files[2].clone(), 0)
            },
            detail_contains: "lsn gap",
        },
        Case {
            name: "bad magic",
            damage: |files| {
                let mut bytes = std::fs::read(&files[1]).unwrap();
                bytes[0] = b'X';
                std::fs::write(&files[1], &bytes).unwrap();
                (files[1].clone(), 0)
            },
            detail_contains: "magic",
        },
        Case {
            name: "header lsn differs from the name",
            damage: |files| {
                let mut bytes = std::fs::read(&files[1]).unwrap();
                bytes[16] ^= 0x40;
                std::fs::write(&files[1], &bytes).unwrap();
                (files[1].clone(), 0)
            },
            detail_contains: "named for",
        },
        Case {
            name: "first segment missing",
            damage: |files| {
                std::fs::remove_file(&files[0]).unwrap();
                (files[1].clone(), 0)
            },
            detail_contains: "continues at lsn 1",
        },
        Case {
            // Sealed segments are checked on several threads: the first damage in log order is
            // the one named, whichever thread found its damage first.
            name: "damage in two sealed segments",
            damage: |files| {
                for file in [&files[4], &files[1]] {
                    let mut bytes = std::fs::read(file).unwrap();
                    let last_frame_start = last_frame_start(&bytes);
                    bytes[last_frame_start + 4] ^= 0x01;
                    std::fs::write(file, &bytes).unwrap();
                }
                let bytes = std::fs::read(&files[1]).unwrap();
                (files[1].clone(), last_frame_start(&bytes) as u64)
            },
            detail_contains: "bad crc",
        },
        Case {
            name: "a segment file with a malformed name",
            damage: |files| {
                let stray = files[0].with_file_name("123.seg");
                std::fs::write(&stray, b"").unwrap();
                (stray, 0)
            },
            detail_contains: "file name",
        },
    ];
    for case in cases {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let mut options = test_options(dir);
        options.segment_bytes_max = segment_bytes_max;
        write_log(options.clone(), 1..=FRAMES).await;
        let files = segment_files(dir);
        assert!(files.len() > 5, "the test needs several segments");
        let (path, offset) = (case.damage)(&files);
        let error = open(options).unwrap_err();
        assert_corrupt(error, &path, offset, case.detail_contains, case.name);
    }
}

/// The offset of the last frame of a segment's bytes, walking the frames from the header.
fn last_frame_start(segment_bytes: &[u8]) -> usize {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut last = offset;
    while offset < segment_bytes.len() {
        last = offset;
        let payload_len =
            u32::from_le_bytes(segment_bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += FRAME_HEADER_BYTES + payload_len;
    }
    last
}

/// Without redundancy, damage in the very last frame looks exactly like a torn write: it is
/// truncated (and logged). This test pins that documented limitation down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_with_nothing_valid_after_it_is_treated_as_a_torn_tail() {
    struct Case {
        name: &'static str,
        damage: fn(&mut Vec<u8>),
        frames_left: u64,
    }
    let cases = [
        Case {
            name: "bit flip in the last frame",
            damage: |bytes| {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
            },
            frames_left: 9,
        },
        Case {
            name: "a stale copy of an old frame after the last frame",
            damage: |bytes| {
                let first_frame = SEGMENT_HEADER_BYTES
                    ..SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + payload_for(1).len();
                let stale = bytes[first_frame].to_vec();
                bytes.extend_from_slice(&stale);
            },
            frames_left: 10,
        },
    ];
    for case in cases {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        write_log(test_options(dir), 1..=10).await;
        let segment = segment_files(dir).remove(0);
        let mut bytes = std::fs::read(&segment).unwrap();
        (case.damage)(&mut bytes);
        std::fs::write(&segment, &bytes).unwrap();
        let report = recover_and_check(test_options(dir), case.frames_left);
        assert!(report.truncated.is_some(), "{}", case.name);
    }
}
