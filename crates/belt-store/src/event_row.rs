//! How events are kept in the `events` table: one row per appended batch.
//!
//! Every step emits two events, and the engine appends them in batches (all the events
//! emitted while the previous batch was being written). A row holds one batch: the run's
//! key, the first and last sequence numbers, and one line of JSON per event,
//! `[seq, ts_ns, step, kind]` — the time in nanoseconds since 1970, the step or `null`,
//! and the [`EventKind`] tagged by `type`. So a batch costs one row (one b-tree insert,
//! not one per event), and the text leaves out what the row already says: the 36-character
//! run id, repeated in every event's own JSON, and the RFC 3339 time.
//!
//! A line may also be a whole event as a JSON object: the events of schema version 1 (one
//! per row), and an event whose time does not fit nanoseconds in an `i64` (after 2262).

use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::step::StepId;
use chrono::DateTime;
use serde::Serialize;

/// Append the lines of `events` to `out`.
pub(crate) fn encode(events: &[Arc<Event>], out: &mut Vec<u8>) -> serde_json::Result<()> {
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match e.ts.timestamp_nanos_opt() {
            Some(ts_ns) => {
                (e.seq, ts_ns, &e.step, &e.kind).serialize(&mut serde_json::Serializer::new(&mut *out))?
            }
            None => serde_json::to_writer(&mut *out, &**e)?,
        }
    }
    Ok(())
}

/// Push the events of a row's `lines` with `seq > *after` onto `out`, raising `*after` to
/// the last one, so that rows read in order give every event once, in order.
pub(crate) fn decode(
    run_id: &Arc<str>,
    lines: &str,
    after: &mut u64,
    out: &mut Vec<Arc<Event>>,
) -> serde_json::Result<()> {
    for line in lines.split('\n') {
        let event = if line.starts_with('[') {
            let (seq, ts_ns, step, kind) =
                serde_json::from_str::<(u64, i64, Option<StepId>, EventKind)>(line)?;
            if seq <= *after {
                continue;
            }
            Event { seq, ts: DateTime::from_timestamp_nanos(ts_ns), run_id: run_id.clone(), step, kind }
        } else {
            let e = serde_json::from_str::<Event>(line)?;
            if e.seq <= *after {
                continue;
            }
            e
        };
        *after = event.seq;
        out.push(Arc::new(event));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use belt_core::step::Tier;

    fn event(seq: u64, ts: DateTime<chrono::Utc>, step: Option<&str>) -> Arc<Event> {
        Arc::new(Event {
            seq,
            ts,
            run_id: Arc::from("run-1"),
            step: step.map(StepId::new),
            kind: EventKind::StepStarted { tier: Tier::Worker, model: Arc::from("simulated/m") },
        })
    }

    #[test]
    fn a_batch_round_trips_with_nanoseconds_and_without_the_run_id() {
        let run: Arc<str> = Arc::from("run-1");
        let ts = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        // A time beyond 2262 does not fit nanoseconds in an i64: that event is a whole object.
        let far = DateTime::from_timestamp(10_000_000_000, 5).unwrap();
        let batch = vec![event(4, ts, Some("worker/001")), event(5, ts, None), event(6, far, Some("w\n\"x"))];
        let mut text = Vec::new();
        encode(&batch, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(text.matches("run-1").count(), 1, "only the whole-object line names the run: {text}");
        let (mut after, mut out) = (0, Vec::new());
        decode(&run, &text, &mut after, &mut out).unwrap();
        assert_eq!(out, batch);
        assert_eq!(after, 6);
        // Reading from the middle of a batch gives only the later events.
        let (mut after, mut out) = (4, Vec::new());
        decode(&run, &text, &mut after, &mut out).unwrap();
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn a_row_of_schema_version_1_still_decodes() {
        let run: Arc<str> = Arc::from("run-1");
        let v1 = r#"{"seq":3,"ts":"2026-11-21T10:35:26.730728735Z","run_id":"run-1","step":"decompose","type":"step_started","tier":"decomposer","model":"simulated/bench"}"#;
        let (mut after, mut out) = (0, Vec::new());
        decode(&run, v1, &mut after, &mut out).unwrap();
        assert_eq!((out[0].seq, out[0].step.as_ref().map(StepId::as_str)), (3, Some("decompose")));
        assert_eq!(out[0].ts.timestamp_subsec_nanos(), 730_728_735);
        assert!(decode(&run, "[1,2", &mut after, &mut out).is_err(), "a damaged line is an error");
    }
}
