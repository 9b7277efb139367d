//! Target 3: JSON from clients (`validate_record`, `validate_meta`, `parse_json`).

use super::*;

// ------------------------------------------------------------------------------------------------
// Target 3: JSON from clients: `validate_record`, `validate_meta` and `parse_json`.

const RECORD_FIELDS: &[&str] = &["instruction", "pre", "post", "language", "tags", "metadata"];
const META_FIELDS: &[&str] = &[
    "source",
    "version",
    "license",
    "downloaded_at",
    "sha256",
    "num_records",
    "url",
];

/// Checks that a refusal names the field that caused it: `$` for a non-object, the
/// alphabetically first unknown key when there is one (checked first), else a known field or an
/// element of `tags`.
fn check_field_error(value: &Value, error: &FieldError, known: &[&str]) {
    // An empty field name only ever means the unknown key `""` (whose message then reads
    // `: is not a known field`; see fuzz/README.md).
    assert!(
        !error.field.is_empty() || value.get("").is_some(),
        "an error without a field: {error:?}"
    );
    assert!(
        !error.message.is_empty(),
        "an error without a message: {error:?}"
    );
    assert!(
        error.to_string().starts_with(&error.field),
        "the message does not start with the field: {error}"
    );
    let Some(object) = value.as_object() else {
        assert_eq!(error.field, "$", "a non-object must be refused as a whole");
        return;
    };
    let first_unknown = object
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .min();
    match first_unknown {
        Some(key) => assert_eq!(
            &error.field, key,
            "unknown fields are refused first, by name"
        ),
        None => {
            let base = error.field.split('[').next().unwrap_or_default();
            assert!(
                known.contains(&base),
                "{error:?} names no field of the value"
            );
            if let Some(index) = error
                .field
                .strip_prefix("tags[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                let index: usize = index.parse().expect("tags[<n>]");
                let tags = object["tags"]
                    .as_array()
                    .expect("tags[n] names an array element");
                assert!(index < tags.len());
            }
        }
    }
}

fn check_record_value(value: &Value) -> Result<(), FieldError> {
    let (validated, allocation) = largest_allocation_during(|| validate_record(value));
    let input_bytes = value.to_string().len();
    assert!(
        allocation <= 4 * input_bytes + 64 * 1024,
        "validation allocated {allocation} bytes"
    );
    match validated {
        Ok(record) => {
            let object = value.as_object().expect("only an object validates");
            assert_eq!(object["instruction"], record.instruction.as_str());
            assert_eq!(object["pre"], record.pre.as_str());
            assert_eq!(object["post"], record.post.as_str());
            assert_eq!(object["language"], record.language.as_str());
            let tags: Vec<Value> = record
                .tags
                .iter()
                .map(|tag| Value::from(tag.as_str()))
                .collect();
            assert_eq!(
                object
                    .get("tags")
                    .filter(|tags| !tags.is_null())
                    .cloned()
                    .unwrap_or(json!([])),
                Value::Array(tags)
            );
            let metadata: Value =
                serde_json::from_str(&record.metadata_json).expect("metadata_json is JSON");
            // Exact, floats included: the workspace enables `serde_json/float_roundtrip`
            // (without it some floats came back a few ulps off; see fuzz/README.md).
            let given = object
                .get("metadata")
                .filter(|m| !m.is_null())
                .cloned()
                .unwrap_or(json!({}));
            assert_eq!(
                given, metadata,
                "metadata_json {} does not hold the metadata given",
                record.metadata_json
            );
            Ok(())
        }
        Err(error) => {
            check_field_error(value, &error, RECORD_FIELDS);
            Err(error)
        }
    }
}

fn check_meta_value(value: &Value) -> Result<(), FieldError> {
    match validate_meta(value) {
        Ok(meta) => {
            let object = value.as_object().expect("only an object validates");
            assert_eq!(object["source"], meta.source.as_str());
            assert_eq!(object["version"], meta.version.as_str());
            assert_eq!(object["num_records"], meta.num_records);
            assert_eq!(meta.sha256.len(), 64);
            Ok(())
        }
        Err(error) => {
            check_field_error(value, &error, META_FIELDS);
            Err(error)
        }
    }
}

