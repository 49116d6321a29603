//! One `tools/call`: the arguments checked against the tool's schema before anything is
//! sent, and the result turned into what the model reads — text joined, other content
//! described in a few words, everything bounded.

use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{Map, Value};

use super::connect::clip;

/// The most text of one result passed on (the engine caps tool results again).
pub(crate) const MAX_RESULT: usize = 256 * 1024;
/// Argument errors listed in one message.
const MAX_ARGUMENT_ERRORS: usize = 5;

/// The arguments as `tools/call` sends them (an object; no arguments may come as `null`),
/// once they match the schema; otherwise what is wrong with them, for the model.
pub(crate) fn check_arguments(
    validator: &jsonschema::Validator,
    arguments: Value,
) -> Result<Map<String, Value>, String> {
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    let problems: Vec<String> = validator
        .iter_errors(&arguments)
        .take(MAX_ARGUMENT_ERRORS)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("at {at}: {e}") }
        })
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "the arguments do not match the tool's parameters (nothing was sent): {}",
            problems.join("; ")
        ));
    }
    match arguments {
        Value::Object(map) => Ok(map),
        other => Err(format!("the arguments must be a JSON object, not {other}")),
    }
}

/// What the model reads of a result: its text content joined, other content described
/// ("[image image/png, 2 KiB]"), the structured content when there is nothing else; at
/// most [`MAX_RESULT`] bytes.
pub(crate) fn render(result: &CallToolResult) -> String {
    let mut parts: Vec<String> = result.content.iter().map(describe).collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    bounded(parts.join("\n"))
}

fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => {
            format!("[image {}, {}]", image.mime_type, size(decoded_len(&image.data)))
        }
        ContentBlock::Audio(audio) => {
            format!("[audio {}, {}]", audio.mime_type, size(decoded_len(&audio.data)))
        }
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => format!("[resource {uri}]\n{text}"),
            ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } => {
                let mime = mime_type.as_deref().unwrap_or("binary");
                format!("[resource {uri}, {mime}, {}]", size(decoded_len(blob)))
            }
            _ => "[a resource of a kind belt does not read]".into(),
        },
        ContentBlock::ResourceLink(link) => match &link.description {
            Some(about) => format!("[link {}: {} — {about}]", link.name, link.uri),
            None => format!("[link {}: {}]", link.name, link.uri),
        },
        _ => "[content of a kind belt does not read]".into(),
    }
}

/// The size of base64 `data` once decoded, without decoding it.
fn decoded_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

fn size(bytes: usize) -> String {
    if bytes < 1024 { format!("{bytes} B") } else { format!("{} KiB", bytes.div_ceil(1024)) }
}

fn bounded(text: String) -> String {
    if text.len() <= MAX_RESULT {
        return text;
    }
    let kept = clip(&text, MAX_RESULT);
    format!("{kept}\n[… {} more bytes of the result left out]", text.len() - kept.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(value: Value) -> CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn text_is_joined_and_the_rest_described() {
        let r = result(json!({"content": [
            {"type": "text", "text": "Here it is:"},
            {"type": "image", "data": "A".repeat(2800), "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
            {"type": "resource_link", "uri": "https://x/y", "name": "y"},
        ]}));
        assert_eq!(
            render(&r),
            "Here it is:\n[image image/png, 3 KiB]\n[resource file:///a.txt]\nhello\n[link y: https://x/y]"
        );
    }

    #[test]
    fn structured_content_stands_in_for_missing_text() {
        let r = result(json!({"content": [], "structuredContent": {"temperature": 21}}));
        assert_eq!(render(&r), r#"{"temperature":21}"#);
    }

    #[test]
    fn results_are_bounded() {
        let r = result(json!({"content": [{"type": "text", "text": "x".repeat(MAX_RESULT + 10)}]}));
        let text = render(&r);
        assert!(text.len() < MAX_RESULT + 100 && text.ends_with("10 more bytes of the result left out]"));
    }

    #[test]
    fn arguments_are_checked_before_sending() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]});
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(check_arguments(&validator, json!({"a": 1})).is_ok());
        let wrong = check_arguments(&validator, json!({"a": "one"})).unwrap_err();
        assert!(wrong.contains("nothing was sent") && wrong.contains("at /a"), "{wrong}");
        let missing = check_arguments(&validator, Value::Null).unwrap_err();
        assert!(missing.contains("\"a\" is a required property"), "{missing}");
        let empty = jsonschema::validator_for(&json!({"type": "object"})).unwrap();
        assert_eq!(check_arguments(&empty, Value::Null).unwrap(), Map::new());
        assert!(check_arguments(&empty, json!([1])).is_err());
    }
}
