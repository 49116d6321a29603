//! Token usage: what one call used ([`Usage`]), what a run used in all ([`UsageTotals`]),
//! and the one accumulator that turns the first into the second ([`UsageMeter`]).
//!
//! A run's steps settle concurrently, so the meter is a set of atomics rather than a
//! `Mutex<UsageTotals>`: adding a call's usage is a few relaxed additions on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Tokens used by one call, as the provider reported them.
///
/// `input_tokens` counts every input token the model read, including those served from or
/// written to the provider's prompt cache; the two cache figures say how many of them were,
/// because they are billed at other rates. This is OpenAI's convention (`prompt_tokens`
/// includes `cached_tokens`); Anthropic reports its cache tokens apart from `input_tokens`,
/// and its adapter adds them in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache (part of `input_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache (part of `input_tokens`; Anthropic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Output tokens the model spent on hidden reasoning (part of `output_tokens`, billed as
    /// output), where the provider reports them (OpenAI's `reasoning_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage without prompt-cache detail.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage { input_tokens, output_tokens, ..Usage::default() }
    }

    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Input tokens neither read from nor written to the prompt cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens.saturating_sub(self.cache_read_tokens).saturating_sub(self.cache_write_tokens)
    }

    /// The sum of two usages (a tool loop's rounds, a run's steps).
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }

    /// This usage with at most `max_input` input and `max_output` output tokens (the
    /// cache and reasoning figures cut to fit inside them): what a call is booked at when
    /// its provider reports more than the request allowed. `None` when it is within both.
    pub fn capped(&self, max_input: u64, max_output: u64) -> Option<Usage> {
        if self.input_tokens <= max_input && self.output_tokens <= max_output {
            return None;
        }
        let input_tokens = self.input_tokens.min(max_input);
        let output_tokens = self.output_tokens.min(max_output);
        let cache_read_tokens = self.cache_read_tokens.min(input_tokens);
        Some(Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens.min(input_tokens - cache_read_tokens),
            reasoning_tokens: self.reasoning_tokens.min(output_tokens),
        })
    }
}

/// Token and call totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Every input token, prompt-cache reads and writes included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from providers' prompt caches (part of `input_tokens`).
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to providers' prompt caches (part of `input_tokens`).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Output tokens spent on hidden reasoning (part of `output_tokens`), where reported.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Calls answered by a model whose price is unknown: their cost is not in the run's
    /// `cost_usd`, which is then a lower bound (configure the price to know it).
    #[serde(default)]
    pub unpriced_calls: u64,
    /// Provider calls made, retries included (replayed steps make none).
    pub calls: u64,
}

/// A run's usage so far, added to by every call as it settles.
#[derive(Debug, Default)]
pub struct UsageMeter {
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cache_read_tokens: AtomicU64,
    cache_write_tokens: AtomicU64,
    reasoning_tokens: AtomicU64,
    unpriced_calls: AtomicU64,
    calls: AtomicU64,
}

impl UsageMeter {
    /// Count provider calls (answered, failed or dropped in flight).
    pub fn count_calls(&self, calls: u64) {
        self.calls.fetch_add(calls, Ordering::Relaxed);
    }

    /// Add an answered call's tokens; `unpriced` when its model has no known price.
    pub fn add(&self, usage: &Usage, unpriced: bool) {
        self.input_tokens.fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.output_tokens.fetch_add(usage.output_tokens, Ordering::Relaxed);
        // Most calls read and write no prompt cache: skip two contended additions.
        if usage.cache_read_tokens + usage.cache_write_tokens > 0 {
            self.cache_read_tokens.fetch_add(usage.cache_read_tokens, Ordering::Relaxed);
            self.cache_write_tokens.fetch_add(usage.cache_write_tokens, Ordering::Relaxed);
        }
        if usage.reasoning_tokens > 0 {
            self.reasoning_tokens.fetch_add(usage.reasoning_tokens, Ordering::Relaxed);
        }
        if unpriced {
            self.unpriced_calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The totals so far.
    pub fn totals(&self) -> UsageTotals {
        UsageTotals {
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            cache_read_tokens: self.cache_read_tokens.load(Ordering::Relaxed),
            cache_write_tokens: self.cache_write_tokens.load(Ordering::Relaxed),
            reasoning_tokens: self.reasoning_tokens.load(Ordering::Relaxed),
            unpriced_calls: self.unpriced_calls.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_adds_calls_tokens_and_unpriced_calls() {
        let meter = UsageMeter::default();
        meter.count_calls(1);
        meter.add(&Usage::new(10, 5), false);
        meter.count_calls(1);
        meter.add(&Usage { cache_read_tokens: 3, reasoning_tokens: 1, ..Usage::new(7, 1) }, true);
        meter.count_calls(1);
        let t = meter.totals();
        assert_eq!((t.input_tokens, t.output_tokens, t.cache_read_tokens, t.reasoning_tokens), (17, 6, 3, 1));
        assert_eq!((t.calls, t.unpriced_calls), (3, 1));
    }

    #[test]
    fn a_usage_over_the_request_is_capped_with_its_parts() {
        let within = Usage { cache_read_tokens: 50, reasoning_tokens: 10, ..Usage::new(100, 20) };
        assert_eq!(within.capped(100, 20), None);
        let lying = Usage {
            input_tokens: 5_000_000,
            output_tokens: 5_000_000,
            cache_read_tokens: 80,
            cache_write_tokens: 4_000_000,
            reasoning_tokens: 4_000_000,
        };
        let booked = lying.capped(100, 16).unwrap();
        assert_eq!(
            booked,
            Usage {
                input_tokens: 100,
                output_tokens: 16,
                cache_read_tokens: 80,
                cache_write_tokens: 20,
                reasoning_tokens: 16
            }
        );
        assert_eq!(booked.uncached_input_tokens(), 0);
        // Only the output over: the input stays as reported.
        assert_eq!(Usage::new(7, 30).capped(100, 16), Some(Usage::new(7, 16)));
    }
}
