//! The dataset ingestion contract (seed 001, section 3): validation of `_meta.json` and of
//! normalized records, language names, the dedup key of a record, and split assignment.
//!
//! Validation is strict so that what reaches the log is already clean: unknown fields are
//! refused (a typo such as `licence` must not silently drop data), every string is bounded, and
//! errors name the offending field. Checks run in a fixed order (unknown fields first, then the
//! fields in the order they are listed below), so the same input always gives the same error.

mod canonical_json;
mod language;
mod license;
mod split;
mod timestamp;

pub use language::{normalize_language, Language};
pub use split::{assign_split, dedup_key, InvalidSplitWeights, Split, SplitWeights};

use agentd_schemas::events::{DatasetMeta, DatasetRecord};
use serde_json::{Map, Value};

/// Longest `source` and `version`, in characters: they name the dataset in URLs and file names.
pub const NAME_CHARS_MAX: usize = 128;
/// Longest license expression, in characters.
pub const LICENSE_CHARS_MAX: usize = 256;
/// Longest `url`, in characters.
pub const URL_CHARS_MAX: usize = 2048;
/// Longest `instruction`, `pre` or `post`, in bytes (1 MiB): a record is one code edit, not a
/// repository.
pub const RECORD_TEXT_BYTES_MAX: usize = 1024 * 1024;
/// Longest `metadata` of a record as canonical JSON text, in bytes.
pub const METADATA_JSON_BYTES_MAX: usize = 1024 * 1024;
/// Longest `language` as given, in characters.
pub const LANGUAGE_CHARS_MAX: usize = 64;
/// Most tags on one record.
pub const TAGS_MAX: usize = 64;
/// Longest tag, in characters.
pub const TAG_CHARS_MAX: usize = 128;

/// Why a meta or record was refused: the field (a path such as `tags[3]`, or `$` for the whole
/// value) and a message for a human.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Validates a dataset's `_meta.json`.
///
/// Required: `source` and `version` (non-blank, at most [`NAME_CHARS_MAX`] characters, no control
/// characters, no surrounding whitespace), `license` (an SPDX expression: identifiers of
/// `[A-Za-z0-9.+-]` joined by ` AND `, ` OR `, ` WITH `, with parentheses), `downloaded_at`
/// (RFC 3339 with a time zone), `sha256` (64 hex digits; stored lowercase), `num_records` (a
/// non-negative integer). Optional: `url` (`scheme://...`, at most [`URL_CHARS_MAX`] characters;
/// `null` is the same as absent).
pub fn validate_meta(value: &Value) -> Result<DatasetMeta, FieldError> {
    let object = as_object(value)?;
    reject_unknown(
        object,
        &[
            "source",
            "version",
            "license",
            "downloaded_at",
            "sha256",
            "num_records",
            "url",
        ],
    )?;
    let source = name_field(object, "source")?;
    let version = name_field(object, "version")?;
    let license = required_str(object, "license")?;
    check_chars_max("license", license, LICENSE_CHARS_MAX)?;
    license::check_expression(license).map_err(|message| field_error("license", message))?;
    let downloaded_at = required_str(object, "downloaded_at")?;
    timestamp::check_rfc3339(downloaded_at)
        .map_err(|message| field_error("downloaded_at", message))?;
    let sha256 = required_str(object, "sha256")?;
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(field_error("sha256", "must be 64 hexadecimal digits"));
    }
    let num_records = match present(object, "num_records") {
        None => return Err(missing("num_records")),
        Some(number) => number.as_u64().ok_or_else(|| {
            field_error(
                "num_records",
                format!("must be a non-negative integer, got {}", describe(number)),
            )
        })?,
    };
    let url = match present(object, "url") {
        None => None,
        Some(url) => Some(url_field(url)?),
    };
    Ok(DatasetMeta {
        source: source.to_owned(),
        version: version.to_owned(),
        license: license.to_owned(),
        downloaded_at: downloaded_at.to_owned(),
        sha256: sha256.to_ascii_lowercase(),
        num_records,
        url,
    })
}

