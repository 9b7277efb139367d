//! `#[serde(with = "crate::export::named_encoding")]` for a snapshot field whose type is defined
//! in the schemas: it is encoded as MessagePack with field names, inside the snapshot's compact
//! body, as the log encodes it.
//!
//! Why: the body encodes structs as arrays (field names would double the size of the fact index),
//! and an array cannot hold a struct that leaves absent fields out (`skip_serializing_if`, used by
//! `DatasetBuildSpec` and the export events for fields added later): a skipped field in the middle
//! shifts the ones after it. The schema types are written for the log's named encoding, so they
//! keep it here. Only the export ledger's few entries go through this; the cost does not matter.

use serde::de::{DeserializeOwned, Error as _, Visitor};
use serde::ser::Error as _;
use serde::{Deserializer, Serialize, Serializer};
use std::fmt;

/// Writes `value` as one MessagePack `bin` holding its named encoding.
pub fn serialize<T: Serialize, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    let bytes = rmp_serde::to_vec_named(value).map_err(S::Error::custom)?;
    serializer.serialize_bytes(&bytes)
}

/// Reads what [`serialize`] wrote.
pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let bytes = deserializer.deserialize_bytes(BytesVisitor)?;
    rmp_serde::from_slice(&bytes).map_err(D::Error::custom)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("the bytes of a named MessagePack value")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }
}
