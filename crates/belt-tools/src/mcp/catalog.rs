//! From a server's `tools/list` to tools a model can be given: names that are safe and
//! unique (`{server}_{tool}`, `[A-Za-z0-9_-]`, at most 64 characters), bounded descriptions,
//! parameter schemas that are JSON objects a validator accepts; the rest is left out with
//! its reason.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::connect::clip;

/// The most tools taken from one server: a model cannot use thousands anyway, and the list
/// must not grow without bound.
pub(crate) const MAX_TOOLS: usize = 1000;
/// Longest description passed on (bytes).
const MAX_DESCRIPTION: usize = 2048;
/// Longest tool name the providers accept.
const MAX_NAME: usize = 64;

/// One tool of a server, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The name the model calls it by: `{server}_{tool}`, sanitized, unique.
    pub model_name: String,
    /// Its name on the server.
    pub original_name: String,
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    pub schema: Value,
    /// The server says calling it twice does no harm (`idempotentHint` or `readOnlyHint`).
    pub idempotent: bool,
}

/// A tool of the server that is not offered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub original_name: String,
    pub reason: String,
}

/// A catalog entry with its compiled parameter schema.
pub(crate) struct Prepared {
    pub entry: CatalogEntry,
    pub validator: Arc<jsonschema::Validator>,
}

/// The tools of `raw` (the `tools` arrays of `tools/list` pages), named for `server`.
/// Names are given in the order of the tools' original names, so the same tools get the
/// same names whatever order the server lists them in.
pub(crate) fn prepare(server: &str, raw: Vec<Value>) -> (Vec<Prepared>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut ok = Vec::new();
    for value in raw {
        match parse(value) {
            Ok(tool) => ok.push(tool),
            Err(skip) => skipped.push(skip),
        }
    }
    ok.sort_by(|a, b| a.0.cmp(&b.0));
    let mut taken = BTreeSet::new();
    let prepared = ok
        .into_iter()
        .map(|(original_name, description, schema, idempotent, validator)| {
            let model_name = unique_name(server, &original_name, &mut taken);
            if model_name != format!("{server}_{original_name}") {
                tracing::info!(server, tool = %original_name, %model_name, "MCP tool renamed for the model");
            }
            let entry = CatalogEntry { model_name, original_name, description, schema, idempotent };
            Prepared { entry, validator: Arc::new(validator) }
        })
        .collect();
    (prepared, skipped)
}

type Parsed = (String, String, Value, bool, jsonschema::Validator);

fn parse(value: Value) -> Result<Parsed, Skipped> {
    let name = value.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let skip = |reason: String| Skipped { original_name: name.clone(), reason };
    if name.is_empty() {
        return Err(skip("it has no name".into()));
    }
    let description = value.get("description").and_then(Value::as_str).unwrap_or_default();
    let description = match clip(description, MAX_DESCRIPTION) {
        clipped if clipped.len() < description.len() => format!("{clipped}…"),
        whole => whole.to_string(),
    };
    let schema = object_schema(value.get("inputSchema")).map_err(skip)?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        skip(format!("its inputSchema is not a JSON Schema belt can check arguments against: {e}"))
    })?;
    let hint =
        |key: &str| value.pointer(&format!("/annotations/{key}")).and_then(Value::as_bool) == Some(true);
    let idempotent = hint("idempotentHint") || hint("readOnlyHint");
    Ok((name, description, schema, idempotent, validator))
}