/// Strings that probe the checks: boundaries of the length limits, blanks, surrounding and
/// inner whitespace, control characters, multi-byte characters, JSON-looking text.
fn tricky_string() -> impl Strategy<Value = String> {
    let lengths = prop_oneof![
        0usize..4,
        Just(63usize),
        Just(64),
        Just(65),
        Just(127),
        Just(128),
        Just(129),
        Just(255),
        Just(256),
        Just(257),
        Just(2048),
        Just(2049),
    ];
    let unit = prop_oneof![
        Just("a"),
        Just("é"),
        Just("日"),
        Just(" "),
        Just("\t"),
        Just("\u{1}"),
        Just("\u{7f}"),
        Just("\n"),
        Just("0"),
        Just("-"),
        Just("("),
    ];
    prop_oneof![
        "\\PC{0,24}",
        ".{0,8}",
        (lengths, unit).prop_map(|(count, unit)| unit.repeat(count)),
        Just("MIT".to_string()),
        Just("Apache-2.0 OR MIT".to_string()),
        Just("(MIT".to_string()),
        Just("MIT AND".to_string()),
        Just("2024-02-29T23:59:60.123456789+14:00".to_string()),
        Just("2023-02-29T00:00:00Z".to_string()),
        Just("https://example.com/x".to_string()),
        Just("a".repeat(64)),
        Just("0".repeat(64)),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(
            |number| serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
        ),
        tricky_string().prop_map(Value::String),
    ]
}

fn json_key(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_string),
        1 => "\\PC{0,12}",
        1 => Just("licence".to_string()),
    ]
}

