//! Capturing a child's stdout or stderr with bounded memory: the first `output_bytes_max`
//! bytes and the last [`TAIL_BYTES`] are kept, everything is drained and counted, so a flood
//! neither exhausts memory nor blocks the child on a full pipe.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes kept from the end of a stream: test runners print their summary last, and failure
/// messages (a `MemoryError` traceback) end there too, even when the head was truncated.
pub(crate) const TAIL_BYTES: usize = 8 * 1024;
/// Read size; one pipe buffer's worth.
const CHUNK_BYTES: usize = 64 * 1024;

/// What was captured from one stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct CapturedStream {
    /// The first bytes, at most the limit.
    pub(crate) head: Vec<u8>,
    /// The last bytes, at most [`TAIL_BYTES`]; overlaps `head` when the stream was short.
    pub(crate) tail: Vec<u8>,
    /// Bytes the child wrote in total.
    pub(crate) total_bytes: u64,
    /// False when the pipe was still open at collection time (held by an escaped process).
    pub(crate) complete: bool,
}

impl CapturedStream {
    /// The kept head as text (invalid UTF-8 replaced).
    pub(crate) fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The tail as text (invalid UTF-8, e.g. a split character, replaced).
    pub(crate) fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

/// A reader thread draining one pipe.
pub(crate) struct Capture {
    shared: Arc<Mutex<CapturedStream>>,
    thread: JoinHandle<()>,
}

impl Capture {
    /// Starts draining `pipe`, keeping at most `head_bytes_max` bytes of its head.
    pub(crate) fn start(
        name: &str,
        mut pipe: impl Read + Send + 'static,
        head_bytes_max: usize,
    ) -> std::io::Result<Capture> {
        let shared = Arc::new(Mutex::new(CapturedStream::default()));
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("sandbox-{name}"))
            .spawn(move || {
                let mut chunk = vec![0_u8; CHUNK_BYTES];
                loop {
                    let read = match pipe.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(read) => read,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    let mut stream = writer.lock().unwrap_or_else(PoisonError::into_inner);
                    stream.append(&chunk[..read], head_bytes_max);
                }
                writer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .complete = true;
            })?;
        Ok(Capture { shared, thread })
    }

    /// Waits for end of stream until `deadline`, then returns what was read. A process that
    /// escaped the kill could hold the pipe open forever; we stop waiting rather than hang.
    pub(crate) fn finish(self, deadline: Instant) -> CapturedStream {
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let stream =
            std::mem::take(&mut *self.shared.lock().unwrap_or_else(PoisonError::into_inner));
        if self.thread.is_finished() {
            // The thread holds no result and cannot panic but on a poisoned lock, handled above.
            let _finished = self.thread.join();
        }
        stream
    }
}

impl CapturedStream {
    fn append(&mut self, bytes: &[u8], head_bytes_max: usize) {
        self.total_bytes += bytes.len() as u64;
        let head_room = head_bytes_max.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(&bytes[..head_room.min(bytes.len())]);
        if bytes.len() >= TAIL_BYTES {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - TAIL_BYTES..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let excess = self.tail.len().saturating_sub(TAIL_BYTES);
            self.tail.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_counts_everything() {
        let mut stream = CapturedStream::default();
        for _ in 0..100 {
            stream.append(&[b'x'; 1000], 2500);
        }
        stream.append(b"END", 2500);
        assert_eq!(stream.total_bytes, 100_003);
        assert_eq!(stream.head.len(), 2500);
        assert_eq!(stream.tail.len(), TAIL_BYTES);
        assert!(stream.tail.ends_with(b"xEND"));
    }

    #[test]
    fn drains_a_reader_to_the_end() {
        let data = vec![b'y'; 1_000_000];
        let capture = Capture::start("test", std::io::Cursor::new(data), 10).unwrap();
        let stream = capture.finish(Instant::now() + Duration::from_secs(10));
        assert!(stream.complete);
        assert_eq!(stream.total_bytes, 1_000_000);
        assert_eq!(stream.head, b"yyyyyyyyyy");
    }
}
