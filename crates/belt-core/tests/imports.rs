//! No import cycles among the source files of `belt-core` and `belt-cli`.
//!
//! A file *imports* another when a path in it (`use crate::x::Y`, `crate::x::f()`,
//! `super::g`) names an item defined in the other. Paths through a re-export (`pub use`)
//! are followed to the file that defines the item, and the module tree itself (`mod x;`,
//! `pub use x::Y` facades) is not an import: a parent that re-exports its children while
//! the children use the parent's helpers is the ordinary shape of a Rust module. What this
//! forbids is the engine and the pattern library (or any two files) each reaching into the
//! other, which is what makes a change in one ripple into the other.
//!
//! The check parses the files with `syn`, so it sees every path in code (not in doc
//! comments or macro bodies, which name no dependency).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module of the crate: its path from the crate root (`["patterns", "hitl"]`).
type ModPath = Vec<String>;

struct Crate {
    /// Every module that has a file, with its source.
    files: BTreeMap<ModPath, syn::File>,
}

impl Crate {
    fn load(src: &Path, root_file: &str) -> Crate {
        let mut files = BTreeMap::new();
        let root = std::fs::read_to_string(src.join(root_file)).unwrap();
        files.insert(Vec::new(), syn::parse_file(&root).unwrap());
        for entry in walk(src) {
            let rel = entry.strip_prefix(src).unwrap();
            if rel == Path::new(root_file) {
                continue;
            }
            let mut parts: Vec<String> =
                rel.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&entry).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
            files.insert(parts, file);
        }
        Crate { files }
    }

    /// The file that defines what `path` (absolute, from the crate root) names.
    fn resolve(&self, path: &[String], depth: usize) -> Option<ModPath> {
        // The deepest module with a file that is a prefix of the path.
        let n = (0..=path.len()).rev().find(|&n| self.files.contains_key(&path[..n]))?;
        let module = path[..n].to_vec();
        if n == path.len() || depth > 16 {
            return Some(module);
        }
        // The next segment may be re-exported from elsewhere.
        let name = &path[n];
        for (alias, target) in reexports(&self.files[&module], &module) {
            if alias == *name {
                let mut through = target;
                through.extend_from_slice(&path[n + 1..]);
                return self.resolve(&through, depth + 1).or(Some(module));
            }
        }
        Some(module)
    }

    /// Which files each file imports.
    fn graph(&self) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
        let mut graph = BTreeMap::new();
        for (module, file) in &self.files {
            let mut paths = Paths { here: module.clone(), inline: 0, found: Vec::new() };
            paths.visit_file(file);
            let targets =
                paths.found.iter().filter_map(|p| self.resolve(p, 0)).filter(|t| t != module).collect();
            graph.insert(module.clone(), targets);
        }
        graph
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The `pub use` items of a file: the name they export and the absolute path they name.
fn reexports(file: &syn::File, module: &ModPath) -> Vec<(String, ModPath)> {
    let mut out = Vec::new();
    for item in &file.items {
        if let syn::Item::Use(u) = item
            && !matches!(u.vis, syn::Visibility::Inherited)
        {
            let mut flat = Vec::new();
            flatten(&u.tree, Vec::new(), &mut flat);
            for (segments, alias) in flat {
                if let Some(abs) = absolute(module, 0, &segments) {
                    out.push((alias, abs));
                }
            }
        }
    }
    out
}

