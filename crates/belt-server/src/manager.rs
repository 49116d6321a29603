//! The runs this server drives: admission (a cap on running runs, a bounded queue), the
//! live event log of each run, cancellation and shutdown.
//!
//! The queue is in the store. A run that waits for a slot is recorded as
//! [`RunStatus::Queued`], with its whole definition (the `RunSpec`), before its request is
//! answered; when a slot frees, the oldest queued run is taken from the store
//! ([`RunStore::take_queued`], which makes it `running` under this server's lease) and
//! started. So a run accepted is never only in this process's memory: a server that stops or
//! dies leaves its queued runs queued, and the next one started on the same store
//! ([`RunManager::restore_queued`]) — or `belt resume ID`, or later a worker — takes them up.
//! The queue in memory only keeps this server's order and the prepared runs.
//!
//! A run's events are read once from its [`RunHandle`] by a pump task and appended to the
//! run's [`EventLog`]; every SSE subscriber, webhook and metric reads from there, so a
//! thousand subscribers cost one channel, not a thousand. Once a run has finished, its
//! result and events are in the store and the run leaves the registry; from then on every
//! reader goes to the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use belt_app::{App, Prepared, RunSpec};
use belt_core::store::{CancelRequest, RunRecord, RunStore, StoreError};
use belt_core::{Event, EventKind, RunHandle, RunResult, RunStatus};
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// How many runs execute at once, and how many may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_running: usize,
    pub max_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_running: 8, max_queued: 64 }
    }
}

/// Something that sees every event of every run this server drives (webhooks, metrics).
/// Called on the run's pump task: it must not block.
pub trait EventObserver: Send + Sync + 'static {
    fn on_event(&self, event: &Arc<Event>);

    /// A batch of one run's events, in order, as the server reads them. An observer that
    /// hands events to another task overrides it to hand over the batch at once (one send
    /// and wake-up, not one per event).
    fn on_events(&self, events: &[Arc<Event>]) {
        events.iter().for_each(|e| self.on_event(e));
    }
}

/// Where a run of this server is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a run slot; recorded in the store as queued.
    Queued,
    Running,
    Finished(RunStatus),
    /// Never started: cancelled while queued, or its launch failed (recorded in the store
    /// with this status and reason as its result, when the store could be written).
    NotStarted {
        status: RunStatus,
        reason: String,
    },
}

/// A run this server accepted and has not yet seen finish.
pub struct LiveRun {
    pub run_id: String,
    /// The run's spec as prepared (what the store records once it starts).
    pub spec: RunSpec,
    pub pattern: String,
    pub task: String,
    pub created_at: DateTime<Utc>,
    state: Mutex<LiveState>,
    pub(crate) log: Arc<EventLog>,
}

struct LiveState {
    phase: Phase,
    /// The checked run, until it starts.
    prepared: Option<Prepared>,
    /// Cancels the run in the engine, once it started.
    engine: Option<CancellationToken>,
    /// Asked to cancel (also before it started).
    cancelled: CancellationToken,
}

impl LiveRun {
    fn new(run_id: String, prepared: Prepared, created_at: DateTime<Utc>) -> Self {
        LiveRun {
            run_id,
            spec: prepared.spec.clone(),
            pattern: prepared.orchestrator.name().to_string(),
            task: prepared.task.description.clone(),
            created_at,
            state: Mutex::new(LiveState {
                phase: Phase::Queued,
                prepared: Some(prepared),
                engine: None,
                cancelled: CancellationToken::new(),
            }),
            log: Arc::new(EventLog::default()),
        }
    }

    /// The run as the store records it while it waits: its whole definition, no lease.
    fn queued_record(&self) -> RunRecord {
        let state = self.lock();
        let definition = state
            .prepared
            .as_ref()
            .and_then(|p| p.options.definition.clone())
            .unwrap_or_else(|| self.spec.to_definition());
        RunRecord {
            run_id: self.run_id.clone(),
            pattern: self.pattern.clone(),
            task: self.task.clone(),
            status: RunStatus::Queued,
            started_at: self.created_at,
            definition: Arc::from(definition),
        }
    }

