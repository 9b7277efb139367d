//! Target 2: log record payloads (`decode_record`).

use super::*;

// ------------------------------------------------------------------------------------------------
// Target 2: log record payloads (`decode_record`).

/// Largest allocation a record decode may make for an input of `len` bytes: serde's
/// `size_hint::cautious` caps a pre-allocation from a sequence header at 1 MiB; strings are
/// copied from the input, so they are at most its length.
fn record_allocation_max(len: usize) -> usize {
    (1024 * 1024).max(2 * len) + 4096
}

/// Decodes `payload` and checks what must hold for any bytes: no oversized allocation, and a
/// record that decodes re-encodes to bytes that decode to the same record.
fn check_record(format_version: u8, payload: &[u8]) -> bool {
    let (decoded, allocation) =
        largest_allocation_during(|| decode_record(format_version, payload));
    assert!(
        allocation <= record_allocation_max(payload.len()),
        "decoding {} bytes allocated {allocation} bytes at once",
        payload.len()
    );
    match decoded {
        Ok(record) => {
            let encoded = encode_record(&record);
            let again = decode_record(RECORD_FORMAT_VERSION, &encoded)
                .expect("a decoded record re-encodes to a decodable one");
            assert_eq!(encode_record(&again), encoded, "re-encoding is not stable");
            true
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            false
        }
    }
}

/// Valid encodings to mutate: the `migrations/` fixtures (one record per event type, exactly as
/// the daemon writes them) and the record corpus.
fn record_seed_payloads() -> Vec<Vec<u8>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/fixtures/v1");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "msgpack"))
        .map(|path| std::fs::read(path).unwrap())
        .collect();
    seeds.sort();
    seeds.extend(
        corpus("record", record_seeds)
            .into_iter()
            .filter(|(name, _)| expectation(name) == "ok")
            .map(|(_, bytes)| bytes),
    );
    assert!(seeds.len() >= 16, "expected a fixture per event type");
    seeds
}

