//! Model output (Markdown) parsed into a small document tree that every renderer walks.
//!
//! Text written by a model is data. Parsing it here, once, is where it is made safe for
//! every format: raw HTML becomes literal text, images become links (a report never fetches
//! anything), links keep only `http`, `https` and `mailto` destinations, control characters
//! are dropped, and nesting is capped so hostile input cannot exhaust the stack of a
//! renderer. Bare `http(s)://` URLs in text become links, and every link feeds the report's
//! list of sources.

use pulldown_cmark::{Alignment, CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// Deepest nesting of block containers (lists, quotes) and of inline spans kept; deeper
/// structure is flattened into its parent.
const MAX_DEPTH: usize = 12;

/// A block of a parsed text.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Level 1–6, already shifted under the report's own headings.
    Heading(u8, Vec<Inline>),
    Paragraph(Vec<Inline>),
    /// `start` is the first number of an ordered list, `None` for bullets.
    List {
        start: Option<u64>,
        items: Vec<Vec<Block>>,
    },
    Code {
        lang: String,
        text: String,
    },
    Quote(Vec<Block>),
    Table(Table),
    Rule,
}

/// A table: alignment per column, a header row and body rows, all `columns` wide.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub align: Vec<Align>,
    pub head: Vec<Vec<Inline>>,
    pub rows: Vec<Vec<Vec<Inline>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    None,
    Left,
    Center,
    Right,
}

/// A span of text.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    Text(String),
    Code(String),
    Emph(Vec<Inline>),
    Strong(Vec<Inline>),
    Strike(Vec<Inline>),
    /// `url` is `None` when the destination was not a safe absolute URL: the text stays,
    /// the link goes.
    Link {
        url: Option<String>,
        content: Vec<Inline>,
    },
    LineBreak,
    SoftBreak,
}

/// Parse `text` as Markdown, its headings placed under a heading of level `parent`: the
/// text's top heading level becomes `parent + 1` and the others keep their distance to it
/// (at most 6), so a model that starts at `##` does not leave a level out of the outline.
pub fn parse(text: &str, parent: u8) -> Vec<Block> {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TASKLISTS);
    let top = Parser::new_ext(text, options)
        .filter_map(|e| match e {
            Event::Start(Tag::Heading { level, .. }) => Some(level as u8),
            _ => None,
        })
        .min()
        .unwrap_or(1);
    let mut b = Builder { stack: vec![Frame::Blocks(Vec::new())], top, parent };
    for event in Parser::new_ext(text, options) {
        b.event(event);
    }
    while b.stack.len() > 1 {
        b.close();
    }
    match b.stack.pop() {
        Some(Frame::Blocks(blocks)) => blocks,
        _ => Vec::new(),
    }
}

/// Text as it may appear in any document: no control characters except tab and newline.
pub fn clean(s: &str) -> String {
    s.chars().filter(|&c| !is_dropped(c)).collect()
}

fn is_dropped(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || c == '\u{FFFE}' || c == '\u{FFFF}'
}

/// An absolute `http`, `https` or `mailto` URL, or `None`.
pub fn safe_url(url: &str) -> Option<String> {
    let url = url.trim();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let ok = lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("mailto:");
    let host_ok = url.len() > "https://".len() && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    (ok && host_ok).then(|| url.to_string())
}

/// Concatenated plain text of inlines (for alt texts, titles and source names).
pub fn plain(inlines: &[Inline]) -> String {
    let mut s = String::new();
    fn walk(s: &mut String, inlines: &[Inline]) {
        for i in inlines {
            match i {
                Inline::Text(t) | Inline::Code(t) => s.push_str(t),
                Inline::Emph(c) | Inline::Strong(c) | Inline::Strike(c) => walk(s, c),
                Inline::Link { content, .. } => walk(s, content),
                Inline::LineBreak | Inline::SoftBreak => s.push(' '),
            }
        }
    }
    walk(&mut s, inlines);
    s
}

/// Every link of `blocks` with a safe URL, in order: (url, its text).
pub fn links(blocks: &[Block], out: &mut Vec<(String, String)>) {
    fn inl(inlines: &[Inline], out: &mut Vec<(String, String)>) {
        for i in inlines {
            match i {
                Inline::Link { url: Some(u), content } => out.push((u.clone(), plain(content))),
                Inline::Link { url: None, content } => inl(content, out),
                Inline::Emph(c) | Inline::Strong(c) | Inline::Strike(c) => inl(c, out),
                _ => {}
            }
        }
    }
    for b in blocks {
        match b {
            Block::Heading(_, c) | Block::Paragraph(c) => inl(c, out),
            Block::List { items, .. } => items.iter().for_each(|i| links(i, out)),
            Block::Quote(bs) => links(bs, out),
            Block::Table(t) => {
                t.head.iter().chain(t.rows.iter().flatten()).for_each(|c| inl(c, out));
            }
            Block::Code { .. } | Block::Rule => {}
        }
    }
}

