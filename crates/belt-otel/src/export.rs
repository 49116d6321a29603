//! Sending spans: [`Exporter`], a bounded queue drained by one background task that POSTs
//! batches to the collector over OTLP/HTTP protobuf.
//!
//! A run never waits on it: spans are handed over with `try_send`, and when the queue is
//! full they are dropped and counted. A collector that is down or slow costs one warning
//! in the logs (and a note when it answers again), never an error of the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use belt_core::event::{Event, EventKind, EventStream};
use belt_core::store::StepRecord;
use belt_core::{RunStore, StepId, ToolOutcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use belt_core::metrics::{Metric, Metrics};

use crate::proto::{self, Span, SpanWriter};
use crate::spans::{Enrich, RunTracer, Spans, messages};
use crate::{OtelConfig, OtelError};

/// Counts of what happened to the spans handed to an [`Exporter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full or the exporter had shut down.
    pub dropped: u64,
    /// Spans in requests that failed (collector down, refused, timed out).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// The collector's last answer was a failure (so one warning, not one per batch).
    down: AtomicBool,
    /// Spans handed over and not yet taken by the sending task: the queue's bound.
    queued: AtomicUsize,
}

/// Spans encoded on the task that built them ([`proto::SpanWriter`]): the queue carries
/// only bytes, so the sending task neither walks nor frees the spans' small allocations.
struct Chunk {
    bytes: Vec<u8>,
    spans: usize,
}

/// Sends GenAI spans to an OTLP/HTTP collector. Cheap to clone: clones share the queue.
///
/// Needs a tokio runtime: [`Exporter::start`] spawns the sending task on the current one.
#[derive(Clone)]
pub struct Exporter {
    tx: mpsc::UnboundedSender<Chunk>,
    counters: Arc<Counters>,
    /// Spans queued at most, and per chunk.
    queue: usize,
    batch: usize,
    closing: CancellationToken,
    /// The runs' pumps, so shutdown can wait for their last spans.
    pumps: tokio_util::task::TaskTracker,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    content: bool,
    timeout: Duration,
    metrics: Arc<MetricsExport>,
}

/// Where the metrics an [`Exporter`] sends come from: a snapshot taken at each export.
pub type MetricsSource =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Metric>> + Send>> + Send + Sync>;

