//! The parsed file before it becomes typed: a tree of values, each with the line and column
//! where it stands, built the same way from YAML and TOML.
//!
//! Why a tree of our own rather than deserializing the typed structs straight from the
//! parsers: every later diagnostic — an unknown agent, a cycle, a template variable that
//! does not exist — needs the line and column of a key the parser has long forgotten. With
//! one spanned tree per file, a diagnostic names a key path (`steps[2].agent`) and the tree
//! says where it is, for both formats; and the typed structs stay plain (no span wrappers in
//! the API or the JSON Schema).
//!
//! Hostile files are stopped here, each with its own error: a size limit before any parsing,
//! and, for YAML, serde-saphyr's budgets (alias replays, nodes, nesting depth), so a
//! billion-laughs file or a thousand nested brackets fail fast instead of hanging; TOML's
//! parser has its own recursion limit, and the tree's depth is checked for both.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The largest workflow file accepted (1 MiB): a workflow is a page of text, not data.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The deepest nesting of maps and lists accepted.
pub const MAX_DEPTH: usize = 32;
/// The most values (after YAML aliases are expanded) a file may hold.
pub const MAX_NODES: usize = 100_000;
/// The most events YAML aliases may replay in all: a few shared blocks, not a bomb.
pub const MAX_ALIAS_EVENTS: usize = 10_000;

/// A 1-based line and column (columns count characters). `0:0` is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One value of the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub loc: Loc,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A key of a map, where it stands, and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub value: Node,
}

impl Kind {
    /// What a user calls this kind of value, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "nothing (null)",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

/// One step of a key path: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path as users read it: `steps[2].agent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }
    pub fn key(&self, key: impl Into<String>) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.into()));
        p
    }
    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Why the text could not become a tree (the file is not valid YAML/TOML, or is hostile).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub loc: Loc,
    pub message: String,
    pub hint: Option<String>,
}

impl Node {
    /// The value at `path`, if there is one.
    pub fn get(&self, path: &KeyPath) -> Option<&Node> {
        let mut node = self;
        for seg in &path.0 {
            node = node.child(seg)?.1;
        }
        Some(node)
    }

    fn child(&self, seg: &Seg) -> Option<(Loc, &Node)> {
        match (&self.kind, seg) {
            (Kind::Map(entries), Seg::Key(k)) => {
                entries.iter().find(|e| &e.key == k).map(|e| (e.key_loc, &e.value))
            }
            (Kind::Seq(items), Seg::Index(i)) => items.get(*i).map(|n| (n.loc, n)),
            _ => None,
        }
    }

    /// Where `path` is: the value's location, or with `key` the location of its key (a
    /// list item's key is the item itself). A path that does not exist resolves to its
    /// nearest existing ancestor, so a "missing key" diagnostic points at the map that
    /// lacks it.
    pub fn locate(&self, path: &KeyPath, key: bool) -> Loc {
        let mut node = self;
        let mut loc = self.loc;
        let last = path.0.len().saturating_sub(1);
        for (i, seg) in path.0.iter().enumerate() {
            match node.child(seg) {
                Some((key_loc, child)) => {
                    loc = if key && i == last { key_loc } else { child.loc };
                    node = child;
                }
                None => return loc,
            }
        }
        loc
    }

    fn depth(&self) -> usize {
        match &self.kind {
            Kind::Seq(items) => 1 + items.iter().map(Node::depth).max().unwrap_or(0),
            Kind::Map(entries) => 1 + entries.iter().map(|e| e.value.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn count(&self) -> usize {
        match &self.kind {
            Kind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Kind::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.count()).sum::<usize>(),
            _ => 1,
        }
    }
}

/// Refuse files over [`MAX_FILE_BYTES`] before any parsing.
pub(crate) fn check_size(text: &str) -> Result<(), SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError {
            loc: Loc { line: 1, column: 1 },
            message: format!(
                "the file is {} bytes; workflow files are limited to {} bytes (1 MiB)",
                text.len(),
                MAX_FILE_BYTES
            ),
            hint: Some("keep data out of the workflow: pass it with --input or read it in a step".into()),
        });
    }
    Ok(())
}

