//! [`JsonText`]: a JSON value carried as its text, for payloads the daemon stores as text and
//! hands back unchanged (a leased job's `payload`).
//!
//! A `serde_json::Value` in an answer costs a parse of the stored text into a tree and a
//! serialization of the tree back to text, per lease; for a payload of a few KiB that was about
//! a tenth of the daemon's CPU per job (docs/performance.md). `JsonText` writes the text as it
//! is, and a client reads it without building a tree it may never look at.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value as its text (checked to be JSON when made). Serialized verbatim; deserialized
/// from serde_json without a tree. Equal when the texts are equal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The value of `text`, which must be JSON.
    pub fn from_text(text: String) -> Result<JsonText, serde_json::Error> {
        RawValue::from_string(text).map(JsonText)
    }

    /// The compact text of `value`.
    pub fn from_value(value: &Value) -> JsonText {
        JsonText(serde_json::value::to_raw_value(value).expect("a Value always serializes"))
    }

    /// The text, as received or made.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree, for a reader that looks inside it.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("JsonText holds JSON")
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.get() == other.get()
    }
}

#[cfg(test)]
mod tests {
    use super::JsonText;
    use serde_json::json;

    #[test]
    fn the_text_goes_out_and_comes_back_unchanged() {
        let text = JsonText::from_text(r#"{"b": [1, 2.5e3], "a":"x"}"#.to_string()).unwrap();
        let out = serde_json::to_string(&text).unwrap();
        assert_eq!(out, r#"{"b": [1, 2.5e3], "a":"x"}"#);
        let back: JsonText = serde_json::from_str(&out).unwrap();
        assert_eq!(back, text);
        assert_eq!(back.to_value(), json!({"a": "x", "b": [1, 2500.0]}));
        assert!(JsonText::from_text("{".to_string()).is_err());
        assert_eq!(JsonText::from_value(&json!({"k": 1})).get(), r#"{"k":1}"#);
    }

    /// A completion's answer flattens its transition; its next leases' payloads still go out as
    /// text and come back.
    #[test]
    fn a_completion_with_next_leases_round_trips() {
        use crate::api::{CompleteResponse, JobStateName, JobTransitionResponse, LeaseGrant};
        let answer: CompleteResponse = serde_json::from_str(
            &json!({
                "job_id": "job_1", "state": "completed", "lsn": 7,
                "next_leases": [{
                    "lease_id": "lease_2", "job_id": "job_2", "attempt": 1, "expires_at_ms": 9,
                    "job": {"job_id": "job_2", "queue": "q", "kind": "k", "payload": {"a": [1]},
                            "priority": 0, "attempt": 1, "max_attempts": 3, "lease_ttl_ms": 60000,
                            "tags": {}, "task_id": null}
                }]
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            answer.transition,
            JobTransitionResponse {
                job_id: "job_1".parse().unwrap(),
                state: JobStateName::Completed,
                lsn: crate::Lsn(7),
                run_at_ms: None,
            }
        );
        let next: &LeaseGrant = &answer.next_leases.as_ref().unwrap()[0];
        assert_eq!(next.job.payload.to_value(), json!({"a": [1]}));
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains(r#""payload":{"a":[1]}"#), "{text}");
        let again: CompleteResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(again, answer);
    }
}

/// [`crate::api::CompleteResponse`] as read: its fields side by side. The type itself flattens
/// the transition into the answer, and serde reads a flattened struct through a buffer in which
/// a [`JsonText`] (the next leases' payloads) cannot be read.
#[derive(Deserialize)]
pub(crate) struct CompleteResponseFields {
    job_id: crate::JobId,
    state: crate::api::JobStateName,
    lsn: crate::Lsn,
    #[serde(default)]
    run_at_ms: Option<u64>,
    #[serde(default)]
    next_leases: Option<Vec<crate::api::LeaseGrant>>,
}

impl From<CompleteResponseFields> for crate::api::CompleteResponse {
    fn from(fields: CompleteResponseFields) -> Self {
        crate::api::CompleteResponse {
            transition: crate::api::JobTransitionResponse {
                job_id: fields.job_id,
                state: fields.state,
                lsn: fields.lsn,
                run_at_ms: fields.run_at_ms,
            },
            next_leases: fields.next_leases,
        }
    }
}