/// The schema of an object: what the providers accept as a function's parameters. One
/// without a `type` is taken as an object's (`{}` is how many servers say "no arguments").
fn object_schema(schema: Option<&Value>) -> Result<Value, String> {
    let Some(Value::Object(schema)) = schema else {
        return Err("its inputSchema is missing or not a JSON object".into());
    };
    let mut schema: Map<String, Value> = schema.clone();
    match schema.get("type") {
        None => {
            schema.insert("type".into(), "object".into());
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => return Err(format!("its inputSchema is of type {other}, not an object")),
    }
    Ok(Value::Object(schema))
}

/// `{server}_{tool}` in `[A-Za-z0-9_-]`, at most 64 characters (a long name keeps a hash
/// of the whole, so two long names differing at the end stay apart), and not in `taken`
/// (a `_2`, `_3`… suffix otherwise).
pub(crate) fn unique_name(server: &str, tool: &str, taken: &mut BTreeSet<String>) -> String {
    let full = format!("{server}_{tool}");
    let mut base: String = full
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .collect();
    if base.len() > MAX_NAME {
        let hash = format!("_{:08x}", fnv(full.as_bytes()) as u32);
        base.truncate(MAX_NAME - hash.len());
        base.push_str(&hash);
    }
    let mut name = base.clone();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        let suffix = format!("_{n}");
        let mut stem = base.clone();
        stem.truncate(MAX_NAME - suffix.len());
        name = stem + &suffix;
    }
    taken.insert(name.clone());
    name
}

/// FNV-1a: stable across runs and platforms (std's hasher is not promised to be).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_are_sanitized_bounded_and_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(unique_name("fs", "read file", &mut taken), "fs_read_file");
        assert_eq!(unique_name("fs", "read.file", &mut taken), "fs_read_file_2");
        assert_eq!(unique_name("fs", "read/file", &mut taken), "fs_read_file_3");
        assert_eq!(unique_name("fs", "get-sum", &mut taken), "fs_get-sum");
        let long = "x".repeat(100);
        let a = unique_name("srv", &format!("{long}a"), &mut taken);
        let b = unique_name("srv", &format!("{long}b"), &mut taken);
        assert!(a.len() <= 64 && b.len() <= 64 && a != b, "{a} {b}");
        assert_eq!(a, unique_name("srv", &format!("{long}a"), &mut BTreeSet::new()), "stable");
        let c = unique_name("srv", &format!("{long}a"), &mut taken);
        assert!(c.len() <= 64 && c.ends_with("_2"), "{c}");
    }

    #[test]
    fn naming_does_not_depend_on_the_servers_order() {
        let tools = |names: &[&str]| {
            names.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect::<Vec<_>>()
        };
        let names = |raw| prepare("s", raw).0.into_iter().map(|p| p.entry.model_name).collect::<Vec<_>>();
        assert_eq!(names(tools(&["a.b", "a b"])), names(tools(&["a b", "a.b"])));
        assert_eq!(names(tools(&["a b", "a.b"])), ["s_a_b", "s_a_b_2"]);
    }

    #[test]
    fn bad_schemas_are_left_out_with_a_reason() {
        let raw = vec![
            json!({"name": "fine", "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}}}}),
            json!({"name": "empty", "inputSchema": {}, "annotations": {"readOnlyHint": true}}),
            json!({"name": "string", "inputSchema": {"type": "string"}}),
            json!({"name": "missing"}),
            json!({"name": "broken", "inputSchema": {"type": "object", "properties": {"a": {"type": 12}}}}),
            json!({"inputSchema": {}}),
        ];
        let (ok, skipped) = prepare("s", raw);
        let ok: Vec<_> = ok.iter().map(|p| (p.entry.original_name.as_str(), p.entry.idempotent)).collect();
        assert_eq!(ok, [("empty", true), ("fine", false)]);
        let reasons: Vec<_> = skipped.iter().map(|s| format!("{}: {}", s.original_name, s.reason)).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].starts_with("string: its inputSchema is of type \"string\""), "{reasons:?}");
        assert!(reasons[1].contains("missing or not a JSON object"), "{reasons:?}");
        assert!(reasons[2].starts_with("broken: its inputSchema is not a JSON Schema"), "{reasons:?}");
        assert!(reasons[3].contains("no name"), "{reasons:?}");
    }

    #[test]
    fn long_descriptions_are_cut() {
        let raw = vec![json!({"name": "t", "description": "é".repeat(5000), "inputSchema": {}})];
        let (ok, _) = prepare("s", raw);
        assert!(ok[0].entry.description.len() <= MAX_DESCRIPTION + 3);
        assert!(ok[0].entry.description.ends_with('…'));
    }
}