/// MessagePack headers that claim far more than any input holds: str32, bin32, array32, map32,
/// ext32, each with a 4 GiB length and nothing after it.
const HOSTILE_MSGPACK_HEADERS: &[(&str, &[u8])] = &[
    ("str32_4gib", &[0xdb, 0xff, 0xff, 0xff, 0xff]),
    ("bin32_4gib", &[0xc6, 0xff, 0xff, 0xff, 0xff]),
    ("array32_4g_items", &[0xdd, 0xff, 0xff, 0xff, 0xff]),
    ("map32_4g_entries", &[0xdf, 0xff, 0xff, 0xff, 0xff]),
    ("ext32_4gib", &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ("array16_65k_items", &[0xdc, 0xff, 0xff]),
    ("str8_255", &[0xd9, 0xff]),
];

/// MessagePack fixstr (up to 31 bytes).
fn fixstr(text: &[u8]) -> Vec<u8> {
    assert!(text.len() < 32);
    let mut out = vec![0xa0 | text.len() as u8];
    out.extend_from_slice(text);
    out
}

/// `{"ts_ms": 1, "actor": nil, "events": [{tag: {field: value, ...}}]}` from encoded values.
fn one_event_record(tag: &[u8], fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![0x83];
    out.extend(fixstr(b"ts_ms"));
    out.push(0x01);
    out.extend(fixstr(b"actor"));
    out.push(0xc0);
    out.extend(fixstr(b"events"));
    out.extend([0x91, 0x81]);
    out.extend(fixstr(tag));
    out.push(0x80 | fields.len() as u8);
    for (name, value) in fields {
        out.extend(fixstr(name));
        out.extend_from_slice(value);
    }
    out
}

fn record_seeds() -> Vec<(String, Vec<u8>)> {
    let record = LogRecord {
        ts_ms: 1_700_000_000_000,
        actor: Some("box-3".into()),
        events: vec![
            agentd_schemas::events::Event::QueuePaused { queue: "q".into() },
            agentd_schemas::events::Event::JobCancelled {
                job_id: agentd_schemas::JobId(7),
            },
        ],
    };
    let valid = encode_record(&record);
    let mut seeds = vec![
        (
            "ok.two_events_with_actor.msgpack".to_string(),
            valid.clone(),
        ),
        ("err.empty.msgpack".to_string(), Vec::new()),
        (
            "err.truncated.msgpack".to_string(),
            valid[..valid.len() / 2].to_vec(),
        ),
        ("err.nil.msgpack".to_string(), vec![0xc0]),
        (
            "ok.hand_encoded_cancel.msgpack".to_string(),
            one_event_record(b"job_cancelled.v1", &[(b"job_id", &fixstr(b"job_7"))]),
        ),
        (
            "err.job_id_without_digits.msgpack".to_string(),
            one_event_record(b"job_cancelled.v1", &[(b"job_id", &fixstr(b"job_"))]),
        ),
        (
            "err.deep_nesting_in_internally_tagged_enum.msgpack".to_string(),
            {
                // `after` of job_failed is an internally tagged enum, which serde buffers as
                // `Content` before it sees the tag: {"next": "dead", "x": {"x": {"x": ...}}}.
                let mut after = vec![0x82];
                after.extend(fixstr(b"next"));
                after.extend(fixstr(b"dead"));
                for _ in 0..5_000 {
                    after.extend([0xa1, b'x', 0x81]);
                }
                after.extend([0xa1, b'x', 0xc0]);
                one_event_record(b"job_failed.v1", &[(b"after", &after)])
            },
        ),
        ("err.deep_nesting_in_unknown_field.msgpack".to_string(), {
            // {"ts_ms": 1, "zz": [[[[...]]]] (5 000 deep), ...}: the depth limit must stop
            // it (at 32 levels) before the stack does.
            let mut bytes = vec![0x83, 0xa5];
            bytes.extend_from_slice(b"ts_ms");
            bytes.push(0x01);
            bytes.extend_from_slice(&[0xa2, b'z', b'z']);
            bytes.extend(std::iter::repeat_n(0x91, 5_000));
            bytes.push(0xc0);
            bytes
        }),
    ];
    for (name, header) in HOSTILE_MSGPACK_HEADERS {
        seeds.push((format!("err.{name}_alone.msgpack"), header.to_vec()));
        // The same header where the events array belongs: `{"ts_ms":1,"actor":nil,"events":H}`.
        let mut in_events = vec![0x83, 0xa5];
        in_events.extend_from_slice(b"ts_ms");
        in_events.push(0x01);
        in_events.push(0xa5);
        in_events.extend_from_slice(b"actor");
        in_events.push(0xc0);
        in_events.push(0xa6);
        in_events.extend_from_slice(b"events");
        in_events.extend_from_slice(header);
        seeds.push((format!("err.{name}_as_events.msgpack"), in_events));
        // And as the value of a string field inside an event.
        let mut in_string = vec![0x83, 0xa5];
        in_string.extend_from_slice(b"ts_ms");
        in_string.push(0x01);
        in_string.push(0xa5);
        in_string.extend_from_slice(b"actor");
        in_string.extend_from_slice(header);
        seeds.push((format!("err.{name}_as_actor.msgpack"), in_string));
    }
    seeds
}

/// Stack of the thread the record corpus is decoded on: that of the tokio blocking threads the
/// daemon decodes on (2 MiB). `decode_record` stops nesting at `MAX_RECORD_DEPTH` (32 levels), so
/// even a debug build stays far inside it (at rmp-serde's default of 1024 a debug build needed
/// 4-8 MiB; see fuzz/README.md).
const DECODE_STACK_BYTES: usize = 2 * 1024 * 1024;

/// Replays `fuzz/corpus/record/` (payloads of format version 1): `ok.` must decode, `err.`
/// must not, without overflowing the stack of the thread the daemon decodes on.
#[test]
fn record_corpus_replays() {
    let files = corpus("record", record_seeds);
    std::thread::Builder::new()
        .stack_size(DECODE_STACK_BYTES)
        .spawn(move || {
            for (name, bytes) in files {
                let decoded = check_record(RECORD_FORMAT_VERSION, &bytes);
                match expectation(&name) {
                    "ok" => assert!(decoded, "corpus file record/{name} must decode"),
                    "err" => assert!(!decoded, "corpus file record/{name} must not decode"),
                    _ => {}
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A hostile length header anywhere in a valid record: fails (or decodes what fits) without an
/// allocation sized by the header.
#[test]
fn hostile_msgpack_headers_at_every_position_fail_fast() {
    for seed in record_seed_payloads() {
        for (name, header) in HOSTILE_MSGPACK_HEADERS {
            for position in 0..=seed.len() {
                for replace in [false, true] {
                    let mut bytes = seed.clone();
                    let end = if replace {
                        (position + header.len()).min(bytes.len())
                    } else {
                        position
                    };
                    bytes.splice(position..end, header.iter().copied());
                    let (_, allocation) =
                        largest_allocation_during(|| decode_record(RECORD_FORMAT_VERSION, &bytes));
                    assert!(
                        allocation <= record_allocation_max(bytes.len()),
                        "{name} at byte {position} allocated {allocation} bytes"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config(50_000))]

    #[test]
    fn records_from_arbitrary_bytes(
        format_version in prop_oneof![Just(RECORD_FORMAT_VERSION), any::<u8>()],
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let decoded = check_record(format_version, &payload);
        if format_version != RECORD_FORMAT_VERSION {
            prop_assert!(!decoded, "a record of an unknown format version decoded");
        }
    }

    /// Valid records with bytes flipped, replaced, inserted or cut.
    #[test]
    fn mutated_records(
        seed in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let seeds = record_seeds_cached();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for (at, byte, kind) in edits {
            let position = at.index(bytes.len() + 1);
            match kind {
                0 if position < bytes.len() => bytes[position] ^= byte | 1,
                1 if position < bytes.len() => bytes[position] = byte,
                2 => bytes.insert(position, byte),
                _ => bytes.truncate(position),
            }
        }
        check_record(RECORD_FORMAT_VERSION, &bytes);
    }
}

fn record_seeds_cached() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(record_seed_payloads)
}