fn arbitrary_json(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((json_key(known), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn non_blank_text(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('é'),
            Just('日'),
            Just('_'),
            Just('9')
        ],
        1..=max_chars.min(40),
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn valid_record() -> impl Strategy<Value = Value> {
    (
        non_blank_text(40),
        "\\PC{0,40}",
        "\\PC{0,40}",
        non_blank_text(64),
        proptest::option::of(prop::collection::vec(non_blank_text(128), 0..6)),
        proptest::option::of(arbitrary_json(&["tests", "smell", "provenance"])),
    )
        .prop_map(|(instruction, pre, post, language, tags, metadata)| {
            let mut object = json!({
                "instruction": instruction,
                "pre": pre,
                "post": post,
                "language": language,
            });
            if let Some(tags) = tags {
                object["tags"] = json!(tags);
            }
            if let Some(Value::Object(metadata)) = metadata {
                object["metadata"] = Value::Object(metadata);
            }
            object
        })
}

fn valid_meta() -> impl Strategy<Value = Value> {
    (
        non_blank_text(128),
        non_blank_text(128),
        prop::sample::select(
            &[
                "MIT",
                "Apache-2.0 OR MIT",
                "(MIT AND BSD-3-Clause) OR GPL-2.0-or-later WITH Classpath-exception-2.0",
                "CC-BY-4.0",
            ][..],
        ),
        prop::sample::select(
            &[
                "2024-05-01T12:00:00Z",
                "2024-02-29T23:59:60.5+01:00",
                "1999-12-31t00:00:00-12:00",
            ][..],
        ),
        "[0-9a-fA-F]{64}",
        any::<u64>(),
        proptest::option::of(Just("https://example.com/data.jsonl")),
    )
        .prop_map(
            |(source, version, license, downloaded_at, sha256, num_records, url)| {
                let mut object = json!({
                    "source": source,
                    "version": version,
                    "license": license,
                    "downloaded_at": downloaded_at,
                    "sha256": sha256,
                    "num_records": num_records,
                });
                if let Some(url) = url {
                    object["url"] = json!(url);
                }
                object
            },
        )
}

/// One change to a valid object, with what it may do: `Ok(())` when it must stay valid,
/// `Err(fields)` when it must be refused naming one of `fields`, `None` when either is fine
/// provided a refusal names the changed field.
#[derive(Debug, Clone)]
enum Perturbation {
    None,
    Remove(Index),
    SetNull(Index),
    Replace(Index, Value),
    ReplaceString(Index, String),
    EditString(Index, Index, char),
    AddUnknown(String, Value),
}

fn perturbation(known: &'static [&'static str]) -> impl Strategy<Value = Perturbation> {
    prop_oneof![
        1 => Just(Perturbation::None),
        1 => any::<Index>().prop_map(Perturbation::Remove),
        1 => any::<Index>().prop_map(Perturbation::SetNull),
        2 => (any::<Index>(), arbitrary_json(known)).prop_map(|(at, value)| Perturbation::Replace(at, value)),
        3 => (any::<Index>(), tricky_string()).prop_map(|(at, text)| Perturbation::ReplaceString(at, text)),
        3 => (any::<Index>(), any::<Index>(), any::<char>()).prop_map(|(at, position, c)| Perturbation::EditString(at, position, c)),
        1 => ("[a-z_]{1,12}", json_leaf()).prop_map(|(key, value)| Perturbation::AddUnknown(key, value)),
    ]
}

/// Applies `change` to `value` (a valid object) and says which field, if any, it touched.
enum Touched {
    Nothing,
    Field(String),
    Unknown(String),
}

fn perturb(value: &mut Value, change: &Perturbation, known: &[&str]) -> Touched {
    let object = value.as_object_mut().expect("a valid value is an object");
    let mut present: Vec<String> = object.keys().cloned().collect();
    present.sort();
    let pick = |at: &Index| present[at.index(present.len())].clone();
    match change {
        Perturbation::None => Touched::Nothing,
        Perturbation::Remove(at) => {
            let field = pick(at);
            object.remove(&field);
            Touched::Field(field)
        }
        Perturbation::SetNull(at) => {
            let field = pick(at);
            object.insert(field.clone(), Value::Null);
            Touched::Field(field)
        }
        Perturbation::Replace(at, replacement) => {
            let field = pick(at);
            object.insert(field.clone(), replacement.clone());
            Touched::Field(field)
        }
        Perturbation::ReplaceString(at, text) => {
            let field = pick(at);
            object.insert(field.clone(), Value::String(text.clone()));
            Touched::Field(field)
        }
        Perturbation::EditString(at, position, c) => {
            let field = pick(at);
            if let Some(Value::String(text)) = object.get_mut(&field) {
                let mut chars: Vec<char> = text.chars().collect();
                let position = position.index(chars.len() + 1);
                if position < chars.len() {
                    chars[position] = *c;
                } else {
                    chars.push(*c);
                }
                *text = chars.into_iter().collect();
            }
            Touched::Field(field)
        }
        Perturbation::AddUnknown(key, extra) => {
            if known.contains(&key.as_str()) {
                return Touched::Nothing;
            }
            object.insert(key.clone(), extra.clone());
            Touched::Unknown(key.clone())
        }
    }
}

fn check_perturbed(outcome: Result<(), FieldError>, touched: Touched) -> Result<(), TestCaseError> {
    match (touched, outcome) {
        (Touched::Nothing, outcome) => {
            prop_assert!(outcome.is_ok(), "a valid value was refused: {:?}", outcome)
        }
        (Touched::Unknown(key), outcome) => {
            prop_assert_eq!(outcome.map_err(|error| error.field), Err(key))
        }
        (Touched::Field(field), Err(error)) => prop_assert!(
            error.field == field || error.field.starts_with(&format!("{field}[")),
            "changing {} was refused naming {:?}",
            field,
            error
        ),
        // Removing an optional field, or a replacement the checks accept, keeps it valid; the
        // callers check separately that a removed required field is refused.
        (Touched::Field(_), Ok(())) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config(10_000))]

    #[test]
    fn dataset_records_from_arbitrary_json(value in arbitrary_json(RECORD_FIELDS)) {
        let _ = check_record_value(&value);
    }

    #[test]
    fn dataset_metas_from_arbitrary_json(value in arbitrary_json(META_FIELDS)) {
        let _ = check_meta_value(&value);
    }

    /// A valid record with one change: a removed required field or a null one is refused by
    /// name, an unknown field is refused by name, anything else is accepted or refused naming the
    /// changed field.
    #[test]
    fn perturbed_dataset_records(mut value in valid_record(), change in perturbation(RECORD_FIELDS)) {
        let touched = perturb(&mut value, &change, RECORD_FIELDS);
        let required = ["instruction", "pre", "post", "language"];
        if let (Perturbation::Remove(_) | Perturbation::SetNull(_), Touched::Field(field)) = (&change, &touched) {
            if required.contains(&field.as_str()) {
                prop_assert_eq!(check_record_value(&value).map_err(|error| error.field), Err(field.clone()));
            }
        }
        check_perturbed(check_record_value(&value), touched)?;
    }

    #[test]
    fn perturbed_dataset_metas(mut value in valid_meta(), change in perturbation(META_FIELDS)) {
        let touched = perturb(&mut value, &change, META_FIELDS);
        let required = ["source", "version", "license", "downloaded_at", "sha256", "num_records"];
        if let (Perturbation::Remove(_) | Perturbation::SetNull(_), Touched::Field(field)) = (&change, &touched) {
            if required.contains(&field.as_str()) {
                prop_assert_eq!(check_meta_value(&value).map_err(|error| error.field), Err(field.clone()));
            }
        }
        check_perturbed(check_meta_value(&value), touched)?;
    }
}

/// Parses `bytes` as the request body of every JSON endpoint and checks the error shape: 400
/// `invalid_json` for text that is not JSON, 422 `invalid_request` for JSON of the wrong shape,
/// a message that says it is about the request body. Returns which types accepted it.
fn check_http_body(bytes: &[u8]) -> Vec<&'static str> {
    fn one<T: serde::de::DeserializeOwned>(
        name: &'static str,
        bytes: &[u8],
        accepted: &mut Vec<&'static str>,
    ) {
        let (parsed, allocation) = largest_allocation_during(|| parse_json::<T>(bytes));
        assert!(
            allocation <= 8 * bytes.len() + 64 * 1024,
            "{name}: parsing {} bytes allocated {allocation} bytes at once",
            bytes.len()
        );
        match parsed {
            Ok(_) => accepted.push(name),
            Err(error) => {
                let shape = (error.status().as_u16(), error.code.as_str());
                assert!(
                    shape == (400, "invalid_json") || shape == (422, "invalid_request"),
                    "{name}: unexpected error shape {shape:?}: {}",
                    error.message
                );
                assert!(
                    error.message.starts_with("request body"),
                    "{name}: {}",
                    error.message
                );
                // serde_json names a missing or unknown field, but for a value of the wrong type
                // it gives only the position (see fuzz/README.md); every error has one of them.
                assert!(
                    bytes.is_empty() || error.message.contains(" at line "),
                    "{name}: an error that names neither a field nor a position: {}",
                    error.message
                );
            }
        }
    }
    let mut accepted = Vec::new();
    one::<SubmitJobRequest>("submit_job", bytes, &mut accepted);
    one::<BatchSubmitRequest>("batch_submit", bytes, &mut accepted);
    one::<LeaseRequest>("lease", bytes, &mut accepted);
    one::<CompleteRequest>("complete", bytes, &mut accepted);
    one::<CompleteManyRequest>("complete_many", bytes, &mut accepted);
    one::<FailRequest>("fail", bytes, &mut accepted);
    one::<IngestRecordsRequest>("ingest_records", bytes, &mut accepted);
    one::<StateUpdateRequest>("state_update", bytes, &mut accepted);
    one::<RecordStepRequest>("record_step", bytes, &mut accepted);
    one::<SandboxResultRequest>("sandbox_result", bytes, &mut accepted);
    one::<RewardRequest>("reward", bytes, &mut accepted);
    one::<Value>("dataset_meta", bytes, &mut accepted);
    // The ingest endpoint validates each record of an accepted batch; the meta endpoint the body.
    if let Ok(request) = serde_json::from_slice::<IngestRecordsRequest>(bytes) {
        for record in &request.records {
            let _ = check_record_value(record);
        }
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let _ = check_meta_value(&value);
    }
    accepted
}