enum Frame {
    /// The root, a block quote or a list item.
    Blocks(Vec<Block>),
    Quote(Vec<Block>),
    Item(Vec<Block>),
    List(Option<u64>, Vec<Vec<Block>>),
    Inlines(Span, Vec<Inline>),
    Table {
        table: Table,
        in_head: bool,
        row: Vec<Vec<Inline>>,
    },
    Code(String, String),
    Html(String),
    /// A container past [`MAX_DEPTH`]: its content goes to the nearest kept frame.
    Ignored,
}

#[derive(Clone)]
enum Span {
    Paragraph,
    /// Text directly inside a list item (a tight list): a paragraph without a tag.
    Implicit,
    Heading(u8),
    Cell,
    Emph,
    Strong,
    Strike,
    Link(Option<String>),
    Image(Option<String>),
}

struct Builder {
    stack: Vec<Frame>,
    /// The text's top heading level, and the level of the heading it is placed under.
    top: u8,
    parent: u8,
}

impl Builder {
    fn depth(&self) -> usize {
        self.stack.iter().filter(|f| !matches!(f, Frame::Ignored | Frame::Inlines(Span::Implicit, _))).count()
    }

    fn top_kept(&mut self) -> &mut Frame {
        let i = self.stack.iter().rposition(|f| !matches!(f, Frame::Ignored)).unwrap_or(0);
        &mut self.stack[i]
    }

