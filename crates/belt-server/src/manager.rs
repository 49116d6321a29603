//! The runs this server drives: admission (a cap on running runs, a bounded queue), the
//! live event log of each run, cancellation and shutdown.
//!
//! A run's events are read once from its [`RunHandle`] by a pump task and appended to the
//! run's [`EventLog`]; every SSE subscriber, webhook and metric reads from there, so a
//! thousand subscribers cost one channel, not a thousand. Once a run has finished, its
//! result and events are in the store and the run leaves the registry; from then on every
//! reader goes to the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use belt_core::store::RunStore;
use belt_core::{Event, EventKind, RunHandle, RunOptions, RunStatus};
use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;
use crate::launcher::{LaunchError, Launcher, RunRequest};

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
}

/// Where a run of this server is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Waiting for a run slot; nothing is recorded in the store yet.
    Queued,
    Running,
    Finished(RunStatus),
    /// Never started: cancelled while queued, or its launch failed. Only in memory.
    NotStarted {
        status: RunStatus,
        reason: String,
    },
}

/// A run this server accepted and has not yet seen finish.
pub struct LiveRun {
    pub run_id: String,
    pub request: RunRequest,
    pub created_at: DateTime<Utc>,
    state: Mutex<LiveState>,
    pub(crate) log: Arc<EventLog>,
}

struct LiveState {
    phase: Phase,
    /// Cancels the run in the engine, once it started.
    engine: Option<CancellationToken>,
    /// Asked to cancel (also before it started).
    cancelled: CancellationToken,
}

impl LiveRun {
    fn new(run_id: String, request: RunRequest) -> Self {
        LiveRun {
            run_id,
            request,
            created_at: Utc::now(),
            state: Mutex::new(LiveState {
                phase: Phase::Queued,
                engine: None,
                cancelled: CancellationToken::new(),
            }),
            log: Arc::new(EventLog::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase.clone()
    }

    /// Ask the run to stop: a queued run never starts, a running one is cancelled in the
    /// engine (completed steps stay recorded, the run can be resumed).
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
    launcher: Arc<dyn Launcher>,
    store: Arc<dyn RunStore>,
    owner: String,
    limits: Limits,
    runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    observers: Vec<Arc<dyn EventObserver>>,
    approvals: Arc<crate::approvals::Approvals>,
}

impl RunManager {
    pub fn new(
        launcher: Arc<dyn Launcher>,
        store: Arc<dyn RunStore>,
        owner: String,
        limits: Limits,
        observers: Vec<Arc<dyn EventObserver>>,
    ) -> Arc<Self> {
        Arc::new(RunManager {
            launcher,
            store,
            owner,
            limits,
            runs: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limits.max_running.max(1))),
            queued: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            observers,
            approvals: Arc::default(),
        })
    }

    pub fn launcher(&self) -> &Arc<dyn Launcher> {
        &self.launcher
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

    /// Every run held in memory: unfinished ones and those that never started.
    pub fn live(&self) -> Vec<Arc<LiveRun>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Accept a request: check it, then start it now if a slot is free, else queue it.
    /// Refused when the request is invalid (422), or the queue is full (429).
    pub async fn submit(self: &Arc<Self>, request: RunRequest) -> Result<Arc<LiveRun>, ApiError> {
        if self.shutdown.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        self.launcher.check(&request)?;
        let run = Arc::new(LiveRun::new(uuid::Uuid::now_v7().to_string(), request));
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            self.insert(&run);
            if let Err(e) = self.start(&run, permit).await {
                self.remove(&run.run_id);
                return Err(e.into());
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
        self.insert(&run);
        let me = self.clone();
        let queued = run.clone();
        self.tasks.spawn(async move {
            let cancelled = queued.lock().cancelled.clone();
            let permit = tokio::select! {
                p = me.slots.clone().acquire_owned() => p.ok(),
                _ = cancelled.cancelled() => None,
                _ = me.shutdown.cancelled() => None,
            };
            me.queued.fetch_sub(1, Ordering::SeqCst);
            match permit {
                None if me.shutdown.is_cancelled() => queued.set_not_started(
                    RunStatus::Cancelled,
                    "the server shut down before the run started".into(),
                ),
                None => queued
                    .set_not_started(RunStatus::Cancelled, "cancelled while waiting for a run slot".into()),
                Some(permit) => {
                    if let Err(e) = me.start(&queued, permit).await {
                        queued.set_not_started(RunStatus::Failed, e.to_string());
                    }
                }
            }
        });
        Ok(run)
    }

    /// Launch a run in its slot and pump its events until it ends.
    async fn start(
        self: &Arc<Self>,
        run: &Arc<LiveRun>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), LaunchError> {
        let mut base = RunOptions::default().with_store(self.store.clone());
        base.run_id = Some(run.run_id.clone());
        base.owner = Some(self.owner.clone());
        // Live views show agents' text as it streams.
        base.stream_deltas = true;
        // Questions for people go to GET /v1/approvals.
        base.human = Some(self.approvals.channel(&run.run_id));
        let mut handle: RunHandle = match self.launcher.launch(&run.request, base).await {
            Ok(h) => h,
            Err(e) => {
                self.approvals.finish(&run.run_id);
                return Err(e);
            }
        };
        if handle.run_id() != run.run_id {
            handle.cancel();
            return Err(LaunchError::Failed(format!(
                "the launcher started run {} instead of {}; it must keep the run id of its base options",
                handle.run_id(),
                run.run_id
            )));
        }
        let Some(mut events) = handle.events() else {
            handle.cancel();
            return Err(LaunchError::Failed(
                "the launcher took the run's event stream; leave it to the server".into(),
            ));
        };
        run.set_running(handle.cancellation());
        if self.shutdown.is_cancelled() {
            handle.cancel();
        }
        let me = self.clone();
        let run = run.clone();
        self.tasks.spawn(async move {
            let _slot = permit;
            let mut batch = Vec::with_capacity(256);
            while events.recv_batch(&mut batch, 4096).await > 0 {
                for observer in &me.observers {
                    for e in &batch {
                        observer.on_event(e);
                    }
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
        });
        Ok(())
    }

    fn insert(&self, run: &Arc<LiveRun>) {
        self.runs.lock().unwrap_or_else(|p| p.into_inner()).insert(run.run_id.clone(), run.clone());
    }

    fn remove(&self, run_id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Runs that never started stay listed (they are nowhere else); the others are in
        // the store now.
        if runs.get(run_id).is_some_and(|r| !matches!(r.phase(), Phase::NotStarted { .. })) {
            runs.remove(run_id);
        }
    }

    /// Stop taking runs, cancel every run (each records what it finished; `belt resume`
    /// continues it), end live streams, and wait up to `grace` for the runs to be recorded.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        for run in self.live() {
            run.cancel();
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            eprintln!("belt: some runs did not stop within {grace:?}; they will show as interrupted");
        }
    }
}

/// What a client is told to wait when the queue is full.
pub const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// True for the last event of a run.
pub(crate) fn is_last(event: &Event) -> bool {
    matches!(event.kind, EventKind::RunFinished { .. })
}
