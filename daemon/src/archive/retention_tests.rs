//! The retention decision (never an unarchived, differently archived, active or recent segment)
//! and the archive read back as the log's cold tier through a `file://` store.

use super::*;
use crate::archive::manifest::ManifestSegment;
use crate::archive::segment_source::attach_archive;
use crate::archive::StorageUrl;
use crate::log::{self, LogOptions};

const HOUR_MS: u64 = 3_600_000;
const NOW_MS: u64 = 100 * HOUR_MS;
const SHA: &str = "5f1c000000000000000000000000000000000000000000000000000000000001";

fn sealed(first_lsn: u64, last_lsn: u64, bytes: u64, sha256: &str) -> ManifestSegment {
    ManifestSegment {
        name: crate::archive::manifest::segment_file_name(first_lsn),
        first_lsn,
        last_lsn,
        bytes,
        sha256: sha256.to_owned(),
        sealed: true,
        parts: Vec::new(),
    }
}

/// `segments`, then the archive's last (active) segment after them, as the uploader leaves it.
fn manifest(segments: Vec<ManifestSegment>) -> Manifest {
    let mut manifest = bare_manifest(segments);
    let next = manifest.last_lsn + 1;
    let mut active = sealed(next, next, 100, SHA);
    active.sealed = false;
    active.parts = vec![active.whole_prefix_part()];
    manifest.record(active).unwrap();
    manifest
}

fn bare_manifest(segments: Vec<ManifestSegment>) -> Manifest {
    let mut manifest = Manifest::default();
    for segment in segments {
        manifest.record(segment).unwrap();
    }
    manifest
}

fn old_segment() -> SegmentFacts {
    SegmentFacts {
        first_lsn: 1,
        next_first_lsn: Some(11),
        len_bytes: 500,
        last_record_ms: NOW_MS - 2 * HOUR_MS,
    }
}

fn verdict(segment: &SegmentFacts, manifest: &Manifest, local_sha256: &str) -> Verdict {
    decide(segment, manifest, NOW_MS, HOUR_MS, || {
        Ok::<_, String>(local_sha256.to_owned())
    })
    .unwrap()
}

#[test]
fn an_old_sealed_segment_archived_with_the_same_bytes_is_evicted() {
    let archived = manifest(vec![sealed(1, 10, 500, SHA)]);
    assert_eq!(verdict(&old_segment(), &archived, SHA), Verdict::Evict);
}

#[test]
fn an_unarchived_segment_is_kept() {
    let empty = Manifest::default();
    assert_eq!(
        verdict(&old_segment(), &empty, SHA),
        Verdict::Keep(Keep::NotArchived)
    );
    // Archived only as the unsealed prefix of the active segment, not sealed.
    let mut prefix = sealed(1, 8, 400, SHA);
    prefix.sealed = false;
    prefix.parts = vec![prefix.whole_prefix_part()];
    let unsealed = bare_manifest(vec![prefix]);
    assert_eq!(
        verdict(&old_segment(), &unsealed, SHA),
        Verdict::Keep(Keep::NotArchived)
    );
    // Sealed with other lsns than the local file holds.
    let other_range = manifest(vec![sealed(1, 9, 500, SHA)]);
    assert_eq!(
        verdict(&old_segment(), &other_range, SHA),
        Verdict::Keep(Keep::NotArchived)
    );
}

#[test]
fn the_archives_last_segment_is_kept_until_a_later_one_is_archived() {
    let last = bare_manifest(vec![sealed(1, 10, 500, SHA)]);
    assert_eq!(
        verdict(&old_segment(), &last, SHA),
        Verdict::Keep(Keep::LastArchived)
    );
}

#[test]
fn a_segment_archived_with_other_bytes_is_kept() {
    let archived = manifest(vec![sealed(1, 10, 500, SHA)]);
    let other_sha = SHA.replace("5f1c", "0000");
    let Verdict::Keep(Keep::ArchivedDifferently { detail }) =
        verdict(&old_segment(), &archived, &other_sha)
    else {
        panic!("a sha256 mismatch must keep the segment");
    };
    assert!(detail.contains("sha256"), "{detail}");
    let longer = manifest(vec![sealed(1, 10, 501, SHA)]);
    let Verdict::Keep(Keep::ArchivedDifferently { detail }) = verdict(&old_segment(), &longer, SHA)
    else {
        panic!("a length mismatch must keep the segment");
    };
    assert!(detail.contains("501"), "{detail}");
}

#[test]
fn the_active_segment_and_recent_segments_are_kept() {
    let archived = manifest(vec![sealed(1, 10, 500, SHA)]);
    let active = SegmentFacts {
        next_first_lsn: None,
        ..old_segment()
    };
    assert_eq!(
        verdict(&active, &archived, SHA),
        Verdict::Keep(Keep::Active)
    );
    let recent = SegmentFacts {
        last_record_ms: NOW_MS - HOUR_MS + 1,
        ..old_segment()
    };
    assert_eq!(
        verdict(&recent, &archived, SHA),
        Verdict::Keep(Keep::Recent)
    );
    // A clock behind the record's time: not old.
    let future = SegmentFacts {
        last_record_ms: NOW_MS + HOUR_MS,
        ..old_segment()
    };
    assert_eq!(
        verdict(&future, &archived, SHA),
        Verdict::Keep(Keep::Recent)
    );
}

