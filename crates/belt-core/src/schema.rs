//! JSON schemas: what a structured reply must look like ([`OutputSchema`]), and the
//! parameters of tools, generated from Rust types with `schemars`.
//!
//! Providers enforce a schema to different degrees (OpenAI's `strict` mode guarantees it,
//! a forced tool on Anthropic nearly does, an instruction only asks), and OpenAI's strict
//! mode accepts only schemas that close every object (`additionalProperties: false`) and
//! require every property. [`OutputSchema::of`] therefore generates such a schema from a
//! type, making optional fields nullable rather than absent (which `schemars` already does
//! for `Option`), as OpenAI's own SDKs do; a hand-written schema given to
//! [`OutputSchema::new`] is sent as it is, strict only when it already meets those rules.
//!
//! ```
//! use belt_core::schema::OutputSchema;
//!
//! #[derive(schemars::JsonSchema, serde::Deserialize)]
//! struct Verdict {
//!     /// Whether the claim holds.
//!     holds: bool,
//!     reason: Option<String>,
//! }
//!
//! let schema = OutputSchema::of::<Verdict>();
//! assert_eq!(schema.name, "Verdict");
//! assert!(schema.strict);
//! assert_eq!(schema.schema["required"], serde_json::json!(["holds", "reason"]));
//! assert_eq!(schema.schema["additionalProperties"], false);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON Schema a reply must match (structured output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// A short name (letters, digits, `_` and `-`, at most 64), as OpenAI's `json_schema`
    /// and Anthropic's tool names require.
    pub name: String,
    pub schema: Value,
    /// Ask the server to enforce the schema exactly (OpenAI's `strict`). Only true for
    /// schemas that meet strict mode's rules (see the [module docs](self)).
    #[serde(default)]
    pub strict: bool,
}

impl OutputSchema {
    /// An object holding one list, `{"FIELD": [{…}, …]}`, of objects with these keys, each
    /// of the given JSON type (`string`, `integer`…): how patterns ask a model for a list.
    /// A bare array cannot be asked for: JSON object modes enforce an object (llama.cpp
    /// then cannot write the array at all), and structured output takes only object roots.
    /// The patterns' parsers read a bare array too, from models that write one anyway.
    ///
    /// ```
    /// use belt_core::schema::OutputSchema;
    /// let s = OutputSchema::list("plan", "subtasks", &[("description", "string"), ("priority", "integer")]);
    /// assert!(s.strict);
    /// assert_eq!(s.schema["properties"]["subtasks"]["items"]["required"][1], "priority");
    /// ```
    pub fn list(name: &str, field: &str, keys: &[(&str, &str)]) -> Self {
        let properties: Map<String, Value> =
            keys.iter().map(|(k, t)| (k.to_string(), serde_json::json!({ "type": t }))).collect();
        let required: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
        let item = serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        });
        OutputSchema::new(
            name,
            serde_json::json!({
                "type": "object",
                "properties": { field: { "type": "array", "items": item } },
                "required": [field],
                "additionalProperties": false,
            }),
        )
    }

    /// A hand-written schema, strict when it already meets strict mode's rules.
    pub fn new(name: impl AsRef<str>, schema: Value) -> Self {
        let strict = is_strict(&schema);
        OutputSchema { name: wire_name(name.as_ref()), schema, strict }
    }

    /// The schema of `T`, in strict form.
    pub fn of<T: schemars::JsonSchema>() -> Self {
        OutputSchema { name: wire_name(&T::schema_name()), schema: to_strict(schema_of::<T>()), strict: true }
    }

    /// True when the schema's root is an object: the only root OpenAI's `json_schema`
    /// and Anthropic's tool input accept. Adapters wrap other roots in an object with one
    /// property, `value`, and unwrap the reply.
    pub fn root_is_object(&self) -> bool {
        self.schema.get("type").and_then(Value::as_str) == Some("object")
    }
}

/// The JSON Schema of `T`, with its subschemas inlined where they are not recursive and
/// without the `$schema` keyword (providers want the schema, not its dialect).
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.meta_schema = None;
            s.inline_subschemas = true;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// `schema` with every object closed (`additionalProperties: false`) and every property
/// required, as OpenAI's strict mode wants.
pub fn to_strict(mut schema: Value) -> Value {
    visit_mut(&mut schema, &mut |object| {
        if let Some(Value::Object(properties)) = object.get("properties") {
            let names: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
            object.insert("required".into(), Value::Array(names));
            object.insert("additionalProperties".into(), Value::Bool(false));
        } else if object.get("type").and_then(Value::as_str) == Some("object") {
            object.entry("additionalProperties").or_insert(Value::Bool(false));
        }
    });
    schema
}