fn http_body_seeds() -> Vec<(String, Vec<u8>)> {
    let bodies: Vec<(&str, Value)> = vec![
        ("submit_job.ok.minimal", json!({"queue": "q", "kind": "k"})),
        (
            "submit_job.ok.full",
            json!({"queue": "q", "kind": "k", "payload": {"n": [1, 2.5, null]}, "priority": -3, "delay_ms": 10, "max_attempts": 5, "lease_ttl_ms": 1500, "tags": {"gpu": "a100"}, "task_id": "t-1", "idempotency_key": "abc"}),
        ),
        (
            "submit_job.invalid_request.queue_is_a_number",
            json!({"queue": 1, "kind": "k"}),
        ),
        (
            "submit_job.invalid_request.priority_too_big",
            json!({"queue": "q", "kind": "k", "priority": 1u64 << 40}),
        ),
        (
            "batch_submit.ok.two",
            json!({"jobs": [{"queue": "q", "kind": "k"}, {"queue": "r", "kind": "k"}]}),
        ),
        (
            "batch_submit.invalid_request.unknown_field",
            json!({"jobs": [], "job": []}),
        ),
        (
            "lease.ok.full",
            json!({"worker_id": "w", "queues": ["q"], "tags": {"a": "b"}, "max_jobs": 10, "wait_ms": 100}),
        ),
        ("complete.ok.result", json!({"result": {"ok": true}})),
        (
            "complete_many.ok.one",
            json!({"completions": [{"lease_id": "lease_1", "result": 1}]}),
        ),
        (
            "complete_many.invalid_request.bad_lease_id",
            json!({"completions": [{"lease_id": "lease_x"}]}),
        ),
        (
            "fail.ok.retryable",
            json!({"error": "boom", "retryable": true}),
        ),
        (
            "ingest_records.ok.two_records",
            json!({"first_index": 3, "records": [
                {"instruction": "fix it", "pre": "a", "post": "b", "language": "rust", "tags": ["x"], "metadata": {"z": 1, "a": [true]}},
                {"instruction": " ", "pre": "", "post": "", "language": "Go"}
            ]}),
        ),
        (
            "state_update.ok.goals",
            json!({"goals": ["g"], "next_focus": "f", "lease_id": "lease_9"}),
        ),
        (
            "record_step.ok.pattern",
            json!({"step": 1, "model": "m", "policy_version": "p", "action": {"kind": "pattern", "language": "rust", "pattern": "$A", "rewrite": "$A"}, "sampling": {"temperature": 0.7}}),
        ),
        (
            "record_step.invalid_request.unknown_action",
            json!({"step": 1, "model": "m", "policy_version": "p", "action": {"kind": "nope"}}),
        ),
        (
            "sandbox_result.ok.ok",
            json!({"exit_code": 0, "outcome": "ok", "stdout": "s", "duration_ms": 5}),
        ),
        (
            "reward.ok.rule",
            json!({"value": 0.5, "verified": true, "components": {"tests": 1.0}, "source": "rule"}),
        ),
        (
            "dataset_meta.ok.meta",
            json!({"source": "s", "version": "v1", "license": "MIT", "downloaded_at": "2024-05-01T12:00:00Z", "sha256": "0".repeat(64), "num_records": 2, "url": "https://example.com/x"}),
        ),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = bodies
        .into_iter()
        .map(|(name, body)| (format!("{name}.json"), body.to_string().into_bytes()))
        .collect();
    seeds.extend([
        ("submit_job.invalid_json.empty.json".to_string(), Vec::new()),
        (
            "submit_job.invalid_json.truncated.json".to_string(),
            br#"{"queue": "q", "ki"#.to_vec(),
        ),
        (
            "submit_job.invalid_json.not_utf8.json".to_string(),
            b"{\"queue\": \"\xff\xfe\"}".to_vec(),
        ),
        ("submit_job.invalid_json.deep_nesting.json".to_string(), {
            let mut text = br#"{"queue": "q", "kind": "k", "payload": "#.to_vec();
            text.extend(std::iter::repeat_n(b'[', 5_000));
            text
        }),
        (
            "submit_job.invalid_json.trailing_garbage.json".to_string(),
            br#"{"queue": "q", "kind": "k"} x"#.to_vec(),
        ),
        (
            "submit_job.invalid_request.top_level_array.json".to_string(),
            b"[1, 2]".to_vec(),
        ),
    ]);
    seeds
}

/// Replays `fuzz/corpus/http_body/`: `<type>.<outcome>.<what>.json`, where outcome is `ok`,
/// `invalid_json` or `invalid_request` for parsing as `<type>`.
#[test]
fn http_body_corpus_replays() {
    for (name, bytes) in corpus("http_body", http_body_seeds) {
        let accepted = check_http_body(&bytes);
        let mut parts = name.split('.');
        let (Some(target), Some(outcome)) = (parts.next(), parts.next()) else {
            continue;
        };
        let outcome_of = |kind: &str| match kind {
            "ok" => Some(true),
            "invalid_json" | "invalid_request" => Some(false),
            _ => None,
        };
        if let Some(ok) = outcome_of(outcome) {
            assert_eq!(
                accepted.contains(&target),
                ok,
                "corpus file http_body/{name}: accepted by {accepted:?}"
            );
        }
        if outcome == "invalid_json" || outcome == "invalid_request" {
            let error = match target {
                "submit_job" => parse_json::<SubmitJobRequest>(&bytes).err(),
                "batch_submit" => parse_json::<BatchSubmitRequest>(&bytes).err(),
                "complete_many" => parse_json::<CompleteManyRequest>(&bytes).err(),
                "record_step" => parse_json::<RecordStepRequest>(&bytes).err(),
                _ => None,
            };
            if let Some(error) = error {
                assert_eq!(
                    error.code.as_str(),
                    outcome,
                    "corpus file http_body/{name}: {}",
                    error.message
                );
            }
        }
    }
}

/// Replays `fuzz/corpus/dataset_record/` and `dataset_meta/`: `ok.<what>.json` must validate,
/// `err.<field>.<what>.json` must be refused naming `<field>`.
#[test]
fn dataset_corpus_replays() {
    for (target, seeds, check) in [
        (
            "dataset_record",
            dataset_record_seeds as fn() -> Vec<(String, Vec<u8>)>,
            check_record_value as fn(&Value) -> Result<(), FieldError>,
        ),
        ("dataset_meta", dataset_meta_seeds, check_meta_value),
    ] {
        for (name, bytes) in corpus(target, seeds) {
            let value: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|error| panic!("corpus file {target}/{name} is not JSON: {error}"));
            let outcome = check(&value);
            let mut parts = name.split('.');
            match (parts.next(), parts.next()) {
                (Some("ok"), _) => {
                    assert!(outcome.is_ok(), "corpus file {target}/{name}: {outcome:?}")
                }
                (Some("err"), Some(field)) => assert_eq!(
                    outcome.map_err(|error| error.field),
                    Err(field.to_string()),
                    "corpus file {target}/{name}"
                ),
                _ => {}
            }
        }
    }
}