    fn in_link(&self) -> bool {
        self.stack.iter().any(|f| matches!(f, Frame::Inlines(Span::Link(_) | Span::Image(_), _)))
    }

    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(end) => {
                // Close an implicit paragraph before its list item or container ends.
                if !matches!(
                    end,
                    TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough | TagEnd::Link | TagEnd::Image
                ) {
                    self.close_implicit();
                }
                self.close();
            }
            Event::Text(t) => self.text(&t),
            Event::Code(t) => self.inline(Inline::Code(clean(&t))),
            Event::Html(t) | Event::InlineHtml(t) => {
                if let Some(Frame::Html(s)) = self.stack.last_mut() {
                    s.push_str(&clean(&t));
                } else {
                    self.text(&t);
                }
            }
            Event::InlineMath(t) | Event::DisplayMath(t) => self.text(&t),
            Event::FootnoteReference(t) => self.text(&format!("[^{t}]")),
            Event::SoftBreak => self.inline(Inline::SoftBreak),
            Event::HardBreak => self.inline(Inline::LineBreak),
            Event::Rule => self.block(Block::Rule),
            Event::TaskListMarker(done) => self.text(if done { "☑ " } else { "☐ " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        let is_block = matches!(
            tag,
            Tag::Paragraph
                | Tag::Heading { .. }
                | Tag::BlockQuote(_)
                | Tag::CodeBlock(_)
                | Tag::HtmlBlock
                | Tag::List(_)
                | Tag::Item
                | Tag::Table(_)
                | Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition
                | Tag::MetadataBlock(_)
        );
        if is_block && !matches!(tag, Tag::Item) {
            self.close_implicit();
        }
        let deep = self.depth() > MAX_DEPTH;
        let frame = match tag {
            Tag::Paragraph | Tag::DefinitionListTitle => Frame::Inlines(Span::Paragraph, Vec::new()),
            Tag::Heading { level, .. } => {
                let level = ((level as u8) - self.top).saturating_add(self.parent + 1).min(6);
                Frame::Inlines(Span::Heading(level), Vec::new())
            }
            Tag::BlockQuote(_) | Tag::FootnoteDefinition(_) | Tag::DefinitionListDefinition if !deep => {
                Frame::Quote(Vec::new())
            }
            Tag::List(start) if !deep => Frame::List(start, Vec::new()),
            // A list item whose list was flattened keeps its content in the parent.
            Tag::Item if matches!(self.stack.last(), Some(Frame::List(..))) => Frame::Item(Vec::new()),
            Tag::CodeBlock(kind) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || "+#._-".contains(*c))
                        .take(20)
                        .collect(),
                    CodeBlockKind::Indented => String::new(),
                };
                Frame::Code(lang, String::new())
            }
            Tag::HtmlBlock | Tag::MetadataBlock(_) => Frame::Html(String::new()),
            Tag::Table(align) => {
                let align = align
                    .iter()
                    .map(|a| match a {
                        Alignment::None => Align::None,
                        Alignment::Left => Align::Left,
                        Alignment::Center => Align::Center,
                        Alignment::Right => Align::Right,
                    })
                    .collect();
                Frame::Table {
                    table: Table { align, head: Vec::new(), rows: Vec::new() },
                    in_head: false,
                    row: Vec::new(),
                }
            }
            Tag::TableHead => {
                if let Some(Frame::Table { in_head, .. }) = self.stack.last_mut() {
                    *in_head = true;
                }
                Frame::Ignored
            }
            Tag::TableRow => Frame::Ignored,
            Tag::TableCell => Frame::Inlines(Span::Cell, Vec::new()),
            Tag::Emphasis if !deep => Frame::Inlines(Span::Emph, Vec::new()),
            Tag::Strong if !deep => Frame::Inlines(Span::Strong, Vec::new()),
            Tag::Strikethrough if !deep => Frame::Inlines(Span::Strike, Vec::new()),
            Tag::Link { dest_url, .. } if !deep => {
                Frame::Inlines(Span::Link(safe_url(&dest_url)), Vec::new())
            }
            Tag::Image { dest_url, .. } if !deep => {
                Frame::Inlines(Span::Image(safe_url(&dest_url)), Vec::new())
            }
            _ => Frame::Ignored,
        };
        self.stack.push(frame);
    }

    /// Close the frame on top and hand its content to its parent.
    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else { return };
        match frame {
            Frame::Ignored => {
                // The end of a table's head row or body row.
                if let Some(Frame::Table { table, in_head, row }) = self.stack.last_mut() {
                    let cells = std::mem::take(row);
                    if *in_head {
                        table.head = cells;
                        *in_head = false;
                    } else if !cells.is_empty() {
                        table.rows.push(cells);
                    }
                }
            }
            Frame::Blocks(blocks) | Frame::Quote(blocks) if self.stack.is_empty() => {
                self.stack.push(Frame::Blocks(blocks));
            }
            Frame::Blocks(blocks) | Frame::Quote(blocks) => self.block(Block::Quote(blocks)),
            Frame::Item(blocks) => {
                if let Some(Frame::List(_, items)) = self.stack.last_mut() {
                    items.push(blocks);
                } else {
                    blocks.into_iter().for_each(|b| self.block(b));
                }
            }
            Frame::List(start, items) => self.block(Block::List { start, items }),
            Frame::Code(lang, mut text) => {
                if text.ends_with('\n') {
                    text.pop();
                }
                self.block(Block::Code { lang, text })
            }
            Frame::Html(text) => {
                let text = text.trim_end().to_string();
                if !text.is_empty() {
                    self.block(Block::Paragraph(vec![Inline::Text(text)]));
                }
            }
            Frame::Table { mut table, .. } => {
                let columns = table.align.len().max(table.head.len()).max(1);
                table.align.resize(columns, Align::None);
                table.head.resize(columns, Vec::new());
                for r in &mut table.rows {
                    r.resize(columns, Vec::new());
                }
                self.block(Block::Table(table))
            }
            Frame::Inlines(span, mut content) => {
                if !matches!(span, Span::Link(_) | Span::Image(_)) && !self.in_link() {
                    content = linkify(content);
                }
                match span {
                    Span::Paragraph | Span::Implicit => {
                        trim_breaks(&mut content);
                        if !content.is_empty() {
                            self.block(Block::Paragraph(content))
                        }
                    }
                    Span::Heading(level) => self.block(Block::Heading(level, content)),
                    Span::Cell => {
                        if let Some(Frame::Table { row, .. }) = self.top_kept_table() {
                            row.push(content);
                        }
                    }
                    Span::Emph => self.inline(Inline::Emph(content)),
                    Span::Strong => self.inline(Inline::Strong(content)),
                    Span::Strike => self.inline(Inline::Strike(content)),
                    Span::Link(url) => self.inline(Inline::Link { url, content }),
                    Span::Image(url) => {
                        let alt = plain(&content);
                        let label =
                            if alt.trim().is_empty() { "image".to_string() } else { format!("image: {alt}") };
                        let content = vec![Inline::Text(format!("[{label}]"))];
                        self.inline(Inline::Link { url, content })
                    }
                }
            }
        }
    }

    fn top_kept_table(&mut self) -> Option<&mut Frame> {
        self.stack.iter_mut().rev().find(|f| !matches!(f, Frame::Ignored))
    }

    fn close_implicit(&mut self) {
        if matches!(self.stack.last(), Some(Frame::Inlines(Span::Implicit, _))) {
            self.close();
        }
    }

    fn block(&mut self, block: Block) {
        match self.top_kept() {
            Frame::Blocks(v) | Frame::Quote(v) | Frame::Item(v) => v.push(block),
            Frame::List(_, items) => items.push(vec![block]),
            // A block where only text fits (cannot happen in CommonMark): keep its text.
            _ => {
                let mut text = String::new();
                block_text(&block, &mut text);
                self.text(&text);
            }
        }
    }

    fn text(&mut self, t: &str) {
        let t = clean(t);
        match self.top_kept() {
            Frame::Code(_, s) | Frame::Html(s) => s.push_str(&t),
            Frame::Inlines(_, v) => match v.last_mut() {
                Some(Inline::Text(s)) => s.push_str(&t),
                _ => v.push(Inline::Text(t)),
            },
            _ => self.inline(Inline::Text(t)),
        }
    }

    fn inline(&mut self, inline: Inline) {
        match self.top_kept() {
            Frame::Inlines(_, v) => v.push(inline),
            Frame::Code(_, s) | Frame::Html(s) => s.push_str(&plain(&[inline])),
            Frame::Table { .. } => {}
            _ => self.stack.push(Frame::Inlines(Span::Implicit, vec![inline])),
        }
    }
}

