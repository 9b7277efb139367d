//! Frame encoding and validation, sans IO.
//!
//! A frame is `payload_len u32 LE | crc32c u32 LE | lsn u64 LE | format_version u8 |
//! reserved [u8; 3] = 0 | payload`. The CRC32C covers the length and everything after the CRC
//! field, so a torn or flipped length is caught as surely as a flipped payload byte. The layout is
//! drawn byte by byte in `docs/log-format.md`.

use std::fmt;

/// Bytes in a frame header, before the payload.
pub(crate) const FRAME_HEADER_BYTES: usize = 20;

/// Offsets inside the frame header.
const LENGTH_RANGE: std::ops::Range<usize> = 0..4;
const CRC_RANGE: std::ops::Range<usize> = 4..8;
const LSN_RANGE: std::ops::Range<usize> = 8..16;
const FORMAT_VERSION_OFFSET: usize = 16;
const RESERVED_RANGE: std::ops::Range<usize> = 17..20;

/// The decoded fixed-size part of a frame. Trust nothing in it until [`check_frame`] said `Valid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) payload_len: u32,
    pub(crate) crc: u32,
    pub(crate) lsn: u64,
    pub(crate) format_version: u8,
    pub(crate) reserved: [u8; 3],
}

impl FrameHeader {
    /// Decodes the header fields without validating them.
    pub(crate) fn parse(bytes: &[u8; FRAME_HEADER_BYTES]) -> FrameHeader {
        FrameHeader {
            payload_len: u32::from_le_bytes(array(&bytes[LENGTH_RANGE])),
            crc: u32::from_le_bytes(array(&bytes[CRC_RANGE])),
            lsn: u64::from_le_bytes(array(&bytes[LSN_RANGE])),
            format_version: bytes[FORMAT_VERSION_OFFSET],
            reserved: array(&bytes[RESERVED_RANGE]),
        }
    }

    /// Bytes of the whole frame, header included.
    pub(crate) fn frame_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }
}

/// What a frame at some offset turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameCheck {
    /// Length within bounds, reserved bytes zero, CRC matches. The lsn is not judged here.
    Valid(FrameHeader),
    /// The bytes end before the frame does (a torn write, or a reader ahead of the writer).
    Incomplete {
        available_bytes: usize,
        needed_bytes: u64,
    },
    /// The bytes are there but are not a frame.
    Invalid(FrameDefect),
}

/// Why bytes that are all present are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameDefect {
    LengthOverMax {
        payload_len: u32,
        frame_bytes_max: u32,
    },
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
    ReservedNotZero {
        reserved: [u8; 3],
    },
}

impl fmt::Display for FrameDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameDefect::LengthOverMax {
                payload_len,
                frame_bytes_max,
            } => write!(
                f,
                "frame length {payload_len} is over the maximum {frame_bytes_max}"
            ),
            FrameDefect::CrcMismatch { stored, computed } => write!(
                f,
                "bad crc (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameDefect::ReservedNotZero { reserved } => {
                write!(f, "reserved header bytes are {reserved:?}, expected zeros")
            }
        }
    }
}

/// Appends one encoded frame to `out`. The caller has already checked `payload.len()` against
/// `frame_bytes_max`, which is a `u32`, so the length always fits the length field.
pub(crate) fn encode_frame(out: &mut Vec<u8>, lsn: u64, format_version: u8, payload: &[u8]) {
    let payload_len =
        u32::try_from(payload.len()).expect("payload length was checked against frame_bytes_max");
    let start = out.len();
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below once the covered bytes are in place.
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(format_version);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(payload);
    let crc = frame_crc(&out[start..start + FRAME_HEADER_BYTES], payload);
    out[start + CRC_RANGE.start..start + CRC_RANGE.end].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over the length field, then the header after the CRC field, then the payload.
pub(crate) fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[LENGTH_RANGE]);
    let crc = crc32c::crc32c_append(crc, &header[LSN_RANGE.start..FRAME_HEADER_BYTES]);
    crc32c::crc32c_append(crc, payload)
}