fn dataset_record_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = json!({"instruction": "fix the bug", "pre": "a", "post": "b", "language": "rust", "tags": ["x", "y"], "metadata": {"b": 1, "a": {"c": [null]}}});
    let with = |field: &str, value: Value| {
        let mut record = valid.clone();
        record[field] = value;
        record
    };
    let cases: Vec<(&str, Value)> = vec![
        ("ok.full", valid.clone()),
        (
            "ok.minimal",
            json!({"instruction": "i", "pre": "", "post": "", "language": "Go"}),
        ),
        ("ok.nulls_for_optional", with("tags", Value::Null)),
        ("ok.64_tags", with("tags", json!(vec!["t"; 64]))),
        (
            "ok.language_64_chars",
            with("language", json!("é".repeat(64))),
        ),
        ("err.$.array", json!([1, 2])),
        ("err.$.string", json!("record")),
        ("err..empty_unknown_key", json!({"": null})),
        ("err.instruction.blank", with("instruction", json!(" \t\n"))),
        (
            "err.instruction.missing",
            json!({"pre": "", "post": "", "language": "Go"}),
        ),
        ("err.licence.unknown_field_first", {
            let mut record = with("instruction", json!(1));
            record["licence"] = json!("MIT");
            record
        }),
        ("err.pre.number", with("pre", json!(3))),
        (
            "err.language.65_chars",
            with("language", json!("é".repeat(65))),
        ),
        ("err.tags.65_tags", with("tags", json!(vec!["t"; 65]))),
        ("err.tags[1].blank_tag", with("tags", json!(["ok", "  "]))),
        (
            "err.tags[0].129_chars",
            with("tags", json!(["x".repeat(129)])),
        ),
        ("err.tags.object", with("tags", json!({"a": "b"}))),
        ("err.metadata.array", with("metadata", json!([1]))),
    ];
    cases
        .into_iter()
        .map(|(name, value)| (format!("{name}.json"), value.to_string().into_bytes()))
        .collect()
}

