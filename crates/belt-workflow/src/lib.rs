//! belt-workflow: declarative workflow files for belt, in YAML or TOML.
//!
//! A workflow file names its inputs, defaults, budget, agents, and a pattern — `cascade`,
//! `swarm`, `sequential`, `dag`, `conditional`/`router`, `iterative` — with its steps
//! (`needs`, `when`, `loop`, `route`). This crate parses it (the same structs for both
//! formats), reports every mistake at once with `file:line:column`, the key and a hint,
//! and translates it into what belt-core runs: an [`Orchestrator`](belt_core::Orchestrator),
//! the task, and the run's settings. It knows no terminal, files or HTTP — it works on the
//! file's text — so the CLI, the HTTP server and the MCP tool share it.
//!
//! ```
//! use std::collections::BTreeMap;
//! use belt_workflow::{Format, ValidationContext, Workflow};
//!
//! let text = r#"
//! name: brief
//! inputs:
//!   topic: {description: "what to write about"}
//! agents:
//!   - {id: writer, role: a concise technical writer, model: simulated/default}
//! pattern: sequential
//! steps:
//!   - id: outline
//!     agent: writer
//!     prompt: "Outline a brief on {{ inputs.topic }}."
//!   - id: draft
//!     agent: writer
//!     prompt: "Write the brief from this outline:\n{{ steps.outline.output }}"
//! "#;
//! let workflow = Workflow::parse(text, Format::Yaml, "brief.yaml").expect("valid syntax and keys");
//! assert!(workflow.validate(&ValidationContext::default()).is_empty());
//! let bound = workflow.bind(BTreeMap::from([("topic".into(), "Rust".into())])).expect("inputs given");
//! assert_eq!(bound.task().unwrap().description, "brief");
//! let orchestrator = bound.orchestrator(); // hand it to belt_core::run with bound.settings()
//! # let _ = orchestrator;
//!
//! // Every mistake at once, each with its place and a hint:
//! let bad = text.replace("agent: writer\n    prompt: \"Write", "agent: writr\n    prompt: \"Write");
//! let diagnostics = belt_workflow::check(&bad, Format::Yaml, "brief.yaml", &ValidationContext::default());
//! assert_eq!(
//!     diagnostics.to_string(),
//!     "brief.yaml:13:12: steps[1].agent: unknown agent `writr` (did you mean `writer`?)"
//! );
//! ```

mod de;
pub mod diagnostic;
pub mod document;
pub mod format;
mod runner;
mod starter;
mod template;
pub mod tools;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use document::{Loc, MAX_DEPTH, MAX_FILE_BYTES};
pub use format::{AgentDef, ModelSpec, PatternKind, StepDef, WorkflowFile};
pub use runner::{
    Bound, DEFAULT_DEGRADE_AT, ModelChoice, RunSettings, SIMULATED_MODEL, STEP_SCOPE, WorkflowRun,
};
pub use starter::{Template, template, templates};
pub use validate::{DEFAULT_ROUTE, MAX_STEPS, ValidationContext};

use crate::document::{KeyPath, Node};

