//! How the active segment's growing prefix is held in the archive: object stores have no
//! append, so each pass puts one immutable chunk object, `<segment>.part-<from>-<to>`, holding
//! the bytes that became durable since the last pass, and the manifest lists the chunks. To keep
//! the list short, the new bytes are merged with the trailing chunks that are not much larger:
//! a chunk is left alone only when it holds more than twice the bytes of the new chunk put
//! after it, and chunks never change once put, so every chunk holds more than twice the bytes
//! of the next one. With passes of at least `m` bytes (the last chunk is at least one pass), a
//! segment of `B` bytes therefore has at most `floor(log2(B / m)) + 1` chunks: 17 for a 64 MiB
//! segment in passes of 1 KiB or more (the simulation below stays at 11), 22 in passes of one
//! 32-byte frame. A byte is uploaded again only when its chunk is merged, a logarithmic number
//! of times. When the segment seals, the whole file is put once as `<segment>` and the chunks
//! are deleted.

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

    /// Simulates uploads of `pass_bytes(pass)` bytes for each of `passes` passes; returns the
    /// most chunks a manifest listed, the parts at the end and the bytes uploaded.
    fn simulate(passes: u64, pass_bytes: impl Fn(u64) -> u64) -> (usize, Vec<ManifestPart>, u64) {
        let mut parts: Vec<ManifestPart> = Vec::new();
        let mut uploaded = 0;
        let mut end = 0;
        let mut most = 0;
        for pass in 0..passes {
            let new_bytes = pass_bytes(pass);
            end += new_bytes;
            let first = merge_from(&parts, new_bytes);
            let from = parts.get(first).map_or(end - new_bytes, |part| part.from);
            parts.truncate(first);
            parts.push(part(from, end));
            uploaded += end - from;
            most = most.max(parts.len());
            for pair in parts.windows(2) {
                assert!(
                    pair[0].len_bytes() > 2 * pair[1].len_bytes(),
                    "each chunk more than twice the next: {parts:?}"
                );
            }
        }
        (most, parts, uploaded)
    }

    /// The bound the module documents: `floor(log2(B / m)) + 1` chunks.
    fn chunks_max(segment_bytes: u64, pass_bytes_min: u64) -> usize {
        (segment_bytes / pass_bytes_min).ilog2() as usize + 1
    }

    #[test]
    fn chunks_stay_few_and_bytes_are_reuploaded_a_logarithmic_number_of_times() {
        assert_eq!(merge_from(&[], 10), 0);
        assert_eq!(merge_from(&[part(0, 100)], 10), 1, "100 > 2 * 10: kept");
        assert_eq!(merge_from(&[part(0, 100), part(100, 110)], 10), 1);
        assert_eq!(merge_from(&[part(0, 30), part(30, 40)], 10), 0);
        // A 64 MiB segment grown by 1 KiB per pass: 65,536 passes.
        let written = 65_536 * 1024;
        let (most, parts, uploaded) = simulate(65_536, |_| 1024);
        assert_eq!(chunks_max(written, 1024), 17);
        assert!(most <= chunks_max(written, 1024), "{most} chunks");
        for pair in parts.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        assert_eq!(parts.last().unwrap().to, written);
        assert!(
            uploaded <= written * 12,
            "each byte uploaded {} times on average",
            uploaded / written
        );
    }

    #[test]
    fn passes_of_uneven_sizes_keep_within_the_documented_bound() {
        // Pass sizes from 32 bytes (one small frame) to 4 KiB, from a fixed linear congruential
        // sequence so the test is the same on every run.
        let pass_bytes = |pass: u64| {
            let mixed = pass
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            32 + (mixed >> 33) % 4065
        };
        let passes = 20_000;
        let (most, parts, _) = simulate(passes, pass_bytes);
        let written = parts.last().unwrap().to;
        assert!(
            most <= chunks_max(written, 32),
            "{most} chunks for {written} bytes"
        );
    }
}