/// Validates one normalized record.
///
/// Required: `instruction` (non-blank), `pre`, `post` (strings of at most
/// [`RECORD_TEXT_BYTES_MAX`] bytes; `pre` or `post` may be empty for a file added or deleted),
/// `language` (non-blank, at most [`LANGUAGE_CHARS_MAX`] characters, stored as given: an unknown
/// language is counted by the splits projection, not refused here). Optional: `tags` (at most
/// [`TAGS_MAX`] non-blank strings of at most [`TAG_CHARS_MAX`] characters, default empty) and
/// `metadata` (a JSON object, default `{}`, stored as canonical JSON text: keys sorted, no
/// whitespace, so equal objects give equal text). `null` is the same as absent for optional
/// fields.
pub fn validate_record(value: &Value) -> Result<DatasetRecord, FieldError> {
    let object = as_object(value)?;
    reject_unknown(
        object,
        &["instruction", "pre", "post", "language", "tags", "metadata"],
    )?;
    let instruction = text_field(object, "instruction")?;
    if instruction.trim().is_empty() {
        return Err(field_error("instruction", "must not be blank"));
    }
    let pre = text_field(object, "pre")?;
    let post = text_field(object, "post")?;
    let language = required_str(object, "language")?;
    if language.trim().is_empty() {
        return Err(field_error("language", "must not be blank"));
    }
    check_chars_max("language", language, LANGUAGE_CHARS_MAX)?;
    let tags = match present(object, "tags") {
        None => Vec::new(),
        Some(tags) => tags_field(tags)?,
    };
    let metadata_json = match present(object, "metadata") {
        None => "{}".to_owned(),
        Some(metadata @ Value::Object(_)) => canonical_json::to_string(metadata),
        Some(other) => {
            return Err(field_error(
                "metadata",
                format!("must be a JSON object, got {}", describe(other)),
            ))
        }
    };
    if metadata_json.len() > METADATA_JSON_BYTES_MAX {
        return Err(field_error(
            "metadata",
            format!("must be at most {METADATA_JSON_BYTES_MAX} bytes as JSON"),
        ));
    }
    Ok(DatasetRecord {
        instruction: instruction.to_owned(),
        pre: pre.to_owned(),
        post: post.to_owned(),
        language: language.to_owned(),
        tags,
        metadata_json,
    })
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn missing(field: &str) -> FieldError {
    field_error(field, "is required")
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, FieldError> {
    value.as_object().ok_or_else(|| {
        field_error(
            "$",
            format!("must be a JSON object, got {}", describe(value)),
        )
    })
}

/// Refuses the alphabetically first field not in `allowed` (sorted, so the error does not depend
/// on how the JSON map orders its keys).
fn reject_unknown(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), FieldError> {
    let unknown = object
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .min();
    match unknown {
        Some(key) => Err(field_error(key, "is not a known field")),
        None => Ok(()),
    }
}

/// The field's value unless it is absent or `null`.
fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

fn required_str<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match present(object, field) {
        None => Err(missing(field)),
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(field_error(
            field,
            format!("must be a string, got {}", describe(other)),
        )),
    }
}

fn check_chars_max(field: &str, text: &str, chars_max: usize) -> Result<(), FieldError> {
    if text.chars().count() > chars_max {
        return Err(field_error(
            field,
            format!("must be at most {chars_max} characters"),
        ));
    }
    Ok(())
}

/// `source` and `version`: short, printable, trimmed.
fn name_field<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    let name = required_str(object, field)?;
    if name.trim().is_empty() {
        return Err(field_error(field, "must not be blank"));
    }
    check_chars_max(field, name, NAME_CHARS_MAX)?;
    if name.trim() != name {
        return Err(field_error(field, "must not start or end with whitespace"));
    }
    if name.chars().any(char::is_control) {
        return Err(field_error(field, "must not contain control characters"));
    }
    Ok(name)
}

fn text_field<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    let text = required_str(object, field)?;
    if text.len() > RECORD_TEXT_BYTES_MAX {
        return Err(field_error(
            field,
            format!("must be at most {RECORD_TEXT_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}

fn url_field(value: &Value) -> Result<String, FieldError> {
    let Value::String(url) = value else {
        return Err(field_error(
            "url",
            format!("must be a string, got {}", describe(value)),
        ));
    };
    check_chars_max("url", url, URL_CHARS_MAX)?;
    let scheme_ok = url.split_once("://").is_some_and(|(scheme, rest)| {
        let mut chars = scheme.chars();
        chars
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
            && !rest.is_empty()
    });
    if !scheme_ok {
        return Err(field_error("url", "must look like scheme://host/path"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(field_error(
            "url",
            "must not contain whitespace or control characters",
        ));
    }
    Ok(url.clone())
}

fn tags_field(value: &Value) -> Result<Vec<String>, FieldError> {
    let Value::Array(items) = value else {
        return Err(field_error(
            "tags",
            format!("must be an array of strings, got {}", describe(value)),
        ));
    };
    if items.len() > TAGS_MAX {
        return Err(field_error(
            "tags",
            format!("must have at most {TAGS_MAX} items"),
        ));
    }
    let mut tags = Vec::with_capacity(items.len());
    for (position, item) in items.iter().enumerate() {
        let field = format!("tags[{position}]");
        let Value::String(tag) = item else {
            return Err(field_error(
                &field,
                format!("must be a string, got {}", describe(item)),
            ));
        };
        if tag.trim().is_empty() {
            return Err(field_error(&field, "must not be blank"));
        }
        check_chars_max(&field, tag, TAG_CHARS_MAX)?;
        tags.push(tag.clone());
    }
    Ok(tags)
}

/// The JSON type of `value`, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
