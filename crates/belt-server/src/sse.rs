//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events.
//!
//! Each event's `id:` is its sequence number, its `event:` its type (`step_completed`,
//! `custom`, `human_requested`…) and its `data:` the event's JSON. A client resumes with `Last-Event-ID` (which
//! browsers send on reconnect) or `?after=N`: the stored events after it are replayed, then
//! live ones follow, each sent once, in order, with no gap: the live log is subscribed to
//! *before* the store is read, and anything already sent is skipped by sequence number.
//! A comment line is sent as a heartbeat; the stream ends after `run_finished`, or when the
//! server shuts down.
//!
//! A run this server does not drive (started before a restart, or by another process on the
//! same store) is read from the store alone, polled until its `run_finished` arrives.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use belt_core::Event;
use belt_core::store::RunStore;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::error::ApiError;
use crate::manager::{LiveRun, LogCursor, is_last};

/// The longest one wait for a run that another process drives lasts before it is renewed.
const STORE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    /// Resume after this sequence number (`Last-Event-ID` wins when both are given).
    pub after: Option<u64>,
    /// The API token, for browsers' EventSource (checked by the auth layer).
    #[allow(dead_code)]
    pub token: Option<String>,
}

pub(crate) async fn events(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::BadRequest(
                "Last-Event-ID must be the sequence number of an event (a whole number)".into(),
            )
        })?,
        None => query.after.unwrap_or(0),
    };
    let live = app.manager.get(&run_id);
    if live.is_none() && app.store.get_run(&run_id).await?.is_none() {
        return Err(ApiError::UnknownRun(run_id));
    }
    let (tx, rx) = mpsc::channel(64);
    let feed =
        Feed { tx, store: app.store.clone(), run_id, last: after, shutdown: app.manager.shutdown_token() };
    tokio::spawn(feed.run(live));
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(app.config.heartbeat).text("heartbeat")))
}

/// Writes one subscriber's events into its channel.
pub(crate) struct Feed {
    pub(crate) tx: mpsc::Sender<SseEvent>,
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) run_id: String,
    /// The last sequence number sent (or the one to resume after).
    pub(crate) last: u64,
    pub(crate) shutdown: CancellationToken,
}

/// Why a feed stopped early.
enum Stop {
    /// The run finished or the client went away: nothing more to send.
    Done,
}

impl Feed {
    pub(crate) async fn run(mut self, live: Option<Arc<LiveRun>>) {
        // Subscribe first, then read the store: nothing emitted in between is lost.
        let cursor = live.as_ref().map(|r| r.log.cursor());
        let log_reaches_back =
            live.as_ref().and_then(|r| r.log.first_seq()).is_some_and(|f| f <= self.last + 1);
        if !log_reaches_back && self.replay_store().await.is_err() {
            return;
        }
        let _ = match cursor {
            Some(cursor) => self.follow_log(cursor).await,
            None => self.follow_store().await,
        };
    }

    /// Send the stored events after `last`.
    async fn replay_store(&mut self) -> Result<(), Stop> {
        let events = match self.store.events(&self.run_id, self.last).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("cannot read the events of run {}: {e}", self.run_id);
                return Err(Stop::Done);
            }
        };
        for e in events {
            self.send(&e).await?;
        }
        Ok(())
    }

    async fn follow_log(&mut self, mut cursor: LogCursor) -> Result<(), Stop> {
        loop {
            let batch = tokio::select! {
                b = cursor.next_batch() => b,
                _ = self.shutdown.cancelled() => None,
            };
            let Some(batch) = batch else { return Ok(()) };
            for e in batch {
                self.send(&e).await?;
            }
        }
    }

    async fn follow_store(&mut self) -> Result<(), Stop> {
        loop {
            // Woken as soon as the driver records more (PostgreSQL: LISTEN/NOTIFY; else polled).
            let events = tokio::select! {
                e = self.store.wait_events(&self.run_id, self.last, STORE_WAIT) => e,
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = self.tx.closed() => return Err(Stop::Done),
            };
            match events {
                Ok(events) => {
                    for e in events {
                        self.send(&e).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the events of run {}: {e}", self.run_id);
                    return Err(Stop::Done);
                }
            }
        }
    }

    /// Send an event unless it was sent already; `Stop` after the last one or when the
    /// client is gone.
    async fn send(&mut self, e: &Event) -> Result<(), Stop> {
        if e.seq <= self.last {
            return Ok(());
        }
        let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
        // `event:` is the type, so EventSource listeners can subscribe to the kinds they want.
        let sse = SseEvent::default().id(e.seq.to_string()).event(e.kind.type_name()).data(data);
        tokio::select! {
            sent = self.tx.send(sse) => sent.map_err(|_| Stop::Done)?,
            _ = self.shutdown.cancelled() => return Err(Stop::Done),
        }
        self.last = e.seq;
        if is_last(e) { Err(Stop::Done) } else { Ok(()) }
    }
}
