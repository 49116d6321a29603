//! The simulated provider: deterministic, offline answers with configurable latency and
//! failure injection.
//!
//! It is how belt runs with no API key, how tests run, and how benchmarks measure the
//! engine's own cost. Everything it writes is labelled: every [`LlmReply`] has
//! `simulated: true`, and every Markdown reply opens with [`SIMULATED_LABEL`].
//!
//! # Determinism
//!
//! A reply is a pure function of the [`SimConfig::seed`], the model name, the request
//! (system prompt, messages, `max_tokens`, `json`, temperature) and [`CallInfo::step`]:
//! the same run gives the same text on every machine and every version of this crate
//! that keeps the templates. The latency and whether the call fails also depend on
//! [`CallInfo::attempt`], so a retried step can succeed where its first attempt failed,
//! and then returns the same text it would have returned the first time. The hash is
//! xxh3 and the generator a hand-written splitmix64, both stable by construction (the
//! `rand` crate's generators may change between versions).
//!
//! # What it answers
//!
//! What a call is comes from its [`CallHints`] (set by the pattern that wrote the request),
//! never from the prompt's wording, so rewording a pattern's prompt does not change what
//! belt does offline:
//!
//! - **Tools**: when the request offers tools and the conversation has no tool call yet,
//!   the reply calls the first tool once, with the smallest arguments its schema allows
//!   ([`sample_json`]); otherwise the reply is written as below, and ends with a
//!   `### Tool results` section quoting what the tools returned. This is enough for the
//!   engine's tool loop to run end to end offline.
//! - **Structured output** (`request.json_schema`): the smallest instance of the schema
//!   ([`sample_json`]): required properties only, an array's minimum number of items (at
//!   least one), a string's `enum` or format example or `"simulated"`, a number's minimum.
//! - **Other JSON requests** (`request.json`) are decompositions: a JSON array of
//!   [`CallHints::count`] `{"description", "specialization", "priority"}` objects (5 when the
//!   hints give no count) on the hints' task (else the prompt's first line). If they would
//!   not fit in `max_tokens`, the array holds fewer (it is never cut in the middle) and
//!   `finish_reason` is `length`. With [`CallHints::min_count`] the simulated model chooses
//!   how many, in `min_count..=count`, from the request's hash. A schema of the shape
//!   `{"strategy": <enum>, "subtasks": [{…, "dependencies"}]}` gets a strategy (the only
//!   one offered, else by key words of the task: `software`, `planning`, `analysis`, else
//!   `research`), that strategy's subtasks, and their dependencies (1-based numbers). A
//!   model name holding `plan-duplicates`, `plan-empty` or `plan-cycle` (e.g.
//!   `simulated/plan-cycle`) writes that fault into the plan, for tests of plan repair; with
//!   `-once` only in the first request of a conversation, not when the plan is asked again.
//! - **Judges** ([`CallKind::Judge`]): a verdict on the first line, `DONE` or `REVISE` with a
//!   critique, by the seed.
//! - **Work** ([`CallKind::Work`]): a `## <subtask>` section, paragraphs, findings and a key
//!   takeaway that use the key words of the subtask and of the task's first line.
//! - **Merges** ([`CallKind::Merge`]): a `## Synthesis` naming each of the hints' inputs,
//!   cross-cutting themes, and the gaps when the hints say what is missing.
//! - **Anything else**: a heading from the prompt's first words and a few paragraphs.
//!
//! Markdown replies aim at `min(0.7 × max_tokens, 700)` tokens so that demos stay
//! readable, and are cut at a line or word boundary to fit.
//!
//! # Tokens and price
//!
//! Input tokens are `ceil(bytes / 4) + 4` per message (system prompt included), which
//! never exceeds [`LlmRequest::input_token_bound`]. Output tokens are `ceil(bytes / 4)` of
//! the text and never exceed `max_tokens`. The one exception to the latter is a
//! `max_tokens` below 23, too small for the label itself: the reply is then the label
//! alone and its output tokens are reported as `max_tokens`, so that a budget that
//! reserved `max_tokens` always holds. Every model costs the nominal
//! [`SIMULATED_PRICE`], so that budgets can be tested without a real provider.
//!
//! # Cost
//!
//! With [`Latency::Fixed`] of zero, [`LlmProvider::complete`] neither sleeps nor yields,
//! and a call is a hash of the request plus a few hundred bytes of templated text: a
//! few microseconds of CPU. Generation is bounded by the output size, whatever the
//! prompt's size, and decompositions are linear in the number of subtasks.

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use belt_core::llm::{
    CallHints, CallInfo, CallKind, InFlightGauge, LlmError, LlmProvider, LlmReply, LlmRequest, Price, Role,
    ToolCall, Usage,
};
use belt_core::step::StepId;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

/// The first line of every Markdown reply of the simulated provider.
pub const SIMULATED_LABEL: &str =
    "*Simulated response: written offline by belt's simulated provider, not by a language model.*";

/// The price of every simulated model, in USD per million tokens.
///
/// It is nominal: no money is spent. It exists so that cost reporting and budgets (USD
/// caps included) behave with the simulated provider exactly as they do with a real one.
pub const SIMULATED_PRICE: Price = Price::new(1.0, 3.0);

/// How long a simulated call takes before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// Always this long. `Fixed(Duration::ZERO)` answers without sleeping or yielding.
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max` (inclusive), chosen per attempt.
    Uniform { min: Duration, max: Duration },
}

impl Latency {
    /// No latency at all: the call neither sleeps nor yields (for CPU benchmarks).
    pub const ZERO: Latency = Latency::Fixed(Duration::ZERO);

    pub fn fixed_ms(ms: u64) -> Self {
        Latency::Fixed(Duration::from_millis(ms))
    }

    pub fn uniform_ms(min: u64, max: u64) -> Self {
        Latency::Uniform { min: Duration::from_millis(min), max: Duration::from_millis(max) }
    }

    /// The latency for the random number `r`.
    fn sample(&self, r: u64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
                let span = (hi - lo).as_nanos().min(u64::MAX as u128 - 1) as u64 + 1;
                lo + Duration::from_nanos(below(r, span))
            }
        }
    }
}

impl Default for Latency {
    /// Uniform between 200 and 800 ms, like a fast real model on a short answer.
    fn default() -> Self {
        Latency::uniform_ms(200, 800)
    }
}

/// A failure the simulated provider can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// HTTP 429: [`LlmError::RateLimited`] with a `retry_after` of 50 to 200 ms.
    RateLimited,
    /// HTTP 500: [`LlmError::Server`].
    #[serde(rename = "server_error", alias = "server")]
    Server,
    /// [`LlmError::Timeout`], returned as soon as the latency has elapsed.
    Timeout,
}

impl FailureKind {
    /// Every kind, which is also the default mix.
    pub const ALL: [FailureKind; 3] = [FailureKind::RateLimited, FailureKind::Server, FailureKind::Timeout];

    /// The name of the kind, the same as [`LlmError::kind`] of the error it produces.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Server => "server_error",
            FailureKind::Timeout => "timeout",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure kind name that [`FailureKind::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure kind `{0}`; expected one of rate_limited, server_error, timeout")]
pub struct ParseFailureKindError(pub String);

impl FromStr for FailureKind {
    type Err = ParseFailureKindError;

    /// Accepts the names of [`FailureKind::as_str`], `server`, and `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "rate_limited" | "429" => Ok(FailureKind::RateLimited),
            "server_error" | "server" | "500" => Ok(FailureKind::Server),
            "timeout" => Ok(FailureKind::Timeout),
            _ => Err(ParseFailureKindError(s.to_string())),
        }
    }
}

/// Configuration of the [`SimulatedProvider`].
///
/// ```
/// use belt_llm::{FailureKind, SimConfig};
///
/// let config = SimConfig::default().seed(7).latency_ms(0).fail_rate(0.2).failure_kinds([FailureKind::RateLimited]);
/// assert_eq!(config.seed, 7);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Different seeds give different texts, latencies and failures for the same calls.
    pub seed: u64,
    pub latency: Latency,
    /// Probability that an attempt fails: 0.0 (or less, or NaN) never, 1.0 (or more) always.
    pub fail_rate: f64,
    /// The kinds injected failures are drawn from, uniformly. An empty list injects none.
    pub failure_kinds: Vec<FailureKind>,
    /// Wait out latencies on belt's precise timer (real time, ~0.1 ms accuracy) instead of
    /// tokio's (1 ms resolution, rounds up). On by default so simulated latency is what it
    /// says; turn it off under tokio's paused test clock (`start_paused`), which only
    /// tokio's timer follows. See [`crate::timer`].
    pub precise_timer: bool,
    /// Append a line `STEP ATTEMPT RUN_ID` to this file for every call (for tests that count calls
    /// across processes, such as the crash tests of `belt resume`). `BELT_SIM_CALL_LOG`
    /// sets it from the CLI.
    pub call_log: Option<std::path::PathBuf>,
}

impl Default for SimConfig {
    /// Seed 0, latency uniform in 200..=800 ms, no failures, all [`FailureKind`]s.
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Latency::default(),
            fail_rate: 0.0,
            failure_kinds: FailureKind::ALL.to_vec(),
            precise_timer: true,
            call_log: None,
        }
    }
}

impl SimConfig {
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// A fixed latency of `ms` milliseconds; `latency_ms(0)` makes calls instantaneous.
    pub fn latency_ms(self, ms: u64) -> Self {
        self.latency(Latency::fixed_ms(ms))
    }

    /// A latency uniform between `min` and `max` milliseconds.
    pub fn latency_range_ms(self, min: u64, max: u64) -> Self {
        self.latency(Latency::uniform_ms(min, max))
    }

    pub fn fail_rate(mut self, fail_rate: f64) -> Self {
        self.fail_rate = fail_rate;
        self
    }

    /// See [`SimConfig::precise_timer`].
    pub fn precise_timer(mut self, on: bool) -> Self {
        self.precise_timer = on;
        self
    }

    pub fn failure_kinds(mut self, kinds: impl IntoIterator<Item = FailureKind>) -> Self {
        self.failure_kinds = kinds.into_iter().collect();
        self
    }
}

/// The provider named `simulated`: serves every model `simulated/<anything>`.
///
/// ```
/// use belt_llm::{CallHints, CallInfo, LlmProvider, LlmRequest, SimConfig, SimulatedProvider, StepId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), belt_llm::LlmError> {
/// let provider = SimulatedProvider::new(SimConfig::default().latency_ms(0));
/// // The hints, not the wording, say that this is subtask 2 of a task.
/// let request = LlmRequest::new("simulated/default", "Task: Plan a city park\nSubtask 2: Choose the trees")
///     .hints(CallHints::work("Plan a city park", "Choose the trees"));
/// let call = CallInfo::new(StepId::new("worker/002"), 1);
/// let reply = provider.complete("default", &request, &call).await?;
/// assert!(reply.simulated && reply.text.contains("Choose the trees"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct SimulatedProvider {
    config: SimConfig,
    in_flight: InFlightGauge,
}

/// What a simulated call returns, and after how long; see [`SimulatedProvider::simulate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutcome {
    pub latency: Duration,
    pub result: Result<LlmReply, LlmError>,
}

impl SimulatedProvider {
    /// The provider's name, the `simulated` of `simulated/<model>`.
    pub const NAME: &'static str = "simulated";

    pub fn new(config: SimConfig) -> Self {
        SimulatedProvider { config, in_flight: InFlightGauge::default() }
    }

    /// Calls waiting for their simulated reply right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.now()
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// What [`LlmProvider::complete`] returns for this call and how long it waits first,
    /// computed at once without waiting. `model` is the part after `simulated/`.
    pub fn simulate(&self, model: &str, request: &LlmRequest, call: &CallInfo) -> SimOutcome {
        let (content, mut rng, latency) = self.draw(model, request, call);
        SimOutcome { latency, result: self.answer(model, request, call, content, &mut rng, latency) }
    }