/// The syntax of a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// The format of a file by its extension (`.yaml`, `.yml`, `.toml`).
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }

    /// The format of a text whose name says nothing: TOML if it parses as TOML and has a
    /// `pattern` key, else YAML.
    pub fn sniff(text: &str) -> Format {
        match toml::de::DeTable::parse(text) {
            Ok(t) if t.get_ref().keys().any(|k| k.get_ref() == "pattern") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

/// A parsed workflow file: known keys, right types. [`Workflow::validate`] checks the rest.
#[derive(Debug, Clone)]
pub struct Workflow {
    file: WorkflowFile,
    tree: Node,
    text: String,
    origin: String,
    format: Format,
}

impl Workflow {
    /// Parse `text` (named `origin` in diagnostics, e.g. its path). Errors: the syntax,
    /// safety limits (size, depth, aliases), unknown keys (all of them) and wrong types.
    pub fn parse(text: &str, format: Format, origin: &str) -> Result<Workflow, Diagnostics> {
        let (workflow, diagnostics) = parse_lenient(text, format, origin);
        match workflow {
            Some(w) if diagnostics.is_empty() => Ok(w),
            _ => Err(diagnostics),
        }
    }

    /// The typed file.
    pub fn file(&self) -> &WorkflowFile {
        &self.file
    }

    /// The text it was parsed from (what a run records, so a resume reads the same file).
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Every problem that parsing does not catch, in file order: references to unknown
    /// agents, steps, inputs, providers and models (with did-you-mean), dependency cycles
    /// with their path, template variables that do not exist, missing required inputs
    /// (when the context names the inputs), values out of range. Empty means valid.
    pub fn validate(&self, cx: &ValidationContext) -> Diagnostics {
        validate::validate(&self.file, &self.tree, &self.origin, cx).0
    }

    /// Check the file and the inputs (text, as from `--input name=value`), and make them a
    /// run: inputs typed, defaults filled in.
    pub fn bind(&self, inputs: BTreeMap<String, String>) -> Result<Bound, Diagnostics> {
        self.bind_in(inputs, &ValidationContext::default())
    }

    /// [`Workflow::bind`], validated in the host's context (its tools and MCP servers,
    /// say); the context's `inputs` are the ones given.
    pub fn bind_in(
        &self,
        inputs: BTreeMap<String, String>,
        cx: &ValidationContext,
    ) -> Result<Bound, Diagnostics> {
        let cx = ValidationContext { inputs: Some(inputs.clone()), ..cx.clone() };
        let (diagnostics, analysis) = validate::validate(&self.file, &self.tree, &self.origin, &cx);
        if !diagnostics.is_empty() {
            return Err(diagnostics);
        }
        let mut typed = BTreeMap::new();
        for (name, def) in &self.file.inputs {
            match inputs.get(name) {
                // Checked by validation above.
                Some(text) => {
                    if let Ok(v) = runner::typed_input(def.kind, text) {
                        typed.insert(name.clone(), v);
                    }
                }
                None => {
                    if let Some(d) = &def.default {
                        typed.insert(name.clone(), d.clone());
                    }
                }
            }
        }
        Ok(Bound {
            file: Arc::new(self.file.clone()),
            analysis: Arc::new(analysis),
            inputs: typed,
            context: self.file.context.clone().filter(|c| !c.is_null()),
            default_model: SIMULATED_MODEL.to_string(),
            tools: crate::tools::builtin(),
            tool_groups: Default::default(),
        })
    }

    /// Where a key path is in the file (`steps[1].agent`), if it names one.
    pub fn locate(&self, path: &KeyPath) -> Option<Loc> {
        self.tree.get(path).map(|_| self.tree.locate(path, false))
    }
}

fn parse_lenient(text: &str, format: Format, origin: &str) -> (Option<Workflow>, Diagnostics) {
    let parsed = match format {
        Format::Yaml => document::parse_yaml(text),
        Format::Toml => document::parse_toml(text),
    };
    let tree = match parsed {
        Ok(tree) => tree,
        Err(e) => {
            let d = Diagnostic::new(origin, e.loc, &KeyPath::root(), e.message).hint(e.hint);
            return (None, Diagnostics(vec![d]));
        }
    };
    let (file, issues) = de::from_node::<WorkflowFile>(&tree);
    let diagnostics = Diagnostics(
        issues.into_iter().map(|i| Diagnostic::new(origin, i.loc, &i.path, i.message).hint(i.hint)).collect(),
    )
    .sorted();
    let workflow =
        file.map(|file| Workflow { file, tree, text: text.to_string(), origin: origin.to_string(), format });
    (workflow, diagnostics)
}

/// Every problem of a file at once: syntax, unknown keys, types, and — when the keys and
/// types are right — everything [`Workflow::validate`] finds. Empty means valid.
pub fn check(text: &str, format: Format, origin: &str, cx: &ValidationContext) -> Diagnostics {
    let (workflow, mut diagnostics) = parse_lenient(text, format, origin);
    if let Some(w) = workflow {
        diagnostics.0.extend(w.validate(cx));
    }
    diagnostics.sorted()
}

/// The JSON Schema of the format, for editors (YAML language servers, Taplo for TOML).
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(WorkflowFile);
    serde_json::to_value(schema).unwrap_or_default()
}

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
