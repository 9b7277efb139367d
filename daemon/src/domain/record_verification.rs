//! From a dataset record to the `astgrep.verify` payload that scores an answer to it
//! (docs/exports.md, "What a reward function gets"). The trainer views carry this payload, less
//! the action, so that a reward function (`agentd_client.rewards`) scores a completion with the
//! same verifier and rule the daemon's workers use.
//!
//! A record is one file: `pre` before the edit, `post` after it. Its `metadata` may say more,
//! under these keys (all optional):
//! - `path`: the file's path in the workspace (default `main.py`, `main.js`, `main.ts`,
//!   `Main.java` by language);
//! - `files`: other files of the task, path -> text (its tests, helpers);
//! - `tests`: the test files, paths or globs (default: the verifier's per-language globs);
//! - `test_command`: the command that runs the tests, as an argument list;
//! - `tests_reward`: `"all"` or `"fraction"`.
//!
//! A record whose language the verifier does not support, or whose metadata gives one of these
//! keys with the wrong shape, has no payload (`Err` says why); the trainer views then write null.

use agentd_schemas::events::DatasetRecord;
use serde_json::{json, Map, Value};

/// What the trainer views carry for a record's reward.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordVerification {
    /// The test files (paths or globs) the metadata named; `None`: the verifier's defaults.
    pub tests: Option<Vec<String>>,
    pub test_command: Option<Vec<String>>,
    /// The `astgrep.verify` payload without `action`, as compact JSON.
    pub payload_json: String,
}

/// The file a record's `pre` is written to when its metadata has no `path`; `None` for a
/// language the verifier does not run.
pub fn default_path(language: &str) -> Option<&'static str> {
    Some(match language {
        "python" => "main.py",
        "javascript" => "main.js",
        "typescript" => "main.ts",
        "tsx" => "main.tsx",
        "java" => "Main.java",
        _ => return None,
    })
}

/// The verification of `record` (of processed language `language`).
pub fn record_verification(
    record: &DatasetRecord,
    language: &str,
) -> Result<RecordVerification, String> {
    let default = default_path(language)
        .ok_or_else(|| format!("the verifier does not run {language} code"))?;
    let metadata: Map<String, Value> = match serde_json::from_str(&record.metadata_json) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let path = match metadata.get("path") {
        None => default.to_string(),
        Some(Value::String(path)) if is_relative_path(path) => path.clone(),
        Some(_) => return Err("metadata.path must be a relative path".into()),
    };
    let mut files = Map::new();
    if let Some(extra) = metadata.get("files") {
        let Value::Object(extra) = extra else {
            return Err("metadata.files must be an object of path -> text".into());
        };
        for (name, text) in extra {
            let Value::String(text) = text else {
                return Err(format!("metadata.files.{name} must be a text"));
            };
            if !is_relative_path(name) || *name == path {
                return Err(format!(
                    "metadata.files: {name:?} must be a relative path other than the record's file"
                ));
            }
            files.insert(name.clone(), Value::String(text.clone()));
        }
    }
    files.insert(path.clone(), Value::String(record.pre.clone()));
    let tests = string_list(&metadata, "tests", true)?;
    let test_command = string_list(&metadata, "test_command", false)?;
    let mut payload = Map::new();
    payload.insert("files".into(), Value::Object(files));
    payload.insert("language".into(), json!(language));
    payload.insert("post".into(), json!({ path: record.post }));
    if let Some(tests) = &tests {
        payload.insert("tests".into(), json!(tests));
    }
    if let Some(command) = &test_command {
        payload.insert("test_command".into(), json!(command));
    }
    match metadata.get("tests_reward") {
        None => {}
        Some(Value::String(mode)) if mode == "all" || mode == "fraction" => {
            payload.insert("tests_reward".into(), json!(mode));
        }
        Some(_) => return Err("metadata.tests_reward must be \"all\" or \"fraction\"".into()),
    }
    Ok(RecordVerification {
        tests,
        test_command,
        payload_json: Value::Object(payload).to_string(),
    })
}

/// A list of strings under `key`; an empty list only where `empty_ok`.
fn string_list(
    metadata: &Map<String, Value>,
    key: &str,
    empty_ok: bool,
) -> Result<Option<Vec<String>>, String> {
    let Some(value) = metadata.get(key) else {
        return Ok(None);
    };
    let list: Option<Vec<String>> = value.as_array().and_then(|items| {
        items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect()
    });
    match list {
        Some(list) if empty_ok || !list.is_empty() => Ok(Some(list)),
        _ => Err(format!("metadata.{key} must be a list of texts")),
    }
}

/// Relative, without `..` or empty components (the sandbox checks the rest).
fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metadata: &str) -> DatasetRecord {
        DatasetRecord {
            instruction: "use the logger".into(),
            pre: "print(1)\n".into(),
            post: "logger.info(1)\n".into(),
            language: "python".into(),
            tags: vec![],
            metadata_json: metadata.into(),
        }
    }

    #[test]
    fn a_record_without_metadata_is_one_file_checked_against_post() {
        let verification = record_verification(&record("{}"), "python").unwrap();
        assert_eq!(verification.tests, None);
        let payload: Value = serde_json::from_str(&verification.payload_json).unwrap();
        assert_eq!(
            payload,
            json!({"files": {"main.py": "print(1)\n"}, "language": "python",
                   "post": {"main.py": "logger.info(1)\n"}})
        );
    }

    #[test]
    fn metadata_names_the_path_the_tests_and_the_command() {
        let metadata = r#"{"path": "app.py", "files": {"test_app.py": "import app\n"},
            "tests": ["test_app.py"], "test_command": ["python3", "test_app.py"],
            "tests_reward": "fraction", "repo": "x/y"}"#;
        let verification = record_verification(&record(metadata), "python").unwrap();
        assert_eq!(verification.tests, Some(vec!["test_app.py".to_string()]));
        assert_eq!(
            verification.test_command,
            Some(vec!["python3".to_string(), "test_app.py".to_string()])
        );
        let payload: Value = serde_json::from_str(&verification.payload_json).unwrap();
        assert_eq!(payload["files"]["app.py"], "print(1)\n");
        assert_eq!(payload["files"]["test_app.py"], "import app\n");
        assert_eq!(payload["post"], json!({"app.py": "logger.info(1)\n"}));
        assert_eq!(payload["tests_reward"], "fraction");
    }

    #[test]
    fn malformed_keys_and_unsupported_languages_have_no_payload() {
        for metadata in [
            r#"{"path": "/etc/passwd"}"#,
            r#"{"path": "../x.py"}"#,
            r#"{"files": {"main.py": "x"}}"#,
            r#"{"files": ["x"]}"#,
            r#"{"tests": "test_x.py"}"#,
            r#"{"test_command": []}"#,
            r#"{"tests_reward": "most"}"#,
        ] {
            assert!(
                record_verification(&record(metadata), "python").is_err(),
                "{metadata}"
            );
        }
        assert!(record_verification(&record("{}"), "go").is_err());
    }
}