    /// What the store keeps of this run if it never starts.
    fn not_started_result(&self, status: RunStatus, reason: &str) -> RunResult {
        RunResult::not_started(&self.run_id, &self.pattern, &self.task, self.created_at, status, reason)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    /// Ask the run to stop: a queued run never starts, a running one is cancelled in the
    /// engine (completed steps stay recorded, the run can be resumed). A queued run is
    /// recorded as cancelled by [`RunManager::cancel`], which calls this.
    pub fn cancel(&self) {
        let state = self.lock();
        state.cancelled.cancel();
        if let Some(engine) = &state.engine {
            engine.cancel();
        }
    }

    fn set_running(&self, engine: CancellationToken) {
        let mut state = self.lock();
        if state.cancelled.is_cancelled() {
            engine.cancel();
        }
        state.engine = Some(engine);
        state.phase = Phase::Running;
    }

    fn set_not_started(&self, status: RunStatus, reason: String) {
        self.lock().phase = Phase::NotStarted { status, reason };
        self.log.close();
    }
}

/// The events of one live run, in order, shared by all its readers.
#[derive(Default)]
pub(crate) struct EventLog {
    events: Mutex<Vec<Arc<Event>>>,
    closed: AtomicBool,
    /// Bumped on every append and on close; readers wait on it.
    version: watch::Sender<u64>,
}

impl EventLog {
    fn append(&self, batch: &[Arc<Event>]) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(batch);
        self.version.send_modify(|v| *v += 1);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.version.send_modify(|v| *v += 1);
    }

