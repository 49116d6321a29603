//! JSON replies (`LlmRequest::json`, `LlmRequest::json_schema`): how they are asked for,
//! and how a reply is cleaned.
//!
//! The engine parses a JSON step's text strictly. Asking for JSON differs per API, from
//! strongest to weakest:
//!
//! 1. a JSON schema the server enforces, when the request has one
//!    (`LlmRequest::json_schema`): OpenAI-compatible `response_format` `json_schema` where
//!    the model's capabilities say it is supported; Anthropic through a forced tool whose
//!    input is the reply. Both want an object at the schema's root, so another root is
//!    [`wrap`]ped in `{"value": …}` and the reply [`unwrap`]ped;
//! 2. JSON object mode (`response_format: {"type": "json_object"}`), where the server
//!    guarantees valid JSON but not its shape (the schema then goes in the instruction);
//! 3. an instruction in the system prompt ([`instruction`], with the schema when there is
//!    one), which every model follows nearly always.
//!
//! Whatever was used, [`clean`] then makes the reply parseable when a model wrapped it
//! in a Markdown code fence or a sentence (which weaker models and local servers that
//! ignore `response_format` do): it returns the JSON value inside, and only when that
//! value parses. A reply that is already valid JSON is never touched.

use belt_core::schema::OutputSchema;
use serde::de::IgnoredAny;

/// What is added to the system prompt when JSON is asked for by instruction (and, for
/// OpenAI's JSON mode, when no message says "JSON", which that mode requires).
pub const JSON_INSTRUCTION: &str =
    "Reply with a single valid JSON value only: no prose before or after it, no Markdown code fence.";

/// The JSON value in `text`, if `text` is not JSON itself but holds one: inside a
/// ```` ``` ```` fence, or from the first `{`/`[` to the last `}`/`]`. `None` when `text` is
/// already valid JSON (keep it) or holds none (leave it for the engine to report).
pub fn clean(text: &str) -> Option<&str> {
    if is_json(text) {
        return None;
    }
    if let Some(inner) = fenced(text)
        && is_json(inner)
    {
        return Some(inner.trim());
    }
    let start = text.find(['{', '['])?;
    let end = text.rfind(['}', ']'])?;
    let candidate = text.get(start..=end)?;
    is_json(candidate).then_some(candidate)
}

/// Whether `text` (any of its parts) mentions JSON, as OpenAI's JSON mode requires.
pub fn mentions_json<'a>(mut parts: impl Iterator<Item = &'a str>) -> bool {
    parts.any(|p| p.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"json")))
}

/// `system` with [`JSON_INSTRUCTION`] appended.
pub fn with_instruction(system: Option<&str>) -> String {
    match system {
        Some(s) if !s.trim().is_empty() => format!("{s}\n\n{JSON_INSTRUCTION}"),
        _ => JSON_INSTRUCTION.to_string(),
    }
}

/// `system` with the JSON instruction appended, and the schema the reply must match when
/// there is one.
pub fn instruction(system: Option<&str>, schema: Option<&OutputSchema>) -> String {
    let base = with_instruction(system);
    match schema {
        Some(s) => format!("{base} It must match this JSON Schema:\n{}", s.schema),
        None => base,
    }
}

/// The property a non-object root is wrapped in.
pub const WRAPPED: &str = "value";

/// The schema to send for `schema`: itself when its root is an object, else an object
/// whose one required property, `value`, has it.
pub fn wrap(schema: &OutputSchema) -> std::borrow::Cow<'_, serde_json::Value> {
    if schema.root_is_object() {
        return std::borrow::Cow::Borrowed(&schema.schema);
    }
    std::borrow::Cow::Owned(serde_json::json!({
        "type": "object",
        "properties": { WRAPPED: schema.schema },
        "required": [WRAPPED],
        "additionalProperties": false,
    }))
}

/// The reply inside a [`wrap`]ped one: the JSON text of its `value`; `None` when `text` is
/// not such an object (the text is then left as it is, for the engine to report).
pub fn unwrap(text: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(mut object)) => object.remove(WRAPPED).map(|v| v.to_string()),
        _ => None,
    }
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The body of the first Markdown code fence in `text`.
fn fenced(text: &str) -> Option<&str> {
    let open = text.find("```")?;
    let after = &text[open + 3..];
    let body_start = after.find('\n')? + 1; // skip the info string (`json`)
    let body = &after[body_start..];
    let close = body.find("```")?;
    Some(&body[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_json_is_left_alone() {
        assert_eq!(clean(r#"[{"a": 1}]"#), None);
        assert_eq!(clean("  {\"a\": 1}\n"), None);
    }

    #[test]
    fn fences_and_surrounding_prose_are_removed() {
        assert_eq!(clean("```json\n[1, 2]\n```"), Some("[1, 2]"));
        assert_eq!(clean("Here it is:\n```\n{\"a\": {\"b\": 2}}\n```\nDone."), Some("{\"a\": {\"b\": 2}}"));
        assert_eq!(clean("Sure! [{\"x\": \"]\"}] Hope this helps."), Some("[{\"x\": \"]\"}]"));
    }

    #[test]
    fn text_without_json_is_left_for_the_engine() {
        assert_eq!(clean("I cannot do that."), None);
        assert_eq!(clean("{ broken"), None);
        assert_eq!(clean("```json\n{broken\n```"), None);
    }

    #[test]
    fn json_mentions_and_instructions() {
        assert!(mentions_json(["Return a JSON array"].into_iter()));
        assert!(mentions_json(["x", "as json"].into_iter()));
        assert!(!mentions_json(["Return an array", "jso n"].into_iter()));
        assert_eq!(with_instruction(None), JSON_INSTRUCTION);
        assert_eq!(with_instruction(Some("Be brief.")), format!("Be brief.\n\n{JSON_INSTRUCTION}"));
        let schema = OutputSchema::new("n", serde_json::json!({"type": "integer"}));
        assert_eq!(
            instruction(None, Some(&schema)),
            format!("{JSON_INSTRUCTION} It must match this JSON Schema:\n{{\"type\":\"integer\"}}")
        );
        assert_eq!(instruction(Some("S"), None), with_instruction(Some("S")));
    }

    #[test]
    fn non_object_roots_are_wrapped_and_unwrapped() {
        let object = OutputSchema::new("o", serde_json::json!({"type": "object", "properties": {}}));
        assert!(matches!(wrap(&object), std::borrow::Cow::Borrowed(_)));
        let list = OutputSchema::new("l", serde_json::json!({"type": "array", "items": {"type": "string"}}));
        let wrapped = wrap(&list);
        assert_eq!(wrapped["properties"]["value"], list.schema);
        assert_eq!(wrapped["required"], serde_json::json!(["value"]));
        assert_eq!(unwrap(r#"{"value": ["a", "b"]}"#).as_deref(), Some(r#"["a","b"]"#));
        assert_eq!(unwrap(r#"["a"]"#), None);
        assert_eq!(unwrap("not json"), None);
    }
}
