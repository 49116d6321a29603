//! What real MCP and HTTP clients send, made to fit [`crate::RunSpec`]: numbers that arrive
//! as strings, and schemas such clients can fill in.
//!
//! Clients build their argument forms from a tool's JSON Schema. schemars writes an optional
//! number as `"type": ["integer", "null"]`, a union that tools such as the MCP Inspector do
//! not recognise as a number: they send what was typed, `"5"`, and a strict deserializer
//! answers `invalid type: string "5", expected u32`. So the schemas of request types say
//! plain `"type": "integer"` (an optional field is one that is not `required`, which is all
//! JSON Schema needs), and the numeric fields accept a string holding a number as well.
//!
//! ```
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[schemars(transform = belt_app::lenient::plain_optionals)]
//! struct Args {
//!     #[serde(default, deserialize_with = "belt_app::lenient::number")]
//!     agents: Option<u32>,
//! }
//! let a: Args = serde_json::from_str(r#"{"agents": "5"}"#).unwrap();
//! assert_eq!(a.agents, Some(5));
//! let schema = serde_json::to_value(schemars::schema_for!(Args)).unwrap();
//! assert_eq!(schema["properties"]["agents"]["type"], "integer");
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, Error, IntoDeserializer, Unexpected, Visitor};
use serde_json::Value;

/// An optional number that may also arrive as a string holding one (`"5"`, `" 0.25 "`);
/// `null` is no value. Out-of-range values are refused as the plain type refuses them.
pub fn number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
{
    d.deserialize_option(Number(PhantomData))
}

struct Number<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + FromStr> Visitor<'de> for Number<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number (or a string holding one)")
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(Some)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(Some)
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(Some)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            // An empty form field is a field left out.
            return Ok(None);
        }
        // Through the JSON number so the range check and its message are the plain type's.
        match serde_json::from_str::<serde_json::Number>(t) {
            Ok(n) => T::deserialize(n).map(Some).map_err(E::custom),
            Err(_) => t.parse::<T>().map(Some).map_err(|_| E::invalid_value(Unexpected::Str(v), &self)),
        }
    }
}

/// A schemars transform for request types: every property typed `[T, "null"]` becomes
/// plain `T`, `anyOf: [S, {"type": "null"}]` becomes `S`, and `"default": null` goes, so
/// forms built from the schema show a number field for a number. See the [module docs](self).
pub fn plain_optionals(schema: &mut schemars::Schema) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { return };
    for prop in props.values_mut() {
        let Some(obj) = prop.as_object_mut() else { continue };
        if let Some(Value::Array(types)) = obj.get("type") {
            let mut rest = types.iter().filter(|t| t.as_str() != Some("null"));
            if let (Some(only), None) = (rest.next(), rest.next()) {
                let only = only.clone();
                obj.insert("type".into(), only);
            }
        }
        for key in ["anyOf", "oneOf"] {
            let Some(Value::Array(alts)) = obj.get(key) else { continue };
            let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
            let mut rest = alts.iter().filter(|s| !is_null(s));
            if let (Some(Value::Object(only)), None) = (rest.next(), rest.next()) {
                let only = only.clone();
                obj.remove(key);
                for (k, v) in only {
                    obj.entry(k).or_insert(v);
                }
            }
        }
        if obj.get("default") == Some(&Value::Null) {
            obj.remove("default");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Args {
        #[serde(default, deserialize_with = "number")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "number")]
        x: Option<f64>,
    }

    fn args(json: &str) -> Result<Args, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_come_as_numbers_or_strings() {
        let a = args(r#"{"n": 5, "x": 0.5}"#).unwrap();
        assert_eq!((a.n, a.x), (Some(5), Some(0.5)));
        let a = args(r#"{"n": "5", "x": " 0.25 "}"#).unwrap();
        assert_eq!((a.n, a.x), (Some(5), Some(0.25)));
        let a = args(r#"{"n": null, "x": ""}"#).unwrap();
        assert_eq!((a.n, a.x), (None, None));
        let a = args("{}").unwrap();
        assert_eq!((a.n, a.x), (None, None));
        assert_eq!(args(r#"{"x": 3}"#).unwrap().x, Some(3.0));
    }

    #[test]
    fn what_is_no_number_is_refused_with_what_was_sent() {
        let e = args(r#"{"n": "five"}"#).unwrap_err();
        assert!(e.contains(r#"invalid value: string "five", expected a number"#), "{e}");
        let e = args(r#"{"n": -1}"#).unwrap_err();
        assert!(e.contains("-1") && e.contains("u32"), "{e}");
        let e = args(r#"{"n": "5000000000"}"#).unwrap_err();
        assert!(e.contains("5000000000"), "{e}");
        assert!(args(r#"{"n": 1.5}"#).is_err());
        assert!(args(r#"{"n": true}"#).is_err());
    }
}
