//! Canonical JSON text: object keys sorted by their UTF-8 bytes, no whitespace, numbers and
//! strings as serde_json writes them. Written by hand because `serde_json::Map` keeps insertion
//! order when any crate in the build enables its `preserve_order` feature, and the stored text of
//! a record must not depend on that.

use serde_json::Value;

/// The canonical text of `value`.
pub(super) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut sorted: Vec<(&String, &Value)> = fields.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (position, (key, item)) in sorted.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                // `Display` of a JSON string value is its quoted, escaped form.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
        // Scalars have no keys to order; `Display` writes compact JSON.
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_at_every_depth_and_whitespace_is_dropped() {
        let value = json!({"b": [3, {"z": null, "a": "é\n\"q\""}], "a": {"y": 1.5, "x": true}});
        assert_eq!(
            to_string(&value),
            r#"{"a":{"x":true,"y":1.5},"b":[3,{"a":"é\n\"q\"","z":null}]}"#
        );
    }

    #[test]
    fn the_text_parses_back_to_the_same_value() {
        let value = json!({"tests": ["assert f(1) == 2"], "repo": {"sha": "abc", "n": -7}});
        assert_eq!(
            serde_json::from_str::<Value>(&to_string(&value)).unwrap(),
            value
        );
    }
}