    /// Sequence number of the first event held, if any.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).first().map(|e| e.seq)
    }

    /// True once `run_finished` was emitted (the result may not be stored yet).
    fn finishing(&self) -> bool {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).last().is_some_and(|e| is_last(e))
    }

    /// Wait until the log is closed (the run's result is in the store).
    async fn closed(&self) {
        let mut version = self.version.subscribe();
        while !self.closed.load(Ordering::SeqCst) {
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn cursor(self: &Arc<Self>) -> LogCursor {
        LogCursor { log: self.clone(), version: self.version.subscribe(), next: 0 }
    }
}

/// A reader's position in an [`EventLog`].
pub(crate) struct LogCursor {
    log: Arc<EventLog>,
    version: watch::Receiver<u64>,
    next: usize,
}

impl LogCursor {
    /// The events appended since the last call (at least one), or `None` once the log is
    /// closed and read to its end.
    pub(crate) async fn next_batch(&mut self) -> Option<Vec<Arc<Event>>> {
        loop {
            self.version.borrow_and_update();
            // Closed is read before the events: everything appended before the close is
            // then seen by this read.
            let closed = self.log.closed.load(Ordering::SeqCst);
            let batch: Vec<Arc<Event>> = {
                let events = self.log.events.lock().unwrap_or_else(|p| p.into_inner());
                events.get(self.next..).map(<[_]>::to_vec).unwrap_or_default()
            };
            if !batch.is_empty() {
                self.next += batch.len();
                return Some(batch);
            }
            if closed || self.version.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Every run of this server that has not finished, and the slots they run in.
pub struct RunManager {
    app: Arc<App>,
    store: Arc<dyn RunStore>,
    owner: String,
    limits: Limits,
    /// What requests leave out (see [`crate::ServerConfig::defaults`]).
    defaults: serde_json::Map<String, serde_json::Value>,
    stream_deltas: bool,
    /// See [`crate::ServerConfig::execute`].
    execute: bool,
    runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    slots: Arc<Semaphore>,
    /// Places taken in the queue (counted before a run is recorded, so that concurrent
    /// requests cannot overfill it).
    queued: AtomicUsize,
    /// The queued runs this server holds, oldest first (each also queued in the store).
    queue: Mutex<VecDeque<Arc<LiveRun>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    observers: Vec<Arc<dyn EventObserver>>,
    approvals: Arc<crate::approvals::Approvals>,
}

impl RunManager {
    pub fn new(
        app: Arc<App>,
        store: Arc<dyn RunStore>,
        config: &crate::ServerConfig,
        observers: Vec<Arc<dyn EventObserver>>,
    ) -> Arc<Self> {
        let limits = config.limits;
        let defaults = match serde_json::to_value(&config.defaults) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Arc::new(RunManager {
            app,
            store,
            owner: config.owner.clone(),
            limits,
            defaults,
            stream_deltas: config.stream_deltas,
            execute: config.execute,
            runs: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limits.max_running.max(1))),
            queued: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            observers,
            approvals: Arc::default(),
        })
    }

    /// What prepares this server's runs.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The open questions of this server's runs.
    pub fn approvals(&self) -> &Arc<crate::approvals::Approvals> {
        &self.approvals
    }

    pub fn store(&self) -> &Arc<dyn RunStore> {
        &self.store
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs executing now, and runs waiting for a slot.
    pub fn load(&self) -> (usize, usize) {
        let queued = self.queued.load(Ordering::SeqCst);
        let running = self.limits.max_running.max(1) - self.slots.available_permits();
        (running, queued)
    }

    /// A run of this server that has not finished.
    pub fn get(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).get(run_id).cloned()
    }

    /// A run that has emitted `run_finished` stores its result a moment later: wait for
    /// that (a little while at most), so that a client that saw the event and asks for the
    /// run gets its result.
    pub async fn settle(&self, run_id: &str) {
        if let Some(run) = self.get(run_id)
            && run.log.finishing()
        {
            let _ = tokio::time::timeout(SETTLE, run.log.closed()).await;
        }
    }

    /// [`RunManager::settle`] for a run another process drives: once its `run_finished` is in
    /// the store, its result follows a moment later (the driver records its events first);
    /// wait for it (a little while at most), so that a client that saw the event gets the
    /// result from this node too.
    pub async fn settle_stored(&self, run_id: &str) {
        let Ok(last) = self.store.last_seq(run_id).await else { return };
        let Ok(events) = self.store.events(run_id, last.saturating_sub(1)).await else { return };
        if !events.last().is_some_and(|e| is_last(e)) {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        while tokio::time::Instant::now() < deadline {
            if !matches!(self.store.get_result(run_id).await, Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every run held in memory: unfinished ones and those that never started.
    pub fn live(&self) -> Vec<Arc<LiveRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The spec of a request: what it leaves out taken from the server's defaults, checked
    /// and prepared by belt-app (refused with its message, 422).
    pub fn prepare(&self, request: RunSpec) -> Result<Prepared, ApiError> {
        if request.out.is_some() {
            return Err(ApiError::Invalid(
                "out: a run started over HTTP or MCP writes no files on the server; leave `out` out and fetch \
                 its reports at GET /v1/runs/{id}/documents/{format}"
                    .into(),
            ));
        }
        let spec = self.with_defaults(request)?;
        self.app.prepare(&spec).map_err(|e| ApiError::Invalid(e.to_string()))
    }

    /// `request` with each field it leaves out taken from the server's defaults. (Merged as
    /// JSON objects: a spec serializes only the fields it sets.)
    fn with_defaults(&self, request: RunSpec) -> Result<RunSpec, ApiError> {
        if self.defaults.is_empty() {
            return Ok(request);
        }
        let Ok(serde_json::Value::Object(given)) = serde_json::to_value(&request) else { return Ok(request) };
        let mut merged = self.defaults.clone();
        // A workflow's file decides what it runs; only settings come from the defaults. A
        // request's `model` takes the place of the file's default model, the server's only
        // fills in where the file names none.
        if given.contains_key("workflow") {
            for key in ["task", "pattern", "plan"] {
                merged.remove(key);
            }
            if !self.app.needs_default_model(&request) {
                merged.remove("model");
            }
        }
        merged.extend(given);
        serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ApiError::Invalid(format!("the server's defaults do not fit this request: {e}")))
    }

    /// Accept a request: check it, then start it now if a slot is free and nothing waits,
    /// else queue it — recorded in the store as queued before this returns, so that a run
    /// answered with 202 outlives this process. Refused when the request is invalid (422),
    /// the queue is full (429), or the store cannot record it (500).
    pub async fn submit(self: &Arc<Self>, request: RunSpec) -> Result<Arc<LiveRun>, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let prepared = self.prepare(request)?;
        let run = Arc::new(LiveRun::new(uuid::Uuid::now_v7().to_string(), prepared, Utc::now()));
        if !self.execute {
            // For the workers: recorded as queued, and from then on read from the store.
            self.store.put_run(&run.queued_record()).await.map_err(|e| {
                ApiError::Internal(format!("the run could not be queued: recording it failed ({e})"))
            })?;
            return Ok(run);
        }
        // A run starts at once only when no run waits before it.
        if self.queued.load(Ordering::SeqCst) == 0
            && let Ok(permit) = self.slots.clone().try_acquire_owned()
        {
            self.insert(&run);
            if let Err(e) = self.start(&run, permit).await {
                self.remove(&run.run_id);
                return Err(ApiError::Internal(e));
            }
            return Ok(run);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.limits.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::TooMany {
                message: format!(
                    "{} runs are running and {} are waiting, the most this server takes; retry later",
                    self.limits.max_running, self.limits.max_queued
                ),
                retry_after_secs: QUEUE_RETRY_AFTER.as_secs(),
            });
        }
        if let Err(e) = self.store.put_run(&run.queued_record()).await {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Internal(format!(
                "the run could not be queued: recording it failed ({e}); nothing was started"
            )));
        }
        self.insert(&run);
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(run.clone());
        self.dispatch();
        Ok(run)
    }

    /// Take up the runs the store holds as queued — accepted by a server that stopped or died
    /// before starting them — after this server's own, oldest first, under its limits (they
    /// were accepted already: they may fill the queue beyond `max_queued`, and new requests
    /// then wait). A run whose stored definition no longer prepares (belt.toml changed, a key
    /// is gone) is recorded as failed with the reason. Returns how many were taken up.
    pub async fn restore_queued(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut restored = 0;
        if !self.execute {
            return Ok(0);
        }
        for record in self.store.queued_runs(usize::MAX).await? {
            if self.get(&record.run_id).is_some() {
                continue;
            }
            let prepared = RunSpec::from_definition(&record.definition)
                .and_then(|spec| self.app.prepare(&spec).map_err(|e| e.to_string()));
            match prepared {
                Ok(prepared) => {
                    let run = Arc::new(LiveRun::new(record.run_id.clone(), prepared, record.started_at));
                    self.queued.fetch_add(1, Ordering::SeqCst);
                    self.insert(&run);
                    self.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(run);
                    restored += 1;
                }
                Err(e) => {
                    let reason = format!("its recorded definition no longer prepares: {e}");
                    tracing::warn!(run_id = %record.run_id, "queued run not restored: {reason}");
                    if self.store.take_queued(&record.run_id, &self.owner).await? {
                        let failed = record.not_started(RunStatus::Failed, &reason);
                        self.store.finish_run(&failed).await?;
                    }
                }
            }
        }
        if restored > 0 {
            tracing::info!(restored, "queued runs taken up from the store");
        }
        self.dispatch();
        Ok(restored)
    }

    /// Start queued runs, oldest first, while slots are free.
    fn dispatch(self: &Arc<Self>) {
        while !self.shutdown.is_cancelled() {
            // A slot first, then a run: a run leaves the queue only for a slot.
            let Ok(permit) = self.slots.clone().try_acquire_owned() else { return };
            let Some(run) = self.queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else { return };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            let me = self.clone();
            self.tasks.spawn(async move { me.launch(run, permit).await });
        }
    }

    /// Take a queued run from the store and start it in `permit`'s slot.
    async fn launch(self: Arc<Self>, run: Arc<LiveRun>, permit: OwnedSemaphorePermit) {
        // Shutting down: the run stays queued in the store for the next server.
        if self.shutdown.is_cancelled() {
            return;
        }
        match self.store.take_queued(&run.run_id, &self.owner).await {
            Ok(true) => {}
            // Another process took it (`belt resume`, another server), or it was cancelled
            // or removed: it is not this server's to run.
            Ok(false) => {
                self.forget(&run.run_id);
                drop(permit);
                return self.dispatch();
            }
            Err(e) => {
                drop(permit);
                run.set_not_started(
                    RunStatus::Failed,
                    format!("the run could not be taken from the store: {e}"),
                );
                return self.dispatch();
            }
        }
        if run.lock().cancelled.is_cancelled() {
            drop(permit);
            self.end_not_started(&run, RunStatus::Cancelled, "cancelled while waiting for a run slot").await;
            return self.dispatch();
        }
        if let Err(e) = self.start(&run, permit).await {
            self.end_not_started(&run, RunStatus::Failed, &e).await;
            self.dispatch();
        }
    }

    /// Record that a run this server took never started, and why.
    async fn end_not_started(&self, run: &LiveRun, status: RunStatus, reason: &str) {
        if let Err(e) = self.store.finish_run(&run.not_started_result(status, reason)).await {
            tracing::warn!(run_id = %run.run_id, "could not record that the run {status}: {e}");
        }
        run.set_not_started(status, reason.to_string());
    }

    /// Cancel a run of this server: a queued one leaves the queue and is recorded as
    /// cancelled before this returns; a running one is cancelled in the engine.
    pub async fn cancel(self: &Arc<Self>, run: &Arc<LiveRun>) {
        run.cancel();
        let was_queued = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let at = queue.iter().position(|r| Arc::ptr_eq(r, run));
            at.and_then(|i| queue.remove(i)).is_some()
        };
        if !was_queued {
            // Running, or just taken from the queue: `launch` and the engine see the token.
            return;
        }
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let reason = "cancelled while waiting for a run slot";
        match self.store.take_queued(&run.run_id, &self.owner).await {
            Ok(true) => self.end_not_started(run, RunStatus::Cancelled, reason).await,
            // Taken by another process meanwhile: not this server's to end.
            Ok(false) => self.forget(&run.run_id),
            Err(e) => {
                tracing::warn!(run_id = %run.run_id, "could not record the cancellation: {e}");
                run.set_not_started(RunStatus::Cancelled, reason.to_string());
            }
        }
    }

    /// Cancel a run this server does not hold, through the store: a queued one is recorded
    /// as cancelled here; a running one's driver (another server, a worker) sees the request
    /// at its next heartbeat. What the store said, for the answer.
    pub async fn cancel_stored(&self, record: &RunRecord) -> Result<CancelRequest, StoreError> {
        let request = self.store.request_cancel(&record.run_id).await?;
        if request == CancelRequest::WasQueued {
            let result = record.not_started(RunStatus::Cancelled, "cancelled while waiting for a run slot");
            self.store.finish_run(&result).await?;
        }
        Ok(request)
    }

    /// Start a run in its slot and pump its events until it ends.
    async fn start(self: &Arc<Self>, run: &Arc<LiveRun>, permit: OwnedSemaphorePermit) -> Result<(), String> {
        let Some(mut prepared) = run.lock().prepared.take() else {
            return Err(format!("run {} was started twice", run.run_id));
        };
        let options = &mut prepared.options;
        options.store = Some(self.store.clone());
        options.run_id = Some(run.run_id.clone());
        options.owner = Some(self.owner.clone());
        // Live views show agents' text as it streams.
        options.stream_deltas = self.stream_deltas;
        // Questions for people go to GET /v1/approvals, unless the spec approves everything.
        let spec = &prepared.spec;
        options.human = Some(if spec.approve_all {
            belt_app::hitl::approve_all(spec.hitl_timeout)
        } else {
            belt_app::hitl::with_max_wait(self.approvals.channel(&run.run_id), spec.hitl_timeout)
        });
        let mut handle: RunHandle = match prepared.start().await {
            Ok(h) => h,
            Err(e) => {
                self.approvals.finish(&run.run_id);
                return Err(e.to_string());
            }
        };
        let Some(mut events) = handle.events() else {
            handle.cancel();
            return Err("the run's event stream was taken before the server read it".into());
        };
        run.set_running(handle.cancellation());
        if self.shutdown.is_cancelled() {
            handle.cancel();
        }
        let me = self.clone();
        let run = run.clone();
        self.tasks.spawn(async move {
            let slot = permit;
            let mut batch = Vec::with_capacity(256);
            while events.recv_batch(&mut batch, 4096).await > 0 {
                for observer in &me.observers {
                    observer.on_events(&batch);
                }
                run.log.append(&batch);
                batch.clear();
            }
            // Returns once the result is in the store, so readers can switch to it.
            let result = handle.result().await;
            me.approvals.finish(&run.run_id);
            run.lock().phase = Phase::Finished(result.status);
            run.log.close();
            me.remove(&run.run_id);
            // The slot is free: the next queued run takes it.
            drop(slot);
            me.dispatch();
        });
        Ok(())
    }

    fn insert(&self, run: &Arc<LiveRun>) {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).insert(run.run_id.clone(), run.clone());
    }

    /// Drop a run from this server's registry, whatever its phase (another process has it).
    fn forget(&self, run_id: &str) {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).remove(run_id);
    }

    fn remove(&self, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Runs that never started stay listed (they are nowhere else); the others are in
        // the store now.
        if runs.get(run_id).is_some_and(|r| !matches!(r.phase(), Phase::NotStarted { .. })) {
            runs.remove(run_id);
        }
    }

    /// Stop taking runs, cancel every running run (each records what it finished; `belt
    /// resume` continues it) and end live streams; returns at once. Queued runs stay queued
    /// in the store, for the next server on it (or `belt resume`).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        for run in self.live() {
            if run.phase() != Phase::Queued {
                run.cancel();
            }
        }
    }

    /// [`RunManager::begin_shutdown`], then wait up to `grace` for the runs to be recorded.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("some runs did not stop within {grace:?}; they will show as interrupted");
        }
    }
}

