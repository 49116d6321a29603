//! Mutations of valid texts: what a parser meets when a file is half-edited, cut off by a
//! full disk, mangled by a bad merge or written by a confused client. Each mutation is
//! small and shrinks towards none, so a failure comes down to the one change that matters.

use proptest::prelude::*;

/// A position as a fraction of a length (`n / 65536`), so that it means something in a text
/// of any size, and shrinks towards the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos(pub u16);

impl Pos {
    /// The position in `0..len` (0 when `len` is 0).
    pub fn index(self, len: usize) -> usize {
        ((len as u64 * u64::from(self.0)) >> 16) as usize
    }

    /// The `Pos` that picks `n` of `len` (for tests).
    pub fn of(n: usize, len: usize) -> Pos {
        Pos(((n as u64 * 65536).div_ceil(len.max(1) as u64)).min(65535) as u16)
    }
}

/// Any position.
pub fn pos() -> impl Strategy<Value = Pos> {
    any::<u16>().prop_map(Pos)
}

/// One change to a text. Positions scale to the text as it is when the change applies.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace one byte (the text is then read back lossily: invalid UTF-8 becomes U+FFFD).
    FlipByte(Pos, u8),
    /// Cut the text at a byte.
    Truncate(Pos),
    /// Remove a line.
    RemoveLine(Pos),
    /// Write a line twice.
    DuplicateLine(Pos),
    /// Exchange two lines.
    SwapLines(Pos, Pos),
    /// Insert a line before another.
    InsertLine(Pos, String),
    /// Insert a fragment at a byte.
    Insert(Pos, String),
}

/// Fragments that matter to YAML, TOML and JSON parsers and to belt's own checks: anchors
/// and aliases, flow and table brackets, templates, numbers at and past every limit,
/// control and wide characters.
pub const FRAGMENTS: &[&str] = &[
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    ":",
    ": ",
    "- ",
    "-",
    "#",
    "\"",
    "'",
    "\\",
    "{",
    "}",
    "[",
    "]",
    "[[",
    "]]",
    ",",
    "=",
    ".",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!tag ",
    "? ",
    "|",
    ">",
    "---",
    "...",
    "{{",
    "}}",
    "{{ inputs.x }}",
    "{{ steps.a.output }}",
    "{% for x in y %}",
    "{% endfor %}",
    "0",
    "-1",
    "1",
    "2",
    "1.5",
    "1e309",
    "-0.0",
    "NaN",
    "nan",
    ".inf",
    "inf",
    "true",
    "null",
    "~",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "100001",
    "1000000",
    "0x10",
    "1_000",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "日本",
    "🦀",
    "a/b",
    "..",
    "../../etc/passwd",
];

/// Keys belt's files use, plus misspellings: inserted as `key: value` lines and `"key": value`
/// members, they reach past syntax into the checks.
pub const KEYS: &[&str] = &[
    "name",
    "description",
    "version",
    "inputs",
    "agents",
    "steps",
    "pattern",
    "id",
    "agent",
    "prompt",
    "needs",
    "when",
    "loop",
    "route",
    "routes",
    "model",
    "models",
    "budget",
    "max_usd",
    "settings",
    "task",
    "plan",
    "dependencies",
    "depends_on",
    "priority",
    "specialization",
    "kind",
    "base_url",
    "api_key_env",
    "rpm",
    "tpm",
    "max_concurrency",
    "headers",
    "stream",
    "prices",
    "input",
    "output",
    "default_model",
    "providers",
    "timeout",
    "retries",
    "concurrency",
    "group_size",
    "refine",
    "workflow",
    "agnets",
    "stpes",
    "x",
    "",
];

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
        2 => prop::collection::vec(prop::sample::select(FRAGMENTS), 1..6).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

fn line() -> impl Strategy<Value = String> {
    (prop::sample::select(&[0usize, 2, 4, 6][..]), prop::sample::select(KEYS), fragment())
        .prop_map(|(indent, key, value)| format!("{}{key}: {value}", " ".repeat(indent)))
}

/// A strategy of mutations.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (pos(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipByte(i, b)),
        2 => pos().prop_map(Mutation::Truncate),
        2 => pos().prop_map(Mutation::RemoveLine),
        2 => pos().prop_map(Mutation::DuplicateLine),
        1 => (pos(), pos()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (pos(), line()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        3 => (pos(), fragment()).prop_map(|(i, f)| Mutation::Insert(i, f)),
    ]
}

/// `text` with `mutations` applied in order.
pub fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut text = text.to_string();
    for m in mutations {
        text = apply_one(&text, m);
    }
    text
}