    /// The call's content hash, its random stream and its latency: all a call needs to
    /// keep while it waits (the reply is written after the wait, as a real one arrives).
    fn draw(&self, model: &str, request: &LlmRequest, call: &CallInfo) -> (u64, Rng, Duration) {
        let content = content_hash(self.config.seed, model, request, &call.step);
        let mut rng = Rng::new(content ^ (u64::from(call.attempt) + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let latency = self.config.latency.sample(rng.next_u64());
        (content, rng, latency)
    }

    fn answer(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
        content: u64,
        rng: &mut Rng,
        latency: Duration,
    ) -> Result<LlmReply, LlmError> {
        if request.max_tokens == 0 {
            Err(LlmError::InvalidRequest(
                "max_tokens must be at least 1 (rejected by belt's simulated provider, as real providers do)"
                    .to_string(),
            ))
        } else if rng.next_f64() < self.config.fail_rate && !self.config.failure_kinds.is_empty() {
            let kind = self.config.failure_kinds
                [below(rng.next_u64(), self.config.failure_kinds.len() as u64) as usize];
            Err(self.injected(kind, latency, rng.next_u64(), call))
        } else {
            Ok(reply(model, request, content))
        }
    }

    fn injected(&self, kind: FailureKind, latency: Duration, r: u64, call: &CallInfo) -> LlmError {
        let why = format!(
            "injected by belt's simulated provider (fail_rate {}, step {}, attempt {})",
            self.config.fail_rate, call.step, call.attempt
        );
        match kind {
            FailureKind::RateLimited => LlmError::RateLimited {
                retry_after: Some(Duration::from_millis(50 + below(r, 151))),
                message: format!("simulated rate limit {why}"),
            },
            FailureKind::Server => {
                LlmError::Server { status: 500, message: format!("simulated internal server error {why}") }
            }
            FailureKind::Timeout => LlmError::Timeout(latency),
        }
    }
}

#[async_trait]
impl LlmProvider for SimulatedProvider {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn price(&self, _model: &str) -> Option<Price> {
        Some(SIMULATED_PRICE)
    }

    fn is_simulated(&self) -> bool {
        true
    }

    async fn complete(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
    ) -> Result<LlmReply, LlmError> {
        let (content, mut rng, latency) = self.draw(model, request, call);
        let _in_flight = self.in_flight.enter();
        if let Some(path) = &self.config.call_log {
            log_call(path, call);
        }
        if !latency.is_zero() && belt_core::llm::deltas_watched() {
            return Box::pin(self.streamed(model, request, call, content, rng, latency)).await;
        }
        self.sleep(latency).await;
        self.answer(model, request, call, content, &mut rng, latency)
    }
}

/// The most pieces a watched reply is streamed in.
const STREAM_PIECES: usize = 8;
/// The least time between two pieces: the engine passes on at most one `step_delta` per
/// 100 ms and step, so finer pieces would only cost timer wake-ups.
const STREAM_GAP: Duration = Duration::from_millis(100);

impl SimulatedProvider {
    async fn sleep(&self, d: Duration) {
        if d.is_zero() {
        } else if self.config.precise_timer {
            crate::timer::sleep(d).await;
        } else {
            // Boxed, so that its 112 bytes are not part of every waiting call.
            Box::pin(tokio::time::sleep(d)).await;
        }
    }

    /// The reply of a call whose text someone watches (`step_delta` events, the
    /// dashboard): as a real model streams, the first words after 40% of the latency, the
    /// rest in pieces (at least [`STREAM_GAP`] apart, at most [`STREAM_PIECES`]) over the
    /// remainder, the whole reply at the same moment as unwatched. Only then: the extra
    /// timer wake-ups stay out of runs nobody watches (benchmarks).
    async fn streamed(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
        content: u64,
        mut rng: Rng,
        latency: Duration,
    ) -> Result<LlmReply, LlmError> {
        let first = latency * 2 / 5;
        self.sleep(first).await;
        let reply = match self.answer(model, request, call, content, &mut rng, latency) {
            Ok(reply) => reply,
            Err(e) => {
                // A failure comes back when it would unwatched.
                self.sleep(latency - first).await;
                return Err(e);
            }
        };
        let rest = latency - first;
        let n = (rest.as_millis() / STREAM_GAP.as_millis()).clamp(1, STREAM_PIECES as u128) as usize;
        let pieces = pieces(&reply.text, n);
        // Whole milliseconds, the last gap taking the remainder, so the call ends exactly
        // when it would unwatched (tokio's timer rounds each sleep up to a millisecond).
        let gap = Duration::from_millis((rest.as_millis() / pieces.len().max(1) as u128) as u64);
        let mut left = rest;
        for (i, piece) in pieces.iter().enumerate() {
            belt_core::llm::stream_delta(piece);
            let wait = if i + 1 == pieces.len() { left } else { gap };
            self.sleep(wait).await;
            left = left.saturating_sub(wait);
        }
        if pieces.is_empty() {
            self.sleep(rest).await;
        }
        Ok(reply)
    }
}

/// `text` cut into at most `n` pieces of about equal length, at char boundaries; together
/// they are `text`.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    let size = text.len().div_ceil(n.max(1)).max(1);
    let mut out = Vec::with_capacity(n);
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        out.push(piece);
        rest = tail;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Hashing and choices

/// xxh3 of everything the text depends on (not the attempt).
fn content_hash(seed: u64, model: &str, request: &LlmRequest, step: &StepId) -> u64 {
    fn field(h: &mut Xxh3, tag: u8, bytes: &[u8]) {
        h.update(&[tag]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Xxh3::with_seed(seed);
    field(&mut h, b'm', model.as_bytes());
    if let Some(system) = &request.system {
        field(&mut h, b's', system.as_bytes());
    }
    for message in &request.messages {
        let tag = match message.role {
            Role::User => b'u',
            Role::Assistant => b'a',
            Role::Tool => b't',
        };
        field(&mut h, tag, message.content.as_bytes());
        for call in &message.tool_calls {
            field(&mut h, b'c', call.name.as_bytes());
            field(&mut h, b'g', call.arguments.to_string().as_bytes());
        }
    }
    let temperature = request.temperature.map_or(u32::MAX, f32::to_bits);
    h.update(&request.max_tokens.to_le_bytes());
    h.update(&temperature.to_le_bytes());
    h.update(&[u8::from(request.json)]);
    if let Some(schema) = &request.json_schema {
        field(&mut h, b'j', schema.schema.to_string().as_bytes());
    }
    for tool in &request.tools {
        field(&mut h, b'T', tool.name.as_bytes());
    }
    field(&mut h, b'i', step.as_str().as_bytes());
    h.digest()
}

/// One line per call, appended in one write so concurrent processes do not interleave.
fn log_call(path: &std::path::Path, call: &CallInfo) {
    use std::io::Write;
    let line = format!("{} {} {}\n", call.step, call.attempt, call.run_id);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot append to the simulated call log {}: {e}", path.display());
    }
}

/// splitmix64: tiny, fast, and fixed forever (unlike `rand`'s generators).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`; `n` must not be 0.
    fn index(&mut self, n: usize) -> usize {
        below(self.next_u64(), n as u64) as usize
    }

    /// An element of `items`, which must not be empty.
    fn pick<'t>(&mut self, items: &[&'t str]) -> &'t str {
        items[self.index(items.len())]
    }
}

/// Maps the random `r` to `0..n` (Lemire's multiply-shift); `n` must not be 0.
fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

// ---------------------------------------------------------------------------------------
// Replies

/// About 4 bytes per token, the usual figure for English text with BPE tokenizers.
const BYTES_PER_TOKEN: usize = 4;
/// Markdown replies stop at this many tokens, however large `max_tokens` is.
const MAX_MARKDOWN_TOKENS: usize = 700;
/// Decompositions stop at this many subtasks, however many the prompt asks for.
const MAX_SUBTASKS: usize = 1_000_000;
/// Tokens for each message's role markers (the bound allows 8).
const TOKENS_PER_MESSAGE: u64 = 4;

fn reply(model: &str, request: &LlmRequest, content: u64) -> LlmReply {
    let max_tokens = request.max_tokens as usize;
    // Tools offered and none called yet in this conversation: call the first one.
    if let Some(tool) = request.tools.first()
        && !request.messages.iter().any(|m| !m.tool_calls.is_empty())
    {
        let call = ToolCall {
            id: format!("call_sim_{:016x}", content),
            name: tool.name.clone(),
            arguments: sample_json(&tool.parameters),
        };
        let output_tokens =
            (call.arguments.to_string().len() + tool.name.len()).div_ceil(BYTES_PER_TOKEN) as u64;
        return LlmReply {
            text: String::new(),
            usage: Usage::new(input_tokens(request), output_tokens.min(u64::from(request.max_tokens))),
            model: [SimulatedProvider::NAME, "/", model].concat(),
            finish_reason: Some("tool_calls".into()),
            simulated: true,
            tool_calls: vec![call],
        };
    }
    let plan = request.hints.as_deref().is_some_and(|h| h.kind == CallKind::Plan);
    let (text, cut) = if plan && (request.json || request.json_schema.is_some()) {
        // A plan is the decomposition, in the list field of an object schema when one
        // asks for `{"subtasks": [...]}` (the shape JSON object modes can enforce).
        let shape = request.json_schema.as_deref().and_then(|s| PlanShape::of(&s.schema));
        let budget = max_tokens.saturating_mul(BYTES_PER_TOKEN);
        match shape {
            Some(shape) => {
                let strategy = shape.choose(request);
                let head = match strategy {
                    Some(s) => format!("{{\"strategy\": \"{s}\", \"{}\": ", shape.field),
                    None => format!("{{\"{}\": ", shape.field),
                };
                let style = PlanStyle {
                    strategy,
                    dependencies: shape.dependencies,
                    fault: PlanFault::of(model, request),
                };
                let (list, cut) =
                    decomposition(request, content, budget.saturating_sub(head.len() + 2), &style);
                (format!("{head}{list}}}"), cut)
            }
            None => decomposition(request, content, budget, &PlanStyle::default()),
        }
    } else if let Some(schema) = &request.json_schema {
        let text = sample_json(&schema.schema).to_string();
        let cut = text.len() > max_tokens.saturating_mul(BYTES_PER_TOKEN);
        (text, cut)
    } else if request.json {
        decomposition(request, content, max_tokens.saturating_mul(BYTES_PER_TOKEN), &PlanStyle::default())
    } else {
        let target_tokens = (max_tokens * 7 / 10).min(MAX_MARKDOWN_TOKENS);
        let budget = target_tokens * BYTES_PER_TOKEN;
        let results = tool_results(request, budget / 2);
        let (mut text, cut) = markdown(request, content, budget.saturating_sub(results.len()));
        text.push_str(&results);
        (text, cut)
    };
    let output_tokens = (text.len().div_ceil(BYTES_PER_TOKEN) as u64).min(u64::from(request.max_tokens));
    LlmReply {
        usage: Usage::new(input_tokens(request), output_tokens),
        model: [SimulatedProvider::NAME, "/", model].concat(),
        finish_reason: Some(if cut { "length" } else { "stop" }.to_string()),
        simulated: true,
        text,
        tool_calls: Vec::new(),
    }
}

/// What the tools returned in this conversation, as a closing section of a Markdown reply
/// (empty when there were none), at most about `max` bytes.
fn tool_results(request: &LlmRequest, max: usize) -> String {
    let names: std::collections::HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    let mut out = String::new();
    for m in request.messages.iter().filter(|m| m.role == Role::Tool) {
        let name = m.tool_call_id.as_deref().and_then(|id| names.get(id)).unwrap_or(&"a tool");
        let verb = if m.is_error { "failed" } else { "returned" };
        let content = match m.content.char_indices().nth(200) {
            Some((cut, _)) => format!("{}…", &m.content[..cut]),
            None => m.content.clone(),
        };
        let line = format!("- `{name}` {verb}: {content}\n");
        if out.len() + line.len() > max {
            break;
        }
        out.push_str(&line);
    }
    if out.is_empty() { out } else { format!("\n\n### Tool results\n\n{out}") }
}

/// The smallest instance of a JSON Schema that is valid for the schemas tools and
/// structured outputs use: `const`, `enum` (the first value), the first type of a type
/// list that is not `null`, the first branch of `anyOf`/`oneOf`/`allOf`, local `$ref`s;
/// objects with their required properties, arrays with their minimum number of items
/// (at least one, unless `maxItems` is 0), strings of the right length (an example of
/// the common `format`s), numbers at their minimum (or 0). `pattern` is not followed.
pub fn sample_json(schema: &serde_json::Value) -> serde_json::Value {
    sample_in(schema, schema, 0)
}