fn check_shape(root: Node) -> Result<Node, SyntaxError> {
    // The parsers bound their own recursion; this bounds the tree a TOML file can build
    // with inline tables and arrays, with the same limit and words for both formats.
    if root.depth() > MAX_DEPTH {
        return Err(SyntaxError {
            loc: root.loc,
            message: format!("the file nests maps and lists deeper than {MAX_DEPTH} levels"),
            hint: Some("a workflow needs a few levels; flatten the structure".into()),
        });
    }
    if root.count() > MAX_NODES {
        return Err(SyntaxError {
            loc: root.loc,
            message: format!("the file holds more than {MAX_NODES} values"),
            hint: None,
        });
    }
    Ok(root)
}

// ---------------------------------------------------------------------------------------
// YAML

/// Parse YAML text into a tree, within the budgets above.
pub(crate) fn parse_yaml(text: &str) -> Result<Node, SyntaxError> {
    check_size(text)?;
    let mut options = serde_saphyr::Options::default();
    // Only `true` and `false` are booleans: YAML 1.1 would read `n`, `no`, `off` as false,
    // a classic surprise in values such as route names.
    options.strict_booleans = true;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES * 4;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1;
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    options.alias_limits.max_replay_stack_depth = 16;
    options.with_snippet = false;
    if text.trim().is_empty() {
        return Ok(Node { loc: Loc { line: 1, column: 1 }, kind: Kind::Map(Vec::new()) });
    }
    match serde_saphyr::from_str_with_options::<serde_saphyr::Spanned<YamlNode>>(text, options) {
        Ok(spanned) => check_shape(Node { loc: loc_of(&spanned.referenced), kind: spanned.value.0 }),
        Err(e) => Err(yaml_error(&e)),
    }
}

fn loc_of(l: &serde_saphyr::Location) -> Loc {
    Loc { line: l.line(), column: l.column() }
}

fn yaml_error(e: &serde_saphyr::Error) -> SyntaxError {
    use serde_saphyr::MessageFormatter;
    // Where the alias that broke a limit is used, rather than where its anchor is defined.
    let loc = e.location().map(|l| loc_of(&l)).unwrap_or(Loc { line: 1, column: 1 });
    let mut e = e;
    while let serde_saphyr::Error::AliasError { error, .. } | serde_saphyr::Error::WithSnippet { error, .. } =
        e
    {
        e = error;
    }
    let (message, hint) = match e {
        serde_saphyr::Error::Budget { breach, .. } => (
            format!("the file exceeds a safety limit of workflow files: {breach:?}"),
            Some(format!(
                "workflow files may nest {MAX_DEPTH} levels, hold {MAX_NODES} values and replay \
                 {MAX_ALIAS_EVENTS} alias events; a file beyond that is refused"
            )),
        ),
        serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => (
            format!(
                "YAML aliases expand beyond the limit of workflow files ({MAX_ALIAS_EVENTS} replayed events)"
            ),
            Some("this looks like an alias bomb; share fewer or smaller anchored blocks".into()),
        ),
        other => (serde_saphyr::UserMessageFormatter.format_message(other).into_owned(), None),
    };
    SyntaxError { loc, message, hint }
}

/// A node read from serde-saphyr, its children wrapped in `Spanned` so each keeps its
/// location.
struct YamlNode(Kind);