/// Checks a frame already read into memory: the header, then (if present) the payload. `header`
/// and `payload` are separate so a reader can check a frame without copying it into one buffer.
pub(crate) fn check_frame_parts(
    header_bytes: &[u8; FRAME_HEADER_BYTES],
    payload: &[u8],
) -> Result<FrameHeader, FrameDefect> {
    let header = FrameHeader::parse(header_bytes);
    debug_assert_eq!(payload.len(), header.payload_len as usize);
    if header.reserved != [0; 3] {
        return Err(FrameDefect::ReservedNotZero {
            reserved: header.reserved,
        });
    }
    let computed = frame_crc(header_bytes, payload);
    if computed != header.crc {
        return Err(FrameDefect::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Checks the frame that starts at `bytes[0]`; `bytes` runs to the end of the data available.
/// The length is checked against `frame_bytes_max` before it is used for anything.
pub(crate) fn check_frame(bytes: &[u8], frame_bytes_max: u32) -> FrameCheck {
    let Some(header_bytes) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
        return FrameCheck::Incomplete {
            available_bytes: bytes.len(),
            needed_bytes: FRAME_HEADER_BYTES as u64,
        };
    };
    let header = FrameHeader::parse(header_bytes);
    if header.payload_len > frame_bytes_max {
        return FrameCheck::Invalid(FrameDefect::LengthOverMax {
            payload_len: header.payload_len,
            frame_bytes_max,
        });
    }
    let frame_bytes = header.frame_bytes();
    if (bytes.len() as u64) < frame_bytes {
        return FrameCheck::Incomplete {
            available_bytes: bytes.len(),
            needed_bytes: frame_bytes,
        };
    }
    let payload = &bytes[FRAME_HEADER_BYTES..frame_bytes as usize];
    match check_frame_parts(header_bytes, payload) {
        Ok(header) => FrameCheck::Valid(header),
        Err(defect) => FrameCheck::Invalid(defect),
    }
}

/// Reads the lsn field of a header without any validation: the cheap filter of the forward scan.
pub(crate) fn peek_lsn(header_bytes: &[u8; FRAME_HEADER_BYTES]) -> u64 {
    u64::from_le_bytes(array(&header_bytes[LSN_RANGE]))
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    // Callers pass fixed sub-ranges of a fixed-size header, so the length always matches.
    bytes.try_into().expect("fixed header range")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 1024;

    fn encoded(lsn: u64, version: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, lsn, version, payload);
        out
    }

    #[test]
    fn round_trip() {
        let cases: &[(u64, u8, &[u8])] = &[
            (1, 1, b""),
            (2, 7, b"x"),
            (u64::MAX, 255, b"\x93\x01\x02\x03 a msgpack array"),
            (42, 0, &[0xAB; 1024]),
        ];
        for &(lsn, version, payload) in cases {
            let bytes = encoded(lsn, version, payload);
            assert_eq!(bytes.len(), FRAME_HEADER_BYTES + payload.len());
            let FrameCheck::Valid(header) = check_frame(&bytes, MAX) else {
                panic!("frame {lsn} did not decode: {:?}", check_frame(&bytes, MAX));
            };
            assert_eq!(header.lsn, lsn);
            assert_eq!(header.format_version, version);
            assert_eq!(header.payload_len as usize, payload.len());
            assert_eq!(&bytes[FRAME_HEADER_BYTES..], payload);
            // Trailing bytes of the next frame do not disturb the check.
            let mut with_more = bytes.clone();
            with_more.extend_from_slice(&encoded(lsn.wrapping_add(1), 1, b"next"));
            assert_eq!(check_frame(&with_more, MAX), FrameCheck::Valid(header));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encoded(77, 3, b"payload bytes");
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[byte] ^= 1 << bit;
                match check_frame(&flipped, MAX) {
                    FrameCheck::Valid(header) => {
                        panic!("flip of bit {bit} in byte {byte} went unnoticed: {header:?}")
                    }
                    FrameCheck::Invalid(_) | FrameCheck::Incomplete { .. } => {}
                }
            }
        }
    }

    #[test]
    fn length_is_checked_before_it_is_trusted() {
        let mut bytes = encoded(5, 1, b"abc");
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            check_frame(&bytes, MAX),
            FrameCheck::Invalid(FrameDefect::LengthOverMax {
                payload_len: u32::MAX,
                frame_bytes_max: MAX
            })
        );
    }

    #[test]
    fn truncated_frames_are_incomplete() {
        let bytes = encoded(9, 1, b"0123456789");
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    check_frame(&bytes[..cut], MAX),
                    FrameCheck::Incomplete { .. }
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn reserved_bytes_must_be_zero_even_with_a_matching_crc() {
        let mut bytes = encoded(9, 1, b"abc");
        bytes[RESERVED_RANGE.start] = 1;
        let crc = frame_crc(&bytes[..FRAME_HEADER_BYTES], &bytes[FRAME_HEADER_BYTES..]);
        bytes[CRC_RANGE].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_frame(&bytes, MAX),
            FrameCheck::Invalid(FrameDefect::ReservedNotZero { .. })
        ));
    }
}
