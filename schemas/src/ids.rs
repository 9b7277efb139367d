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
#[error("invalid {kind} id {text:?}: expected {prefix}<number>, the number of 1 to 18 digits without a leading zero")]
pub struct IdParseError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub text: String,
}

/// Most digits of an id's number (ids are assigned from 1 up; 10^18 is out of reach).
pub const ID_DIGITS_MAX: usize = 18;

/// Decimal digits as [`u64`]'s `Display` writes them, at most [`ID_DIGITS_MAX`].
fn is_canonical_number(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= ID_DIGITS_MAX
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1)
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

        /// Only the text [`fmt::Display`] writes: 1 to [`ID_DIGITS_MAX`] digits, no leading
        /// zero, so one id has one spelling (`job_01` is not `job_1`) and the pattern
        /// `/openapi.json` states is the whole rule.
        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.strip_prefix($prefix)
                    .filter(|digits| is_canonical_number(digits))
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
                    .pattern(Some(concat!("^", $prefix, "(0|[1-9][0-9]{0,17})$")))
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
        assert_eq!("job_0".parse::<JobId>().unwrap(), JobId(0));
        assert_eq!(
            "job_999999999999999999".parse::<JobId>().unwrap(),
            JobId(999_999_999_999_999_999)
        );
        for bad in [
            "job_",
            "job_x",
            "lease_1",
            "42",
            "job_-1",
            "job_1 ",
            "job_+1",
            "job_01",
            "job_00",
            "job_0000000000000000000001",
            "job_1000000000000000000",
            "job_18446744073709551615",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad} should be rejected");
        }
    }
}