/// Whether `schema` meets OpenAI's strict-mode rules on objects: each one closed, with
/// every property required.
pub fn is_strict(schema: &Value) -> bool {
    let mut strict = true;
    visit(schema, &mut |object| {
        let is_object =
            object.contains_key("properties") || object.get("type").and_then(Value::as_str) == Some("object");
        if !is_object {
            return;
        }
        let closed = object.get("additionalProperties") == Some(&Value::Bool(false));
        let all_required = match (object.get("properties"), object.get("required")) {
            (Some(Value::Object(p)), Some(Value::Array(r))) => {
                p.keys().all(|k| r.iter().any(|n| n.as_str() == Some(k)))
            }
            (Some(Value::Object(p)), None) => p.is_empty(),
            _ => true,
        };
        strict &= closed && all_required;
    });
    strict
}

/// `name` reduced to what tool and schema names may hold: letters, digits, `_` and `-`,
/// at most 64 characters (others become `_`; an empty name becomes `reply`).
pub fn wire_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
        .take(64)
        .collect();
    if cleaned.is_empty() { "reply".into() } else { cleaned }
}

/// The keywords whose values are subschemas, or maps or lists of them.
const ONE: &[&str] = &["items", "additionalProperties", "not", "contains", "if", "then", "else"];
const MAP: &[&str] = &["properties", "$defs", "definitions", "patternProperties"];
const LIST: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];

fn visit(schema: &Value, f: &mut impl FnMut(&Map<String, Value>)) {
    let Value::Object(object) = schema else { return };
    f(object);
    for (key, value) in object {
        let key = key.as_str();
        if ONE.contains(&key) {
            visit(value, f);
        } else if MAP.contains(&key) {
            if let Value::Object(map) = value {
                map.values().for_each(|v| visit(v, f));
            }
        } else if LIST.contains(&key)
            && let Value::Array(list) = value
        {
            list.iter().for_each(|v| visit(v, f));
        }
    }
}

fn visit_mut(schema: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(object) = schema else { return };
    f(object);
    for (key, value) in object.iter_mut() {
        let key = key.as_str();
        if ONE.contains(&key) {
            visit_mut(value, f);
        } else if MAP.contains(&key) {
            if let Value::Object(map) = value {
                map.values_mut().for_each(|v| visit_mut(v, f));
            }
        } else if LIST.contains(&key)
            && let Value::Array(list) = value
        {
            list.iter_mut().for_each(|v| visit_mut(v, f));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[allow(dead_code)] // only its schema is used
    #[derive(schemars::JsonSchema)]
    struct Plan {
        /// What to do, in order.
        steps: Vec<Step>,
        owner: Option<String>,
    }

    #[allow(dead_code)]
    #[derive(schemars::JsonSchema)]
    struct Step {
        title: String,
        #[serde(default)]
        hours: u32,
    }

    #[test]
    fn a_type_gives_a_strict_self_contained_schema() {
        let s = OutputSchema::of::<Plan>();
        assert_eq!(s.name, "Plan");
        assert!(s.strict && s.root_is_object());
        assert!(s.schema.get("$schema").is_none());
        assert!(s.schema.get("$defs").is_none(), "subschemas are inlined: {}", s.schema);
        assert_eq!(s.schema["required"], json!(["steps", "owner"]));
        let step = &s.schema["properties"]["steps"]["items"];
        assert_eq!(step["required"], json!(["title", "hours"]), "{step}");
        assert_eq!(step["additionalProperties"], false);
        assert_eq!(s.schema["properties"]["steps"]["description"], "What to do, in order.");
        assert!(is_strict(&s.schema));
        // `Option` is nullable, not optional.
        assert_eq!(s.schema["properties"]["owner"]["type"], json!(["string", "null"]));
    }

    #[test]
    fn hand_written_schemas_are_strict_only_when_they_qualify() {
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert!(!OutputSchema::new("x", open.clone()).strict);
        let partial = json!({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"], "additionalProperties": false});
        assert!(!is_strict(&partial));
        let nested_open = json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}, "required": ["a"], "additionalProperties": false});
        assert!(!is_strict(&nested_open));
        assert!(is_strict(&to_strict(open)));
        assert!(is_strict(&to_strict(nested_open)));
        assert!(is_strict(&json!({"type": "array", "items": {"type": "integer"}})));
        assert!(!OutputSchema::new("list", json!({"type": "array"})).root_is_object());
    }

    #[test]
    fn names_are_made_wire_safe() {
        assert_eq!(wire_name("Plan_v2-final"), "Plan_v2-final");
        assert_eq!(wire_name("Vec<String>"), "Vec_String_");
        assert_eq!(wire_name(""), "reply");
        assert_eq!(wire_name(&"x".repeat(100)).len(), 64);
    }
}
