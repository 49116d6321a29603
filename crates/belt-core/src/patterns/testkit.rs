//! Test support for patterns: run a piece of async code inside a run on the scripted
//! provider, and get both its value and the RunResult.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ctx::Ctx;
use crate::patterns::Flow;
use crate::plan::Task;
use crate::policy::Policies;
use crate::result::{AgentRecord, AgentStatus, RunResult};
use crate::run::{RunOptions, run};
use crate::testing::ScriptedProvider;

/// Options on `provider` with millisecond backoffs.
pub fn options(provider: &Arc<ScriptedProvider>) -> RunOptions {
    let mut p = Policies::default();
    p.update_all(|s| {
        s.backoff_base = Duration::from_millis(1);
        s.backoff_max = Duration::from_millis(5);
    });
    let mut o = RunOptions::default().with_provider(provider.clone());
    o.policies = p;
    o
}

/// Run `body` inside a run with `options`; its value and the run's result.
pub async fn within_options<T, F, Fut>(options: RunOptions, body: F) -> (T, RunResult)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    within_task(options, Task::new("test"), body).await
}

/// Run `body` inside a run of `task` (its context is the run's) on `provider`.
pub async fn within_context<T, F, Fut>(
    provider: &Arc<ScriptedProvider>,
    context: serde_json::Value,
    body: F,
) -> (T, RunResult)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    within_task(options(provider), Task::new("test").with_context(context), body).await
}

async fn within_task<T, F, Fut>(options: RunOptions, task: Task, body: F) -> (T, RunResult)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let body = Arc::new(Mutex::new(Some(body)));
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let flow = Flow::new("test", move |ctx, _task| {
        let body = body.lock().unwrap().take().expect("the flow runs once");
        let out = out.clone();
        async move {
            let value = body(ctx).await;
            *out.lock().unwrap() = Some(value);
            Ok("done".to_string())
        }
    });
    let result = run(flow, task, options).await.expect("run starts").result().await;
    let value = slot.lock().unwrap().take().expect("the body ran to the end");
    (value, result)
}

/// Run `body` inside a run on `provider`.
pub async fn within<T, F, Fut>(provider: &Arc<ScriptedProvider>, body: F) -> (T, RunResult)
where
    F: FnOnce(Ctx) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    within_options(options(provider), body).await
}

/// The record of `step`.
pub fn record<'a>(r: &'a RunResult, step: &str) -> &'a AgentRecord {
    r.agents.iter().find(|a| a.step.as_str() == step).unwrap_or_else(|| {
        let steps: Vec<&str> = r.agents.iter().map(|a| a.step.as_str()).collect();
        panic!("no step {step} in {steps:?}")
    })
}

/// The steps with `status`, in report order.
pub fn steps(r: &RunResult, status: AgentStatus) -> Vec<&str> {
    r.agents.iter().filter(|a| a.status == status).map(|a| a.step.as_str()).collect()
}
