//! The rules of the document that utoipa's derives cannot state, added to the JSON document:
//! the range of every integer (from its Rust type), request bodies that may be left out, and the
//! rules that tie request fields together (`delay_ms` or `run_at_ms`, not both). Each rule here
//! restates a check a handler (or the command it sends) makes; `scripts/test-schemathesis`
//! checks both directions: a request the document allows is not refused with 400 or 422, and a
//! request it forbids is.

use serde_json::{json, Value};

/// Applies every rule to `document`, an OpenAPI 3.1 document as JSON.
pub fn apply(document: &mut Value) {
    bound_integers(document);
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            if let Some(operations) = item.as_object_mut() {
                operations.values_mut().for_each(optional_body);
            }
        }
    }
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, rules) in cross_field_rules() {
            if let Some(schema) = schemas.get_mut(name) {
                add_rules(schema, rules);
            }
        }
        if let Some(filters) = schemas.get_mut("DatasetBuildRequest") {
            build_filters(filters);
        }
        // `deny_unknown_fields` on an enum: utoipa closes structs, not the variants of an enum.
        if let Some(action) = schemas.get_mut("ActionRequest") {
            close_variants(action);
        }
    }
}

/// Gives each `oneOf` branch of `schema` `additionalProperties: false`.
fn close_variants(schema: &mut Value) {
    if let Some(branches) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        for branch in branches.iter_mut().filter_map(Value::as_object_mut) {
            branch.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    }
}

/// The names utoipa writes for the formats of Rust's small and unsigned integers (with its
/// `non_strict_integers` feature), and the names OpenAPI tools use for them.
const FORMAT_NAMES: [(&str, &str); 4] = [
    ("u-int8", "uint8"),
    ("u-int16", "uint16"),
    ("u-int32", "uint32"),
    ("u-int64", "uint64"),
];

/// The range of each integer `format` utoipa writes for a Rust integer type (`uint64` for
/// `u64`, and so on). JSON Schema leaves `format` to the reader, so without the bounds a client
/// cannot know that `2^64` or `-1` is refused.
const INTEGER_FORMATS: [(&str, i128, i128); 6] = [
    ("int8", i8::MIN as i128, i8::MAX as i128),
    ("int16", i16::MIN as i128, i16::MAX as i128),
    ("uint8", 0, u8::MAX as i128),
    ("uint16", 0, u16::MAX as i128),
    ("uint32", 0, u32::MAX as i128),
    ("uint64", 0, u64::MAX as i128),
];

/// Gives every integer schema with a sized `format` the bounds of its type, where no tighter
/// bound is stated (`int32` and `int64` already say their range to every reader).
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(format) = object.get_mut("format") {
                if let Some((_, name)) = FORMAT_NAMES.iter().find(|(from, _)| format == from) {
                    *format = (*name).into();
                }
            }
            let format = object.get("format").and_then(Value::as_str);
            let bounds = INTEGER_FORMATS
                .iter()
                .find(|(name, _, _)| Some(*name) == format);
            if let Some(&(_, minimum, maximum)) = bounds {
                object
                    .entry("minimum")
                    .or_insert_with(|| integer_value(minimum));
                object
                    .entry("maximum")
                    .or_insert_with(|| integer_value(maximum));
            }
            object.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn integer_value(number: i128) -> Value {
    match (u64::try_from(number), i64::try_from(number)) {
        (Ok(unsigned), _) => unsigned.into(),
        (_, Ok(signed)) => signed.into(),
        // The table holds bounds of 64-bit types and smaller only.
        _ => Value::Null,
    }
}

/// A handler that takes `Option<T>` as its body (`POST /v1/leases/{lease_id}/complete`) takes
/// an empty body for `None`, not the JSON text `null`: the body is optional, its schema `T`.
fn optional_body(operation: &mut Value) {
    let Some(body) = operation.get_mut("requestBody") else {
        return;
    };
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let mut optional = false;
    for media in content.values_mut() {
        let Some(schema) = media.get_mut("schema") else {
            continue;
        };
        let inner = match schema.get("oneOf").and_then(Value::as_array) {
            Some(branches) if branches.len() == 2 && branches[1] == json!({"type": "null"}) => {
                branches[0].clone()
            }
            _ => continue,
        };
        *schema = inner;
        optional = true;
    }
    if optional {
        body["required"] = Value::Bool(false);
    }
}

/// The field is there and not `null` (serde reads `null` as an absent `Option`).
fn present(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
}