fn sample_in(schema: &serde_json::Value, root: &serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::{Value, json};
    let Value::Object(s) = schema else { return Value::Null };
    if depth > 32 {
        return Value::Null;
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(first) = s.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(target) = s.get("$ref").and_then(Value::as_str) {
        let pointer = target.strip_prefix('#').unwrap_or(target);
        return root.pointer(pointer).map_or(Value::Null, |t| sample_in(t, root, depth + 1));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = s.get(key).and_then(Value::as_array).and_then(|b| b.first()) {
            return sample_in(first, root, depth + 1);
        }
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => {
            types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null")
        }
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "null",
    };
    let bound = |key: &str| s.get(key).and_then(Value::as_f64);
    match kind {
        "object" => {
            let properties = s.get("properties").and_then(Value::as_object);
            let mut out = serde_json::Map::new();
            for name in
                s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
            {
                let sub = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_string(), sample_in(sub, root, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let min = bound("minItems").unwrap_or(1.0).max(1.0);
            let n = bound("maxItems").map_or(min, |max| min.min(max)) as usize;
            let item = s.get("items").map_or(Value::Null, |i| sample_in(i, root, depth + 1));
            Value::Array(vec![item; n])
        }
        "string" => {
            let text = match s.get("format").and_then(Value::as_str) {
                Some("date-time") => "2025-01-01T00:00:00Z",
                Some("date") => "2025-01-01",
                Some("time") => "00:00:00",
                Some("email") => "simulated@example.com",
                Some("uri" | "url") => "https://example.com/simulated",
                Some("uuid") => "00000000-0000-4000-8000-000000000000",
                _ => "simulated",
            };
            let mut text = text.to_string();
            if let Some(max) = bound("maxLength") {
                text.truncate(max as usize);
            }
            let min = bound("minLength").unwrap_or(0.0) as usize;
            while text.len() < min {
                text.push('x');
            }
            Value::String(text)
        }
        "integer" | "number" => {
            let value = match (bound("minimum"), bound("exclusiveMinimum"), bound("maximum")) {
                (Some(min), _, _) => min,
                (None, Some(min), _) => min.floor() + 1.0,
                (None, None, Some(max)) if max < 0.0 => max,
                _ => 0.0,
            };
            if kind == "integer" { json!(value.ceil() as i64) } else { json!(value) }
        }
        "boolean" => Value::Bool(false),
        _ => Value::Null,
    }
}

/// `ceil(bytes / 4)` of the system prompt and the messages, plus 4 per message.
fn input_tokens(request: &LlmRequest) -> u64 {
    let system = request.system.as_ref().map_or(0, String::len);
    let bytes = system + request.messages.iter().map(|m| m.content.len()).sum::<usize>();
    let messages = request.messages.len() + usize::from(request.system.is_some());
    bytes.div_ceil(BYTES_PER_TOKEN) as u64 + TOKENS_PER_MESSAGE * messages as u64
}

// ---------------------------------------------------------------------------------------
// Decomposition (JSON)

/// One line of a plan: the description starts with `lead`, then the topic; the priority
/// is `base`, give or take one.
struct Aspect {
    lead: &'static str,
    specialization: &'static str,
    base: u8,
    /// The aspect (index in its table) this one builds on, when the plan asks for
    /// dependencies.
    after: Option<usize>,
}

const fn aspect(lead: &'static str, specialization: &'static str, base: u8) -> Aspect {
    Aspect { lead, specialization, base, after: None }
}

const fn after(lead: &'static str, specialization: &'static str, base: u8, on: usize) -> Aspect {
    Aspect { lead, specialization, base, after: Some(on) }
}

const ASPECTS: [Aspect; 16] = [
    aspect("Background and definitions: establish the key terms, scope and history of", "researcher", 9),
    aspect("Current state: describe where things stand today regarding", "analyst", 9),
    aspect("Key stakeholders: map who is affected by, and who shapes,", "policy expert", 8),
    aspect("Economic impact: estimate the costs, benefits and distribution effects of", "economist", 8),
    aspect("Risks: identify the main risks and failure modes of", "risk analyst", 8),
    aspect("Opportunities: identify the opportunities created by", "strategist", 7),
    aspect("Regulation: review the laws, standards and policies that govern", "policy expert", 7),
    aspect("Technology: examine the technical developments behind", "technologist", 7),
    aspect("Case studies: compare concrete examples and precedents of", "historian", 6),
    aspect("Future outlook: outline plausible scenarios for the next decade of", "forecaster", 6),
    aspect("Ethics: evaluate the ethical questions raised by", "ethicist", 6),
    aspect("Implementation: describe what it takes in practice to act on", "engineer", 5),
    aspect("Metrics: propose indicators that measure progress on", "data analyst", 5),
    aspect("Comparisons: contrast the main alternatives and competing approaches to", "analyst", 5),
    aspect("Public perception: summarize how the public and the media see", "sociologist", 4),
    aspect("Open questions: list what remains unknown or disputed about", "researcher", 4),
];

/// The plans of the software, analysis and planning strategies; any other strategy
/// (research) uses [`ASPECTS`].
const SOFTWARE: [Aspect; 8] = [
    aspect("Requirements: gather the requirements and acceptance criteria for", "product analyst", 9),
    after("Architecture: design the components and interfaces of", "software architect", 9, 0),
    after("Implementation: build the core components of", "software engineer", 8, 1),
    after("Data: design the data model and storage of", "data engineer", 7, 1),
    after("Testing: write the tests and quality checks for", "QA engineer", 7, 2),
    after("Security: review the threats to and safeguards of", "security engineer", 6, 1),
    after("Operations: plan the deployment and monitoring of", "DevOps engineer", 5, 2),
    after("Documentation: document the use and design of", "technical writer", 4, 2),
];

// The analysis and planning plans depend one level deep (everything on the framing or
// the goals): `auto` gives them to the demos' tasks ("Analyze …", "Plan …"), which must
// still show a cascade's workers running side by side. The software plan keeps its
// chain (requirements → architecture → implementation → tests), as asked for explicitly.
const ANALYSIS: [Aspect; 8] = [
    aspect("Framing: state the questions and hypotheses of", "analyst", 9),
    after("Data: identify and collect the data needed for", "data engineer", 9, 0),
    after("Cleaning: assess and clean the data on", "data scientist", 8, 0),
    after("Trends: describe the main trends in", "statistician", 7, 0),
    after("Comparisons: benchmark the alternatives in", "analyst", 7, 0),
    after("Drivers: explain the causal factors behind", "economist", 6, 0),
    after("Robustness: test how robust the findings are on", "statistician", 5, 0),
    after("Conclusions: draw the conclusions and recommendations of", "consultant", 5, 0),
];

const PLANNING: [Aspect; 8] = [
    aspect("Goals: define the goals, scope and success criteria of", "strategist", 9),
    after("Resources: estimate the budget, people and constraints of", "project manager", 9, 0),
    after("Stakeholders: assign the responsibilities in", "coordinator", 8, 0),
    after("Risks: plan the contingencies for", "risk analyst", 7, 0),
    after("Timeline: lay out the phases and milestones of", "project manager", 7, 0),
    after("Communication: plan who is told what, and when, about", "communications lead", 6, 0),
    after("Tracking: define how progress is measured on", "analyst", 5, 0),
    after("Launch: prepare the launch and handover of", "operations lead", 5, 0),
];

/// The aspects of `strategy`'s plans.
fn aspects_of(strategy: Option<&str>) -> &'static [Aspect] {
    match strategy {
        Some("software") => &SOFTWARE,
        Some("analysis") => &ANALYSIS,
        Some("planning") => &PLANNING,
        _ => &ASPECTS,
    }
}

/// Words of a task that make the simulated decomposer choose a strategy (in this order);
/// a task with none of them is research.
const STRATEGY_WORDS: [(&str, &[&str]); 3] = [
    (
        "software",
        &["app", "api", "build", "code", "develop", "implement", "library", "program", "software", "website"],
    ),
    ("planning", &["launch", "migrate", "migration", "organize", "plan", "roadmap", "schedule", "trip"]),
    (
        "analysis",
        &["analyse", "analyze", "compare", "data", "dataset", "evaluate", "measure", "metrics", "sales"],
    ),
];

/// What a plan's schema asks for besides the list: `{"strategy": <enum>, "subtasks":
/// [{…, "dependencies": [...]}]}`.
struct PlanShape<'s> {
    /// The one array property (`subtasks`).
    field: &'s str,
    /// The values of a `strategy` property's enum (empty: no such property).
    strategies: Vec<&'s str>,
    /// The list's items have a `dependencies` property.
    dependencies: bool,
}

impl<'s> PlanShape<'s> {
    /// The shape of an object schema with exactly one array property, and at most a
    /// `strategy` besides.
    fn of(schema: &'s serde_json::Value) -> Option<Self> {
        let props = schema.get("properties")?.as_object()?;
        let is_array = |p: &serde_json::Value| p.get("type").and_then(|t| t.as_str()) == Some("array");
        let mut arrays = props.iter().filter(|(_, p)| is_array(p));
        let (field, list) = arrays.next()?;
        let others = props.keys().filter(|k| *k != field && k.as_str() != "strategy").count();
        if arrays.next().is_some()
            || others > 0
            || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return None;
        }
        let strategies = props
            .get("strategy")
            .and_then(|s| s.get("enum"))
            .and_then(|e| e.as_array())
            .map(|e| {
                e.iter()
                    .filter_map(|v| v.as_str())
                    .filter(|v| v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .collect()
            })
            .unwrap_or_default();
        let dependencies = list.pointer("/items/properties/dependencies").is_some();
        Some(PlanShape { field, strategies, dependencies })
    }

    /// The strategy this decomposer chooses: the only one offered, else the first of
    /// [`STRATEGY_WORDS`] offered whose words the task holds, else `research` if offered,
    /// else the first offered.
    fn choose(&self, request: &LlmRequest) -> Option<&'s str> {
        if self.strategies.len() <= 1 {
            return self.strategies.first().copied();
        }
        let hints = request.hints.as_deref();
        let task = hints.and_then(task_line).unwrap_or_else(|| first_line(request.prompt())).to_lowercase();
        let words: Vec<&str> = task.split(|c: char| !c.is_alphanumeric()).collect();
        STRATEGY_WORDS
            .iter()
            .filter(|(name, keys)| self.strategies.contains(name) && keys.iter().any(|k| words.contains(k)))
            .find_map(|(name, _)| self.strategies.iter().find(|s| *s == name).copied())
            .or_else(|| self.strategies.iter().find(|s| **s == "research").copied())
            .or_else(|| self.strategies.first().copied())
    }
}

/// Faults a decomposition can be asked for by the model's name, to exercise a pattern's
/// repair of bad plans offline: `plan-duplicates` (subtask 2 repeats subtask 1),
/// `plan-empty` (the last subtask has no description) and `plan-cycle` (subtask 1 and
/// the last depend on each other). With `-once` (`plan-duplicates-once`), only the first
/// request of a conversation gets the fault, so a plan asked for again is sound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PlanFault {
    duplicates: bool,
    empty: bool,
    cycle: bool,
}

impl PlanFault {
    fn of(model: &str, request: &LlmRequest) -> Self {
        let asked_again = request.messages.len() > 1;
        let on = |name: &str| {
            model
                .split(['/', ',', '+'])
                .any(|part| part == name || (part.strip_prefix(name) == Some("-once") && !asked_again))
        };
        PlanFault { duplicates: on("plan-duplicates"), empty: on("plan-empty"), cycle: on("plan-cycle") }
    }
}

/// How a decomposition is written: its strategy's aspects, with dependencies or not,
/// with the faults asked for.
#[derive(Debug, Clone, Copy, Default)]
struct PlanStyle<'s> {
    strategy: Option<&'s str>,
    dependencies: bool,
    fault: PlanFault,
}

/// How many subtasks a plan holds: the hints' count, or a number in `min_count..=count`
/// drawn from the content (the simulated model's choice), 5 without hints.
fn plan_count(hints: Option<&CallHints>, content: u64) -> usize {
    let max = hints.and_then(|h| h.count).unwrap_or(5).min(MAX_SUBTASKS);
    match hints.and_then(|h| h.min_count) {
        Some(min) if min < max => min + Rng::new(content ^ 0x5EED_C0DE).index(max - min + 1),
        _ => max,
    }
}

