//! From the spanned tree to the typed structs: a serde `Deserializer` over
//! [`crate::document::Node`].
//!
//! Two things a parser's own deserializer cannot do here. Unknown keys are all reported,
//! not only the first: `deserialize_struct` is told the struct's field names, so it sets
//! every unknown key aside as a diagnostic (with a did-you-mean among those names) and
//! hands the struct the rest — the same effect as `#[serde(deny_unknown_fields)]`, which
//! the structs also carry for any other deserializer. And a type error carries the key path
//! and location of the value it concerns, whichever format the file was in.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::diagnostic::suggest;
use crate::document::{Entry, KeyPath, Kind, Loc, Node};

/// A problem found while deserializing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Issue {
    pub path: KeyPath,
    pub loc: Loc,
    pub message: String,
    pub hint: Option<String>,
}

/// The error serde sees: fatal for the value being read. Its place is filled in by the
/// innermost node that sees it go by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeError {
    message: String,
    hint: Option<String>,
    place: Option<(KeyPath, Loc)>,
}

impl DeError {
    fn at(mut self, path: &KeyPath, loc: Loc) -> DeError {
        if self.place.is_none() {
            self.place = Some((path.clone(), loc));
        }
        self
    }

    pub fn into_issue(self) -> Issue {
        let (path, loc) = self.place.unwrap_or_default();
        Issue { path, loc, message: self.message, hint: self.hint }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), hint: None, place: None }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError { message: format!("expected {exp}, found {unexp}"), hint: None, place: None }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown value `{variant}`"),
            hint: suggest(variant, expected, "valid values"),
            place: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown key `{field}`"),
            hint: suggest(field, expected, "valid keys"),
            place: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError { message: format!("missing key `{field}`"), hint: None, place: None }
    }
}