/// Rules between the fields of request bodies, by component: each is one more schema the body
/// must match.
fn cross_field_rules() -> Vec<(&'static str, Value)> {
    vec![
        (
            // `queue::decide::submit`: "give either delay_ms or run_at_ms, not both".
            "SubmitJobRequest",
            json!({"not": {"allOf": [present("delay_ms"), present("run_at_ms")]}}),
        ),
        (
            // `ModelOutput::of`: an action unless `raw_output`, which comes alone.
            "RecordStepRequest",
            json!({"anyOf": [
                {"allOf": [present("action"), {"not": present("raw_output")}]},
                {"allOf": [
                    present("raw_output"),
                    {"not": {"anyOf": [present("action"), present("think"), present("state_update")]}},
                ]},
            ]}),
        ),
        (
            // `domain::decide::create_rollout`: a rollout runs under a job only with a lease.
            "CreateRolloutRequest",
            json!({"anyOf": [{"not": present("job_id")}, present("lease_id")]}),
        ),
        (
            // `export::check_format`: JSONL is available for the processed export only.
            "RunExportRequest",
            json!({"anyOf": [
                {"not": {"required": ["format"], "properties": {"format": {"const": "jsonl"}}}},
                {"required": ["kind"], "properties": {"kind": {"const": "processed"}}},
            ]}),
        ),
        (
            // `export::build::normalize`: `random` needs a seed, `latest` (the default) takes
            // none.
            "DatasetBuildRequest",
            json!({"anyOf": [
                {"allOf": [
                    {"required": ["strategy"], "properties": {"strategy": {"const": "random"}}},
                    present("seed"),
                ]},
                {"allOf": [
                    {"properties": {"strategy": {"const": "latest"}}},
                    {"not": present("seed")},
                ]},
            ]}),
        ),
    ]
}

/// Adds `rules` to `schema`'s `allOf`.
fn add_rules(schema: &mut Value, rules: Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let all_of = object
        .entry("allOf")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(all_of) = all_of.as_array_mut() {
        all_of.push(rules);
    }
}

/// `export::build::normalize`'s filters and views, which depend on the build's `source`: each
/// source has its own filter fields (`RECORD_FILTERS`, `STEP_FILTERS`) and its own views.
fn build_filters(schema: &mut Value) {
    use crate::export::build::{FILTERS_MAX, FILTER_NUMBER_PATTERN as NUMBER_PATTERN};
    let values = json!({
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
        "maxItems": FILTERS_MAX,
    });
    if let Some(filters) = schema.pointer_mut("/properties/filters") {
        filters["maxProperties"] = FILTERS_MAX.into();
        filters["additionalProperties"] = values;
    }
    let step_values = json!({
        "verified": {"items": {"enum": ["true", "false"]}},
        "reward_min": {"maxItems": 1, "items": {"pattern": NUMBER_PATTERN}},
        "advantage_min": {"maxItems": 1, "items": {"pattern": NUMBER_PATTERN}},
    });
    let by_source = json!({"anyOf": [
        {"properties": {
            "source": {"const": "records"},
            "filters": {"propertyNames": {"enum": crate::export::build::RECORD_FILTERS}},
            "view": {"enum": ["processed", "trl_grpo", "verl_rl", null]},
        }},
        {"required": ["source"], "properties": {
            "source": {"const": "trajectories"},
            "filters": {
                "propertyNames": {"enum": crate::export::build::STEP_FILTERS},
                "properties": step_values,
            },
            "view": {"enum": ["trajectories", "trl_sft", null]},
        }},
    ]});
    add_rules(schema, by_source);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_get_the_range_of_their_type_unless_a_tighter_one_is_stated() {
        let mut document = json!({
            "a": {"type": "integer", "format": "u-int64", "minimum": 0},
            "b": {"type": ["integer", "null"], "format": "uint32", "minimum": 1, "maximum": 10},
            "c": [{"type": "integer", "format": "int16"}],
        });
        bound_integers(&mut document);
        assert_eq!(
            document,
            json!({
                "a": {"type": "integer", "format": "uint64", "minimum": 0, "maximum": u64::MAX},
                "b": {"type": ["integer", "null"], "format": "uint32", "minimum": 1, "maximum": 10},
                "c": [{"type": "integer", "format": "int16", "minimum": -32768, "maximum": 32767}],
            })
        );
    }

    #[test]
    fn an_option_body_is_an_optional_body_not_a_null_one() {
        let mut operation = json!({"requestBody": {"content": {"application/json": {"schema":
            {"oneOf": [{"$ref": "#/components/schemas/CompleteRequest"}, {"type": "null"}]}}}}});
        optional_body(&mut operation);
        assert_eq!(
            operation,
            json!({"requestBody": {"required": false, "content": {"application/json": {"schema":
                {"$ref": "#/components/schemas/CompleteRequest"}}}}})
        );
    }
}
