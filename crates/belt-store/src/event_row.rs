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
//! A line may also be a whole event as a JSON object: the events of schema versions 1-3 (one
//! per row), and an event whose time does not fit nanoseconds in an `i64` (after 2262).

use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::step::StepId;
use belt_core::{StepOutcome, Usage};
use chrono::DateTime;

/// Append the lines of `events` to `out`.
pub(crate) fn encode(events: &[Arc<Event>], out: &mut Vec<u8>) -> serde_json::Result<()> {
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match e.ts.timestamp_nanos_opt() {
            Some(ts_ns) => {
                // `[seq,ts_ns,step,kind]`, as serde_json writes that tuple.
                out.push(b'[');
                serde_json::to_writer(&mut *out, &e.seq)?;
                out.push(b',');
                serde_json::to_writer(&mut *out, &ts_ns)?;
                out.push(b',');
                match &e.step {
                    Some(step) => write_str(out, step.as_str())?,
                    None => out.extend_from_slice(b"null"),
                }
                out.push(b',');
                write_kind(&e.kind, out)?;
                out.push(b']');
            }
            None => serde_json::to_writer(&mut *out, &**e)?,
        }
    }
    Ok(())
}

/// The JSON of `kind`, byte for byte what serde_json writes (a test holds it to that). The
/// two events every step emits are written here directly: serde's generic path, which
/// escapes every key, was most of what encoding them cost. The patterns are exhaustive, so
/// a new field stops the build here instead of going unrecorded.
fn write_kind(kind: &EventKind, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match kind {
        EventKind::StepStarted { tier, model } => {
            out.extend_from_slice(br#"{"type":"step_started","tier":"#);
            write_str(out, tier.as_str())?;
            out.extend_from_slice(br#","model":"#);
            write_str(out, model)?;
        }
        EventKind::StepCompleted {
            tier,
            outcome:
                StepOutcome {
                    model,
                    usage:
                        Usage {
                            input_tokens,
                            output_tokens,
                            cache_read_tokens,
                            cache_write_tokens,
                            reasoning_tokens,
                        },
                    cost_usd,
                    duration_ms,
                    attempts,
                    replayed,
                    cached,
                    reported_usage,
                    finish_reason,
                    unpriced,
                    limit_wait_ms,
                },
            recorded_cost_usd,
        } => {
            out.extend_from_slice(br#"{"type":"step_completed","tier":"#);
            write_str(out, tier.as_str())?;
            out.extend_from_slice(br#","model":"#);
            write_str(out, model)?;
            out.extend_from_slice(br#","input_tokens":"#);
            serde_json::to_writer(&mut *out, input_tokens)?;
            out.extend_from_slice(br#","output_tokens":"#);
            serde_json::to_writer(&mut *out, output_tokens)?;
            if *cache_read_tokens != 0 {
                out.extend_from_slice(br#","cache_read_tokens":"#);
                serde_json::to_writer(&mut *out, cache_read_tokens)?;
            }
            if *cache_write_tokens != 0 {
                out.extend_from_slice(br#","cache_write_tokens":"#);
                serde_json::to_writer(&mut *out, cache_write_tokens)?;
            }
            if *reasoning_tokens != 0 {
                out.extend_from_slice(br#","reasoning_tokens":"#);
                serde_json::to_writer(&mut *out, reasoning_tokens)?;
            }
            out.extend_from_slice(br#","cost_usd":"#);
            serde_json::to_writer(&mut *out, cost_usd)?;
            out.extend_from_slice(br#","duration_ms":"#);
            serde_json::to_writer(&mut *out, duration_ms)?;
            out.extend_from_slice(br#","attempts":"#);
            serde_json::to_writer(&mut *out, attempts)?;
            if *replayed {
                out.extend_from_slice(br#","replayed":true"#);
            }
            if *cached {
                out.extend_from_slice(br#","cached":true"#);
            }
            if let Some(reported) = reported_usage {
                out.extend_from_slice(br#","reported_usage":"#);
                serde_json::to_writer(&mut *out, reported)?;
            }
            if let Some(reason) = finish_reason {
                out.extend_from_slice(br#","finish_reason":"#);
                write_str(out, reason)?;
            }
            if *unpriced {
                out.extend_from_slice(br#","unpriced":true"#);
            }
            if *limit_wait_ms != 0 {
                out.extend_from_slice(br#","limit_wait_ms":"#);
                serde_json::to_writer(&mut *out, limit_wait_ms)?;
            }
            if let Some(cost) = recorded_cost_usd {
                out.extend_from_slice(br#","recorded_cost_usd":"#);
                serde_json::to_writer(&mut *out, cost)?;
            }
        }
        other => return serde_json::to_writer(&mut *out, other),
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string: copied as it is when nothing in it needs escaping (the usual step ids,
/// tiers and model names), else through serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
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

    /// The direct encoding of the per-step events is exactly serde_json's.
    #[test]
    fn per_step_events_are_written_as_serde_json_writes_them() {
        let tiers = [Tier::Worker, Tier::Custom("odd \"tier\"\n".into())];
        let models: [Arc<str>; 2] = [Arc::from("simulated/m"), Arc::from("m\\é\u{1}")];
        let mut kinds = Vec::new();
        for tier in &tiers {
            for model in &models {
                kinds.push(EventKind::StepStarted { tier: tier.clone(), model: model.clone() });
                for (replayed, cached) in [(false, false), (true, false), (false, true), (true, true)] {
                    for cost_usd in [0.0, 6.3e-5, 12.5, f64::NAN] {
                        let usage = Usage {
                            input_tokens: 17,
                            output_tokens: u64::MAX,
                            cache_read_tokens: if cached { 5 } else { 0 },
                            cache_write_tokens: if replayed { 3 } else { 0 },
                            reasoning_tokens: if cached { 0 } else { 9 },
                        };
                        let outcome = StepOutcome {
                            model: model.clone(),
                            usage,
                            cost_usd,
                            duration_ms: 3,
                            attempts: 2,
                            replayed,
                            cached,
                            reported_usage: cached.then(|| Box::new(Usage::new(1 << 40, 7))),
                            finish_reason: replayed.then(|| Arc::from(model.as_ref())),
                            unpriced: cached,
                            limit_wait_ms: if replayed { 0 } else { 120 },
                        };
                        let recorded_cost_usd = replayed.then_some(cost_usd);
                        kinds.push(EventKind::StepCompleted {
                            tier: tier.clone(),
                            outcome,
                            recorded_cost_usd,
                        });
                    }
                }
            }
        }
        kinds.push(EventKind::StepSkipped { tier: Tier::Worker, reason: "x".into() });
        for kind in kinds {
            let mut ours = Vec::new();
            write_kind(&kind, &mut ours).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&kind).unwrap());
        }
        let e = event(9, DateTime::from_timestamp(1_800_000_000, 1).unwrap(), Some("a\"b"));
        let mut line = Vec::new();
        encode(std::slice::from_ref(&e), &mut line).unwrap();
        let tuple = (e.seq, e.ts.timestamp_nanos_opt().unwrap(), &e.step, &e.kind);
        assert_eq!(String::from_utf8(line).unwrap(), serde_json::to_string(&tuple).unwrap());
    }

    /// An orchestrator's own events and the questions for people are kept like the engine's.
    #[test]
    fn custom_and_human_events_round_trip() {
        use belt_core::patterns::hitl::{Answer, AnsweredBy, Question};
        let run: Arc<str> = Arc::from("run-1");
        let ts = DateTime::from_timestamp(1_800_000_000, 42).unwrap();
        let kinds = [
            EventKind::Custom { name: "agent_progress".into(), data: serde_json::json!({"done": [1, 2]}) },
            EventKind::HumanRequested {
                id: "run-1:hitl/plan".into(),
                question: Box::new(Question::Approval),
                prompt: "Run it?\nYes".into(),
                timeout_ms: 1000,
                default: Box::new(Answer::Approve(false)),
            },
            EventKind::HumanAnswered {
                id: "run-1:hitl/plan".into(),
                answer: Box::new(Answer::Approve(true)),
                by: AnsweredBy::Human,
            },
        ];
        let batch: Vec<Arc<Event>> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let step = (i > 0).then(|| StepId::new("hitl/plan"));
                Arc::new(Event { seq: i as u64 + 1, ts, run_id: run.clone(), step, kind })
            })
            .collect();
        let mut text = Vec::new();
        encode(&batch, &mut text).unwrap();
        let (mut after, mut out) = (0, Vec::new());
        decode(&run, std::str::from_utf8(&text).unwrap(), &mut after, &mut out).unwrap();
        assert_eq!(out, batch);
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
