//! Draining a child's pipe to its end while keeping a bounded part of it: the head (a job's
//! result on stdout, the sandbox child's answer) or the tail (stderr, where the last lines say
//! why). Draining past the cap matters: a child blocked on a full pipe never exits.

use tokio::io::AsyncReadExt;

/// Which part of the stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first bytes.
    Head,
    /// The last bytes.
    Tail,
}

/// The kept part of a stream, at most `max_bytes`.
#[derive(Debug)]
pub struct Kept {
    keep: Keep,
    max_bytes: usize,
    bytes: std::collections::VecDeque<u8>,
}

impl Kept {
    pub fn new(keep: Keep, max_bytes: usize) -> Self {
        Kept {
            keep,
            max_bytes,
            bytes: std::collections::VecDeque::new(),
        }
    }

    /// Takes the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        match self.keep {
            Keep::Head => {
                let room = self.max_bytes.saturating_sub(self.bytes.len());
                self.bytes.extend(&chunk[..chunk.len().min(room)]);
            }
            Keep::Tail => {
                self.bytes.extend(chunk);
                let excess = self.bytes.len().saturating_sub(self.max_bytes);
                self.bytes.drain(..excess);
            }
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes.into()
    }
}

/// Reads `reader` to its end (or its first error), keeping `keep` of it, at most `max_bytes`.
pub async fn read_keeping<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<&mut R>,
    keep: Keep,
    max_bytes: usize,
) -> Vec<u8> {
    let mut kept = Kept::new(keep, max_bytes);
    let Some(reader) = reader else {
        return kept.into_bytes();
    };
    // On the heap: a 64 KiB array would live in every future that awaits this one.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept.into_bytes(),
            Ok(read) => kept.push(&buffer[..read]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_or_the_tail_is_kept_across_chunks() {
        let mut head = Kept::new(Keep::Head, 5);
        let mut tail = Kept::new(Keep::Tail, 5);
        for chunk in [&b"abc"[..], b"defg", b"", b"hi"] {
            head.push(chunk);
            tail.push(chunk);
        }
        assert_eq!(head.into_bytes(), b"abcde");
        assert_eq!(tail.into_bytes(), b"efghi");
    }

    #[tokio::test]
    async fn a_stream_is_drained_past_the_cap() {
        let mut reader: &[u8] = &[7u8; 200_000];
        let kept = read_keeping(Some(&mut reader), Keep::Tail, 10).await;
        assert_eq!(kept, vec![7u8; 10]);
        assert!(reader.is_empty(), "read to the end");
        let none = read_keeping::<&[u8]>(None, Keep::Head, 10).await;
        assert!(none.is_empty());
    }
}
