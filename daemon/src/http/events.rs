//! `GET /v1/events?after=LSN&limit=N[&wait_ms=W]`: the log itself, as JSON, from any LSN.

use super::error::ApiError;
use super::extract::ApiQuery;
use super::{ApiResult, SharedState};
use crate::replay::{for_each_record, ReplayError};
use agentd_schemas::api::EventsResponse;
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Most frames one page returns.
pub const EVENTS_LIMIT_MAX: u64 = 10_000;
/// A page also ends before a frame that would take it past this many events or
/// [`EVENTS_PAGE_BYTES_MAX`] bytes of JSON: one frame can hold thousands of events (a batch
/// submit, an ingest batch), so a frame count alone does not bound the answer. A single frame
/// over either cap is still returned, alone, so a reader always makes progress.
pub const EVENTS_PAGE_EVENTS_MAX: usize = 10_000;
/// Most bytes of event JSON in one page (see [`EVENTS_PAGE_EVENTS_MAX`]).
pub const EVENTS_PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of frames after this LSN (default 0: from the start).
    after: Option<u64>,
    /// Most frames to read (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
    /// Wait up to this long for new events when none are there yet (for `events tail --follow`).
    wait_ms: Option<u64>,
}

#[utoipa::path(
    get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events after `after`, in log order", body = agentd_schemas::api::EventsResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Json<EventsResponse>> {
    let after = Lsn(query.after.unwrap_or(0));
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > EVENTS_LIMIT_MAX {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {EVENTS_LIMIT_MAX}"
        )));
    }
    // Like a lease long-poll: capped, and kept inside the request timeout with room to answer
    // (an empty page, never a 503 `timeout`).
    let timeout_cap_ms = (state.limits.request_timeout.as_millis() as u64).saturating_sub(1000);
    let wait_ms = query
        .wait_ms
        .unwrap_or(0)
        .min(state.limits.lease_wait_ms_max)
        .min(timeout_cap_ms);
    if wait_ms > 0 && state.writer.durable_lsn() <= after {
        let mut durable = state.writer.subscribe_durable();
        let _timed_out_is_fine = tokio::time::timeout(
            Duration::from_millis(wait_ms),
            durable.wait_for(|lsn| *lsn > after),
        )
        .await;
    }
    let up_to = Lsn(state
        .writer
        .durable_lsn()
        .0
        .min(after.0.saturating_add(limit)));
    let log = state.log.clone();
    let page = tokio::task::spawn_blocking(move || read_page(&log, after, up_to))
        .await
        .map_err(|error| ApiError::internal("reading events", error))?
        .map_err(|error| ApiError::internal("reading events", error))?;
    Ok(Json(EventsResponse {
        events: page.events,
        next_after: page.next_after,
    }))
}

/// One page of events and the LSN to continue after.
struct Page {
    events: Vec<Value>,
    next_after: Lsn,
}

/// Reads the frames in `(after, up_to]`, ending early before a frame that would take the page
/// past [`EVENTS_PAGE_EVENTS_MAX`] events or [`EVENTS_PAGE_BYTES_MAX`] bytes.
fn read_page(log: &crate::log::LogReader, after: Lsn, up_to: Lsn) -> Result<Page, ReplayError> {
    let mut page = Page {
        events: Vec::new(),
        next_after: after,
    };
    let mut bytes = 0usize;
    let read = for_each_record(log, after, up_to, |lsn, record| {
        let frame = record_to_json(lsn, &record);
        let frame_bytes: usize = frame.iter().map(json_len).sum();
        let full = page.events.len() + frame.len() > EVENTS_PAGE_EVENTS_MAX
            || bytes + frame_bytes > EVENTS_PAGE_BYTES_MAX;
        if full && !page.events.is_empty() {
            return Err(ReplayError::Stopped);
        }
        bytes += frame_bytes;
        page.events.extend(frame);
        page.next_after = lsn;
        Ok(())
    });
    match read {
        Ok(()) => page.next_after = page.next_after.max(up_to),
        Err(ReplayError::Stopped) => {}
        Err(error) => return Err(error),
    }
    Ok(page)
}

/// The length of a value as compact JSON.
fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _never_fails = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// One JSON object per event: `lsn`, `index`, `ts_ms`, `type`, `version`, `actor`, then the
/// event's own fields.
pub fn record_to_json(lsn: Lsn, record: &LogRecord) -> Vec<Value> {
    record
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let mut object = Map::new();
            object.insert("lsn".into(), lsn.0.into());
            object.insert("index".into(), index.into());
            object.insert("ts_ms".into(), record.ts_ms.into());
            object.insert("type".into(), event.type_name().into());
            if let Some(actor) = &record.actor {
                object.insert("actor".into(), actor.clone().into());
            }
            // Externally tagged: {"job_submitted.v1": {...fields}}.
            if let Ok(Value::Object(tagged)) = serde_json::to_value(event) {
                for (tag, fields) in tagged {
                    let version = tag
                        .rsplit_once(".v")
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    object.insert("version".into(), version.into());
                    match fields {
                        Value::Object(fields) => object.extend(fields),
                        other => {
                            object.insert("data".into(), other);
                        }
                    }
                }
            }
            Value::Object(object)
        })
        .collect()
}