fn block_text(block: &Block, out: &mut String) {
    match block {
        Block::Heading(_, c) | Block::Paragraph(c) => out.push_str(&plain(c)),
        Block::Code { text, .. } => out.push_str(text),
        Block::List { items, .. } => items.iter().flatten().for_each(|b| block_text(b, out)),
        Block::Quote(bs) => bs.iter().for_each(|b| block_text(b, out)),
        Block::Table(t) => t.head.iter().chain(t.rows.iter().flatten()).for_each(|c| out.push_str(&plain(c))),
        Block::Rule => {}
    }
}

fn trim_breaks(content: &mut Vec<Inline>) {
    while matches!(content.last(), Some(Inline::SoftBreak | Inline::LineBreak)) {
        content.pop();
    }
}

/// Split text nodes at bare `http://` and `https://` URLs, which become links.
fn linkify(content: Vec<Inline>) -> Vec<Inline> {
    if !content.iter().any(|i| matches!(i, Inline::Text(t) if t.contains("http"))) {
        return content;
    }
    let mut out = Vec::with_capacity(content.len() + 2);
    for i in content {
        let Inline::Text(text) = i else {
            out.push(i);
            continue;
        };
        let mut rest = text.as_str();
        while let Some((start, end)) = find_url(rest) {
            if start > 0 {
                out.push(Inline::Text(rest[..start].to_string()));
            }
            let url = &rest[start..end];
            out.push(Inline::Link {
                url: Some(url.to_string()),
                content: vec![Inline::Text(url.to_string())],
            });
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            out.push(Inline::Text(rest.to_string()));
        }
    }
    out
}

