//! How an event is kept in a row of the `events` table.
//!
//! The run (its key) and the sequence number are the row's primary key, the time and the
//! step are columns, and only the [`EventKind`] is JSON. So the JSON carries neither the
//! 36-character run id nor the RFC 3339 time, which were most of the text to write and
//! escape for the small events every step emits. Rows written before this encoding (schema
//! version 1, or a time outside what nanoseconds since 1970 in an `i64` can hold) keep the
//! whole event as JSON and have no time column.

use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::step::StepId;
use chrono::DateTime;

/// The columns of one event, borrowed from it.
pub(crate) struct EventRow<'a> {
    pub ts_ns: Option<i64>,
    pub step: Option<&'a str>,
}

/// Write the JSON column of `event` into `json` (cleared first) and return its other columns.
pub(crate) fn encode<'a>(event: &'a Event, json: &mut Vec<u8>) -> serde_json::Result<EventRow<'a>> {
    json.clear();
    match event.ts.timestamp_nanos_opt() {
        Some(ts_ns) => {
            serde_json::to_writer(&mut *json, &event.kind)?;
            Ok(EventRow { ts_ns: Some(ts_ns), step: event.step.as_ref().map(StepId::as_str) })
        }
        None => {
            serde_json::to_writer(&mut *json, event)?;
            Ok(EventRow { ts_ns: None, step: None })
        }
    }
}

/// The event of a row of run `run_id`.
pub(crate) fn decode(
    run_id: &Arc<str>,
    seq: i64,
    ts_ns: Option<i64>,
    step: Option<&str>,
    json: &str,
) -> serde_json::Result<Event> {
    match ts_ns {
        Some(ts_ns) => Ok(Event {
            seq: seq as u64,
            ts: DateTime::from_timestamp_nanos(ts_ns),
            run_id: run_id.clone(),
            step: step.map(StepId::new),
            kind: serde_json::from_str::<EventKind>(json)?,
        }),
        None => serde_json::from_str(json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use belt_core::step::Tier;

    fn event(ts: DateTime<chrono::Utc>, step: Option<&str>) -> Event {
        Event {
            seq: 7,
            ts,
            run_id: Arc::from("run-1"),
            step: step.map(StepId::new),
            kind: EventKind::StepStarted { tier: Tier::Worker, model: Arc::from("simulated/m") },
        }
    }

    #[test]
    fn an_event_round_trips_through_its_row_with_nanoseconds() {
        let run: Arc<str> = Arc::from("run-1");
        let mut json = Vec::new();
        let ts = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        for e in [event(ts, Some("worker/001")), event(ts, None)] {
            let row = encode(&e, &mut json).unwrap();
            let text = std::str::from_utf8(&json).unwrap();
            assert!(!text.contains("run-1") && !text.contains("\"seq\""), "{text}");
            assert_eq!(row.ts_ns, Some(1_800_000_000_123_456_789));
            let back = decode(&run, 7, row.ts_ns, row.step, text).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn whole_json_rows_still_decode() {
        let run: Arc<str> = Arc::from("run-1");
        // A time beyond 2262 does not fit nanoseconds in an i64: the whole event is JSON.
        let far = DateTime::from_timestamp(10_000_000_000, 5).unwrap();
        let e = event(far, Some("worker/002"));
        let mut json = Vec::new();
        let row = encode(&e, &mut json).unwrap();
        assert_eq!((row.ts_ns, row.step), (None, None));
        assert_eq!(decode(&run, 7, None, None, std::str::from_utf8(&json).unwrap()).unwrap(), e);
        // And so does a row of schema version 1.
        let v1 = r#"{"seq":3,"ts":"2026-11-21T10:35:26.730728735Z","run_id":"run-1","step":"decompose","type":"step_started","tier":"decomposer","model":"simulated/bench"}"#;
        let old = decode(&run, 3, None, None, v1).unwrap();
        assert_eq!((old.seq, old.step.as_ref().map(StepId::as_str)), (3, Some("decompose")));
    }
}