/// Longest a request waits for a finishing run's result to be stored.
const SETTLE: Duration = Duration::from_secs(10);

/// What a client is told to wait when the queue is full.
pub const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// True for the last event of a run.
pub(crate) fn is_last(event: &Event) -> bool {
    matches!(event.kind, EventKind::RunFinished { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> Arc<RunManager> {
        manager_on(Arc::new(belt_core::MemoryStore::new()), Limits::default())
    }

    fn manager_on(store: Arc<dyn RunStore>, limits: Limits) -> Arc<RunManager> {
        let app = Arc::new(App::new(belt_app::Config::default()).with_env(Arc::new(|_| None)));
        let mut config = crate::ServerConfig::new("token");
        config.defaults.model = Some("simulated/default".into());
        config.limits = limits;
        RunManager::new(app, store, &config, Vec::new())
    }

    /// Two agents, 100 ms a call: a run that lasts a few tenths of a second.
    fn slow(task: &str) -> RunSpec {
        let mut r = RunSpec::new(task);
        r.agents = Some(2);
        r.sim_latency_ms = Some(100);
        r
    }

    async fn result_of(store: &Arc<dyn RunStore>, run_id: &str) -> belt_core::RunResult {
        for _ in 0..300 {
            if let Some(result) = store.get_result(run_id).await.unwrap() {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {run_id} did not finish");
    }

    /// A queued run is in the store before `submit` returns; cancelled, it is recorded as
    /// cancelled; a server that stops leaves the rest queued, and the next one on the store
    /// runs them (a run whose definition no longer prepares is recorded as failed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_in_the_store_and_outlives_the_server() {
        let store: Arc<dyn RunStore> = Arc::new(belt_core::MemoryStore::new());
        let limits = Limits { max_running: 1, max_queued: 2 };
        let m = manager_on(store.clone(), limits);
        let a = m.submit(slow("a")).await.unwrap();
        let b = m.submit(slow("b")).await.unwrap();
        let c = m.submit(slow("c")).await.unwrap();
        assert_eq!((a.phase(), b.phase(), c.phase()), (Phase::Running, Phase::Queued, Phase::Queued));
        let queued = store.queued_runs(10).await.unwrap();
        assert_eq!(queued.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [&b.run_id, &c.run_id]);
        let spec = RunSpec::from_definition(&queued[0].definition).unwrap();
        assert_eq!((spec.task.as_str(), spec.model.as_deref()), ("b", Some("simulated/default")));
        assert!(matches!(m.submit(slow("d")).await, Err(ApiError::TooMany { .. })));

        m.cancel(&b).await;
        let cancelled = store.get_result(&b.run_id).await.unwrap().expect("recorded at once");
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        assert!(matches!(b.phase(), Phase::NotStarted { status: RunStatus::Cancelled, .. }));
        assert_eq!(m.load().1, 1);

        m.shutdown(Duration::from_secs(10)).await;
        assert_eq!(store.get_result(&a.run_id).await.unwrap().unwrap().status, RunStatus::Cancelled);
        let left = store.queued_runs(10).await.unwrap();
        assert_eq!(left.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [&c.run_id]);

        // Queued by an older server, with a model this one does not know.
        let mut stale = left[0].clone();
        stale.run_id = "stale".into();
        stale.definition = Arc::from(r#"{"task":"s","model":"nope/model"}"#);
        store.put_run(&stale).await.unwrap();
        let m2 = manager_on(store.clone(), limits);
        assert_eq!(m2.restore_queued().await.unwrap(), 1);
        let failed = store.get_result("stale").await.unwrap().expect("recorded as failed");
        assert_eq!(failed.status, RunStatus::Failed);
        assert!(failed.stop_reason.contains("no longer prepares"), "{}", failed.stop_reason);
        let done = result_of(&store, &c.run_id).await;
        assert_eq!((done.status, done.task.as_str()), (RunStatus::Completed, "c"));
        assert!(store.queued_runs(10).await.unwrap().is_empty());
    }

    /// Queued runs start in the order they were accepted, whatever order their tasks would
    /// be scheduled in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_runs_start_oldest_first() {
        let store: Arc<dyn RunStore> = Arc::new(belt_core::MemoryStore::new());
        let m = manager_on(store.clone(), Limits { max_running: 1, max_queued: 8 });
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(m.submit(slow(&format!("t{i}"))).await.unwrap().run_id.clone());
        }
        let mut starts = Vec::new();
        for id in &ids {
            let r = result_of(&store, id).await;
            assert_eq!(r.status, RunStatus::Completed);
            starts.push(r.started_at.unwrap());
        }
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    }

    #[test]
    fn requests_take_what_they_leave_out_from_the_server_defaults() {
        let mut r = RunSpec::new("-starts with a dash");
        r.agents = Some(12);
        r.budget_usd = Some(0.5);
        let p = manager().prepare(r).unwrap();
        assert_eq!(p.spec.task, "-starts with a dash");
        assert_eq!(p.spec.agents, Some(12));
        assert_eq!(p.options.budget.max_cost_usd, Some(0.5));
        assert_eq!(p.spec.model.as_deref(), Some("simulated/default"));
        assert_eq!(p.options.concurrency, 16);
        assert_eq!(p.orchestrator.name(), "cascade");
        // The request's own model wins over the default.
        let mut r = RunSpec::new("x");
        r.model = Some("simulated/other".into());
        assert_eq!(manager().prepare(r).unwrap().spec.model.as_deref(), Some("simulated/other"));
    }

    #[test]
    fn the_servers_model_fills_in_for_a_workflow_but_does_not_replace_its_model() {
        let file = |defaults: &str| {
            format!(
                "name: w\ndefaults: {{{defaults}}}\nagents:\n  - {{id: a, role: a writer}}\npattern: sequential\n\
                 steps:\n  - {{id: s, agent: a, prompt: Write}}\n"
            )
        };
        let with = |text: String| RunSpec { workflow: Some(text), ..RunSpec::default() };
        // The file names its model: the server's default does not take its place.
        let named = manager().prepare(with(file("model: simulated/filed"))).unwrap();
        assert_eq!(named.spec.model, None);
        // It names none: the server's default serves.
        let open = manager().prepare(with(file("concurrency: 2"))).unwrap();
        assert_eq!(open.spec.model.as_deref(), Some("simulated/default"));
        // A request's own model takes the place of the file's.
        let mut r = with(file("model: simulated/filed"));
        r.model = Some("simulated/asked".into());
        assert_eq!(manager().prepare(r).unwrap().spec.model.as_deref(), Some("simulated/asked"));
    }

    #[test]
    fn bad_requests_are_refused_with_the_field_named() {
        let m = manager();
        let check = |r: RunSpec| m.prepare(r).err().map(|e| e.to_string()).unwrap_or_default();
        let mut r = RunSpec::new("x");
        r.group_size = Some(1);
        assert!(check(r).contains("group_size"));
        let mut r = RunSpec::new("x");
        r.pattern = Some("nope".into());
        assert!(check(r).contains("unknown pattern"));
        let mut r = RunSpec::new("x");
        r.model = Some("nope/model".into());
        assert!(check(r).contains("unknown provider"));
        assert!(check(RunSpec::new("  ")).contains("task is empty"));
        let r = RunSpec { workflow: Some("[workflow]".into()), ..RunSpec::default() };
        assert!(check(r).contains("workflow"));
        let mut r = RunSpec::new("x");
        r.out = Some("/etc".into());
        assert!(check(r).contains("writes no files on the server"));
        assert!(m.prepare(RunSpec::new("fine")).is_ok());
        assert!(crate::api::PatternList::of(m.app()).patterns.iter().any(|p| p.name == "cascade"));
    }
}
