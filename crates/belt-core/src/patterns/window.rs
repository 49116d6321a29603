//! Fitting prompts to a model's context window.
//!
//! A local model often holds 2,048 or 4,096 tokens per slot, and a synthesizer's prompt —
//! five workers' findings — easily passes that. Patterns that merge many texts size their
//! prompts with these helpers before they call, and shrink them when the model answers
//! [`LlmError::PromptTooLong`](crate::llm::LlmError::PromptTooLong) anyway.
//!
//! Token counts are estimated from bytes, on the safe side: [`BYTES_PER_TOKEN`] is 3, where
//! English text with the tokenizers of Llama, Mistral, Qwen or GPT averages about 4. A
//! prompt sized by the estimate fits with room to spare; one that still does not (text
//! that tokenizes densely) is shrunk again by the ratio the server's error reports.
//!
//! ```
//! use belt_core::patterns::window::{clip, prompt_budget};
//! // A 2,048-token window with 1,024 tokens asked for the reply keeps 1,024 for the prompt.
//! assert_eq!(prompt_budget(2048, 1024), 1024);
//! // A reply cap larger than the window leaves the prompt half of it.
//! assert_eq!(prompt_budget(2048, 8192), 1024);
//! let long = "word ".repeat(100);
//! assert!(clip(&long, 60).contains("shortened"));
//! ```

use std::borrow::Cow;

use crate::llm::LlmRequest;

/// Bytes per token assumed when sizing a prompt (see the module docs).
pub const BYTES_PER_TOKEN: u64 = 3;

/// The fewest bytes an input is shortened to: below it a text says nothing useful.
pub const MIN_SHARE_BYTES: usize = 200;

/// The tokens of `request`'s prompt, estimated on the safe side.
pub fn estimate_tokens(request: &LlmRequest) -> u64 {
    request.input_token_bound().div_ceil(BYTES_PER_TOKEN)
}

/// The tokens a prompt may take in a `window`-token context when the reply may take
/// `max_tokens`: what is left after the reply, which keeps at most half of the window.
pub fn prompt_budget(window: u64, max_tokens: u32) -> u64 {
    window - u64::from(max_tokens).min(window / 2)
}

/// The reply cap that fits beside a prompt of `prompt_tokens` in `window`: `max_tokens`,
/// or what the window has left (some servers refuse a request whose prompt and cap
/// together pass the window), never below 64.
pub fn reply_cap(window: u64, prompt_tokens: u64, max_tokens: u32) -> u32 {
    let left = window.saturating_sub(prompt_tokens).max(64);
    u32::try_from(left).unwrap_or(u32::MAX).min(max_tokens)
}

/// `text` cut to at most `max_bytes` bytes (at a character boundary, preferring the end of
/// a line or word) with a note saying it was shortened; `text` itself when it fits.
pub fn clip(text: &str, max_bytes: usize) -> Cow<'_, str> {
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    // Prefer a clean break in the last fifth of what is kept.
    let floor = end - end / 5;
    let cut = head.rfind('\n').filter(|&i| i >= floor).or_else(|| head.rfind(' ').filter(|&i| i >= floor));
    let kept = head[..cut.unwrap_or(end)].trim_end();
    Cow::Owned(format!(
        "{kept}\n[… shortened from {} to {} characters to fit the model's context window]",
        text.chars().count(),
        kept.chars().count()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_caps_and_estimates() {
        assert_eq!(prompt_budget(4096, 512), 3584);
        assert_eq!(prompt_budget(1000, 10_000), 500);
        assert_eq!(reply_cap(2048, 2000, 1024), 64, "never below 64");
        assert_eq!(reply_cap(2048, 1000, 512), 512);
        assert_eq!(reply_cap(2048, 1500, 1024), 548);
        let r = LlmRequest::new("t/m", "x".repeat(3000));
        let est = estimate_tokens(&r);
        assert!((1000..1010).contains(&est), "{est}");
    }

    #[test]
    fn clipping_keeps_whole_characters_and_says_so() {
        assert_eq!(clip("short", 10), "short");
        let text = "é".repeat(500); // 2 bytes each
        let out = clip(&text, 301);
        assert!(out.starts_with(&"é".repeat(150)));
        assert!(out.contains("shortened from 500 to 150 characters"), "{out}");
        let words = "alpha beta gamma ".repeat(40);
        let out = clip(&words, 100);
        let kept = out.lines().next().unwrap();
        assert!(kept.len() <= 100 && !kept.ends_with(' '));
        assert!(["alpha", "beta", "gamma"].iter().any(|w| kept.ends_with(w)), "cut at a word: {kept}");
    }
}
