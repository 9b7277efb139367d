//! Bounds and defaults that command validation applies. Built from the `[queue]` config section.

/// Every limit the queue enforces on a command, with units last.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub payload_bytes_max: usize,
    pub batch_jobs_max: usize,
    pub name_chars_max: usize,
    pub tags_max: usize,
    pub tag_chars_max: usize,
    pub key_chars_max: usize,
    pub error_chars_max: usize,
    pub max_attempts_default: u32,
    pub max_attempts_max: u32,
    pub lease_ttl_ms_default: u64,
    pub lease_ttl_ms_min: u64,
    pub lease_ttl_ms_max: u64,
    pub delay_ms_max: u64,
    pub lease_jobs_max: u32,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// How many ready jobs one lease decision may inspect per queue looking for matching tags;
    /// bounds the sequencer's time per command when many jobs need tags nobody has.
    pub lease_scan_max: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            payload_bytes_max: 1024 * 1024,
            batch_jobs_max: 10_000,
            name_chars_max: 128,
            tags_max: 32,
            tag_chars_max: 128,
            key_chars_max: 256,
            error_chars_max: 16 * 1024,
            max_attempts_default: 3,
            max_attempts_max: 1000,
            lease_ttl_ms_default: 60_000,
            lease_ttl_ms_min: 100,
            lease_ttl_ms_max: 24 * 3600 * 1000,
            delay_ms_max: 366 * 24 * 3600 * 1000,
            lease_jobs_max: 1000,
            retry_backoff_base_ms: 1000,
            retry_backoff_max_ms: 600_000,
            lease_scan_max: 10_000,
        }
    }
}
