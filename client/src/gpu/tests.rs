//! Data-driven: `client/tests/fixtures/nvidia-smi/cases.json` holds the expected readings of
//! the recorded answers, model names, sizes and selections; the Python implementation
//! (`agentd_client.gpu`) is checked against the same file.

use super::*;
use serde_json::{json, Value};

fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvidia-smi")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn answer(name: &str) -> String {
    std::fs::read_to_string(fixtures_dir().join(name)).unwrap()
}

fn fragment(value: &Value) -> &str {
    value.as_str().unwrap()
}

#[test]
fn recorded_answers_read_as_the_shared_cases_say() {
    let cases = cases();
    for (name, expected) in cases["answers"].as_object().unwrap() {
        let parsed = parse_query_gpu(&answer(name));
        if let Some(error) = expected.get("error") {
            let message = parsed.unwrap_err().to_string();
            assert!(message.contains(fragment(error)), "{name}: {message}");
            continue;
        }
        let gpus = parsed.unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(
            serde_json::to_value(&gpus).unwrap(),
            expected["gpus"],
            "{name}"
        );
        match (expected.get("tags"), expected.get("tags_error")) {
            (Some(tags), None) => {
                assert_eq!(
                    &serde_json::to_value(auto_tags(&gpus).unwrap()).unwrap(),
                    tags,
                    "{name}"
                )
            }
            (None, Some(error)) => {
                let message = auto_tags(&gpus).unwrap_err().to_string();
                assert!(message.contains(fragment(error)), "{name}: {message}");
            }
            other => panic!("{name}: expected tags or tags_error, got {other:?}"),
        }
    }
    for case in cases["refused_answers"].as_array().unwrap() {
        let text = fragment(&case[0]);
        let message = parse_query_gpu(text).unwrap_err().to_string();
        assert!(message.contains(fragment(&case[1])), "{text:?}: {message}");
    }
}

#[test]
fn model_names_shorten_to_the_shared_tags() {
    for case in cases()["model_tags"].as_array().unwrap() {
        let name = fragment(&case[0]);
        assert_eq!(model_tag(name), fragment(&case[1]), "{name}");
    }
}

#[test]
fn memory_rounds_to_the_nearest_gib() {
    for case in cases()["memory_gib"].as_array().unwrap() {
        assert_eq!(
            memory_gib(case[0].as_u64().unwrap()),
            case[1].as_u64().unwrap(),
            "{case}"
        );
    }
}

#[test]
fn selections_parse_refuse_nonsense_and_pick_gpus() {
    let cases = cases();
    for case in cases["selections"].as_array().unwrap() {
        let text = fragment(&case[0]);
        let parsed = text.parse::<GpuSelection>();
        match &case[1] {
            Value::Null => assert!(parsed.is_err(), "{text:?}"),
            expected => {
                let got = match parsed.unwrap() {
                    GpuSelection::All => json!("all"),
                    GpuSelection::Indices(indices) => json!(indices),
                };
                assert_eq!(&got, expected, "{text:?}");
            }
        }
    }
    for case in cases["selected"].as_array().unwrap() {
        let gpus = parse_query_gpu(&answer(fragment(&case[0]))).unwrap();
        let selection: GpuSelection = fragment(&case[1]).parse().unwrap();
        match (&case[2], select(&gpus, &selection)) {
            (Value::String(error), Err(message)) => {
                assert!(
                    message.to_string().contains(error.as_str()),
                    "{case}: {message}"
                )
            }
            (expected, Ok(selected)) => {
                let indices: Vec<u32> = selected.iter().map(|gpu| gpu.index).collect();
                assert_eq!(&json!(indices), expected, "{case}");
            }
            (expected, Err(error)) => panic!("{case}: expected {expected}, got {error}"),
        }
    }
}
