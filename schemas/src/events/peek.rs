//! Telling which events a record holds without decoding it.
//!
//! **Why.** A replay that applies only some kinds of events (the domain projections ignore every
//! job and queue event) would otherwise decode every record whole: every payload, result and log
//! tail into owned strings, to drop them unread. Reading the record's MessagePack far enough to
//! see its events' tags, stepping over their values by their lengths, costs a small part of that.
//!
//! **What it reads.** A record is a map (`encode_record`: field names as keys) with an `events`
//! array; an externally tagged event is a map of one entry, its tag (`job_submitted.v1`) to its
//! value. Anything else (another format version, a unit variant, a second `events` field,
//! bytes after the record, nesting deeper than the decoder allows, a truncated or malformed
//! payload) answers `false`, so the caller decodes the record as usual and a damaged one is
//! reported by the decoder, as before. What it does not check is the inside of a listed event's
//! value (its field names and types): a caller that skips such a record would have dropped that
//! value unread anyway.

use super::{MAX_RECORD_DEPTH, RECORD_FORMAT_VERSION};
use rmp::Marker;

/// Nesting refused by the walk, counted from the record's map as the decoder counts it (one
/// below the decoder's own limit, so the walk never accepts what the decoder would refuse).
const SKIP_DEPTH_MAX: usize = MAX_RECORD_DEPTH - 1;
/// The depth of a record field's value (inside the record's map).
const FIELD_DEPTH: usize = 1;
/// The depth of an event's value (record map, `events` array, the event's map).
const EVENT_VALUE_DEPTH: usize = 3;

/// True when the record in `payload` holds only events whose tags are in `tags` (also when it
/// holds none). See the module documentation.
pub fn only_events_tagged(format_version: u8, payload: &[u8], tags: &[&str]) -> bool {
    if format_version != RECORD_FORMAT_VERSION {
        return false;
    }
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    all_events_tagged(&mut reader, tags).unwrap_or(false) && reader.at == payload.len()
}

/// `None` when the bytes are not a record of the expected shape.
fn all_events_tagged(reader: &mut Reader<'_>, tags: &[&str]) -> Option<bool> {
    let fields = reader.map_len()?;
    let mut seen_events = false;
    for _ in 0..fields {
        if reader.str()? != b"events" {
            reader.skip(FIELD_DEPTH)?;
            continue;
        }
        if seen_events {
            return None;
        }
        seen_events = true;
        let events = reader.array_len()?;
        for _ in 0..events {
            if reader.map_len()? != 1 {
                return None;
            }
            let tag = reader.str()?;
            if !tags.iter().any(|wanted| wanted.as_bytes() == tag) {
                return Some(false);
            }
            reader.skip(EVENT_VALUE_DEPTH)?;
        }
    }
    Some(seen_events)
}

/// A cursor over MessagePack bytes; every read is bounds-checked (`None` past the end).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(count)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A big-endian unsigned integer of `width` bytes (1, 2 or 4).
    fn length(&mut self, width: usize) -> Option<usize> {
        let bytes = self.take(width)?;
        Some(bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    }

    fn marker(&mut self) -> Option<Marker> {
        Some(Marker::from_u8(self.byte()?))
    }

    /// The entry count of a map.
    fn map_len(&mut self) -> Option<usize> {
        match self.marker()? {
            Marker::FixMap(len) => Some(usize::from(len)),
            Marker::Map16 => self.length(2),
            Marker::Map32 => self.length(4),
            _ => None,
        }
    }

    /// The element count of an array.
    fn array_len(&mut self) -> Option<usize> {
        match self.marker()? {
            Marker::FixArray(len) => Some(usize::from(len)),
            Marker::Array16 => self.length(2),
            Marker::Array32 => self.length(4),
            _ => None,
        }
    }

    /// A string's bytes (not checked as UTF-8: only compared with known ASCII names).
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.marker()? {
            Marker::FixStr(len) => usize::from(len),
            Marker::Str8 => self.length(1)?,
            Marker::Str16 => self.length(2)?,
            Marker::Str32 => self.length(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// Steps over one value of any type at `depth`, nested values included.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth >= SKIP_DEPTH_MAX {
            return None;
        }
        // Bytes after the marker (and its length), then nested values to step over.
        let (bytes, items) = match self.marker()? {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                (0, 0)
            }
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(len) => (usize::from(len), 0),
            Marker::Str8 | Marker::Bin8 => (self.length(1)?, 0),
            Marker::Str16 | Marker::Bin16 => (self.length(2)?, 0),
            Marker::Str32 | Marker::Bin32 => (self.length(4)?, 0),
            // An extension's data follows its one-byte type.
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.length(1)?.checked_add(1)?, 0),
            Marker::Ext16 => (self.length(2)?.checked_add(1)?, 0),
            Marker::Ext32 => (self.length(4)?.checked_add(1)?, 0),
            Marker::FixArray(len) => (0, usize::from(len)),
            Marker::Array16 => (0, self.length(2)?),
            Marker::Array32 => (0, self.length(4)?),
            Marker::FixMap(len) => (0, 2 * usize::from(len)),
            Marker::Map16 => (0, 2 * self.length(2)?),
            Marker::Map32 => (0, self.length(4)?.checked_mul(2)?),
            Marker::Reserved => return None,
        };
        self.take(bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Some(())
    }
}

#[cfg(test)]
#[path = "peek_tests.rs"]
mod tests;