/// The byte range of the first bare URL in `s`, without trailing punctuation.
pub fn find_url(s: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(pos) = s[from..].find("http") {
        let start = from + pos;
        let tail = &s[start..];
        let scheme = if tail.starts_with("https://") {
            8
        } else if tail.starts_with("http://") {
            7
        } else {
            from = start + 4;
            continue;
        };
        // Not in the middle of a word (e.g. "xhttp://").
        if s[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric()) {
            from = start + scheme;
            continue;
        }
        let len = tail
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() || c.is_control() || "<>\"`{}|\\^".contains(c))
            .map_or(tail.len(), |(i, _)| i);
        let mut url = &tail[..len];
        loop {
            let trimmed = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '*', '_', '~']);
            let unbalanced = |open: char, close: char| {
                trimmed.ends_with(close) && trimmed.matches(open).count() < trimmed.matches(close).count()
            };
            let trimmed = if unbalanced('(', ')') || unbalanced('[', ']') {
                &trimmed[..trimmed.len() - 1]
            } else {
                trimmed
            };
            if trimmed.len() == url.len() {
                break;
            }
            url = trimmed;
        }
        if url.len() > scheme {
            return Some((start, start + url.len()));
        }
        from = start + scheme;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Inline {
        Inline::Text(s.into())
    }

    #[test]
    fn parses_the_common_structures() {
        let md = "# Title\n\nSome *emph* and **strong** and `code` and [a link](https://x.org/a?b=1&c=2).\n\n\
                  - one\n  - nested\n- two\n\n3. three\n4. four\n\n> quoted\n\n```rust\nfn main() {}\n```\n\n\
                  | a | b |\n|:--|--:|\n| 1 | 2 |\n\n---\n";
        let blocks = parse(md, 2);
        assert_eq!(blocks[0], Block::Heading(3, vec![text("Title")]));
        let Block::Paragraph(p) = &blocks[1] else { panic!("{blocks:?}") };
        assert!(p.contains(&Inline::Emph(vec![text("emph")])));
        assert!(p.contains(&Inline::Strong(vec![text("strong")])));
        assert!(p.contains(&Inline::Code("code".into())));
        assert!(p.contains(&Inline::Link {
            url: Some("https://x.org/a?b=1&c=2".into()),
            content: vec![text("a link")]
        }));
        let Block::List { start: None, items } = &blocks[2] else { panic!("{blocks:?}") };
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0][1], Block::List { start: None, .. }), "{items:?}");
        assert!(matches!(&blocks[3], Block::List { start: Some(3), .. }));
        assert!(matches!(&blocks[4], Block::Quote(q) if q == &vec![Block::Paragraph(vec![text("quoted")])]));
        assert_eq!(blocks[5], Block::Code { lang: "rust".into(), text: "fn main() {}".into() });
        let Block::Table(t) = &blocks[6] else { panic!("{blocks:?}") };
        assert_eq!(t.align, vec![Align::Left, Align::Right]);
        assert_eq!(t.head, vec![vec![text("a")], vec![text("b")]]);
        assert_eq!(t.rows, vec![vec![vec![text("1")], vec![text("2")]]]);
        assert_eq!(blocks[7], Block::Rule);
    }

    #[test]
    fn hostile_input_becomes_text() {
        let md = "<script>alert(1)</script>\n\nHi <img src=x onerror=alert(1)> [x](javascript:alert(1)) \
                  ![pic](http://evil.example/p.png) \u{1b}[31m\u{0}";
        let blocks = parse(md, 0);
        assert_eq!(blocks[0], Block::Paragraph(vec![text("<script>alert(1)</script>")]));
        let Block::Paragraph(p) = &blocks[1] else { panic!() };
        assert!(
            p.contains(&text("<img src=x onerror=alert(1)>")) || plain(p).contains("<img src=x"),
            "{p:?}"
        );
        assert!(p.contains(&Inline::Link { url: None, content: vec![text("x")] }), "{p:?}");
        assert!(
            p.contains(&Inline::Link {
                url: Some("http://evil.example/p.png".into()),
                content: vec![text("[image: pic]")]
            }),
            "{p:?}"
        );
        assert!(!plain(p).contains('\u{1b}') && !plain(p).contains('\u{0}'));
    }

    #[test]
    fn deep_nesting_is_flattened() {
        let md = format!("{}deep", "> ".repeat(5000));
        let blocks = parse(&md, 0);
        fn depth(b: &[Block]) -> usize {
            b.iter().map(|b| if let Block::Quote(q) = b { 1 + depth(q) } else { 0 }).max().unwrap_or(0)
        }
        assert!(depth(&blocks) <= MAX_DEPTH, "{}", depth(&blocks));
        let mut s = String::new();
        blocks.iter().for_each(|b| block_text(b, &mut s));
        assert!(s.contains("deep"));
        let md = format!("{}x{}", "*a ".repeat(3000), " b*".repeat(3000));
        assert!(!parse(&md, 0).is_empty());
        let md =
            "- a\n".to_string() + &(1..200).map(|i| format!("{}- a\n", "  ".repeat(i))).collect::<String>();
        assert!(!parse(&md, 0).is_empty());
    }

    #[test]
    fn bare_urls_become_links_without_trailing_punctuation() {
        let blocks = parse("See https://example.org/a_(b). And (http://x.io/p), not xhttp://no.", 0);
        let mut found = Vec::new();
        links(&blocks, &mut found);
        let urls: Vec<&str> = found.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(urls, ["https://example.org/a_(b)", "http://x.io/p"]);
    }

    #[test]
    fn safe_urls() {
        assert!(safe_url("https://a.b/c").is_some());
        assert!(safe_url("MAILTO:x@y.z").is_some());
        assert!(safe_url("javascript:alert(1)").is_none());
        assert!(safe_url("data:text/html,<script>").is_none());
        assert!(safe_url("/relative").is_none());
        assert!(safe_url("https://a b").is_none());
    }
}