fn apply_one(text: &str, m: &Mutation) -> String {
    // Lines with their terminators, so joining them gives the text back.
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let at_line = |i: &Pos| i.index(lines.len());
    match m {
        Mutation::FlipByte(i, b) => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Truncate(i) => {
            let bytes = &text.as_bytes()[..i.index(text.len() + 1)];
            String::from_utf8_lossy(bytes).into_owned()
        }
        Mutation::RemoveLine(i) => {
            let skip = at_line(i);
            lines.iter().enumerate().filter(|(n, _)| *n != skip).map(|(_, l)| *l).collect()
        }
        Mutation::DuplicateLine(i) => {
            let twice = at_line(i);
            let mut out = String::with_capacity(text.len() * 2);
            for (n, l) in lines.iter().enumerate() {
                out.push_str(l);
                if n == twice {
                    if !l.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(l);
                }
            }
            out
        }
        Mutation::SwapLines(a, b) => {
            let mut owned: Vec<String> = lines
                .iter()
                .map(|l| if l.ends_with('\n') { l.to_string() } else { format!("{l}\n") })
                .collect();
            if !owned.is_empty() {
                let (a, b) = (a.index(owned.len()), b.index(owned.len()));
                owned.swap(a, b);
            }
            owned.concat()
        }
        Mutation::InsertLine(i, new) => {
            let before = i.index(lines.len() + 1);
            let mut out = String::with_capacity(text.len() + new.len() + 1);
            for (n, l) in lines.iter().enumerate() {
                if n == before {
                    out.push_str(new);
                    out.push('\n');
                }
                out.push_str(l);
            }
            if before >= lines.len() {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(new);
                out.push('\n');
            }
            out
        }
        Mutation::Insert(i, new) => {
            // The nearest character boundary at or before the index.
            let mut at = i.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut out = String::with_capacity(text.len() + new.len());
            out.push_str(&text[..at]);
            out.push_str(new);
            out.push_str(&text[at..]);
            out
        }
    }
}

/// One of `corpus`, with one to four mutations (shrinking towards the text unchanged).
pub fn text(corpus: Vec<String>, extra_keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let count = corpus.len().max(1);
    let extra = if extra_keys.is_empty() { KEYS } else { extra_keys };
    (
        0..count,
        prop::collection::vec(mutation(), 0..5),
        prop::collection::vec((pos(), prop::sample::select(extra)), 0..2),
    )
        .prop_map(move |(n, mutations, keys)| {
            let base = corpus.get(n).map_or("", String::as_str);
            let mut out = apply(base, &mutations);
            // Keys the caller knows (a format's own), each as a line of its own.
            for (i, key) in keys {
                out = apply_one(&out, &Mutation::InsertLine(i, format!("{key}: 1")));
            }
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: usize) -> Pos {
        Pos::of(n, 10)
    }

    #[test]
    fn positions_scale_to_any_length() {
        for len in [1, 2, 10, 1000, 65536] {
            for n in [0, len / 2, len - 1] {
                assert_eq!(Pos::of(n, len).index(len), n, "{n} of {len}");
            }
            assert!(Pos(u16::MAX).index(len) < len);
        }
        assert_eq!(Pos(9).index(0), 0);
    }

    #[test]
    fn each_mutation_does_what_it_says() {
        let text = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        assert_eq!(apply(text, &[Mutation::RemoveLine(idx(1))]), "a\nc\nd\ne\nf\ng\nh\ni\nj\n");
        assert_eq!(apply(text, &[Mutation::DuplicateLine(idx(0))]), "a\na\nb\nc\nd\ne\nf\ng\nh\ni\nj\n");
        assert_eq!(apply(text, &[Mutation::SwapLines(idx(0), idx(9))]), "j\nb\nc\nd\ne\nf\ng\nh\ni\na\n");
        assert_eq!(apply(text, &[Mutation::InsertLine(idx(1), "k: v".into())]).lines().nth(1), Some("k: v"));
        assert_eq!(apply("abcdefghij", &[Mutation::Truncate(Pos::of(3, 11))]), "abc");
        let flipped = apply(text, &[Mutation::FlipByte(idx(2), 0xff)]);
        assert!(flipped.contains('\u{fffd}'), "{flipped:?}");
        assert_eq!(apply("é", &[Mutation::Insert(Pos(40000), "x".into())]), "xé");
        assert_eq!(apply("", &[Mutation::RemoveLine(idx(3)), Mutation::FlipByte(idx(2), 1)]), "");
    }
}