/// A use tree as (path, name it binds) pairs.
fn flatten(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut prefix = prefix;
            prefix.push(p.ident.to_string());
            flatten(&p.tree, prefix, out);
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix;
            let name = n.ident.to_string();
            if name == "self" {
                let bound = path.last().cloned().unwrap_or_default();
                out.push((path, bound));
            } else {
                path.push(name.clone());
                out.push((path, name));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix;
            path.push(r.ident.to_string());
            out.push((path, r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => out.push((prefix, "*".to_string())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten(t, prefix.clone(), out);
            }
        }
    }
}

/// `segments` as a path from the crate root, when it starts with `crate`, `self` or
/// `super` (other paths name other crates or local items). `inline` counts the inline
/// `mod … { }` blocks the path sits in, which `super` leaves first.
fn absolute(module: &ModPath, inline: usize, segments: &[String]) -> Option<ModPath> {
    let first = segments.first()?;
    match first.as_str() {
        "crate" => Some(segments[1..].to_vec()),
        "self" if inline == 0 => {
            let mut p = module.clone();
            p.extend_from_slice(&segments[1..]);
            Some(p)
        }
        "super" => {
            let supers = segments.iter().take_while(|s| *s == "super").count();
            // `super` inside an inline module first climbs back to this file.
            let climb = supers.checked_sub(inline)?;
            if climb == 0 || climb > module.len() {
                return None;
            }
            let mut p = module[..module.len() - climb].to_vec();
            p.extend_from_slice(&segments[supers..]);
            Some(p)
        }
        _ => None,
    }
}

/// Every path of a file that names something in the crate.
struct Paths {
    here: ModPath,
    inline: usize,
    found: Vec<ModPath>,
}

impl<'a> Visit<'a> for Paths {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        if m.content.is_some() {
            self.inline += 1;
            syn::visit::visit_item_mod(self, m);
            self.inline -= 1;
        }
    }

    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        // A public re-export is the module's facade, not an import; the paths that go
        // through it are followed to their files instead.
        if !matches!(u.vis, syn::Visibility::Inherited) && self.inline == 0 {
            return;
        }
        let mut flat = Vec::new();
        flatten(&u.tree, Vec::new(), &mut flat);
        for (segments, _) in flat {
            if let Some(p) = absolute(&self.here, self.inline, &segments) {
                self.found.push(p);
            }
        }
    }

    fn visit_path(&mut self, path: &'a syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(p) = absolute(&self.here, self.inline, &segments) {
            self.found.push(p);
        }
        syn::visit::visit_path(self, path);
    }
}

/// The cycles of a graph: its strongly connected components of more than one file.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then collect components on the reversed graph.
    fn finish(
        n: &ModPath,
        g: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        seen: &mut BTreeSet<ModPath>,
        order: &mut Vec<ModPath>,
    ) {
        if !seen.insert(n.clone()) {
            return;
        }
        for m in g.get(n).into_iter().flatten() {
            finish(m, g, seen, order);
        }
        order.push(n.clone());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in graph.keys() {
        finish(n, graph, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            reversed.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.iter().rev() {
        let mut component = Vec::new();
        finish(n, &reversed, &mut assigned, &mut component);
        if component.len() > 1 {
            let mut names: Vec<String> = component.iter().map(name).collect();
            names.sort();
            out.push(names);
        }
    }
    out
}

fn name(module: &ModPath) -> String {
    if module.is_empty() { "crate".to_string() } else { module.join("::") }
}

/// The imports that close each cycle, for the failure message.
fn describe(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>, cycle: &[String]) -> String {
    let members: BTreeSet<&String> = cycle.iter().collect();
    let mut lines = Vec::new();
    for (from, tos) in graph {
        if !members.contains(&name(from)) {
            continue;
        }
        for to in tos {
            if members.contains(&name(to)) {
                lines.push(format!("  {} imports {}", name(from), name(to)));
            }
        }
    }
    lines.join("\n")
}

fn check(crate_dir: &str, root_file: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(crate_dir).join("src");
    let krate = Crate::load(&src, root_file);
    let graph = krate.graph();
    let found = cycles(&graph);
    let report: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
    assert!(found.is_empty(), "import cycles among the files of {crate_dir}:\n{}", report.join("\n\n"));
}

#[test]
fn belt_core_has_no_import_cycles() {
    check("belt-core", "lib.rs");
}

#[test]
fn belt_cli_has_no_import_cycles() {
    check("belt-cli", "main.rs");
}

#[test]
fn the_checker_sees_a_cycle() {
    let a: ModPath = vec!["a".into()];
    let b: ModPath = vec!["b".into()];
    let c: ModPath = vec!["c".into()];
    let graph = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone(), c.clone()])),
        (c.clone(), BTreeSet::new()),
    ]);
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    let file: syn::File =
        syn::parse_str("use crate::{x::Y, z}; fn f() { super::g(); crate::w::h(); }").unwrap();
    let mut paths = Paths { here: vec!["m".into()], inline: 0, found: Vec::new() };
    paths.visit_file(&file);
    let found: BTreeSet<String> = paths.found.iter().map(|p| p.join("::")).collect();
    assert_eq!(found, BTreeSet::from(["x::Y".into(), "z".into(), "g".into(), "w::h".into()]));
}
