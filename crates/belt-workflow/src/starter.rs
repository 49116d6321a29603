//! Starter files (`belt init --template NAME`): commented workflows that run as is on the
//! simulated provider. Their text is the files under `examples/workflows/`, included here,
//! so the examples and the starters are one source.

/// A starter workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// What `--template` calls it.
    pub name: &'static str,
    pub description: &'static str,
    /// The file it is written to.
    pub file_name: &'static str,
    pub text: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        name: "research",
        description: "a cascade: subtasks researched in parallel, synthesized per group, an executive summary",
        file_name: "research.yaml",
        text: include_str!("../../../examples/workflows/research.yaml"),
    },
    Template {
        name: "pipeline",
        description: "sequential steps: outline, draft, edit, each reading the previous output",
        file_name: "pipeline.yaml",
        text: include_str!("../../../examples/workflows/pipeline.yaml"),
    },
    Template {
        name: "review-dag",
        description: "a DAG: three reviews in parallel after a summary, then a verdict",
        file_name: "review-dag.yaml",
        text: include_str!("../../../examples/workflows/review-dag.yaml"),
    },
    Template {
        name: "support-router",
        description: "a router: a classifier sends each request to the right specialist",
        file_name: "support-router.yaml",
        text: include_str!("../../../examples/workflows/support-router.yaml"),
    },
];

/// The starters, `research` first (the default of `belt init`).
pub fn templates() -> &'static [Template] {
    TEMPLATES
}

/// The starter called `name`.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}
