//! Workload Q: the cascade's calls straight on the simulated provider, without the engine.
//!
//! B's figure counts the simulated provider's own work: it hashes every request and writes
//! every reply, and a cascade's merges send prompts of five outputs each. P measures that
//! share for A, whose requests its caller builds. B's requests are built by belt's cascade,
//! so they cannot be made without belt. Q therefore runs B once, unmeasured, with a provider
//! that records every request it is sent. It then sends the same requests again straight to
//! a simulated provider of the same settings, C at a time, and measures only that. B's CPU
//! per call less Q's is what the engine, the cascade included, spends per call.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use belt_core::llm::{CallInfo, Capabilities, RateLimits};
use belt_core::{LlmError, LlmProvider, LlmReply, LlmRequest, Price};
use belt_llm::SimulatedProvider;
use futures::StreamExt;

use crate::{Args, cpu_seconds, drive, median, round};

/// The simulated provider, keeping a copy of every call it answers.
struct Recorder {
    inner: SimulatedProvider,
    calls: Mutex<Vec<(String, LlmRequest, CallInfo)>>,
}

#[async_trait]
impl LlmProvider for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn price(&self, model: &str) -> Option<Price> {
        self.inner.price(model)
    }
    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }
    async fn complete(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
    ) -> Result<LlmReply, LlmError> {
        let copy = (model.to_string(), request.clone(), call.clone());
        self.calls.lock().expect("the recorder's lock").push(copy);
        self.inner.complete(model, request, call).await
    }
    async fn capabilities(&self, model: &str) -> Option<Capabilities> {
        self.inner.capabilities(model).await
    }
    async fn server_slots(&self) -> Option<usize> {
        self.inner.server_slots().await
    }
    fn rate_limits(&self, model: &str) -> Option<RateLimits> {
        self.inner.rate_limits(model)
    }
}

pub(crate) async fn run(args: &Args) -> String {
    let (n, c) = (args.n, args.concurrency);
    let sim = crate::bench_sim(args);
    let recorder = Arc::new(Recorder { inner: SimulatedProvider::new(sim.clone()), calls: Mutex::default() });
    let mut options = crate::bench_options(args, recorder.clone());
    options.plan = Some(crate::cascade_plan(n));
    drive(crate::bench_cascade(n), crate::bench_task(), options).await;
    let calls = std::mem::take(&mut *recorder.calls.lock().expect("the recorder's lock"));
    let provider = SimulatedProvider::new(sim);
    let repeat = args.repeat.unwrap_or(5).max(1);
    let mut cpus = Vec::new();
    let mut failed = 0;
    for _ in 0..repeat {
        let before = cpu_seconds();
        let replies = futures::stream::iter(&calls)
            .map(|(model, request, info)| provider.complete(model, request, info))
            .buffer_unordered(c)
            .collect::<Vec<_>>()
            .await;
        cpus.push(cpu_seconds() - before);
        failed = replies.iter().filter(|r| r.is_err()).count();
    }
    serde_json::json!({
        "workload": "Q",
        "store": "memory",
        "n": n,
        "latency_ms": args.latency_ms,
        "concurrency": c,
        "calls": calls.len(),
        "failed": failed,
        "repeat": repeat,
        "cpu_us_per_call": round(median(&mut cpus) * 1e6 / calls.len().max(1) as f64, 2),
    })
    .to_string()
}