fn yaml_key(kind: Kind) -> String {
    match kind {
        Kind::Str(s) => s,
        Kind::Null => "~".into(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Seq(_) | Kind::Map(_) => "<complex key>".into(),
    }
}

impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = YamlNode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Int(v.into())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Int(v.into())))
            }
            fn visit_i128<E>(self, v: i128) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Int(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Str(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Str(v)))
            }
            fn visit_unit<E>(self) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Null))
            }
            fn visit_none<E>(self) -> Result<YamlNode, E> {
                Ok(YamlNode(Kind::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<YamlNode, D::Error> {
                YamlNode::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<YamlNode, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element::<serde_saphyr::Spanned<YamlNode>>()? {
                    items.push(Node { loc: loc_of(&x.referenced), kind: x.value.0 });
                }
                Ok(YamlNode(Kind::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<YamlNode, A::Error> {
                let mut entries: Vec<Entry> = Vec::new();
                while let Some(k) = a.next_key::<serde_saphyr::Spanned<YamlNode>>()? {
                    let v = a.next_value::<serde_saphyr::Spanned<YamlNode>>()?;
                    let key = yaml_key(k.value.0);
                    let entry = Entry {
                        key,
                        key_loc: loc_of(&k.referenced),
                        value: Node { loc: loc_of(&v.referenced), kind: v.value.0 },
                    };
                    // A merge (`<<: *base`) may repeat a key the map sets itself: the map's
                    // own value wins, as YAML says.
                    match entries.iter_mut().find(|e| e.key == entry.key) {
                        Some(_) => {}
                        None => entries.push(entry),
                    }
                }
                Ok(YamlNode(Kind::Map(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------
// TOML

/// Parse TOML text into a tree.
pub(crate) fn parse_toml(text: &str) -> Result<Node, SyntaxError> {
    check_size(text)?;
    let lines = LineIndex::new(text);
    let table = toml::de::DeTable::parse(text).map_err(|e| SyntaxError {
        loc: e.span().map_or(Loc { line: 1, column: 1 }, |s| lines.loc(s.start)),
        message: e.message().trim().to_string(),
        hint: None,
    })?;
    let root = Node { loc: Loc { line: 1, column: 1 }, kind: toml_table(table.get_ref(), &lines, 0)? };
    check_shape(root)
}

fn too_deep(loc: Loc) -> SyntaxError {
    SyntaxError {
        loc,
        message: format!("the file nests maps and lists deeper than {MAX_DEPTH} levels"),
        hint: Some("a workflow needs a few levels; flatten the structure".into()),
    }
}

fn toml_table(table: &toml::de::DeTable<'_>, lines: &LineIndex, depth: usize) -> Result<Kind, SyntaxError> {
    let mut entries = Vec::with_capacity(table.len());
    for (k, v) in table.iter() {
        let value = toml_value(v, lines, depth + 1)?;
        entries.push(Entry { key: k.get_ref().to_string(), key_loc: lines.loc(k.span().start), value });
    }
    // TOML tables come back sorted by key; file order reads better in messages and
    // makes "first" mean what the user wrote.
    entries.sort_by_key(|e| e.key_loc);
    Ok(Kind::Map(entries))
}

fn toml_value(
    v: &toml::Spanned<toml::de::DeValue<'_>>,
    lines: &LineIndex,
    depth: usize,
) -> Result<Node, SyntaxError> {
    use toml::de::DeValue;
    let loc = lines.loc(v.span().start);
    if depth > MAX_DEPTH {
        return Err(too_deep(loc));
    }
    let kind = match v.get_ref() {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            let digits = digits.trim_start_matches('+');
            match i128::from_str_radix(digits, i.radix()) {
                Ok(n) => Kind::Int(n),
                Err(e) => {
                    return Err(SyntaxError { loc, message: format!("invalid integer: {e}"), hint: None });
                }
            }
        }
        DeValue::Float(f) => {
            let text: String = f.as_str().chars().filter(|c| *c != '_').collect();
            let n = match text.as_str() {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" | "+nan" | "-nan" => f64::NAN,
                t => t.parse::<f64>().map_err(|e| SyntaxError {
                    loc,
                    message: format!("invalid number: {e}"),
                    hint: None,
                })?,
            };
            Kind::Float(n)
        }
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Str(d.to_string()),
        DeValue::Array(items) => {
            Kind::Seq(items.iter().map(|x| toml_value(x, lines, depth + 1)).collect::<Result<Vec<_>, _>>()?)
        }
        DeValue::Table(t) => toml_table(t, lines, depth)?,
    };
    Ok(Node { loc, kind })
}

/// Byte offsets to lines and columns (columns count characters, as YAML's do).
struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let start = self.starts[line];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        Loc { line: line as u64 + 1, column: column as u64 + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(parts: &[&str]) -> KeyPath {
        KeyPath(
            parts
                .iter()
                .map(|p| match p.parse::<usize>() {
                    Ok(i) => Seg::Index(i),
                    Err(_) => Seg::Key(p.to_string()),
                })
                .collect(),
        )
    }

    #[test]
    fn yaml_and_toml_give_the_same_tree_with_locations() {
        let yaml = "name: demo\nsteps:\n  - id: a\n    agent: writer\n";
        let toml = "name = \"demo\"\n\n[[steps]]\nid = \"a\"\nagent = \"writer\"\n";
        let y = parse_yaml(yaml).unwrap();
        let t = parse_toml(toml).unwrap();
        let p = path(&["steps", "0", "agent"]);
        assert_eq!(y.get(&p).unwrap().kind, Kind::Str("writer".into()));
        assert_eq!(t.get(&p).unwrap().kind, Kind::Str("writer".into()));
        assert_eq!(y.locate(&p, true), Loc { line: 4, column: 5 });
        assert_eq!(y.locate(&p, false), Loc { line: 4, column: 12 });
        assert_eq!(t.locate(&p, true), Loc { line: 5, column: 1 });
        assert_eq!(t.locate(&p, false), Loc { line: 5, column: 9 });
        // A missing key resolves to the nearest ancestor that exists.
        assert_eq!(y.locate(&path(&["steps", "0", "prompt"]), true), Loc { line: 3, column: 5 });
        assert_eq!(p.to_string(), "steps[0].agent");
    }

    #[test]
    fn yaml_merge_keys_and_strict_booleans() {
        let y = parse_yaml("base: &b\n  model: m\n  role: r\nx:\n  <<: *b\n  role: own\nn: n\n").unwrap();
        let x = y.get(&path(&["x"])).unwrap();
        let Kind::Map(entries) = &x.kind else { panic!("a map") };
        let keys: Vec<(&str, &Kind)> = entries.iter().map(|e| (e.key.as_str(), &e.value.kind)).collect();
        assert!(keys.contains(&("model", &Kind::Str("m".into()))));
        assert!(keys.contains(&("role", &Kind::Str("own".into()))), "{keys:?}");
        assert_eq!(y.get(&path(&["n"])).unwrap().kind, Kind::Str("n".into()));
    }

    #[test]
    fn a_billion_laughs_is_refused_quickly_with_a_clear_error() {
        let mut text =
            String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            text.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        let err = parse_yaml(&text).unwrap_err();
        assert!(err.message.contains("alias") || err.message.contains("safety limit"), "{}", err.message);
        assert!(err.loc.line >= 2, "points into the file: {:?}", err.loc);
    }

    #[test]
    fn deep_nesting_is_refused_in_both_formats() {
        let yaml = format!("a: {}{}", "[".repeat(5000), "]".repeat(5000));
        let e = parse_yaml(&yaml).unwrap_err();
        assert!(e.message.contains("recursion") || e.message.contains("limit"), "{}", e.message);
        let block: String = (0..100).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let e = parse_yaml(&block).unwrap_err();
        assert!(e.message.contains("safety limit"), "{}", e.message);
        let toml = format!("a = {}{}", "[".repeat(5000), "]".repeat(5000));
        let e = parse_toml(&toml).unwrap_err();
        assert!(e.message.contains("recurs") || e.message.contains("deeper"), "{}", e.message);
        let toml = format!("a = {}1{}", "[".repeat(40), "]".repeat(40));
        let e = parse_toml(&toml).unwrap_err();
        assert!(e.message.contains("deeper than 32"), "{}", e.message);
    }

    #[test]
    fn a_huge_file_is_refused_before_parsing() {
        let text = format!("name: x\ndescription: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
        let e = parse_yaml(&text).unwrap_err();
        assert!(e.message.contains("limited to 1048576 bytes"), "{}", e.message);
        assert!(parse_toml(&text).unwrap_err().message.contains("1 MiB"));
    }

    #[test]
    fn syntax_errors_have_locations() {
        let e = parse_yaml("a: 1\n  b: [\n").unwrap_err();
        assert_eq!(e.loc.line, 2);
        let e = parse_toml("a = 1\nb = \n").unwrap_err();
        assert_eq!(e.loc.line, 2, "{e:?}");
        let e = parse_yaml("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.loc, Loc { line: 2, column: 1 });
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }

    #[test]
    fn line_index_counts_characters() {
        let idx = LineIndex::new("é = 1\nab");
        assert_eq!(idx.loc(0), Loc { line: 1, column: 1 });
        assert_eq!(idx.loc(3), Loc { line: 1, column: 3 });
        assert_eq!(idx.loc(8), Loc { line: 2, column: 2 });
    }
}
