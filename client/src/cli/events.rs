//! `agentctl events tail [--after LSN] [--follow] [--limit N]`.

use crate::http_client::Client;
use agentd_schemas::Lsn;
use clap::Subcommand;

/// Most log frames asked for per request (the daemon allows up to 10000). A frame holds the
/// events of one write: one for a single submit, a thousand for a batch of a thousand.
pub const EVENTS_PAGE_FRAMES_MAX: u64 = 1000;
/// How long one `--follow` request waits for new events before asking again.
const FOLLOW_WAIT_MS: u64 = 20_000;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print events after an LSN, oldest first; with --follow, keep printing new ones as they
    /// are appended
    Tail {
        /// Start after this log sequence number (0: from the beginning of the log); the first
        /// column of the output is each event's LSN
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At the end of the log, wait for new events and print them as they are appended
        /// (until Ctrl-C, or until --limit events were printed)
        #[arg(long)]
        follow: bool,
        /// Print at most this many events in all, then stop (fetched page by page) [default:
        /// no limit: up to the end of the log, or forever with --follow]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

pub async fn run(client: &Client, command: EventsCommand, json: bool) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        after,
        follow,
        limit,
    } = command;
    let mut after = Lsn(after);
    let mut printed: u64 = 0;
    loop {
        let remaining = limit.map_or(u64::MAX, |limit| limit - printed);
        // Every frame holds at least one event, so asking for more frames than events still
        // wanted would only fetch events that are never printed.
        let frames = remaining.min(EVENTS_PAGE_FRAMES_MAX);
        let wait_ms = if follow { FOLLOW_WAIT_MS } else { 0 };
        let page = client.events(after, frames, wait_ms).await?;
        let shown = usize::try_from(remaining).unwrap_or(usize::MAX);
        for event in page.events.iter().take(shown) {
            print_event(event, json);
        }
        printed += page.events.len().min(shown) as u64;
        if let Some(limit) = limit.filter(|limit| printed >= *limit) {
            if !json {
                print_continuation(&page.events, shown, limit);
            }
            return Ok(());
        }
        let caught_up = page.next_after == after;
        after = page.next_after;
        if caught_up && !follow {
            return Ok(());
        }
    }
}

/// When --limit left events of this page unprinted, says on stderr where to go on from. The
/// daemon pages by frame (LSN), so when the limit fell inside a frame, going on repeats that
/// frame from its start.
fn print_continuation(events: &[serde_json::Value], shown: usize, limit: u64) {
    let lsn_of = |event: &serde_json::Value| event.get("lsn").and_then(|lsn| lsn.as_u64());
    let (Some(last), Some(next)) = (
        events.get(shown.wrapping_sub(1)).and_then(lsn_of),
        events.get(shown).and_then(lsn_of),
    ) else {
        return;
    };
    let cursor = if next == last { last - 1 } else { last };
    eprintln!("agentctl: stopped after --limit {limit} events; more with --after {cursor}");
}

fn print_event(event: &serde_json::Value, json: bool) {
    if json {
        println!("{event}");
        return;
    }
    let lsn = event.get("lsn").and_then(|v| v.as_u64()).unwrap_or(0);
    let kind = event.get("type").and_then(|v| v.as_str()).unwrap_or("?");
    let job = event.get("job_id").and_then(|v| v.as_str()).unwrap_or("");
    let lease = event.get("lease_id").and_then(|v| v.as_str()).unwrap_or("");
    let task = event.get("task_id").and_then(|v| v.as_str()).unwrap_or("");
    println!("{lsn:>8} {kind:<26} {job} {lease} {task}");
}