fn dataset_meta_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = json!({"source": "commitpack", "version": "2024-05", "license": "(MIT AND BSD-3-Clause) OR Apache-2.0 WITH LLVM-exception", "downloaded_at": "2024-02-29T23:59:60.123+05:30", "sha256": "A".repeat(64), "num_records": 0, "url": "https://example.com/x"});
    let with = |field: &str, value: Value| {
        let mut meta = valid.clone();
        meta[field] = value;
        meta
    };
    let cases: Vec<(&str, Value)> = vec![
        ("ok.full", valid.clone()),
        ("ok.url_null", with("url", Value::Null)),
        ("err.$.null", Value::Null),
        ("err.source.leading_space", with("source", json!(" s"))),
        ("err.source.control_char", with("source", json!("a\u{1}b"))),
        (
            "err.version.129_chars",
            with("version", json!("v".repeat(129))),
        ),
        ("err.license.unbalanced", with("license", json!("(MIT"))),
        (
            "err.license.dangling_operator",
            with("license", json!("MIT AND")),
        ),
        (
            "err.license.deep_parentheses",
            with(
                "license",
                json!(format!("{}MIT{}", "(".repeat(120), ")".repeat(121))),
            ),
        ),
        (
            "err.downloaded_at.no_zone",
            with("downloaded_at", json!("2024-05-01T12:00:00")),
        ),
        (
            "err.downloaded_at.feb_29_non_leap",
            with("downloaded_at", json!("2023-02-29T00:00:00Z")),
        ),
        (
            "err.downloaded_at.multibyte",
            with("downloaded_at", json!("2024-05-01T12:00:00é")),
        ),
        (
            "err.sha256.63_digits",
            with("sha256", json!("a".repeat(63))),
        ),
        ("err.num_records.negative", with("num_records", json!(-1))),
        ("err.num_records.float", with("num_records", json!(1.5))),
        ("err.url.no_scheme", with("url", json!("example.com"))),
        ("err.url.space", with("url", json!("https://exa mple.com"))),
        ("err.extra.unknown_field", with("extra", json!(1))),
    ];
    cases
        .into_iter()
        .map(|(name, value)| (format!("{name}.json"), value.to_string().into_bytes()))
        .collect()
}

