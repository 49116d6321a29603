//! A scriptable provider for tests of orchestrators and of the engine itself.
//!
//! [`ScriptedProvider`] answers instantly (or after a set delay) with text that names
//! the step, fails the attempts you tell it to with the errors you choose, and counts calls
//! per StepId, so a test can assert exactly what the engine did.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::llm::{
    CallInfo, InFlightGauge, LlmError, LlmProvider, LlmReply, LlmRequest, Price, Role, ToolCall, Usage,
};

/// A deterministic provider for tests. Model names are `NAME/anything`.
pub struct ScriptedProvider {
    name: String,
    price: Option<Price>,
    delay: Duration,
    rules: Vec<Rule>,
    calls: Mutex<HashMap<String, u32>>,
    /// The last prompt (its messages' text) each step sent.
    prompts: Mutex<HashMap<String, String>>,
    in_flight: InFlightGauge,
    /// Prompt-cache reads and writes every reply reports (part of its input tokens).
    cache: (u64, u64),
    /// The usage every reply reports, whatever the request (a provider that miscounts or lies).
    reports: Option<Usage>,
}

struct Rule {
    step_prefix: String,
    /// Fail attempts `1..=attempts` (u32::MAX: always).
    attempts: u32,
    error: Option<LlmError>,
    delay: Option<Duration>,
    reply: Option<String>,
    /// Call these tools in the first `rounds` turns of a tool loop.
    tools: Option<(u32, Vec<ToolCall>)>,
}

impl ScriptedProvider {
    /// A provider named `name`, priced at $1 / $2 per million input / output tokens.
    pub fn new(name: &str) -> Self {
        ScriptedProvider {
            name: name.to_string(),
            price: Some(Price::new(1.0, 2.0)),
            delay: Duration::ZERO,
            rules: Vec::new(),
            calls: Mutex::new(HashMap::new()),
            prompts: Mutex::new(HashMap::new()),
            in_flight: InFlightGauge::default(),
            cache: (0, 0),
            reports: None,
        }
    }

    pub fn price(mut self, price: Option<Price>) -> Self {
        self.price = price;
        self
    }

    /// Every reply reports `read` input tokens read from the prompt cache and `write`
    /// written to it, on top of its other input tokens.
    pub fn cached_tokens(mut self, read: u64, write: u64) -> Self {
        self.cache = (read, write);
        self
    }

    /// Every reply reports `usage`, however long the request and its answer were.
    pub fn reports_usage(mut self, usage: Usage) -> Self {
        self.reports = Some(usage);
        self
    }

    /// Every call takes `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Calls of steps starting with `step_prefix` take `delay`.
    pub fn delay_for(mut self, step_prefix: &str, delay: Duration) -> Self {
        self.rules.push(Rule {
            step_prefix: step_prefix.into(),
            attempts: 0,
            error: None,
            delay: Some(delay),
            reply: None,
            tools: None,
        });
        self
    }

    /// The first `attempts` attempts of steps starting with `step_prefix` fail with `error`.
    pub fn fail_first(mut self, step_prefix: &str, attempts: u32, error: LlmError) -> Self {
        self.rules.push(Rule {
            step_prefix: step_prefix.into(),
            attempts,
            error: Some(error),
            delay: None,
            reply: None,
            tools: None,
        });
        self
    }

    /// Every attempt of steps starting with `step_prefix` fails with `error`.
    pub fn always_fail(self, step_prefix: &str, error: LlmError) -> Self {
        self.fail_first(step_prefix, u32::MAX, error)
    }

    /// Steps starting with `step_prefix` answer `text`.
    pub fn reply_for(mut self, step_prefix: &str, text: &str) -> Self {
        self.rules.push(Rule {
            step_prefix: step_prefix.into(),
            attempts: 0,
            error: None,
            delay: None,
            reply: Some(text.into()),
            tools: None,
        });
        self
    }

    /// Requests of steps starting with `step_prefix` that offer tools call `calls` (their
    /// ids suffixed with `-ROUND`), until the conversation holds `rounds` such turns; then
    /// the reply is text that quotes every tool result it received.
    pub fn tool_calls_for(mut self, step_prefix: &str, rounds: u32, calls: Vec<ToolCall>) -> Self {
        self.rules.push(Rule {
            step_prefix: step_prefix.into(),
            attempts: 0,
            error: None,
            delay: None,
            reply: None,
            tools: Some((rounds, calls)),
        });
        self
    }