/// Metrics export: what the exporter counts from the runs it traces, or another source.
struct MetricsExport {
    /// The runs' events this exporter traces, counted (unless `source` replaces them).
    own: Metrics,
    /// Set by [`Exporter::metrics_from`]: then `own` is not fed.
    source: std::sync::Mutex<Option<MetricsSource>>,
    counting: AtomicBool,
    endpoint: Option<String>,
    every: Duration,
    service_name: String,
    client: reqwest::Client,
    /// Points are cumulative from here (Unix nanoseconds).
    start: u64,
    task: tokio_util::task::TaskTracker,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Exporter {
    /// Start sending to `config`'s endpoint. Fails only when the HTTP client cannot be
    /// built (a header that is not a valid header value); the collector is not contacted.
    pub fn start(config: OtelConfig) -> Result<Exporter, OtelError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| OtelError::Headers(format!("`{k}` is not a header name")))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| OtelError::Headers(format!("the value of `{k}` is not a valid header value")))?;
            headers.insert(name, value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-protobuf"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| OtelError::Client(e.to_string()))?;
        // Unbounded as a channel, bounded in spans by `Counters::queued`.
        let (tx, rx) = mpsc::unbounded_channel();
        let (queue, batch) = (config.queue.max(1), config.batch.max(1));
        let counters = Arc::new(Counters::default());
        let closing = CancellationToken::new();
        let (content, timeout) = (config.content, config.timeout);
        let metrics = Arc::new(MetricsExport {
            own: Metrics::default(),
            source: std::sync::Mutex::new(None),
            counting: AtomicBool::new(config.metrics_endpoint.is_some()),
            endpoint: config.metrics_endpoint.clone(),
            every: config.metrics_every,
            service_name: config.service_name.clone(),
            client: client.clone(),
            start: now_nanos(),
            task: tokio_util::task::TaskTracker::new(),
        });
        if metrics.endpoint.is_some() {
            metrics.task.spawn(metrics.clone().run(closing.clone()));
        }
        metrics.task.close();
        let sender = Sender { client, config, counters: counters.clone() };
        let task = tokio::spawn(sender.run(rx, closing.clone()));
        Ok(Exporter {
            tx,
            counters,
            queue,
            batch,
            closing,
            pumps: tokio_util::task::TaskTracker::new(),
            done: Arc::new(tokio::sync::Mutex::new(Some(task))),
            content,
            timeout,
            metrics,
        })
    }

    /// Export metrics from `source` (a server's snapshot, which counts every run and adds
    /// what only the server knows) instead of counting the runs this exporter traces.
    pub fn metrics_from(&self, source: MetricsSource) {
        self.metrics.counting.store(false, Ordering::Relaxed);
        *self.metrics.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The metrics that would be sent now.
    pub async fn metrics_snapshot(&self) -> Vec<Metric> {
        self.metrics.snapshot().await
    }

    /// Hand spans over, encoded here (on the caller's task); those that do not fit in the
    /// queue are dropped and counted.
    pub fn send(&self, spans: impl IntoIterator<Item = Span>) {
        let (mut bytes, mut count) = (Vec::new(), 0);
        for span in spans {
            span.encode(&mut bytes);
            count += 1;
            if count == self.batch {
                self.hand_over(std::mem::take(&mut bytes), std::mem::take(&mut count));
            }
        }
        self.hand_over(bytes, count);
    }

    /// Hand over `count` encoded spans; those that do not fit in the queue are dropped and
    /// counted. Two pumps sending at once may overshoot the bound by what they send
    /// together: it bounds memory, it need not be exact.
    fn hand_over(&self, mut bytes: Vec<u8>, mut count: usize) {
        let room = self.queue.saturating_sub(self.counters.queued.load(Ordering::Relaxed));
        let mut dropped = 0;
        if count > room {
            bytes.truncate(proto::spans_prefix(&bytes, room));
            (dropped, count) = (count - room, room);
        }
        if count > 0 {
            dropped += self.enqueue(Chunk { bytes, spans: count });
        }
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// Queue a chunk; how many spans were dropped (all of them once the sender has stopped).
    fn enqueue(&self, chunk: Chunk) -> usize {
        let n = chunk.spans;
        self.counters.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(chunk).is_err() {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            return n;
        }
        0
    }

    /// What happened to the spans so far.
    pub fn stats(&self) -> ExportStats {
        ExportStats {
            exported: self.counters.exported.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Trace a run from its event stream, on a task of its own, until the stream ends. With
    /// a `store` (the run's), tool spans get their tool's name and, with content on, spans
    /// get their outputs, from the run's record once the run finishes.
    pub fn observe(
        &self,
        events: EventStream,
        store: Option<Arc<dyn RunStore>>,
    ) -> tokio::task::JoinHandle<()> {
        self.pumps.spawn(self.pump(store).run(events))
    }

    /// For a consumer that sees the events of many runs one at a time (an observer of a
    /// server's runs): a [`Feed`] that traces each run on a task of its own.
    pub fn feed(&self, store: Option<Arc<dyn RunStore>>) -> Feed {
        Feed { exporter: self.clone(), store, runs: std::sync::Mutex::new(HashMap::new()) }
    }

    fn pump(&self, store: Option<Arc<dyn RunStore>>) -> Pump {
        let spans = Spans { hold: store.is_some(), ..Spans::default() };
        Pump { exporter: self.clone(), tracer: None, store, run_id: String::new(), spans }
    }

    /// Send what is queued and stop, waiting at most the request timeout (less when the
    /// collector is known to be down: then nothing is waited for).
    pub async fn shutdown(&self) {
        // The runs' pumps first: their streams have ended or are about to (the runs are
        // over), and a pump may still be reading the record for its last spans.
        self.pumps.close();
        if tokio::time::timeout(self.timeout, self.pumps.wait()).await.is_err() {
            tracing::debug!("OpenTelemetry export: a run's events did not end within {:?}", self.timeout);
        }
        self.closing.cancel();
        // The last metrics (bounded: a request has the exporter's timeout).
        let _ = tokio::time::timeout(self.timeout, self.metrics.task.wait()).await;
        let Some(task) = self.done.lock().await.take() else { return };
        let wait = if self.counters.down.load(Ordering::Relaxed) { Duration::ZERO } else { self.timeout };
        let abort = task.abort_handle();
        if tokio::time::timeout(wait, task).await.is_err() {
            abort.abort();
            if wait.is_zero() {
                // Already said: the collector is down.
                tracing::debug!("OpenTelemetry export: the last spans are dropped (the collector is down)");
                return;
            }
            tracing::warn!(
                "OpenTelemetry export: the collector did not take the last spans within {wait:?}; they are dropped"
            );
        }
    }
}

/// Where a [`Feed`] hands a run's events to its pump, a batch at a time.
type Batches = mpsc::UnboundedSender<Vec<Arc<Event>>>;

/// Events of many runs, each handed to its run's pump. See [`Exporter::feed`].
pub struct Feed {
    exporter: Exporter,
    store: Option<Arc<dyn RunStore>>,
    runs: std::sync::Mutex<HashMap<Arc<str>, Batches>>,
}

impl Feed {
    /// The next event of some run, in that run's order. Never waits: the run's pump reads
    /// it on its own task. A consumer that reads events in batches calls
    /// [`Feed::on_events`], which wakes each run's pump once per batch, not per event.
    pub fn on_event(&self, event: &Arc<Event>) {
        self.on_events(std::slice::from_ref(event));
    }

    /// Events of any runs, in order: each run's are handed to its pump together.
    pub fn on_events(&self, events: &[Arc<Event>]) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut rest = events;
        while let Some(first) = rest.first() {
            // The longest stretch of this run's events (a run's events usually come together).
            // The same run's events share its id's allocation: compare pointers first.
            let same = |e: &&Arc<Event>| Arc::ptr_eq(&e.run_id, &first.run_id) || e.run_id == first.run_id;
            let n = rest.iter().take_while(same).count();
            let (mine, others) = rest.split_at(n);
            rest = others;
            let tx = runs.entry(first.run_id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.exporter.pumps.spawn(self.exporter.pump(self.store.clone()).run(rx));
                tx
            });
            let _ = tx.send(mine.to_vec());
            if mine.iter().any(|e| matches!(e.kind, EventKind::RunFinished { .. })) {
                // Its pump ends once it has traced what it was sent.
                runs.remove(&first.run_id);
            }
        }
    }
}

/// Where a pump reads events from: a run's own stream, or a [`Feed`]'s channel.
trait Source {
    async fn next(&mut self, buf: &mut Vec<Arc<Event>>) -> usize;
}

impl Source for EventStream {
    async fn next(&mut self, buf: &mut Vec<Arc<Event>>) -> usize {
        self.recv_batch(buf, 4096).await
    }
}

impl Source for mpsc::UnboundedReceiver<Vec<Arc<Event>>> {
    async fn next(&mut self, buf: &mut Vec<Arc<Event>>) -> usize {
        let mut batches = Vec::new();
        if self.recv_many(&mut batches, 64).await == 0 {
            return 0;
        }
        let before = buf.len();
        batches.into_iter().for_each(|b| buf.extend(b));
        buf.len() - before
    }
}

/// One run's events → spans → the exporter's queue.
struct Pump {
    exporter: Exporter,
    /// Made at the first event, which names the run.
    tracer: Option<RunTracer>,
    store: Option<Arc<dyn RunStore>>,
    run_id: String,
    /// What the tracer has written and not yet handed over.
    spans: Spans,
}

impl Pump {
    async fn run(mut self, mut events: impl Source) {
        let mut batch = Vec::with_capacity(256);
        while events.next(&mut batch).await > 0 {
            let mut ended = false;
            if self.exporter.metrics.counting.load(Ordering::Relaxed) {
                self.exporter.metrics.own.on_events(batch.iter().map(|e| &**e));
            }
            for e in batch.drain(..) {
                let content = self.exporter.content;
                let tracer = self.tracer.get_or_insert_with(|| RunTracer::new(&e.run_id, content));
                if self.run_id.is_empty() {
                    self.run_id = e.run_id.to_string();
                }
                ended |= tracer.on_event(&e, &mut self.spans);
                if self.spans.count >= self.exporter.batch {
                    self.hand_over();
                }
            }
            self.hand_over();
            if ended {
                self.release().await;
            }
        }
        if let Some(tracer) = self.tracer.as_mut() {
            tracer.finish(&mut self.spans);
        }
        self.hand_over();
        self.release().await;
    }

    /// Send what the tracer wrote. The next spans go into a buffer with a little more room
    /// than this one needed: chunks are alike, and a buffer grown by doubling is copied at
    /// each step.
    fn hand_over(&mut self) {
        if self.spans.count == 0 {
            return;
        }
        let room = self.spans.bytes.len() + self.spans.bytes.len() / 4 + 4096;
        let bytes = std::mem::replace(&mut self.spans.bytes, Vec::with_capacity(room));
        self.exporter.hand_over(bytes, std::mem::take(&mut self.spans.count));
    }

    /// The segment ended: read the record once, complete the held spans, send them.
    async fn release(&mut self) {
        if self.spans.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.spans.held);
        let records = match &self.store {
            Some(store) => {
                match tokio::time::timeout(Duration::from_secs(10), store.load_steps(&self.run_id)).await {
                    Ok(Ok(records)) => records,
                    Ok(Err(e)) => {
                        tracing::debug!(
                            "OpenTelemetry export: cannot read run {}'s record: {e}",
                            self.run_id
                        );
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        let by_step: HashMap<&StepId, &StepRecord> = records.iter().map(|r| (&r.step, r)).collect();
        let content = self.exporter.content;
        let (mut bytes, mut count) = (Vec::new(), 0);
        for mut held in held {
            let mut w = SpanWriter::reopen(&mut held.bytes);
            complete(&mut w, &held.enrich, &by_step, content);
            w.finish();
            bytes.extend_from_slice(&held.bytes);
            count += 1;
            if count == self.exporter.batch {
                self.exporter.hand_over(std::mem::take(&mut bytes), std::mem::take(&mut count));
            }
        }
        self.exporter.hand_over(bytes, count);
    }
}

/// Add to a held span what the record says: a tool call's name (a held tool span has
/// none yet), id, arguments and result; a step's output.
fn complete(w: &mut SpanWriter<'_>, enrich: &Enrich, records: &HashMap<&StepId, &StepRecord>, content: bool) {
    match enrich {
        Enrich::Tool { round, index, step } => {
            let call = records.get(round).and_then(|r| r.reply.tool_calls.get(index.saturating_sub(1)));
            w.name("execute_tool", call.map(|c| c.name.as_str()));
            let Some(call) = call else { return };
            w.str("gen_ai.tool.name", &call.name);
            w.str("gen_ai.tool.call.id", &call.id);
            if !content {
                return;
            }
            w.str("gen_ai.tool.call.arguments", crate::spans::cut(&call.arguments.to_string(), 16 * 1024));
            if let Some(result) = records.get(step) {
                let text = serde_json::from_str::<ToolOutcome>(&result.reply.text)
                    .map_or_else(|_| result.reply.text.to_string(), |o| o.content);
                w.str("gen_ai.tool.call.result", crate::spans::cut(&text, 16 * 1024));
            }
        }
        Enrich::Output { step } => {
            if let Some(r) = records.get(step).filter(|_| content) {
                let reason = r.reply.outcome.finish_reason.as_deref();
                w.str("gen_ai.output.messages", &messages("assistant", &r.reply.text, reason));
            }
        }
    }
}

impl MetricsExport {
    async fn snapshot(&self) -> Vec<Metric> {
        let source = self.source.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match source {
            Some(source) => source().await,
            None => self.own.snapshot(),
        }
    }

    /// Every period, and once more when the exporter closes.
    async fn run(self: Arc<Self>, closing: CancellationToken) {
        let Some(endpoint) = self.endpoint.clone() else { return };
        let mut down = false;
        loop {
            let last = tokio::select! {
                _ = tokio::time::sleep(self.every) => false,
                _ = closing.cancelled() => true,
            };
            let body = crate::metrics::metrics_request(
                &self.service_name,
                &self.snapshot().await,
                (self.start, now_nanos()),
            );
            let answer = self.client.post(&endpoint).body(body).send().await;
            match failure(answer) {
                Some(why) if !down => {
                    down = true;
                    tracing::warn!(
                        "OpenTelemetry export: cannot send metrics to {endpoint} ({why}); runs go on (set OTEL_METRICS_EXPORTER=none to send only traces)"
                    );
                }
                Some(why) => tracing::debug!("OpenTelemetry export: metrics not sent ({why})"),
                None => down = false,
            }
            if last {
                return;
            }
        }
    }
}

/// The sending task's side.
struct Sender {
    client: reqwest::Client,
    config: OtelConfig,
    counters: Arc<Counters>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Chunk>, closing: CancellationToken) {
        let batch = self.config.batch.max(1);
        // The chunks of the next request, kept as they came: the body is made with one copy.
        let (mut parts, mut spans) = (Vec::new(), 0);
        let mut chunks = Vec::new();
        loop {
            let deadline = tokio::time::sleep(self.config.flush_every);
            tokio::pin!(deadline);
            // Fill a batch until it is full, the pause is over, or the exporter closes.
            let mut ended = false;
            while spans < batch {
                tokio::select! {
                    n = rx.recv_many(&mut chunks, 64) => if n == 0 { ended = true; break },
                    _ = &mut deadline => break,
                    _ = closing.cancelled() => break,
                }
                for c in chunks.drain(..) {
                    self.counters.queued.fetch_sub(c.spans, Ordering::Relaxed);
                    parts.push(c.bytes);
                    spans += c.spans;
                }
            }
            if closing.is_cancelled() {
                // What is queued, in batches, and no more than 64 of them.
                let mut posts = 0;
                while let Ok(c) = rx.try_recv() {
                    self.counters.queued.fetch_sub(c.spans, Ordering::Relaxed);
                    if spans >= batch {
                        self.post(std::mem::take(&mut parts), std::mem::take(&mut spans)).await;
                        posts += 1;
                    }
                    if posts >= 64 {
                        self.counters.dropped.fetch_add(c.spans as u64, Ordering::Relaxed);
                        break;
                    }
                    parts.push(c.bytes);
                    spans += c.spans;
                }
                if spans > 0 {
                    self.post(parts, spans).await;
                }
                return;
            }
            if spans > 0 {
                self.post(std::mem::take(&mut parts), std::mem::take(&mut spans)).await;
            }
            if ended {
                return;
            }
        }
    }

    async fn post(&self, parts: Vec<Vec<u8>>, n: usize) {
        let n = n as u64;
        // The head, then the spans as they were encoded: no copy of a batch into one body.
        let head = proto::request_head(&self.config.service_name, &parts);
        let len = head.len() + parts.iter().map(Vec::len).sum::<usize>();
        let pieces =
            std::iter::once(head).chain(parts).map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from(p)));
        let answer = (self.client.post(&self.config.traces_endpoint))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
            .await;
        match failure(answer) {
            None => {
                self.counters.exported.fetch_add(n, Ordering::Relaxed);
                if self.counters.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "OpenTelemetry export: the collector at {} answers again",
                        self.config.traces_endpoint
                    );
                }
            }
            Some(why) => {
                self.counters.failed.fetch_add(n, Ordering::Relaxed);
                if !self.counters.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "OpenTelemetry export: cannot send spans to {} ({why}); runs go on, their spans are dropped until it answers (is the collector running? check --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT)",
                        self.config.traces_endpoint
                    );
                } else {
                    tracing::debug!("OpenTelemetry export: {n} spans not sent ({why})");
                }
            }
        }
    }
}

/// Why a POST to the collector failed, or `None` when it was taken: spans and metrics
/// report a collector's answer alike.
fn failure(answer: Result<reqwest::Response, reqwest::Error>) -> Option<String> {
    match answer {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("it answered {}", r.status())),
        Err(e) if e.is_timeout() => Some("it did not answer in time".to_string()),
        Err(e) => Some(without_url(&e)),
    }
}

/// A reqwest error's text without its URL (which may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the endpoint");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
