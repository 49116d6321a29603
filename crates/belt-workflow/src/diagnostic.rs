//! Diagnostics: what is wrong in a workflow file, where (`file:line:column` and the key
//! path), and what to do about it.

use std::fmt;

use serde::Serialize;

use crate::document::{KeyPath, Loc};

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The file's name as given to [`crate::Workflow::parse`] (a path, `<request>`…).
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// The key path, e.g. `steps[2].agent`; empty for the file as a whole.
    pub key: String,
    pub message: String,
    /// How to fix it: a did-you-mean, the valid values, an example.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(file: &str, loc: Loc, key: &KeyPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_string(),
            line: loc.line,
            column: loc.column,
            key: key.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint;
        self
    }
}

/// `file:line:column: key: message (hint)`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every problem found, in file order. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    /// Sort by position and drop exact repeats.
    pub(crate) fn sorted(mut self) -> Diagnostics {
        self.0.sort_by(|a, b| {
            (a.line, a.column, &a.key, &a.message).cmp(&(b.line, b.column, &b.key, &b.message))
        });
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The candidate closest to `word`, when one is close enough to be what was meant: a
/// typo or two (edit distance, transpositions counted once) or a near match by
/// Jaro-Winkler similarity.
pub fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let max_edits = (lower.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            let other = c.to_lowercase();
            (strsim::damerau_levenshtein(&lower, &other), strsim::jaro_winkler(&lower, &other), c)
        })
        .filter(|(edits, similarity, _)| *edits <= max_edits || *similarity >= 0.8)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}

/// "did you mean `x`?" when one is close, else the list of valid values.
pub(crate) fn suggest(word: &str, candidates: &[&str], what: &str) -> Option<String> {
    if let Some(best) = did_you_mean(word, candidates.iter().copied()) {
        return Some(format!("did you mean `{best}`?"));
    }
    if candidates.is_empty() {
        return None;
    }
    let list: Vec<String> = candidates.iter().take(12).map(|c| format!("`{c}`")).collect();
    let more = if candidates.len() > 12 { ", …" } else { "" };
    Some(format!("{what}: {}{more}", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_column_key_message_hint() {
        let d = Diagnostic::new(
            "flow.yaml",
            Loc { line: 3, column: 7 },
            &KeyPath::root().key("steps").index(1).key("agent"),
            "unknown agent `writr`",
        )
        .hint(Some("did you mean `writer`?".into()));
        assert_eq!(
            d.to_string(),
            "flow.yaml:3:7: steps[1].agent: unknown agent `writr` (did you mean `writer`?)"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("writr", ["writer", "editor"]), Some("writer"));
        assert_eq!(did_you_mean("zzz", ["writer", "editor"]), None);
        assert_eq!(did_you_mean("dga", ["cascade", "dag", "swarm"]), Some("dag"));
        assert_eq!(suggest("zzz", &["a", "b"], "valid keys").as_deref(), Some("valid keys: `a`, `b`"));
    }
}