fn http_seed_bodies() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        corpus("http_body", http_body_seeds)
            .into_iter()
            .map(|(_, bytes)| bytes)
            .filter(|bytes| bytes.len() < 4096)
            .collect()
    })
}

proptest! {
    #![proptest_config(fuzz_config(10_000))]

    #[test]
    fn http_bodies_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_http_body(&bytes);
    }

    #[test]
    fn http_bodies_from_arbitrary_json(value in arbitrary_json(&["queue", "kind", "payload", "jobs", "worker_id", "queues", "records", "first_index", "result", "error", "completions", "lease_id", "step", "action", "kind", "outcome", "value", "verified", "source"])) {
        check_http_body(value.to_string().as_bytes());
    }

    /// Valid bodies with bytes changed, inserted or cut: the JSON text mutations a broken
    /// client or an attacker would send.
    #[test]
    fn mutated_http_bodies(
        seed in any::<Index>(),
        edits in prop::collection::vec((any::<Index>(), prop_oneof![any::<u8>(), prop::sample::select(&b"{}[]\",:0-e.\\ntu"[..])], 0u8..3), 1..5),
    ) {
        let seeds = http_seed_bodies();
        let mut bytes = seeds[seed.index(seeds.len())].clone();
        for (at, byte, kind) in edits {
            let position = at.index(bytes.len() + 1);
            match kind {
                0 if position < bytes.len() => bytes[position] = byte,
                1 => bytes.insert(position, byte),
                _ => bytes.truncate(position),
            }
        }
        check_http_body(&bytes);
    }
}