/// A JSON array of subtasks, as many as the hints ask for and as fit in `max_bytes`.
fn decomposition(request: &LlmRequest, content: u64, max_bytes: usize, style: &PlanStyle) -> (String, bool) {
    let hints = request.hints.as_deref().filter(|h| h.kind == CallKind::Plan);
    let count = plan_count(hints, content);
    let task = hints.and_then(task_line).unwrap_or_else(|| first_line(request.prompt()));
    let aspects = aspects_of(style.strategy);
    let topic = topic_of(task, 120);
    let mut escaped = String::with_capacity(topic.len() + 8);
    push_json_escaped(&mut escaped, if topic.is_empty() { "the task" } else { topic });

    let mut rng = Rng::new(content);
    let estimate = count.saturating_mul(escaped.len() + 140).saturating_add(4);
    let mut text = String::with_capacity(estimate.min(max_bytes));
    text.push('[');
    let mut cut = false;
    for i in 0..count {
        let mark = text.len();
        // A duplicate repeats the aspect (and part) of subtask 1.
        let k = if style.fault.duplicates && i == 1 { 0 } else { i };
        let aspect = &aspects[k % aspects.len()];
        let part = k / aspects.len() + 1;
        let jitter = rng.index(3) as i64 - 1;
        let priority = (i64::from(aspect.base) - (part as i64 - 1).min(3) + jitter).clamp(1, 10);
        text.push_str(if i == 0 { "\n  " } else { ",\n  " });
        text.push_str("{\"description\": \"");
        if !(style.fault.empty && i + 1 == count) {
            text.push_str(aspect.lead);
            text.push(' ');
            text.push_str(&escaped);
            if part > 1 {
                let _ = write!(text, " (part {part})");
            }
        }
        text.push_str("\", \"specialization\": \"");
        text.push_str(aspect.specialization);
        let _ = write!(text, "\", \"priority\": {priority}");
        if style.dependencies {
            text.push_str(", \"dependencies\": [");
            // 1-based numbers within the same round of aspects.
            let mut deps: Vec<usize> =
                aspect.after.map(|a| (part - 1) * aspects.len() + a + 1).into_iter().collect();
            if style.fault.cycle && count >= 2 && (i == 0 || i + 1 == count) {
                deps = vec![if i == 0 { count } else { 1 }];
            }
            for (j, d) in deps.iter().enumerate() {
                let _ = write!(text, "{}{d}", if j == 0 { "" } else { ", " });
            }
            text.push(']');
        }
        text.push('}');
        // Room must remain for the closing "\n]".
        if text.len() + 2 > max_bytes {
            text.truncate(mark);
            cut = true;
            break;
        }
    }
    text.push_str(if text.len() > 1 { "\n]" } else { "]" });
    (text, cut)
}

fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Markdown

/// What a call's hints say about the reply wanted.
struct Prompt<'a> {
    task: Option<&'a str>,
    /// The description of a `Subtask <id>: <description>` line seen before any section.
    subtask: Option<&'a str>,
    /// The first [`MAX_SECTIONS`] `### ` headings.
    sections: Vec<&'a str>,
    section_count: usize,
    missing: Option<&'a str>,
}

/// More headings than this cannot be named within [`MAX_MARKDOWN_TOKENS`] anyway.
const MAX_SECTIONS: usize = 64;

impl<'a> Prompt<'a> {
    fn of(hints: Option<&'a CallHints>) -> Self {
        let mut prompt =
            Prompt { task: None, subtask: None, sections: Vec::new(), section_count: 0, missing: None };
        let Some(hints) = hints else { return prompt };
        prompt.task = task_line(hints);
        match hints.kind {
            CallKind::Work => {
                prompt.subtask = hints.subtask.as_deref().map(str::trim).filter(|d| !d.is_empty())
            }
            CallKind::Merge => {
                prompt.section_count = hints.inputs.len();
                prompt.sections = hints.inputs.iter().take(MAX_SECTIONS).map(|s| s.trim()).collect();
                prompt.missing = hints.missing.as_deref().map(str::trim);
            }
            _ => {}
        }
        prompt
    }
}

/// A short program for a code call: it prints the task and a few figures computed from it,
/// so a coder run on the simulated provider really executes something in its sandbox.
fn program(task: &str, language: &str) -> String {
    let task: String = task.chars().take(200).collect();
    if language == "sh" {
        let quoted = task.replace('\'', "'\\''");
        format!(
            "{SIMULATED_LABEL}\n\n```sh\ntask='{quoted}'\nprintf 'Task: %s\\n' \"$task\"\n\
             printf 'Words: %s\\n' \"$(printf '%s' \"$task\" | wc -w)\"\nprintf 'Sum of 1..10: %s\\n' \"$(seq 1 10 | paste -sd+ | bc 2>/dev/null || echo 55)\"\n```\n"
        )
    } else {
        let literal = serde_json::to_string(&task).unwrap_or_else(|_| "\"\"".into());
        format!(
            "{SIMULATED_LABEL}\n\n```python\ntask = {literal}\nwords = task.split()\nprint(f\"Task: {{task}}\")\n\
             print(f\"Words: {{len(words)}}; longest: {{max(words, key=len) if words else ''}}\")\n\
             print(f\"Primes below 50: {{[n for n in range(2, 50) if all(n % d for d in range(2, n))]}}\")\n```\n"
        )
    }
}

/// The first line of the hints' task.
fn task_line(hints: &CallHints) -> Option<&str> {
    hints.task.as_deref().map(|t| t.lines().next().unwrap_or("").trim())
}

/// A Markdown reply of at most `max_bytes` bytes, labelled on its first line.
fn markdown(request: &LlmRequest, content: u64, max_bytes: usize) -> (String, bool) {
    // Too little room for anything after the label: skip reading the prompt altogether.
    if max_bytes < SIMULATED_LABEL.len() + 2 + 16 {
        return (SIMULATED_LABEL.to_string(), true);
    }
    // A judge (belt-core's iterative refinement) gets a verdict on its first line, as a
    // model would give it: accepted or not by the seed, a critique when not.
    let hints = request.hints.as_deref();
    if hints.is_some_and(|h| h.kind == CallKind::Judge) {
        let text = if content.is_multiple_of(2) {
            format!("DONE\n\n{SIMULATED_LABEL}")
        } else {
            format!(
                "REVISE\n- Support the main claims with figures and sources.\n- Cut repetition between \
                 sections.\n- End with concrete recommendations.\n\n{SIMULATED_LABEL}"
            )
        };
        let cut = text.len() > max_bytes;
        return (text, cut);
    }
    if let Some(h) = hints.filter(|h| h.kind == CallKind::Code) {
        let text = program(task_line(h).unwrap_or(""), h.subtask.as_deref().unwrap_or("python"));
        let cut = text.len() > max_bytes;
        return (text, cut);
    }
    let prompt = Prompt::of(hints);
    let mut rng = Rng::new(content);
    let cursor = rng.index(SENTENCES.len());
    let stride = 1 + rng.index(SENTENCES.len() - 1);
    let mut doc = Doc {
        text: String::with_capacity(max_bytes + 256),
        tail: String::new(),
        max_bytes,
        rng,
        words: Vec::new(),
        cursor,
        stride,
    };
    doc.text.push_str(SIMULATED_LABEL);
    doc.text.push_str("\n\n");
    if let Some(description) = prompt.subtask {
        doc.worker(description, prompt.task);
    } else if prompt.section_count > 0 {
        doc.synthesis(&prompt);
    } else {
        doc.other(request.prompt());
    }
    doc.finish()
}

/// A key word of the prompt, to be woven into sentences.
#[derive(Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    /// Capitalized only because it started a sentence: lower-case it mid-sentence.
    lower: bool,
}

/// Used when the prompt has no key words of its own.
const FALLBACK_WORDS: [&str; 8] =
    ["scope", "evidence", "incentives", "constraints", "trade-offs", "timing", "costs", "adoption"];

/// What `{t}`, `{task}`, `{a}` and `{b}` stand for in templates.
struct Slots<'a> {
    topic: &'a str,
    task: &'a str,
    a: Word<'a>,
    b: Word<'a>,
}

/// A reply being written: `text` (label and body), then `tail` (written first, placed
/// last, kept whole while the body is filled up to `max_bytes`).
struct Doc<'a> {
    text: String,
    tail: String,
    max_bytes: usize,
    rng: Rng,
    words: Vec<Word<'a>>,
    /// The next of [`SENTENCES`], walked with `stride` so that none repeats before all
    /// have been used.
    cursor: usize,
    stride: usize,
}

impl<'a> Doc<'a> {
    /// Two different key words, chosen at random.
    fn two_words(&mut self) -> (Word<'a>, Word<'a>) {
        if self.words.is_empty() {
            let i = self.rng.index(FALLBACK_WORDS.len());
            let j = (i + 1 + self.rng.index(FALLBACK_WORDS.len() - 1)) % FALLBACK_WORDS.len();
            let word = |text| Word { text, lower: false };
            return (word(FALLBACK_WORDS[i]), word(FALLBACK_WORDS[j]));
        }
        let n = self.words.len();
        let i = self.rng.index(n);
        let j = if n == 1 { i } else { (i + 1 + self.rng.index(n - 1)) % n };
        (self.words[i], self.words[j])
    }

    /// Appends `template` to `out` (the text or the tail) with fresh key words.
    fn sentence(&mut self, to_tail: bool, template: &str, topic: &str, task: &str) {
        let (a, b) = self.two_words();
        let out = if to_tail { &mut self.tail } else { &mut self.text };
        render(out, template, &Slots { topic, task, a, b });
    }

    /// The next body sentence template. [`SENTENCES`] has a prime length, so that every
    /// stride visits all of them before any repeats.
    fn next_template(&mut self) -> &'static str {
        let template = SENTENCES[self.cursor];
        self.cursor = (self.cursor + self.stride) % SENTENCES.len();
        template
    }

    /// Adds body sentences, in paragraphs of three or four, while they fit before the
    /// tail. `in_paragraph` sentences are already in the open paragraph.
    fn fill(&mut self, mut in_paragraph: usize, topic: &str, task: &str) {
        let mut length = 3 + self.rng.index(2);
        for _ in 0..64 {
            let mark = self.text.len();
            if in_paragraph > 0 {
                self.text.push(' ');
            }
            let template = self.next_template();
            self.sentence(false, template, topic, task);
            if self.text.len() + 2 + self.tail.len() > self.max_bytes {
                self.text.truncate(mark);
                break;
            }
            in_paragraph += 1;
            if in_paragraph >= length {
                self.text.push_str("\n\n");
                in_paragraph = 0;
                length = 3 + self.rng.index(2);
            }
        }
        if in_paragraph > 0 {
            self.text.push_str("\n\n");
        }
    }

    fn worker(&mut self, description: &'a str, task: Option<&'a str>) {
        let heading = shorten(description, 200);
        // In sentences, "Economic impact: estimate the costs of X" is "economic impact".
        let title = description.split_once(": ").map_or(description, |(title, _)| title);
        let topic = topic_of(if title.len() <= 60 { title } else { description }, 70);
        let topic = if topic.is_empty() { heading } else { topic };
        let task_topic =
            task.map(|t| topic_of(t, 120)).filter(|t| !t.is_empty()).unwrap_or("the overall task");
        add_keywords(&mut self.words, description, 8);
        if let Some(task) = task {
            add_keywords(&mut self.words, task, 12);
        }
        // "Stakeholders frame economic impact through economic impact" reads badly.
        self.words.retain(|w| !w.text.eq_ignore_ascii_case(topic));

        // Findings take at most a third of the room, so a short reply keeps some body.
        self.tail.push_str("**Findings**\n\n");
        for k in 0..3 + self.rng.index(3) {
            if k > 0 && self.tail.len() > self.max_bytes / 3 {
                break;
            }
            self.tail.push_str("- ");
            let template = self.rng.pick(&FINDINGS);
            self.sentence(true, template, topic, task_topic);
            self.tail.push('\n');
        }
        self.tail.push_str("\n**Key takeaway:** ");
        let template = self.rng.pick(&TAKEAWAYS);
        self.sentence(true, template, topic, task_topic);
        self.tail.push('\n');

        self.text.push_str("## ");
        self.text.push_str(heading);
        self.text.push_str("\n\n");
        let opener = self.rng.pick(&OPENERS);
        self.sentence(false, opener, topic, task_topic);
        self.fill(1, topic, task_topic);
    }

    fn synthesis(&mut self, prompt: &Prompt<'a>) {
        let task = prompt.task.map(|t| topic_of(t, 120)).filter(|t| !t.is_empty()).unwrap_or("the task");
        for heading in &prompt.sections {
            if self.words.len() >= 12 {
                break;
            }
            let max = self.words.len() + 2;
            add_keywords(&mut self.words, heading, max);
        }
        if let Some(t) = prompt.task {
            add_keywords(&mut self.words, t, 16);
        }

        self.tail.push_str("**Cross-cutting themes**\n\n");
        let start = self.rng.index(THEMES.len());
        for k in 0..3 {
            self.tail.push_str("- ");
            self.sentence(true, THEMES[(start + k) % THEMES.len()], task, task);
            self.tail.push('\n');
        }

        let n = prompt.section_count;
        let _ = write!(
            self.text,
            "## Synthesis\n\nThis synthesis merges {n} input{} on {task}.",
            if n == 1 { "" } else { "s" }
        );
        if let Some(missing) = prompt.missing {
            let missing = shorten(first_sentence(missing), 200);
            if missing.is_empty() {
                self.text.push_str(" **Gaps:** some inputs were missing");
            } else {
                self.text.push_str(" **Gaps:** the inputs for ");
                self.text.push_str(missing);
                self.text.push_str(" were missing");
            }
            self.text.push_str("; conclusions that depend on them are provisional.");
        }
        self.text.push_str("\n\n");

        let mut listed = prompt.sections.len();
        for (named, heading) in prompt.sections.iter().enumerate() {
            let mark = self.text.len();
            let heading = shorten(heading, 120);
            self.text.push_str("- **");
            self.text.push_str(heading.trim_matches('*'));
            self.text.push_str("** ");
            let mut own = Vec::with_capacity(1);
            add_keywords(&mut own, heading, 1);
            let (mut a, b) = self.two_words();
            if let Some(word) = own.first() {
                a = *word;
            }
            let template = self.rng.pick(&INPUT_NOTES);
            render(&mut self.text, template, &Slots { topic: heading, task, a, b });
            self.text.push('\n');
            // Keep room for the line that counts the inputs not named.
            if self.text.len() + self.tail.len() + 40 > self.max_bytes {
                self.text.truncate(mark);
                listed = named;
                break;
            }
        }
        if n > listed {
            let _ = writeln!(self.text, "- …and {} further inputs.", n - listed);
        }
        self.text.push('\n');
        self.fill(0, task, task);
    }

    fn other(&mut self, prompt: &'a str) {
        let heading = heading_of(prompt);
        add_keywords(&mut self.words, prompt, 12);
        let topic = topic_of(heading, 80);
        let topic = if topic.is_empty() { "the request" } else { topic };
        self.text.push_str("## ");
        self.text.push_str(if heading.is_empty() { "Response" } else { heading });
        self.text.push_str("\n\n");
        self.fill(0, topic, topic);
    }

    /// The text, cut to `max_bytes`, and whether it had to be cut.
    fn finish(mut self) -> (String, bool) {
        self.text.push_str(&self.tail);
        let cut = cut_to(&mut self.text, self.max_bytes, SIMULATED_LABEL.len());
        let end = self.text.trim_end().len();
        self.text.truncate(end);
        (self.text, cut)
    }
}

