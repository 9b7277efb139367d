//! Typed ids with a prefixed text form (`job_42`, `lease_7`, `lsn` is a bare number).
//!
//! Ids are decided by the daemon's sequencer from counters that are themselves a pure function of
//! the log, so a replay produces the same ids.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Log sequence number: the position of a frame in the log. Contiguous, starting at 1.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Error for a malformed id string.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} id {text:?}: expected {prefix}<number>")]
pub struct IdParseError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub text: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.strip_prefix($prefix)
                    .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|digits| digits.parse::<u64>().ok())
                    .map($name)
                    .ok_or_else(|| IdParseError { kind: $kind, prefix: $prefix, text: text.chars().take(64).collect() })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        /// A string schema with the id's pattern, so API clients and schema-driven test tools
        /// know the text form (`job_42`).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "[0-9]{1,18}$")))
                    .examples([concat!($prefix, "1")])
                    .description(Some(concat!("A ", $kind, " id: `", $prefix, "` and a decimal number.")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A job, `job_<n>`; `n` counts submissions in log order.
    JobId, "job_", "job"
);
prefixed_id!(
    /// One lease of one attempt of a job, `lease_<n>`; `n` counts leases in log order. A lease id
    /// is never reused, which is what makes fencing work.
    LeaseId, "lease_", "lease"
);

prefixed_id!(
    /// One sampled episode of a policy on a task, `ro_<n>`; `n` counts rollouts in log order.
    RolloutId, "ro_", "rollout"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_reject_garbage() {
        assert_eq!("job_42".parse::<JobId>().unwrap(), JobId(42));
        assert_eq!(JobId(42).to_string(), "job_42");
        assert_eq!(serde_json::to_string(&LeaseId(7)).unwrap(), "\"lease_7\"");
        for bad in ["job_", "job_x", "lease_1", "42", "job_-1", "job_1 "] {
            assert!(bad.parse::<JobId>().is_err(), "{bad} should be rejected");
        }
    }
}