/// Deserialize `T` from the tree: the value, or every issue found (unknown keys are
/// collected even when the value is read).
pub(crate) fn from_node<T: de::DeserializeOwned>(root: &Node) -> (Option<T>, Vec<Issue>) {
    let sink = RefCell::new(Vec::new());
    let result = T::deserialize(NodeDe { node: root, path: KeyPath::root(), sink: &sink });
    let mut issues = sink.into_inner();
    match result {
        Ok(v) => (Some(v), issues),
        Err(e) => {
            issues.push(e.into_issue());
            (None, issues)
        }
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: KeyPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'a> NodeDe<'a> {
    fn fail(&self, e: DeError) -> DeError {
        e.at(&self.path, self.node.loc)
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(n), _) => visitor.visit_i64(n),
                (_, Ok(n)) => visitor.visit_u64(n),
                _ => visitor.visit_i128(*i),
            },
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
                sink: self.sink,
            }),
            Kind::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter().collect::<Vec<_>>().into_iter(),
                value: None,
                path: &self.path,
                sink: self.sink,
            }),
        };
        r.map_err(|e| self.fail(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.kind {
            Kind::Null => visitor.visit_none().map_err(|e| self.fail(e)),
            _ => {
                let (path, loc) = (self.path.clone(), self.node.loc);
                visitor.visit_some(self).map_err(|e| e.at(&path, loc))
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (path, loc) = (self.path.clone(), self.node.loc);
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path, loc))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Kind::Map(entries) = &self.node.kind else {
            let keys: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            return Err(self.fail(DeError {
                message: format!("expected a map, found {}", self.node.kind.describe()),
                hint: Some(format!("its keys: {}", keys.join(", "))),
                place: None,
            }));
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            if fields.contains(&entry.key.as_str()) {
                known.push(entry);
            } else {
                let e = <DeError as de::Error>::unknown_field(&entry.key, fields);
                self.sink.borrow_mut().push(Issue {
                    path: self.path.key(entry.key.clone()),
                    loc: entry.key_loc,
                    message: e.message,
                    hint: e.hint,
                });
            }
        }
        visitor
            .visit_map(MapDe { entries: known.into_iter(), value: None, path: &self.path, sink: self.sink })
            .map_err(|e| self.fail(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Str(s) => {
                let access: de::value::StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(access).map_err(|e| self.fail(e))
            }
            other => {
                let list: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
                Err(self.fail(DeError {
                    message: format!("expected one of the names below, found {}", other.describe()),
                    hint: Some(format!("valid values: {}", list.join(", "))),
                    place: None,
                }))
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct SeqDe<'a, I> {
    items: I,
    path: &'a KeyPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for SeqDe<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                seed.deserialize(NodeDe { node, path: self.path.index(i), sink: self.sink }).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct MapDe<'a> {
    entries: std::vec::IntoIter<&'a Entry>,
    value: Option<&'a Entry>,
    path: &'a KeyPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'de, 'a> de::MapAccess<'de> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else { return Ok(None) };
        self.value = Some(entry);
        let path = self.path.key(entry.key.clone());
        let key: de::value::StrDeserializer<'_, DeError> = entry.key.as_str().into_deserializer();
        seed.deserialize(key).map(Some).map_err(|e| e.at(&path, entry.key_loc))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry =
            self.value.take().ok_or_else(|| <DeError as de::Error>::custom("a value without its key"))?;
        seed.deserialize(NodeDe {
            node: &entry.value,
            path: self.path.key(entry.key.clone()),
            sink: self.sink,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::document::parse_yaml;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        id: String,
        #[serde(default)]
        n: Option<u32>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "snake_case")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        mode: Mode,
    }

    #[test]
    fn every_unknown_key_is_reported_and_the_value_still_read() {
        let node =
            parse_yaml("items:\n  - id: a\n    nn: 1\n  - id: b\n    idd: x\nmode: fast\nmod: 1\n").unwrap();
        let (value, issues) = from_node::<Outer>(&node);
        assert_eq!(value.unwrap().items.len(), 2);
        let mut got: Vec<(String, Loc, String, Option<String>)> =
            issues.into_iter().map(|i| (i.path.to_string(), i.loc, i.message, i.hint)).collect();
        got.sort_by_key(|g| g.1);
        assert_eq!(
            got,
            vec![
                (
                    "items[0].nn".into(),
                    Loc { line: 3, column: 5 },
                    "unknown key `nn`".into(),
                    Some("did you mean `n`?".into())
                ),
                (
                    "items[1].idd".into(),
                    Loc { line: 5, column: 5 },
                    "unknown key `idd`".into(),
                    Some("did you mean `id`?".into())
                ),
                (
                    "mod".into(),
                    Loc { line: 7, column: 1 },
                    "unknown key `mod`".into(),
                    Some("did you mean `mode`?".into())
                ),
            ]
        );
    }

    #[test]
    fn type_errors_carry_the_path_and_location_of_the_value() {
        let node = parse_yaml("items:\n  - id: a\n    n: many\nmode: fats\n").unwrap();
        let (value, issues) = from_node::<Outer>(&node);
        assert!(value.is_none());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path.to_string(), "items[0].n");
        assert_eq!(issues[0].loc, Loc { line: 3, column: 8 });
        assert!(issues[0].message.contains("expected u32"), "{}", issues[0].message);

        let node = parse_yaml("items: []\nmode: fats\n").unwrap();
        let (_, issues) = from_node::<Outer>(&node);
        assert_eq!(issues[0].path.to_string(), "mode");
        assert_eq!(issues[0].loc, Loc { line: 2, column: 7 });
        assert_eq!(issues[0].message, "unknown value `fats`");
        assert_eq!(issues[0].hint.as_deref(), Some("did you mean `fast`?"));

        let node = parse_yaml("items: []\n").unwrap();
        let (_, issues) = from_node::<Outer>(&node);
        assert_eq!(issues[0].message, "missing key `mode`");
        assert_eq!(issues[0].loc, Loc { line: 1, column: 1 });
    }
}