/// Appends `template` with its `{t}`, `{task}`, `{a}` and `{b}` replaced.
fn render(out: &mut String, template: &str, slots: &Slots<'_>) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return;
        };
        match &after[..close] {
            "t" => push_lowered(out, slots.topic, true),
            "task" => push_lowered(out, slots.task, true),
            "a" => push_lowered(out, slots.a.text, slots.a.lower),
            "b" => push_lowered(out, slots.b.text, slots.b.lower),
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
}

/// Pushes `s`, with its first letter lower-cased if `lower` and `s` is Capitalized (not
/// an acronym such as `AI` or `EU`).
fn push_lowered(out: &mut String, s: &str, lower: bool) {
    let b = s.as_bytes();
    if lower && b.len() >= 2 && b[0].is_ascii_uppercase() && !b[1].is_ascii_uppercase() {
        out.push(char::from(b[0].to_ascii_lowercase()));
        out.push_str(&s[1..]);
    } else {
        out.push_str(s);
    }
}

/// Cuts `text` to at most `max` bytes at a line boundary, or else a word boundary, never
/// before `keep`. Returns whether it cut.
fn cut_to(text: &mut String, max: usize, keep: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let line = head.rfind('\n').filter(|&i| i >= keep && i >= end * 2 / 3);
    let word = head.rfind(' ').filter(|&i| i >= keep);
    text.truncate(line.or(word).unwrap_or(keep.min(end)));
    true
}

/// `s` cut to at most `max` bytes at a word boundary, without trailing punctuation (nor,
/// if it was cut, a dangling "of the").
fn shorten(s: &str, max: usize) -> &str {
    let trim = |s: &str| -> usize {
        s.trim_end_matches(|c: char| (c.is_ascii_punctuation() && c != ')' && c != '"') || c.is_whitespace())
            .len()
    };
    let s = s.trim();
    if s.len() <= max {
        return &s[..trim(s)];
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut head = &s[..end];
    head = head.rfind(' ').map_or(head, |i| &head[..i]);
    while let Some((rest, last)) = head.rsplit_once(' ') {
        if !is_stopword(last.trim_matches(|c: char| c.is_ascii_punctuation())) {
            break;
        }
        head = rest;
    }
    &head[..trim(head)]
}

/// `s` up to the end of its first sentence (a ". " outside parentheses), so that
/// "a (x. y); b. Say that they are missing." gives "a (x. y); b".
fn first_sentence(s: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 && s[i + 1..].starts_with(' ') => return &s[..i],
            _ => {}
        }
    }
    s
}

/// The first non-empty line of `s`.
fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

/// Imperative openings dropped from a task to make it a topic: "Analyze the impact of X"
/// becomes "the impact of X".
const LEADING_VERBS: &[&str] = &[
    "write a report on ",
    "write a report about ",
    "write an essay on ",
    "write about ",
    "report on ",
    "analyze ",
    "analyse ",
    "assess ",
    "evaluate ",
    "examine ",
    "explore ",
    "investigate ",
    "research ",
    "study ",
    "describe ",
    "explain ",
    "review ",
    "discuss ",
    "summarize ",
    "summarise ",
    "outline ",
    "map ",
    "identify ",
    "estimate ",
    "determine ",
    "list ",
    "quantify ",
    "compare ",
    "define ",
    "establish ",
    "document ",
    "find ",
    "gather ",
    "collect ",
    "plan ",
    "propose ",
    "consider ",
];

/// A task as a noun phrase, at most `max` bytes.
fn topic_of(task: &str, max: usize) -> &str {
    let task = task.trim();
    for verb in LEADING_VERBS {
        if task.len() > verb.len()
            && task.is_char_boundary(verb.len())
            && task[..verb.len()].eq_ignore_ascii_case(verb)
        {
            return shorten(&task[verb.len()..], max);
        }
    }
    shorten(task, max)
}

/// The first words of the prompt's first line, for a heading.
fn heading_of(prompt: &str) -> &str {
    shorten(first_line(prompt).trim_start_matches(['#', '*', '>', '-', ' ']), 80)
}

/// Words that make poor key words: function words, instructions, imperative verbs.
/// Sorted and lower-case.
const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "along",
    "also",
    "among",
    "an",
    "analyse",
    "analyze",
    "and",
    "another",
    "answer",
    "any",
    "are",
    "around",
    "array",
    "as",
    "assess",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "describe",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "establish",
    "estimate",
    "etc",
    "evaluate",
    "every",
    "exactly",
    "examine",
    "explain",
    "explore",
    "few",
    "first",
    "for",
    "format",
    "from",
    "further",
    "get",
    "give",
    "got",
    "had",
    "has",
    "have",
    "having",
    "her",
    "here",
    "him",
    "his",
    "how",
    "identify",
    "if",
    "in",
    "include",
    "input",
    "inputs",
    "into",
    "investigate",
    "is",
    "it",
    "its",
    "json",
    "just",
    "keep",
    "know",
    "last",
    "let",
    "like",
    "list",
    "make",
    "many",
    "map",
    "markdown",
    "may",
    "merge",
    "might",
    "more",
    "most",
    "much",
    "must",
    "next",
    "nor",
    "not",
    "of",
    "on",
    "one",
    "only",
    "onto",
    "or",
    "other",
    "our",
    "out",
    "outline",
    "output",
    "over",
    "own",
    "part",
    "per",
    "please",
    "propose",
    "provide",
    "question",
    "regarding",
    "reply",
    "report",
    "research",
    "respond",
    "response",
    "result",
    "results",
    "return",
    "review",
    "same",
    "section",
    "sections",
    "see",
    "set",
    "she",
    "should",
    "so",
    "some",
    "still",
    "subtask",
    "subtasks",
    "such",
    "summarize",
    "synthesis",
    "take",
    "task",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "through",
    "to",
    "too",
    "try",
    "under",
    "until",
    "up",
    "upon",
    "us",
    "use",
    "using",
    "very",
    "via",
    "want",
    "was",
    "way",
    "we",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "write",
    "yet",
    "you",
    "your",
    "yours",
];

fn is_stopword(word: &str) -> bool {
    let mut buf = [0u8; 16];
    if word.len() > buf.len() {
        return false;
    }
    let lower = &mut buf[..word.len()];
    lower.copy_from_slice(word.as_bytes());
    lower.make_ascii_lowercase();
    STOPWORDS.binary_search_by(|w| w.as_bytes().cmp(lower)).is_ok()
}

/// Adds the key phrases of `text` (its first 600 bytes) to `words`, up to `max` in all.
///
/// A key phrase is a run of up to three content words between stop words and
/// punctuation: "Estimate the economic impact of artificial intelligence" gives
/// "economic impact" and "artificial intelligence". Single words need 4 letters, unless
/// they are acronyms such as "AI".
fn add_keywords<'a>(words: &mut Vec<Word<'a>>, text: &'a str, max: usize) {
    /// A phrase being gathered: its byte range, its number of words, and whether its
    /// first letter is capitalized only because it starts a sentence.
    struct Phrase {
        start: usize,
        end: usize,
        words: usize,
        lower: bool,
    }
    fn acronym(w: &str) -> bool {
        w.len() >= 2 && w.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }
    fn flush<'a>(words: &mut Vec<Word<'a>>, text: &'a str, phrase: Option<Phrase>) {
        let Some(p) = phrase else { return };
        let found = &text[p.start..p.end];
        let keep = (p.words >= 2 || found.len() >= 4 || acronym(found))
            && !words.iter().any(|w| w.text.eq_ignore_ascii_case(found));
        if keep {
            words.push(Word { text: found, lower: p.lower });
        }
    }

    let mut scan = text.len().min(600);
    while !text.is_char_boundary(scan) {
        scan -= 1;
    }
    let text = &text[..scan];
    let mut sentence_start = true;
    let mut word_start = None;
    let mut phrase: Option<Phrase> = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), '\n'))) {
        if words.len() >= max {
            return;
        }
        if c.is_alphanumeric() || c == '-' || c == '\'' {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = word_start.take() {
            let raw = &text[start..i];
            let word = raw.trim_start_matches(['-', '\'']);
            let start = start + (raw.len() - word.len());
            let word = word.trim_end_matches(['-', '\'']);
            let b = word.as_bytes();
            let content = b.len() >= 2
                && (b.len() >= 3 || acronym(word))
                && !b.iter().all(u8::is_ascii_digit)
                && !is_stopword(word);
            if !content {
                flush(words, text, phrase.take());
            } else if let Some(p) = phrase.as_mut().filter(|p| p.words < 3) {
                p.end = start + word.len();
                p.words += 1;
            } else {
                flush(words, text, phrase.take());
                let capitalized = b[0].is_ascii_uppercase() && !b[1].is_ascii_uppercase();
                phrase = Some(Phrase {
                    start,
                    end: start + word.len(),
                    words: 1,
                    lower: sentence_start && capitalized,
                });
            }
            sentence_start = false;
        }
        if c != ' ' {
            flush(words, text, phrase.take());
        }
        if matches!(c, '.' | ':' | '!' | '?' | '\n') {
            sentence_start = true;
        }
    }
}

// Templates. `{t}` is the topic (subtask or heading), `{task}` the task, `{a}` and `{b}`
// two different key words. None starts with a placeholder, so capitals stay right.
// Lists drawn from with a stride (`SENTENCES`) have a prime length.

const OPENERS: [&str; 5] = [
    "This section covers {t}, one strand of the wider work on {task}.",
    "The question here is {t}, examined as part of {task}.",
    "What follows looks at {t} and how it bears on {task}.",
    "This part of the analysis focuses on {t} within {task}.",
    "Here the focus is {t}, considered against the backdrop of {task}.",
];

