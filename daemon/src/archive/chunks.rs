//! How the active segment's growing prefix is held in the archive: object stores have no
//! append, so each pass puts one immutable chunk object, `<segment>.part-<from>-<to>`, holding
//! the bytes that became durable since the last pass, and the manifest lists the chunks. To keep
//! the list short, the new bytes are merged with the trailing chunks that are not much larger:
//! a chunk always holds more than twice the bytes of all the chunks after it, so a segment of
//! `B` bytes never has more than about `log3(B)` chunks (17 for 64 MiB) and a byte is uploaded
//! again only when its chunk is merged, a logarithmic number of times. When the segment seals,
//! the whole file is put once as `<segment>` and the chunks are deleted.

use super::manifest::ManifestPart;

/// The index of the first existing part the next chunk replaces (`parts.len()`: none): the new
/// `new_bytes` absorb the last part while that part is at most twice the bytes after it.
pub fn merge_from(parts: &[ManifestPart], new_bytes: u64) -> usize {
    let mut first = parts.len();
    let mut tail_bytes = new_bytes;
    while first > 0 && parts[first - 1].len_bytes() <= 2 * tail_bytes {
        first -= 1;
        tail_bytes += parts[first].len_bytes();
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::manifest::part_object_name;

    fn part(from: u64, to: u64) -> ManifestPart {
        ManifestPart {
            object: part_object_name("s", from, to),
            from,
            to,
            sha256: String::new(),
        }
    }

    /// Simulates `passes` uploads of `chunk` bytes each; returns (parts, bytes uploaded).
    fn simulate(passes: u64, chunk: u64) -> (Vec<ManifestPart>, u64) {
        let mut parts: Vec<ManifestPart> = Vec::new();
        let mut uploaded = 0;
        for pass in 0..passes {
            let end = (pass + 1) * chunk;
            let first = merge_from(&parts, chunk);
            let from = parts.get(first).map_or(end - chunk, |part| part.from);
            parts.truncate(first);
            parts.push(part(from, end));
            uploaded += end - from;
        }
        (parts, uploaded)
    }

    #[test]
    fn chunks_stay_few_and_bytes_are_reuploaded_a_logarithmic_number_of_times() {
        assert_eq!(merge_from(&[], 10), 0);
        assert_eq!(merge_from(&[part(0, 100)], 10), 1, "100 > 2 * 10: kept");
        assert_eq!(merge_from(&[part(0, 100), part(100, 110)], 10), 1);
        assert_eq!(merge_from(&[part(0, 30), part(30, 40)], 10), 0);
        // A 64 MiB segment grown by 1 KiB per pass: 65,536 passes.
        let (parts, uploaded) = simulate(65_536, 1024);
        assert!(parts.len() <= 18, "{} parts", parts.len());
        for pair in parts.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        let written = 65_536 * 1024;
        assert_eq!(parts.last().unwrap().to, written);
        assert!(
            uploaded <= written * 12,
            "each byte uploaded {} times on average",
            uploaded / written
        );
    }
}