#[test]
fn the_local_file_is_hashed_only_when_everything_else_allows_eviction() {
    let archived = manifest(vec![sealed(1, 10, 500, SHA)]);
    let recent = SegmentFacts {
        last_record_ms: NOW_MS,
        ..old_segment()
    };
    let outcome = decide(&recent, &archived, NOW_MS, HOUR_MS, || {
        Err::<String, _>("the file must not be read")
    });
    assert_eq!(outcome, Ok(Verdict::Keep(Keep::Recent)));
    let failed = decide(&old_segment(), &archived, NOW_MS, HOUR_MS, || {
        Err::<String, _>("unreadable")
    });
    assert_eq!(failed, Err("unreadable"));
}

#[test]
fn retention_needs_a_storage_url() {
    let mut config = StorageConfig::default();
    assert!(check_config(&config).is_ok());
    config.local_retention_ms = 1000;
    let error = check_config(&config).unwrap_err();
    assert!(error.contains("needs [storage] url"), "{error}");
    config.url = Some("file:///tmp/x".to_owned());
    assert!(check_config(&config).is_ok());
}

/// A log of small segments, its sealed ones archived by hand under a `file://` URL with their
/// manifest: what the uploader leaves.
async fn archived_log(root: &std::path::Path, frames: u64) -> (std::path::PathBuf, String) {
    let log_dir = root.join("log");
    let mut options = LogOptions::new(&log_dir);
    options.segment_bytes_max = 200;
    let (log, _) = log::open(options).unwrap();
    let writer = log.start_writer();
    for lsn in 1..=frames {
        let payload = format!("payload {lsn}").into_bytes();
        writer.append(Lsn(lsn), 1, payload).await.unwrap();
    }
    writer.shutdown().await;
    let url = format!("file://{}", root.join("archive").display());
    let archive_log = root.join("archive").join("log");
    std::fs::create_dir_all(&archive_log).unwrap();
    let segments = list_local_segments(&log_dir).unwrap();
    let mut entries = Vec::new();
    for pair in segments.windows(2) {
        let bytes = std::fs::read(&pair[0].path).unwrap();
        let name = crate::archive::manifest::segment_file_name(pair[0].first_lsn);
        std::fs::write(archive_log.join(&name), &bytes).unwrap();
        let last_lsn = pair[1].first_lsn - 1;
        entries.push(sealed(
            pair[0].first_lsn,
            last_lsn,
            bytes.len() as u64,
            &sha256_hex(&bytes),
        ));
    }
    std::fs::write(
        archive_log.join("manifest.json"),
        bare_manifest(entries).to_json(),
    )
    .unwrap();
    (log_dir, url)
}

fn payloads(reader: &LogReader, after: u64, up_to: u64) -> Result<Vec<String>, String> {
    reader
        .frames(Lsn(after), Lsn(up_to))
        .map(|frame| {
            frame
                .map(|frame| String::from_utf8(frame.payload).unwrap())
                .map_err(|error| error.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_segments_are_read_back_from_the_archive_and_checked() {
    let temp = tempfile::tempdir().unwrap();
    let (log_dir, url) = archived_log(temp.path(), 40).await;
    let reader = LogReader::open(&log_dir, 1 << 20).unwrap();
    for _ in 0..3 {
        let segments = list_local_segments(&log_dir).unwrap();
        let evicted = reader
            .evict_oldest_segment(Lsn(segments[0].first_lsn), Lsn(segments[1].first_lsn), &url)
            .unwrap();
        assert!(matches!(evicted, Eviction::Evicted { .. }), "{evicted:?}");
    }
    // A reader opened afresh, as `agentd rebuild` does, with the archive the marker names.
    let fresh = LogReader::open(&log_dir, 1 << 20).unwrap();
    assert!(fresh.local_first_lsn().0 > 1);
    let attached = tokio::task::spawn_blocking(move || {
        let attached = attach_archive(&fresh, fresh.dir(), &StorageConfig::default()).unwrap();
        (attached, payloads(&fresh, 0, 40))
    })
    .await
    .unwrap();
    assert_eq!(attached.0.as_deref(), Some(url.as_str()));
    let expected: Vec<String> = (1..=40).map(|lsn| format!("payload {lsn}")).collect();
    assert_eq!(attached.1.unwrap(), expected);

    // An archived object with other bytes than the manifest lists is refused, naming it.
    let first = temp.path().join("archive/log/00000000000000000001.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    let damaged = LogReader::open(&log_dir, 1 << 20).unwrap();
    let error = tokio::task::spawn_blocking(move || {
        attach_archive(&damaged, damaged.dir(), &StorageConfig::default()).unwrap();
        payloads(&damaged, 0, 40).unwrap_err()
    })
    .await
    .unwrap();
    assert!(error.contains("log/00000000000000000001.seg"), "{error}");
    assert!(error.contains("sha256"), "{error}");

    // The archive gone: the error names the URL and the manifest.
    std::fs::remove_dir_all(temp.path().join("archive")).unwrap();
    let orphan = LogReader::open(&log_dir, 1 << 20).unwrap();
    let error = tokio::task::spawn_blocking(move || {
        attach_archive(&orphan, orphan.dir(), &StorageConfig::default()).unwrap();
        payloads(&orphan, 0, 40).unwrap_err()
    })
    .await
    .unwrap();
    assert!(
        error.contains(&url) && error.contains("manifest"),
        "{error}"
    );
    assert!(StorageUrl::parse(&url).is_ok());
}