const SENTENCES: [&str; 23] = [
    "The available evidence points to {a} as the factor that shapes most outcomes.",
    "Any serious treatment of {task} has to account for {a}, {b} and the interplay between them.",
    "Sources disagree on the weight of {a}, but they agree that {b} cannot be ignored.",
    "The most useful framing treats {a} as a constraint rather than a goal.",
    "Practitioners describe {a} as the area where small changes have outsized effects.",
    "Data on {a} remain patchy, so conclusions about {t} deserve moderate confidence.",
    "Historical precedents suggest that shifts in {b} tend to follow shifts in {a} with a lag.",
    "A comparison across settings shows that the role of {a} grows wherever support for {b} is weak.",
    "In the short term the picture is dominated by {a}, in the long term by {b}.",
    "Stakeholders tend to frame {t} through {a}, which hides trade-offs involving {b}.",
    "Measuring progress on {a} requires indicators agreed on in advance.",
    "Risks concentrate where {a} and {b} overlap.",
    "None of this settles the central question of {task}, but it sharpens it.",
    "Where the handling of {a} is sound, progress on {b} tends to follow.",
    "The strongest counter-argument is that the role of {a} is smaller than commonly assumed.",
    "Experience with {a} shows how quickly assumptions about {b} can change.",
    "The costs and benefits of {a} fall on different groups, which explains much of the debate.",
    "A cautious reading of the evidence still puts {a} near the centre of {t}.",
    "For decision-makers, the practical question is how to sequence work on {a} and {b}.",
    "Uncertainty about {b} should not delay action on {a}.",
    "Local conditions shape the effects of {a}, so general claims need qualification.",
    "The link between {a} and {task} is well documented, though its size is debated.",
    "Over time, attention is likely to shift from {a} towards {b}.",
];

const FINDINGS: [&str; 11] = [
    "The dominant driver within {t} is {a}.",
    "Evidence on {a} is strongest; evidence on {b} is thinner and more contested.",
    "Interactions between {a} and {b} explain most of the variation observed.",
    "Early action on {a} is cheaper than later correction.",
    "The main uncertainty concerns how {a} will evolve over the next few years.",
    "Trade-offs between {a} and {b} need explicit decisions, not defaults.",
    "Existing measures understate the effect of {a} on {task}.",
    "Case evidence shows that {a} can improve without sacrificing {b}.",
    "Coordination among the actors involved in {a} is the binding constraint.",
    "Quick wins exist around {a}; structural change depends on {b}.",
    "Monitoring {a} gives the earliest warning of problems.",
];

const TAKEAWAYS: [&str; 5] = [
    "get {a} right first; most of {t} follows from it.",
    "progress on {task} depends less on {b} than on {a}.",
    "treat {a} and {b} together, not as separate problems.",
    "the case for action on {a} is strong, and the cost of waiting rises.",
    "watch {a}: that is where {t} will succeed or fail.",
];

const INPUT_NOTES: [&str; 7] = [
    "contributes evidence on {a}.",
    "adds detail on {a} and how it bears on {task}.",
    "is most useful for its treatment of {a}.",
    "complements the other inputs on {a} and {b}.",
    "raises open questions about {a}.",
    "confirms the weight of {a} relative to {b}.",
    "offers a distinct angle on {a}.",
];

const THEMES: [&str; 7] = [
    "Across the inputs, the theme of {a} recurs and links most of their conclusions.",
    "The inputs agree on the importance of {a} but differ on {b}.",
    "Tension between {a} and {b} is the main unresolved trade-off.",
    "Several inputs treat {a} as a precondition for progress on {b}.",
    "Evidence on {a} is consistent; evidence on {b} is mixed.",
    "Any recommendation on {task} must sequence {a} before {b}.",
    "Monitoring {a} would give early warning across all areas.",
];

#[cfg(test)]
mod tests {
    use super::*;
    use belt_core::llm::Message;
    use std::sync::Arc;

    fn call(step: &str, attempt: u32) -> CallInfo {
        CallInfo::new(StepId::new(step), attempt)
    }

    fn instant(seed: u64) -> SimulatedProvider {
        SimulatedProvider::new(SimConfig::default().seed(seed).latency_ms(0))
    }

    fn ok(provider: &SimulatedProvider, request: &LlmRequest, step: &str) -> LlmReply {
        provider.simulate("default", request, &call(step, 1)).result.expect("no failure injected")
    }

    fn worker_request(id: usize, description: &str) -> LlmRequest {
        LlmRequest::new(
            "simulated/default",
            format!(
                "You are a specialist.\nTask: Analyze the impact of artificial intelligence on employment\n\
                 Subtask {id}: {description}\n\nWrite a thorough Markdown answer."
            ),
        )
        .system("You are one worker of a research cascade.")
        .max_tokens(1024)
        .hints(CallHints::work("Analyze the impact of artificial intelligence on employment", description))
    }

    fn decompose_request(n: Option<usize>, max_tokens: u32) -> LlmRequest {
        let ask = n.map_or(String::new(), |n| format!("Split it into exactly {n} subtasks. "));
        let mut hints = CallHints::plan("Analyze the \"impact\" of AI on employment", n.unwrap_or(0));
        hints.count = n;
        LlmRequest::new(
            "simulated/default",
            format!("Task: Analyze the \"impact\" of AI on employment\n{ask}Reply with a JSON array."),
        )
        .max_tokens(max_tokens)
        .json()
        .hints(hints)
    }

    fn merge_request(task: &str, inputs: &[&str], missing: Option<&str>, prompt: &str) -> LlmRequest {
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        LlmRequest::new("simulated/default", prompt).hints(CallHints::merge(
            task,
            inputs,
            missing.map(String::from),
        ))
    }