    /// Calls made for `step` (attempts included).
    pub fn calls(&self, step: &str) -> u32 {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).get(step).copied().unwrap_or(0)
    }

    /// The text of the last request `step` sent (its messages, one after another), if any.
    pub fn prompt(&self, step: &str) -> Option<String> {
        self.prompts.lock().unwrap_or_else(|p| p.into_inner()).get(step).cloned()
    }

    /// Calls made in all.
    pub fn total_calls(&self) -> u32 {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// The most calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }

    fn rule<'a, T>(&'a self, step: &str, pick: impl Fn(&'a Rule) -> Option<T>) -> Option<T> {
        self.rules.iter().filter(|r| step.starts_with(&r.step_prefix)).find_map(pick)
    }
}

#[async_trait]
impl LlmProvider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn price(&self, _model: &str) -> Option<Price> {
        self.price
    }

    async fn complete(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
    ) -> Result<LlmReply, LlmError> {
        let step = call.step.as_str();
        *self.calls.lock().unwrap_or_else(|p| p.into_inner()).entry(step.to_string()).or_default() += 1;
        let text: Vec<&str> = request.messages.iter().map(|m| m.content.as_str()).collect();
        self.prompts.lock().unwrap_or_else(|p| p.into_inner()).insert(step.to_string(), text.join("\n"));
        let _guard = self.in_flight.enter();
        let delay = self.rule(step, |r| r.delay).unwrap_or(self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(e) = self.rule(step, |r| r.error.clone().filter(|_| call.attempt <= r.attempts)) {
            return Err(e);
        }
        if !request.tools.is_empty()
            && let Some((rounds, calls)) = self.rule(step, |r| r.tools.clone())
        {
            let done = request.messages.iter().filter(|m| !m.tool_calls.is_empty()).count() as u32;
            if done < rounds {
                let calls = calls
                    .into_iter()
                    .map(|c| ToolCall { id: format!("{}-{}", c.id, done + 1), ..c })
                    .collect();
                return Ok(LlmReply {
                    text: String::new(),
                    usage: Usage::new(request.input_token_bound() / 4, 10.min(u64::from(request.max_tokens))),
                    model: format!("{}/{model}", self.name),
                    finish_reason: Some("tool_calls".into()),
                    simulated: false,
                    tool_calls: calls,
                });
            }
            let results: Vec<String> = request
                .messages
                .iter()
                .filter(|m| m.role == Role::Tool)
                .map(|m| format!("{}{}", if m.is_error { "error: " } else { "" }, m.content))
                .collect();
            let text = format!("Output of {step}. Tool results: {}", results.join("; "));
            let output_tokens = (text.len() as u64 / 4).min(request.max_tokens as u64);
            return Ok(LlmReply {
                text,
                usage: Usage::new(request.input_token_bound() / 4, output_tokens),
                model: format!("{}/{model}", self.name),
                finish_reason: Some("stop".into()),
                simulated: false,
                tool_calls: Vec::new(),
            });
        }
        let text = match self.rule(step, |r| r.reply.clone()) {
            Some(t) => t,
            None if request.json => {
                let n = request
                    .prompt()
                    .split("exactly ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(3);
                let items: Vec<String> =
                    (1..=n).map(|i| format!("{{\"description\": \"Part {i}\"}}")).collect();
                format!("[{}]", items.join(", "))
            }
            None => {
                let subject = request.prompt().lines().find(|l| l.starts_with("Subtask ")).unwrap_or("");
                format!("Output of {step}. {subject}")
            }
        };
        let usage = self.reports.unwrap_or(Usage {
            input_tokens: request.input_token_bound() / 4 + self.cache.0 + self.cache.1,
            output_tokens: (text.len() as u64 / 4).min(request.max_tokens as u64),
            cache_read_tokens: self.cache.0,
            cache_write_tokens: self.cache.1,
            reasoning_tokens: 0,
        });
        Ok(LlmReply {
            text,
            usage,
            model: format!("{}/{model}", self.name),
            // As real providers say it of a complete answer.
            finish_reason: Some("stop".into()),
            simulated: false,
            tool_calls: Vec::new(),
        })
    }
}
