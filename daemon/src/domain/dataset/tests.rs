use super::*;
use serde::Deserialize;
use serde_json::json;

/// One case of `testdata/meta_cases.json` or `testdata/record_cases.json`: the input and either
/// the validated value (`ok`) or the error (`error`).
#[derive(Deserialize)]
struct Case {
    name: String,
    input: Value,
    expect: Value,
}

/// Runs `validate` on every case and reports every case whose outcome differs, with the actual
/// outcome in the fixture's own format.
fn check_cases<T: serde::Serialize>(
    fixture: &str,
    validate: impl Fn(&Value) -> Result<T, FieldError>,
) {
    let cases: Vec<Case> = serde_json::from_str(fixture).unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let actual = match validate(&case.input) {
            Ok(value) => json!({ "ok": value }),
            Err(error) => json!({ "error": { "field": error.field, "message": error.message } }),
        };
        if actual != case.expect {
            failures.push(format!("{}:\n  actual: {actual}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "cases that differ:\n{}",
        failures.join("\n")
    );
}

#[test]
fn meta_cases() {
    check_cases(include_str!("../testdata/meta_cases.json"), validate_meta);
}

#[test]
fn record_cases() {
    check_cases(
        include_str!("../testdata/record_cases.json"),
        validate_record,
    );
}

fn record_with(field: &str, value: Value) -> Value {
    let mut record = json!({ "instruction": "i", "pre": "a", "post": "b", "language": "go" });
    record[field] = value;
    record
}

#[test]
fn record_limits_are_enforced_at_the_boundary() {
    let at_limit = "x".repeat(RECORD_TEXT_BYTES_MAX);
    let over_limit = "x".repeat(RECORD_TEXT_BYTES_MAX + 1);
    for field in ["instruction", "pre", "post"] {
        assert!(
            validate_record(&record_with(field, json!(at_limit))).is_ok(),
            "{field}"
        );
        let error = validate_record(&record_with(field, json!(over_limit))).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.message.as_str()),
            (field, "must be at most 1048576 bytes")
        );
    }

    let tags = |n: usize| json!((0..n).map(|i| format!("t{i}")).collect::<Vec<_>>());
    assert_eq!(
        validate_record(&record_with("tags", tags(TAGS_MAX)))
            .unwrap()
            .tags
            .len(),
        TAGS_MAX
    );
    let error = validate_record(&record_with("tags", tags(TAGS_MAX + 1))).unwrap_err();
    assert_eq!(error.to_string(), "tags: must have at most 64 items");

    // Characters, not bytes: 128 two-byte characters are a valid tag.
    assert!(validate_record(&record_with("tags", json!(["é".repeat(TAG_CHARS_MAX)]))).is_ok());
    let error =
        validate_record(&record_with("tags", json!(["é".repeat(TAG_CHARS_MAX + 1)]))).unwrap_err();
    assert_eq!(error.to_string(), "tags[0]: must be at most 128 characters");

    let error = validate_record(&record_with(
        "language",
        json!("l".repeat(LANGUAGE_CHARS_MAX + 1)),
    ))
    .unwrap_err();
    assert_eq!(error.to_string(), "language: must be at most 64 characters");

    let big = json!({ "blob": "x".repeat(METADATA_JSON_BYTES_MAX) });
    let error = validate_record(&record_with("metadata", big)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "metadata: must be at most 1048576 bytes as JSON"
    );
}

#[test]
fn metadata_text_does_not_depend_on_key_order() {
    let one = validate_record(&record_with(
        "metadata",
        json!({"b": 1, "a": {"d": 2, "c": 3}}),
    ))
    .unwrap();
    let other: Value =
        serde_json::from_str(r#"{"instruction": "i", "pre": "a", "post": "b", "language": "go", "metadata": {"a": {"c": 3, "d": 2}, "b": 1}}"#)
            .unwrap();
    assert_eq!(
        validate_record(&other).unwrap().metadata_json,
        one.metadata_json
    );
    assert_eq!(one.metadata_json, r#"{"a":{"c":3,"d":2},"b":1}"#);
}

#[test]
fn validated_records_keep_their_text_exactly() {
    let text = "  line one\r\n\ttabbed ✓\n";
    let record = validate_record(&record_with("pre", json!(text))).unwrap();
    assert_eq!(record.pre, text);
}