    fn plan(reply: &LlmReply) -> Vec<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_str(&reply.text).expect("valid JSON");
        value.as_array().expect("a JSON array").clone()
    }

    #[test]
    fn a_judge_gets_a_verdict_on_its_first_line_and_both_verdicts_occur() {
        let request = LlmRequest::new(
            "simulated/default",
            "Judge whether the draft below meets the criteria.\nIf it fully meets them, reply with the \
             single word DONE.\nOtherwise reply REVISE on the first line.\n\nDraft:\nText",
        )
        .hints(CallHints::judge());
        let verdicts: std::collections::BTreeSet<String> = (0..16)
            .map(|seed| {
                let reply = ok(&instant(seed), &request, "refine/01/judge");
                assert!(reply.text.ends_with(SIMULATED_LABEL), "{}", reply.text);
                reply.text.lines().next().unwrap().to_string()
            })
            .collect();
        assert_eq!(verdicts, ["DONE".to_string(), "REVISE".to_string()].into());
    }

    #[test]
    fn label_is_short_enough_for_small_budgets() {
        assert_eq!(SIMULATED_LABEL.len().div_ceil(BYTES_PER_TOKEN), 23);
    }

    #[test]
    fn stopwords_are_sorted_lower_case_and_searchable() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]), "STOPWORDS must be sorted");
        assert!(STOPWORDS.iter().all(|w| w.len() >= 2 && w.len() <= 16 && *w == w.to_lowercase()));
        assert!(is_stopword("Analyze") && is_stopword("THROUGH") && !is_stopword("employment"));
    }

    #[test]
    fn same_seed_gives_identical_replies_and_other_seeds_differ() {
        let request = worker_request(3, "Estimate the economic impact on wages");
        let a = ok(&instant(7), &request, "worker/003");
        let b = ok(&instant(7), &request, "worker/003");
        assert_eq!(a, b);
        let c = ok(&instant(8), &request, "worker/003");
        assert_ne!(a.text, c.text);
    }

    #[test]
    fn replies_are_labelled_and_name_the_simulated_model() {
        let provider = instant(0);
        assert_eq!(provider.name(), "simulated");
        assert!(provider.is_simulated());
        assert_eq!(provider.price("anything"), Some(SIMULATED_PRICE));
        let requests = [
            worker_request(1, "Map the key stakeholders"),
            LlmRequest::new("simulated/x", "### Input one\ntext\n### Input two\ntext"),
            LlmRequest::new("simulated/x", "Tell me about tides."),
            LlmRequest::new("simulated/x", ""),
        ];
        for request in &requests {
            for max_tokens in [1, 16, 30, 100, 4096] {
                let request = request.clone().max_tokens(max_tokens);
                let reply = provider.simulate("my-model", &request, &call("s", 1)).result.unwrap();
                assert!(reply.simulated);
                assert_eq!(reply.model, "simulated/my-model");
                let mut lines = reply.text.lines();
                assert_eq!(lines.next(), Some(SIMULATED_LABEL), "{max_tokens}: {}", reply.text);
                assert!(matches!(lines.next(), None | Some("")));
            }
        }
    }

    #[test]
    fn workers_differ_by_step_and_subtask_and_mention_their_subtask() {
        let provider = instant(1);
        let descriptions = [
            "Estimate the economic impact on wages",
            "Map the key stakeholders",
            "Review the regulation in Europe",
        ];
        let mut texts = Vec::new();
        for (i, description) in descriptions.iter().enumerate() {
            let reply = ok(&provider, &worker_request(i + 1, description), &format!("worker/00{}", i + 1));
            assert!(reply.text.contains(&format!("## {description}")), "{}", reply.text);
            assert!(reply.text.contains("**Key takeaway:**"), "{}", reply.text);
            assert!(reply.text.contains("\n- "), "a findings list: {}", reply.text);
            texts.push(reply.text);
        }
        // Same prompt, different steps.
        let request = worker_request(1, descriptions[0]);
        let other = ok(&provider, &request, "worker/009");
        texts.push(other.text);
        for (i, a) in texts.iter().enumerate() {
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Key words of the description and the task are woven in.
        let text = ok(&provider, &worker_request(4, "Quantify automation exposure"), "worker/004").text;
        let lower = text.to_lowercase();
        assert!(
            ["quantify", "automation", "exposure", "artificial", "intelligence", "employment"]
                .iter()
                .any(|w| lower.split("## ").nth(1).unwrap().contains(w))
        );
    }

    #[test]
    fn markdown_length_targets_seventy_percent_of_max_tokens_capped_at_700() {
        let provider = instant(2);
        for max_tokens in [40, 100, 300, 1000, 4096] {
            let request = worker_request(1, "Map the key stakeholders").max_tokens(max_tokens);
            let reply = ok(&provider, &request, "worker/001");
            let target = (max_tokens as u64 * 7 / 10).min(700);
            assert!(reply.usage.output_tokens <= target, "{max_tokens}: {:?}", reply.usage);
            if max_tokens >= 300 {
                assert!(reply.usage.output_tokens >= target * 8 / 10, "{max_tokens}: {:?}", reply.usage);
            }
        }
    }

    #[test]
    fn synthesis_names_each_input_and_the_gaps() {
        let provider = instant(3);
        let prompt = "Task: Analyze the impact of AI on employment\n\
                      Merge the following results.\n\n\
                      ### Subtask 1: Economic impact on wages\nWages rise in some sectors.\n\n\
                      ### Subtask 2: Key stakeholders\nUnions and employers.\n\n\
                      ### Subtask 4: Regulation in Europe\nThe AI Act.\n\n\
                      Missing inputs: worker/003 (Case studies)\n";
        let inputs = [
            "Subtask 1: Economic impact on wages",
            "Subtask 2: Key stakeholders",
            "Subtask 4: Regulation in Europe",
        ];
        let request = merge_request(
            "Analyze the impact of AI on employment",
            &inputs,
            Some("worker/003 (Case studies)"),
            prompt,
        )
        .max_tokens(2000);
        let text = ok(&provider, &request, "synth/1/001").text;
        assert!(text.contains("## Synthesis"), "{text}");
        assert!(text.contains("merges 3 inputs"), "{text}");
        for heading in
            ["Subtask 1: Economic impact on wages", "Subtask 2: Key stakeholders", "Regulation in Europe"]
        {
            assert!(text.contains(heading), "{heading} in {text}");
        }
        assert!(text.contains("**Gaps:**") && text.contains("worker/003 (Case studies)"), "{text}");
        assert!(text.contains("**Cross-cutting themes**"), "{text}");
    }

    #[test]
    fn the_hints_not_the_wording_decide_what_a_call_is() {
        // Worded like a worker whose inputs have sections: a worker by its hints.
        let prompt =
            "Task: Build a bridge\nSubtask 5: Choose the materials\n\n### Subtask 1: Site survey\nRock.\n";
        let request = LlmRequest::new("simulated/x", prompt)
            .hints(CallHints::work("Build a bridge", "Choose the materials"));
        let text = ok(&instant(0), &request, "worker/005").text;
        assert!(text.contains("## Choose the materials") && !text.contains("## Synthesis"), "{text}");
        // Worded like a worker, a merge by its hints.
        let request = merge_request("Build a bridge", &["Input 1", "Input 2"], None, prompt);
        let text = ok(&instant(0), &request, "synth/1/001").text;
        assert!(text.contains("## Synthesis") && text.contains("merges 2 inputs"), "{text}");
        // Without hints, the words alone make no worker, merge, plan count or judge.
        for prompt in [
            prompt,
            "Judge whether the draft meets them. If it fully meets them, reply with the single word DONE.",
        ] {
            let text = ok(&instant(0), &LlmRequest::new("simulated/x", prompt), "agent/001").text;
            assert!(!text.contains("## Synthesis") && !text.contains("## Choose the materials"), "{text}");
            assert!(!text.starts_with("DONE") && !text.starts_with("REVISE"), "{text}");
        }
        let request = LlmRequest::new("simulated/x", "Task: x\nSplit it into exactly 9 subtasks.").json();
        assert_eq!(
            plan(&ok(&instant(0), &request, "decompose")).len(),
            5,
            "the count is a hint, not a phrase"
        );
    }

    /// The cascade's requests, with the hints it gives them.
    #[test]
    fn the_cascade_hints_are_understood() {
        let provider = instant(11);
        let worker = "Task: Analyze the impact of AI on employment\nSubtask 2: Map the labour unions' positions\n\
                      Specialization: policy expert\n\nResults of the subtasks this one builds on:\n\n\
                      #### Subtask 1 (worker/001)\n### Not a section\nSubtask 7: not this one\n\n\
                      Write your findings on this subtask as Markdown: a heading, short paragraphs, a list \
                      of key findings, and the sources you rely on.";
        let request = LlmRequest::new("simulated/default", worker)
            .system("You are a policy expert.")
            .max_tokens(1200)
            .hints(CallHints::work(
                "Analyze the impact of AI on employment",
                "Map the labour unions' positions",
            ));
        let text = ok(&provider, &request, "worker/002").text;
        assert!(text.contains("## Map the labour unions' positions\n"), "{text}");
        assert!(text.contains("labour unions"), "{text}");

        let synth = "Task: Analyze the impact of AI on employment\nYou are synthesizer synth/1/001. Merge the \
                     findings below into one coherent synthesis.\n\
                     \n### Input 1: Background and definitions: establish the key terms\n(from worker/001)\n\n\
                     *Simulated response*\n\n## Background\n\nText.\n\
                     \n### Input 2: Current state: describe where things stand\n(from worker/002)\n\nText.\n\
                     \nMissing inputs: worker/003 (provider error HTTP 500: boom. again); worker/004 (the call \
                     timed out after 60s). Say in the synthesis that these parts are missing.\n";
        let request = merge_request(
            "Analyze the impact of AI on employment",
            &[
                "Input 1: Background and definitions: establish the key terms",
                "Input 2: Current state: describe where things stand",
            ],
            Some(
                "worker/003 (provider error HTTP 500: boom. again); worker/004 (the call timed out after 60s)",
            ),
            synth,
        )
        .max_tokens(1200);
        let text = ok(&provider, &request, "synth/1/001").text;
        assert!(text.contains("merges 2 inputs on the impact of AI on employment."), "{text}");
        assert!(text.contains("**Input 1: Background and definitions: establish the key terms**"), "{text}");
        assert!(text.contains("**Input 2: Current state: describe where things stand**"), "{text}");
        assert!(
            text.contains(
                "the inputs for worker/003 (provider error HTTP 500: boom. again); worker/004 (the call timed \
                 out after 60s) were missing"
            ),
            "{text}"
        );
        assert!(!text.contains("Say in the synthesis"), "{text}");
    }

    #[test]
    fn huge_synthesis_stays_bounded() {
        let mut prompt = String::from("Task: Everything\n");
        let mut inputs = Vec::new();
        for i in 0..20_000 {
            prompt.push_str(&format!("### Subtask {i}: Part number {i}\nSome text.\n"));
            inputs.push(format!("Subtask {i}: Part number {i}"));
        }
        let request = LlmRequest::new("simulated/x", prompt).max_tokens(100_000).hints(CallHints::merge(
            "Everything",
            inputs,
            None,
        ));
        let reply = ok(&instant(0), &request, "executive");
        assert!(reply.text.contains("merges 20000 inputs"), "{}", reply.text);
        assert!(reply.text.contains("further inputs"), "{}", reply.text);
        assert!(reply.usage.output_tokens <= 700);
    }

    #[test]
    fn other_prompts_get_a_heading_from_their_first_words() {
        let request =
            LlmRequest::new("simulated/x", "# Explain how tides work on Earth and the Moon, briefly please");
        let text = ok(&instant(0), &request, "agent/001").text;
        assert!(
            text.contains("\n## Explain how tides work on Earth and the Moon, briefly please\n"),
            "{text}"
        );
        let request =
            LlmRequest::new("simulated/x", format!("Describe {}", "the tide of the sea ".repeat(10)));
        let text = ok(&instant(0), &request, "agent/002").text;
        assert!(text.contains(
            "\n## Describe the tide of the sea the tide of the sea the tide of the sea the tide\n"
        ));
        assert!(text.len() > 400, "{text}");
    }

    /// A plan asked as `{"subtasks": [...]}` (the shape JSON object modes can enforce) is
    /// answered in that shape, with the same items.
    #[test]
    fn a_plan_asked_for_as_an_object_comes_back_as_one() {
        let provider = instant(4);
        let schema = belt_core::schema::OutputSchema::list("plan", "subtasks", &[("description", "string")]);
        let request = decompose_request(Some(7), 200_000).output_schema(schema);
        let reply = ok(&provider, &request, "decompose");
        let value: serde_json::Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(value["subtasks"].as_array().map(Vec::len), Some(7), "{}", reply.text);
    }

    /// The decomposition request the cascade writes for `task`.
    fn cascade_request(
        task: &str,
        strategy: belt_core::Strategy,
        min: Option<usize>,
        max: usize,
    ) -> LlmRequest {
        let mut cascade = belt_core::Cascade::new(max, "simulated/default");
        cascade.strategy = strategy;
        cascade.min_agents = min;
        cascade.decomposition().request(&belt_core::Task::new(task))
    }

    fn object(reply: &LlmReply) -> serde_json::Value {
        serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("{e}: {}", reply.text))
    }

    #[test]
    fn a_cascade_plan_has_the_strategy_asked_for_or_chosen_and_its_dependencies() {
        use belt_core::Strategy;
        let provider = instant(1);
        let reply =
            ok(&provider, &cascade_request("Plan a city park", Strategy::Software, None, 6), "decompose");
        let v = object(&reply);
        assert_eq!(v["strategy"], "software");
        let items = v["subtasks"].as_array().unwrap();
        assert_eq!(items.len(), 6);
        assert!(items[0]["description"].as_str().unwrap().starts_with("Requirements"));
        assert_eq!(items[0]["dependencies"], serde_json::json!([]));
        assert_eq!(items[2]["dependencies"], serde_json::json!([2]), "implementation after architecture");
        // Auto: chosen from the task's words, research when none match.
        for (task, expected) in [
            ("Build a REST API for invoices", "software"),
            ("Plan the launch of a new product", "planning"),
            ("Compare the sales data of 2023 and 2024", "analysis"),
            ("The history of the printing press", "research"),
        ] {
            let reply = ok(&provider, &cascade_request(task, Strategy::Auto, None, 3), "decompose");
            assert_eq!(object(&reply)["strategy"], expected, "{task}");
        }
    }

    #[test]
    fn a_plan_in_a_range_has_a_count_within_it_that_depends_on_the_request() {
        let provider = instant(2);
        let counts: std::collections::BTreeSet<usize> = (0..24)
            .map(|i| {
                let request =
                    cascade_request(&format!("Task number {i}"), belt_core::Strategy::Research, Some(3), 6);
                let reply = ok(&provider, &request, "decompose");
                object(&reply)["subtasks"].as_array().unwrap().len()
            })
            .collect();
        assert!(counts.iter().all(|n| (3..=6).contains(n)), "{counts:?}");
        assert!(counts.len() > 1, "the count varies with the task: {counts:?}");
    }

    #[test]
    fn plan_faults_by_model_name_and_once_only_on_the_first_ask() {
        let provider = instant(3);
        let request = cascade_request("Build an app", belt_core::Strategy::Software, None, 4);
        let items = |model: &str, request: &LlmRequest| -> Vec<serde_json::Value> {
            let reply = provider.simulate(model, request, &call("decompose", 1)).result.unwrap();
            assert!(reply.simulated);
            object(&reply)["subtasks"].as_array().unwrap().clone()
        };
        let dup = items("plan-duplicates", &request);
        assert_eq!(dup[0]["description"], dup[1]["description"]);
        let empty = items("plan-empty", &request);
        assert_eq!(empty[3]["description"], "");
        let cycle = items("plan-cycle", &request);
        assert_eq!(cycle[0]["dependencies"], serde_json::json!([4]));
        assert_eq!(cycle[3]["dependencies"], serde_json::json!([1]));
        let sound = items("default", &request);
        assert_ne!(sound[0]["description"], sound[1]["description"]);
        // Asked again (a longer conversation): `-once` faults are gone, others stay.
        let mut again = request.clone();
        again.messages.push(belt_core::llm::Message::assistant("[]"));
        again.messages.push(belt_core::llm::Message::user("Again, without duplicates."));
        let fixed = items("plan-duplicates-once", &again);
        assert_ne!(fixed[0]["description"], fixed[1]["description"]);
        let first = items("plan-duplicates-once", &request);
        assert_eq!(first[0]["description"], first[1]["description"]);
        let still = items("plan-duplicates", &again);
        assert_eq!(still[0]["description"], still[1]["description"]);
    }

    #[test]
    fn decomposition_returns_exactly_n_subtasks() {
        let provider = instant(4);
        for n in [1, 5, 12, 1000] {
            let reply = ok(&provider, &decompose_request(Some(n), 200_000), "decompose");
            assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
            let items = plan(&reply);
            assert_eq!(items.len(), n);
            let mut descriptions = std::collections::HashSet::new();
            for item in &items {
                let description = item["description"].as_str().unwrap();
                assert!(description.contains("the \"impact\" of AI on employment"), "{description}");
                assert!(descriptions.insert(description.to_string()), "duplicate {description}");
                assert!(!item["specialization"].as_str().unwrap().is_empty());
                let priority = item["priority"].as_u64().unwrap();
                assert!((1..=10).contains(&priority));
            }
            assert!(reply.usage.output_tokens <= 200_000);
        }
        let reply = ok(&provider, &decompose_request(None, 4096), "decompose");
        assert_eq!(plan(&reply).len(), 5, "5 subtasks by default");
    }

    #[test]
    fn decomposition_emits_fewer_items_rather_than_broken_json() {
        let provider = instant(5);
        for max_tokens in [1, 10, 40, 100, 300] {
            let reply = ok(&provider, &decompose_request(Some(12), max_tokens), "decompose");
            let items = plan(&reply);
            assert!(items.len() < 12, "{max_tokens}: {}", items.len());
            assert!(reply.usage.output_tokens <= u64::from(max_tokens));
            assert_eq!(reply.finish_reason.as_deref(), Some("length"));
        }
        let reply = ok(&provider, &decompose_request(Some(12), 300), "decompose");
        assert!(!plan(&reply).is_empty());
    }

    #[test]
    fn decomposition_of_100k_subtasks_is_linear() {
        let reply = ok(&instant(6), &decompose_request(Some(100_000), u32::MAX), "decompose");
        assert_eq!(plan(&reply).len(), 100_000);
    }

    #[test]
    fn token_counts_respect_the_bounds() {
        let provider = instant(9);
        let long = "word ".repeat(5000);
        let mut requests = vec![
            worker_request(1, "Map the key stakeholders"),
            decompose_request(Some(20), 1000),
            LlmRequest::new("simulated/x", long.as_str()),
            LlmRequest::new("simulated/x", "").system("s"),
            LlmRequest::new("simulated/x", "é".repeat(999)),
        ];
        let mut conversation = LlmRequest::new("simulated/x", "hi");
        conversation.messages.push(Message::assistant("hello"));
        conversation.messages.push(Message::user("### A\n### B\nsummarize"));
        requests.push(conversation);
        for request in requests {
            for max_tokens in [1, 2, 16, 23, 24, 25, 50, 137, 1024, 9000] {
                let request = request.clone().max_tokens(max_tokens);
                for step in ["a", "b", "c"] {
                    let reply = ok(&provider, &request, step);
                    assert!(reply.usage.input_tokens <= request.input_token_bound());
                    assert!(reply.usage.output_tokens <= u64::from(max_tokens), "{max_tokens}");
                    if max_tokens >= 24 {
                        assert_eq!(reply.usage.output_tokens, reply.text.len().div_ceil(4) as u64);
                    }
                }
            }
        }
        let request = LlmRequest::new("simulated/x", "abcdefgh").system("abcd");
        assert_eq!(input_tokens(&request), 2 + 1 + 2 * TOKENS_PER_MESSAGE);
    }

    #[test]
    fn zero_max_tokens_is_an_invalid_request() {
        let request = LlmRequest::new("simulated/x", "hi").max_tokens(0);
        let err = instant(0).simulate("x", &request, &call("s", 1)).result.unwrap_err();
        assert!(matches!(err, LlmError::InvalidRequest(_)) && !err.is_retryable());
    }

    fn failing(rate: f64) -> SimulatedProvider {
        SimulatedProvider::new(SimConfig::default().latency_ms(0).fail_rate(rate))
    }

    fn fails(provider: &SimulatedProvider, step: usize, attempt: u32) -> Option<LlmError> {
        let request = LlmRequest::new("simulated/default", "Say something.").max_tokens(64);
        provider.simulate("default", &request, &call(&format!("worker/{step:05}"), attempt)).result.err()
    }

    #[test]
    fn fail_rate_one_always_fails_and_zero_never_does() {
        let (always, never) = (failing(1.0), failing(0.0));
        let mut kinds = std::collections::HashSet::new();
        for step in 0..300 {
            let err = fails(&always, step, 1).expect("fail_rate 1.0 always fails");
            assert!(err.is_retryable());
            kinds.insert(err.kind());
            match &err {
                LlmError::RateLimited { retry_after, message } => {
                    let wait = retry_after.unwrap();
                    assert!((Duration::from_millis(50)..=Duration::from_millis(200)).contains(&wait));
                    assert!(message.contains("injected by belt's simulated provider"), "{message}");
                }
                LlmError::Server { status, message } => {
                    assert_eq!(*status, 500);
                    assert!(message.contains("injected by belt's simulated provider"), "{message}");
                }
                LlmError::Timeout(latency) => assert_eq!(*latency, Duration::ZERO),
                other => panic!("unexpected {other:?}"),
            }
            assert!(fails(&never, step, 1).is_none());
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        let none =
            SimulatedProvider::new(SimConfig::default().latency_ms(0).fail_rate(1.0).failure_kinds([]));
        assert!(fails(&none, 1, 1).is_none(), "no kinds, no failures");
        let only = SimulatedProvider::new(
            SimConfig::default().latency_ms(0).fail_rate(1.0).failure_kinds([FailureKind::Server]),
        );
        assert!((0..50).all(|s| fails(&only, s, 1).is_some_and(|e| e.kind() == "server_error")));
    }

    #[test]
    fn fail_rate_is_honoured_over_many_steps() {
        let provider = failing(0.3);
        let failed = (0..1000).filter(|&step| fails(&provider, step, 1).is_some()).count();
        assert!((200..=400).contains(&failed), "{failed} of 1000 failed");
    }

    #[test]
    fn injected_failures_are_reproducible_per_attempt() {
        let a = failing(0.5);
        let b = failing(0.5);
        let mut differs = false;
        for step in 0..100 {
            let outcomes: Vec<_> = (1..=4).map(|attempt| fails(&a, step, attempt)).collect();
            let again: Vec<_> = (1..=4).map(|attempt| fails(&b, step, attempt)).collect();
            assert_eq!(outcomes, again);
            differs |= outcomes.iter().any(|o| o.is_some() != outcomes[0].is_some());
        }
        assert!(differs, "some step must fail on one attempt and succeed on another");
    }

    #[test]
    fn retried_steps_return_the_same_text() {
        let provider = SimulatedProvider::new(SimConfig::default().latency_ms(0).fail_rate(0.5));
        let request = worker_request(2, "Map the key stakeholders");
        let texts: Vec<String> = (1..=12)
            .filter_map(|attempt| {
                provider.simulate("default", &request, &call("worker/002", attempt)).result.ok()
            })
            .map(|reply| reply.text)
            .collect();
        assert!(texts.len() >= 2);
        assert!(texts.iter().all(|t| *t == texts[0]));
    }

    #[test]
    fn uniform_latency_stays_in_range_and_varies_with_attempts() {
        let provider = SimulatedProvider::new(SimConfig::default().latency_range_ms(200, 800));
        let request = LlmRequest::new("simulated/x", "hi");
        let latencies: Vec<Duration> =
            (1..=50).map(|attempt| provider.simulate("x", &request, &call("s", attempt)).latency).collect();
        let range = Duration::from_millis(200)..=Duration::from_millis(800);
        assert!(latencies.iter().all(|l| range.contains(l)));
        assert!(latencies.iter().any(|l| *l != latencies[0]));
        assert_eq!(Latency::uniform_ms(5, 5).sample(u64::MAX), Duration::from_millis(5));
        assert_eq!(Latency::uniform_ms(9, 3).sample(0), Duration::from_millis(3));
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_latency_is_respected() {
        let provider = SimulatedProvider::new(SimConfig::default().latency_ms(250).precise_timer(false));
        let request = LlmRequest::new("simulated/x", "hi");
        let start = tokio::time::Instant::now();
        provider.complete("x", &request, &call("s", 1)).await.unwrap();
        let elapsed = start.elapsed();
        assert!((Duration::from_millis(250)..Duration::from_millis(252)).contains(&elapsed), "{elapsed:?}");
    }

    /// Watched (a run that asked for `step_delta` events), a reply streams in pieces that
    /// make up its text, and ends when it would unwatched, with the same reply.
    #[tokio::test(start_paused = true)]
    async fn a_watched_reply_streams_in_pieces_and_ends_on_time() {
        let provider =
            SimulatedProvider::new(SimConfig::default().seed(4).latency_ms(1500).precise_timer(false));
        let request = worker_request(1, "Jobs most exposed");
        let unwatched = provider.complete("x", &request, &call("worker/1", 1)).await.unwrap();
        let seen: Arc<std::sync::Mutex<Vec<(String, Duration)>>> = Arc::default();
        let start = tokio::time::Instant::now();
        let sink: belt_core::llm::DeltaSink = {
            let seen = seen.clone();
            Arc::new(move |text: &str| seen.lock().unwrap().push((text.to_string(), start.elapsed())))
        };
        let watched =
            belt_core::llm::with_delta_sink(sink, provider.complete("x", &request, &call("worker/1", 1)))
                .await
                .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(watched, unwatched);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), STREAM_PIECES, "{seen:?}");
        assert_eq!(seen.iter().map(|(t, _)| t.as_str()).collect::<String>(), watched.text);
        assert_eq!(seen[0].1, Duration::from_millis(600), "the first words after 40% of the latency");
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "pieces arrive over time: {seen:?}");
        // A short call streams in one piece (the engine would pass on no more).
        let short = SimulatedProvider::new(SimConfig::default().seed(4).latency_ms(150).precise_timer(false));
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink: belt_core::llm::DeltaSink = {
            let count = count.clone();
            Arc::new(move |_: &str| {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
        };
        belt_core::llm::with_delta_sink(sink, short.complete("x", &request, &call("worker/1", 1)))
            .await
            .unwrap();
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Failures take as long watched as unwatched.
        let failing = SimulatedProvider::new(
            SimConfig::default()
                .latency_ms(300)
                .precise_timer(false)
                .fail_rate(1.0)
                .failure_kinds([FailureKind::Timeout]),
        );
        let start = tokio::time::Instant::now();
        let sink: belt_core::llm::DeltaSink = Arc::new(|_: &str| {});
        let err = belt_core::llm::with_delta_sink(sink, failing.complete("x", &request, &call("s", 1))).await;
        assert!(err.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[test]
    fn pieces_cover_the_text_at_char_boundaries() {
        let text = "héllo wörld — ünïcode ✓ text";
        for n in [1, 3, 8, 100] {
            let p = pieces(text, n);
            assert_eq!(p.concat(), text);
            assert!(p.len() <= n.max(1), "{n}: {p:?}");
        }
        assert!(pieces("", 8).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_come_back_after_the_latency() {
        let provider = SimulatedProvider::new(
            SimConfig::default()
                .latency_ms(300)
                .precise_timer(false)
                .fail_rate(1.0)
                .failure_kinds([FailureKind::Timeout]),
        );
        let request = LlmRequest::new("simulated/x", "hi");
        let start = tokio::time::Instant::now();
        let err = provider.complete("x", &request, &call("s", 1)).await.unwrap_err();
        assert_eq!(err, LlmError::Timeout(Duration::from_millis(300)));
        let elapsed = start.elapsed();
        assert!((Duration::from_millis(300)..Duration::from_millis(302)).contains(&elapsed), "{elapsed:?}");
    }

    #[test]
    fn zero_latency_completes_without_yielding() {
        use std::task::{Context, Poll, Waker};
        let provider = instant(0);
        let request = LlmRequest::new("simulated/x", "hi").max_tokens(16);
        let call = call("s", 1);
        let mut future = provider.complete("x", &request, &call);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(_))), "ready on the first poll");
    }

    #[test]
    fn failure_kinds_parse_and_serialize() {
        for kind in FailureKind::ALL {
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<FailureKind>(&json).unwrap(), kind);
        }
        assert_eq!("server".parse::<FailureKind>(), Ok(FailureKind::Server));
        assert_eq!("Rate-Limited".parse::<FailureKind>(), Ok(FailureKind::RateLimited));
        assert!("teapot".parse::<FailureKind>().is_err());
    }

    #[test]
    fn structured_requests_get_the_smallest_instance_of_their_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "title": {"type": "string", "minLength": 12},
                "kind": {"enum": ["memo", "report"]},
                "count": {"type": "integer", "minimum": 3},
                "score": {"type": ["number", "null"], "exclusiveMinimum": 0.5},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 2},
                "when": {"type": "string", "format": "date"},
                "owner": {"$ref": "#/$defs/Person"},
                "note": {"type": "string"},
            },
            "required": ["title", "kind", "count", "score", "tags", "when", "owner"],
            "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}}, "required": ["name", "ok"]}},
        });
        assert_eq!(
            sample_json(&schema),
            serde_json::json!({"title": "simulatedxxx", "kind": "memo", "count": 3, "score": 1.0,
                "tags": ["sim", "sim"], "when": "2025-01-01", "owner": {"name": "simulated", "ok": false}})
        );
        let provider = instant(7);
        let request = LlmRequest::new("simulated/default", "Judge the claim.").json_schema("verdict", schema);
        let reply = ok(&provider, &request, "judge");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&reply.text).unwrap(),
            sample_json(&request.json_schema.as_ref().unwrap().schema)
        );
        assert!(reply.simulated);
        assert_eq!(reply.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn offered_tools_are_called_once_with_schema_valid_arguments_then_answered() {
        use belt_core::llm::{Message, ToolSpec};
        let provider = instant(3);
        let mut request = LlmRequest::new("simulated/default", "Weather in Lisbon?").max_tokens(300);
        request.tools = vec![
            ToolSpec {
                name: "city_weather".into(),
                description: "Weather.".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city", "days"]}),
                strict: true,
            },
            ToolSpec {
                name: "other".into(),
                description: "".into(),
                parameters: serde_json::json!({"type": "object"}),
                strict: false,
            },
        ];
        let first = ok(&provider, &request, "agent/round/01");
        assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(first.tool_calls.len(), 1);
        let call = &first.tool_calls[0];
        assert_eq!(call.name, "city_weather", "the first tool");
        assert_eq!(call.arguments, serde_json::json!({"city": "simulated", "days": 1}));
        assert_eq!(ok(&provider, &request, "agent/round/01"), first, "deterministic");

        request.messages.push(Message::assistant_tool_calls("", first.tool_calls.clone()));
        request.messages.push(Message::tool_result(&call.id, "{\"celsius\": 11.5}", false));
        let second = ok(&provider, &request, "agent/round/02");
        assert!(second.tool_calls.is_empty(), "one call, then an answer");
        assert_eq!(second.finish_reason.as_deref(), Some("stop"));
        assert!(second.text.starts_with(SIMULATED_LABEL));
        assert!(
            second.text.ends_with("### Tool results\n\n- `city_weather` returned: {\"celsius\": 11.5}\n"),
            "{}",
            second.text
        );
        assert!(second.usage.output_tokens <= 300);
    }

    #[test]
    fn texts_are_cut_at_word_or_line_boundaries() {
        let mut text = String::from("label\n\nalpha beta gamma delta");
        assert!(cut_to(&mut text, 20, 5));
        assert_eq!(text, "label\n\nalpha beta");
        let mut text = String::from("ééééé");
        assert!(cut_to(&mut text, 4, 0));
        assert!(text.len() <= 4);
        assert_eq!(shorten("Analyze this, please.", 100), "Analyze this, please");
        assert_eq!(topic_of("Analyze the impact of AI on jobs.", 100), "the impact of AI on jobs");
        assert_eq!(topic_of("Map the key stakeholders", 100), "the key stakeholders");
        assert_eq!(first_sentence("a (x. y); b. Say so."), "a (x. y); b");
    }
}
