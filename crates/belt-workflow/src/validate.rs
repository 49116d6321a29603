//! Validation: every mistake in a workflow file, found before a cent is spent.
//!
//! The checks that need the file only (references between agents and steps, cycles,
//! template variables, value ranges, which sections go with which pattern) always run; the
//! ones that need the caller's world (known providers and models, the inputs given) run
//! when [`ValidationContext`] says what it is. Each diagnostic points at the key it is
//! about, through the spanned tree the file was parsed into.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean, suggest};
use crate::document::{KeyPath, Node};
use crate::format::{InputType, ModelSpec, PatternKind, WorkflowFile};
use crate::template;

/// What the caller knows about the world the workflow will run in.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// Providers a model may name (`openai`, `simulated`…); `None` accepts any.
    pub providers: Option<Vec<String>>,
    /// Known models of providers whose model list is closed, as `provider/model`; a
    /// provider with no entry here accepts any model name.
    pub models: BTreeMap<String, Vec<String>>,
    /// The inputs that will be given; when set, missing required inputs and unknown ones
    /// are reported.
    pub inputs: Option<BTreeMap<String, String>>,
    /// The tools agents may name; `None`: the built-in ones ([`crate::tools::BUILTIN`]).
    pub tools: Option<Vec<String>>,
    /// MCP servers the host declares (belt.toml's `[mcp.NAME]`), besides the file's own
    /// `mcp_servers`: agents may name them (all their tools) or `NAME.TOOL`.
    pub servers: Vec<String>,
}

/// What validation learned about the steps, for running them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Analysis {
    /// Every step's dependencies (indexes), explicit and implied: `needs`, the previous
    /// step in a chain, the router of a route target, earlier steps its templates read.
    pub deps: Vec<Vec<usize>>,
    /// For a route target, the step that routes to it and the route's value.
    pub routed_by: Vec<Option<(usize, String)>>,
}

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 1000;

/// The route value that takes anything no other route matches.
pub const DEFAULT_ROUTE: &str = "default";

struct Checker<'a> {
    file: &'a WorkflowFile,
    tree: &'a Node,
    origin: &'a str,
    out: Diagnostics,
}

fn root() -> KeyPath {
    KeyPath::root()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'a> Checker<'a> {
    /// A problem with the value at `path`.
    fn value(&mut self, path: &KeyPath, message: impl Into<String>, hint: Option<String>) {
        let loc = self.tree.locate(path, false);
        self.out.push(Diagnostic::new(self.origin, loc, path, message).hint(hint));
    }

    /// A problem with the key at `path` (a duplicate, a section that does not belong).
    fn key(&mut self, path: &KeyPath, message: impl Into<String>, hint: Option<String>) {
        let loc = self.tree.locate(path, true);
        self.out.push(Diagnostic::new(self.origin, loc, path, message).hint(hint));
    }

    fn check_models(&mut self, path: &KeyPath, spec: &ModelSpec, cx: &ValidationContext) {
        let models = spec.models();
        if models.is_empty() {
            self.value(
                path,
                "the fallback list is empty",
                Some("name at least one model, e.g. simulated/default".into()),
            );
        }
        for (i, model) in models.iter().enumerate() {
            let p = match spec {
                ModelSpec::One(_) => path.clone(),
                ModelSpec::Fallbacks(_) => path.index(i),
            };
            let Some((provider, name)) =
                model.split_once('/').filter(|(p, m)| !p.is_empty() && !m.is_empty())
            else {
                self.value(
                    &p,
                    format!("`{model}` is not a model name"),
                    Some(
                        "models are named provider/model, e.g. openai/gpt-4.1-mini or simulated/default"
                            .into(),
                    ),
                );
                continue;
            };
            if let Some(known) = &cx.providers
                && !known.iter().any(|k| k == provider)
            {
                let names: Vec<&str> = known.iter().map(String::as_str).collect();
                self.value(
                    &p,
                    format!("unknown provider `{provider}` in `{model}`"),
                    suggest(provider, &names, "providers"),
                );
                continue;
            }
            if let Some(list) = cx.models.get(provider)
                && !list.iter().any(|m| m == model)
            {
                let names: Vec<&str> = list.iter().map(String::as_str).collect();
                let hint = did_you_mean(model, names.iter().copied())
                    .map(|m| format!("did you mean `{m}`?"))
                    .or_else(|| suggest(name, &names, "known models"));
                self.value(&p, format!("unknown model `{model}`"), hint);
            }
        }
    }

    /// Check the variables a template (or expression) uses; returns the steps it reads.
    fn check_vars(
        &mut self,
        path: &KeyPath,
        vars: &[String],
        steps: Option<&[&str]>,
        allow_output: bool,
    ) -> Vec<String> {
        let inputs: Vec<&str> = self.file.inputs.keys().map(String::as_str).collect();
        let mut used = Vec::new();
        for var in vars {
            let parts: Vec<&str> = var.split('.').collect();
            match parts.as_slice() {
                // The run's context is free-form and may come with the run: any path reads.
                ["context", ..] => {}
                ["inputs"] => {}
                ["inputs", name, ..] => {
                    if !inputs.contains(name) {
                        let hint = suggest(name, &inputs, "declared inputs")
                            .or_else(|| Some(format!("declare it under `inputs:` to use `inputs.{name}`")));
                        self.value(
                            path,
                            format!("the template uses `inputs.{name}`, which is not a declared input"),
                            hint,
                        );
                    }
                }
                ["steps", rest @ ..] => {
                    let Some(step_ids) = steps else {
                        self.value(
                            path,
                            format!("`{var}` is not available here"),
                            Some("only step prompts, `when` and `loop.until` can read step outputs".into()),
                        );
                        continue;
                    };
                    match rest {
                        [] => {}
                        [id, tail @ ..] => {
                            if !step_ids.contains(id) {
                                self.value(
                                    path,
                                    format!("the template uses `steps.{id}`, but there is no step `{id}`"),
                                    suggest(id, step_ids, "steps"),
                                );
                                continue;
                            }
                            if let Some(field) = tail.first()
                                && *field != "output"
                            {
                                self.value(
                                    path,
                                    format!("`steps.{id}.{field}` does not exist"),
                                    Some(format!("a step has one value: `steps.{id}.output`")),
                                );
                            }
                            used.push(id.to_string());
                        }
                    }
                }
                [] | ["output", ..] if allow_output => {}
                [] => {}
                [name, ..] if template::is_builtin(name) => {}
                [name, ..] => {
                    let hint = if allow_output {
                        "the condition sees `output`, `inputs.*`, `context.*` and `steps.<id>.output`"
                    } else if steps.is_some() {
                        "templates see `inputs.*`, `context.*` and `steps.<id>.output`"
                    } else {
                        "this template sees `inputs.*` and `context.*`"
                    };
                    let close = did_you_mean(name, inputs.iter().copied())
                        .map(|n| format!("did you mean `inputs.{n}`? {hint}"))
                        .unwrap_or_else(|| hint.to_string());
                    self.value(path, format!("unknown variable `{name}`"), Some(close));
                }
            }
        }
        used
    }

    /// Filters and tests the environment does not have.
    fn names(&mut self, path: &KeyPath, source: &str, expression: bool) {
        for name in template::unknown_filters_and_tests(source, expression) {
            self.value(
                path,
                format!("unknown {name}"),
                Some("templates have minijinja's built-in filters and tests (upper, lower, trim, join, length, default…)".into()),
            );
        }
    }

    fn template(&mut self, path: &KeyPath, source: &str, steps: Option<&[&str]>) -> Vec<String> {
        match template::template_variables(source) {
            Ok(vars) => {
                self.names(path, source, false);
                self.check_vars(path, &vars, steps, false)
            }
            Err(e) => {
                let at = e
                    .line
                    .filter(|l| *l > 1)
                    .map(|l| format!(" (line {l} of the template)"))
                    .unwrap_or_default();
                self.value(path, format!("invalid template: {}{at}", e.message), None);
                Vec::new()
            }
        }
    }

    /// An `on_error` template: a template that may also read `error.*`.
    fn on_error_template(&mut self, path: &KeyPath, source: &str, steps: &[&str]) -> Vec<String> {
        match template::template_variables(source) {
            Ok(vars) => {
                self.names(path, source, false);
                let vars: Vec<String> =
                    vars.into_iter().filter(|v| v != "error" && !v.starts_with("error.")).collect();
                self.check_vars(path, &vars, Some(steps), false)
            }
            Err(e) => {
                self.value(path, format!("invalid template: {}", e.message), None);
                Vec::new()
            }
        }
    }

    fn expression(
        &mut self,
        path: &KeyPath,
        source: &str,
        steps: &[&str],
        allow_output: bool,
    ) -> Vec<String> {
        match template::expression_variables(source) {
            Ok(vars) => {
                self.names(path, source, true);
                self.check_vars(path, &vars, Some(steps), allow_output)
            }
            Err(e) => {
                self.value(
                    path,
                    format!("invalid expression: {}", e.message),
                    Some("conditions are expressions such as steps.triage.output == \"billing\"".into()),
                );
                Vec::new()
            }
        }
    }
}

/// Validate `file` (parsed into `tree`); returns every diagnostic and, when there are
/// none, what running needs.
pub(crate) fn validate(
    file: &WorkflowFile,
    tree: &Node,
    origin: &str,
    cx: &ValidationContext,
) -> (Diagnostics, Analysis) {
    let mut c = Checker { file, tree, origin, out: Diagnostics::default() };

    if file.name.trim().is_empty() {
        c.value(
            &root().key("name"),
            "the name is empty",
            Some("name the workflow, e.g. name: research".into()),
        );
    }
    if let Some(d) = &file.description {
        c.template(&root().key("description"), d, None);
    }
    check_inputs(&mut c, cx);
    check_settings(&mut c, cx);
    check_agents(&mut c, cx);
    check_sections(&mut c, cx);
    let analysis = check_steps(&mut c);
    (c.out.sorted(), analysis)
}

fn check_inputs(c: &mut Checker<'_>, cx: &ValidationContext) {
    let file = c.file;
    for (name, def) in &file.inputs {
        let path = root().key("inputs").key(name.clone());
        if !is_identifier(name) {
            c.key(
                &path,
                format!("input name `{name}` is not an identifier"),
                Some("use letters, digits and _ (templates read it as inputs.<name>)".into()),
            );
        }
        if let Some(default) = &def.default {
            let ok = match def.kind {
                InputType::String => default.is_string(),
                InputType::Integer => default.is_i64() || default.is_u64(),
                InputType::Number => default.is_number(),
                InputType::Boolean => default.is_boolean(),
            };
            if !ok {
                c.value(
                    &path.key("default"),
                    format!("the default is not of the input's type ({})", def.kind.as_str()),
                    None,
                );
            }
            if def.required == Some(true) {
                c.key(
                    &path.key("required"),
                    "a required input cannot have a default",
                    Some("drop `required: true` or the default".into()),
                );
            }
        }
    }
    if let Some(given) = &cx.inputs {
        for (name, def) in &file.inputs {
            let required = def.required.unwrap_or(def.default.is_none());
            if required && !given.contains_key(name) {
                let what = def.description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                c.key(
                    &root().key("inputs").key(name.clone()),
                    format!("the required input `{name}`{what} is missing"),
                    Some(format!("pass --input {name}=…")),
                );
            }
        }
        let declared: Vec<&str> = file.inputs.keys().map(String::as_str).collect();
        for name in given.keys() {
            if !file.inputs.contains_key(name) {
                let hint = suggest(name, &declared, "declared inputs")
                    .or(Some("the file declares no inputs".into()));
                c.key(
                    &root().key("inputs"),
                    format!("input `{name}` was given but the file does not declare it"),
                    hint,
                );
            } else if let Some(def) = file.inputs.get(name)
                && let Err(e) = crate::runner::typed_input(def.kind, &given[name])
            {
                c.key(&root().key("inputs").key(name.clone()), format!("input `{name}`: {e}"), None);
            }
        }
    }
}

fn check_settings(c: &mut Checker<'_>, cx: &ValidationContext) {
    let file = c.file;
    let d = &file.defaults;
    let dp = root().key("defaults");
    if let Some(m) = &d.model {
        c.check_models(&dp.key("model"), m, cx);
    }
    for (tier, m) in [
        ("decomposer", &d.models.decomposer),
        ("worker", &d.models.worker),
        ("synthesizer", &d.models.synthesizer),
        ("executive", &d.models.executive),
    ] {
        if let Some(m) = m {
            c.check_models(&dp.key("models").key(tier), m, cx);
        }
    }
    if let Some(t) = d.temperature
        && !(0.0..=2.0).contains(&t)
    {
        c.value(
            &dp.key("temperature"),
            format!("temperature {t} is out of range"),
            Some("use 0 to 2".into()),
        );
    }
    if let Some(t) = d.timeout
        && let Err(why) = belt_core::policy::timeout_secs(t)
    {
        c.value(&dp.key("timeout"), format!("timeout {t}: {why}"), None);
    }
    for (tier, &t) in &d.timeouts {
        if let Err(why) = belt_core::policy::timeout_secs(t) {
            c.value(&dp.key("timeouts").key(tier.clone()), format!("timeout {t}: {why}"), None);
        }
    }
    if let Some(t) = d.deadline
        && let Err(why) = belt_core::policy::deadline_secs(t)
    {
        c.value(&dp.key("deadline"), format!("deadline {t}: {why}"), None);
    }
    if let Some(n) = d.concurrency
        && !(1..=100_000).contains(&n)
    {
        c.value(&dp.key("concurrency"), "concurrency must be between 1 and 100000", None);
    }
    if let Some(b) = &file.budget {
        let bp = root().key("budget");
        if let Some(usd) = b.usd
            && !(usd.is_finite() && usd > 0.0)
        {
            c.value(&bp.key("usd"), "the budget must be a positive amount of US dollars", None);
        }
        if b.tokens == Some(0) {
            c.value(&bp.key("tokens"), "the token budget must be at least 1", None);
        }
        if b.calls == Some(0) {
            c.value(&bp.key("calls"), "the call budget must be at least 1", None);
        }
        if let Some(w) = b.warn_at
            && !(w > 0.0 && w <= 1.0)
        {
            c.value(
                &bp.key("warn_at"),
                format!("warn_at {w} is not a fraction of the caps"),
                Some("use a number above 0 and at most 1, e.g. 0.8".into()),
            );
        }
    }
    for (name, p) in &file.providers {
        let pp = root().key("providers").key(name.clone());
        if let Some(known) = &cx.providers
            && !known.iter().any(|k| k == name)
        {
            let names: Vec<&str> = known.iter().map(String::as_str).collect();
            c.key(&pp, format!("unknown provider `{name}`"), suggest(name, &names, "providers"));
        }
        if p.max_concurrency == Some(0) {
            c.value(&pp.key("max_concurrency"), "max_concurrency must be at least 1", None);
        }
        if p.rpm == Some(0) {
            c.value(&pp.key("rpm"), "rpm must be at least 1", None);
        }
        if p.tpm == Some(0) {
            c.value(&pp.key("tpm"), "tpm must be at least 1", None);
        }
    }
}

fn check_agents(c: &mut Checker<'_>, cx: &ValidationContext) {
    let file = c.file;
    let mut seen = BTreeSet::new();
    for (i, a) in file.agents.iter().enumerate() {
        let ap = root().key("agents").index(i);
        if !seen.insert(a.id.as_str()) {
            c.value(
                &ap.key("id"),
                format!("agent id `{}` is used twice", a.id),
                Some("give every agent its own id".into()),
            );
        }
        if a.id.is_empty() || !a.id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
            c.value(
                &ap.key("id"),
                format!("agent id `{}` is not valid", a.id),
                Some("use letters, digits, _ and -".into()),
            );
        }
        if let Some(m) = &a.model {
            c.check_models(&ap.key("model"), m, cx);
        }
        if let Some(t) = a.temperature
            && !(0.0..=2.0).contains(&t)
        {
            c.value(
                &ap.key("temperature"),
                format!("temperature {t} is out of range"),
                Some("use 0 to 2".into()),
            );
        }
        if a.max_tokens == Some(0) {
            c.value(&ap.key("max_tokens"), "max_tokens must be at least 1", None);
        }
        let builtin: Vec<String> = crate::tools::BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        let offered = cx.tools.as_ref().unwrap_or(&builtin);
        let servers: Vec<&str> = cx
            .servers
            .iter()
            .map(String::as_str)
            .chain(file.mcp_servers.keys().map(String::as_str))
            .collect();
        let names: Vec<&str> = offered.iter().map(String::as_str).chain(servers.iter().copied()).collect();
        // A server's own tools are known once it is started: `NAME.TOOL` is checked then.
        let of_a_server = |tool: &str| {
            servers.contains(&tool)
                || tool.split_once('.').is_some_and(|(s, t)| servers.contains(&s) && !t.is_empty())
        };
        for (k, tool) in a.tools.iter().enumerate() {
            if !offered.contains(tool) && !of_a_server(tool) {
                c.value(
                    &ap.key("tools").index(k),
                    format!("unknown tool `{tool}`"),
                    suggest(tool, &names, "available tools"),
                );
            }
        }
        if let Some(schema) = &a.output_schema
            && !schema.is_object()
        {
            c.value(
                &ap.key("output_schema"),
                "output_schema must be a JSON Schema object",
                Some("e.g. {type: object, properties: {answer: {type: string}}}".into()),
            );
        }
        if let Some(system) = &a.system {
            c.template(&ap.key("system"), system, None);
        }
    }
}

fn check_sections(c: &mut Checker<'_>, cx: &ValidationContext) {
    let file = c.file;
    let pattern = file.pattern;
    let pp = root().key("pattern");
    if pattern.has_steps() && file.steps.is_empty() {
        c.value(
            &pp,
            format!("pattern `{}` needs `steps`", pattern.as_str()),
            Some("add a list of steps, each with id, agent and prompt".into()),
        );
    }
    if !pattern.has_steps() && !file.steps.is_empty() {
        c.key(
            &root().key("steps"),
            format!("pattern `{}` has no steps", pattern.as_str()),
            Some(format!("its settings go in the `{}` section", pattern.as_str())),
        );
    }
    match (pattern, &file.cascade) {
        (PatternKind::Cascade, None) => c.value(
            &pp,
            "pattern `cascade` needs a `cascade` section",
            Some("cascade: {task: \"…\", agents: 12}".into()),
        ),
        (PatternKind::Cascade, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            c.key(&root().key("cascade"), "the `cascade` section is only read with `pattern: cascade`", None)
        }
    }
    match (pattern, &file.swarm) {
        (PatternKind::Swarm, None) => c.value(
            &pp,
            "pattern `swarm` needs a `swarm` section",
            Some("swarm: {task: \"…\", agents: 8}".into()),
        ),
        (PatternKind::Swarm, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            c.key(&root().key("swarm"), "the `swarm` section is only read with `pattern: swarm`", None)
        }
    }
    if let Some(cas) = &file.cascade {
        let cp = root().key("cascade");
        if cas.task.trim().is_empty() {
            c.value(&cp.key("task"), "the task is empty", None);
        }
        c.template(&cp.key("task"), &cas.task, None);
        if !(1..=100_000).contains(&cas.agents) {
            c.value(&cp.key("agents"), "agents must be between 1 and 100000", None);
        }
        if let Some(g) = cas.group_size
            && !(2..=1000).contains(&g)
        {
            c.value(&cp.key("group_size"), "group_size must be between 2 and 1000", None);
        }
        if let Some(m) = cas.min_agents
            && !(1..=cas.agents).contains(&m)
        {
            let why = format!("min_agents must be between 1 and agents ({}), the most workers", cas.agents);
            c.value(&cp.key("min_agents"), why, None);
        }
        if let Some(d) = cas.degrade_at
            && !(0.0..=1.0).contains(&d)
        {
            c.value(&cp.key("degrade_at"), "degrade_at must be between 0 and 1", None);
        }
        if let Some(m) = cas.min_success
            && !(0.0..=1.0).contains(&m)
        {
            c.value(&cp.key("min_success"), "min_success must be between 0 and 1", None);
        }
    }
    if let Some(sw) = &file.swarm {
        let sp = root().key("swarm");
        if sw.task.trim().is_empty() {
            c.value(&sp.key("task"), "the task is empty", None);
        }
        c.template(&sp.key("task"), &sw.task, None);
        if !(1..=10_000).contains(&sw.agents) {
            c.value(&sp.key("agents"), "agents must be between 1 and 10000", None);
        }
        if let Some(m) = &sw.model {
            c.check_models(&sp.key("model"), m, cx);
        }
    }
    if !pattern.has_steps() && file.outputs.final_step.is_some() {
        c.key(&root().key("outputs").key("final"), "`final` names a step, and this pattern has none", None);
    }
}

fn check_steps(c: &mut Checker<'_>) -> Analysis {
    let file = c.file;
    let n = file.steps.len();
    let ids: Vec<&str> = file.steps.iter().map(|s| s.id.as_str()).collect();
    let agents: Vec<&str> = file.agents.iter().map(|a| a.id.as_str()).collect();
    let index: BTreeMap<&str, usize> = ids.iter().enumerate().rev().map(|(i, id)| (*id, i)).collect();
    let sp = root().key("steps");
    if n > MAX_STEPS {
        c.key(
            &sp,
            format!("the workflow has {n} steps; at most {MAX_STEPS} are allowed"),
            Some("a larger fan-out is a cascade or swarm with many agents".into()),
        );
        return Analysis::default();
    }

    let mut explicit: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut routed_by: Vec<Option<(usize, String)>> = vec![None; n];
    let mut reads: Vec<Vec<(usize, String)>> = vec![Vec::new(); n];
    let mut seen = BTreeSet::new();
    let (mut any_route, mut any_when, mut any_loop) = (false, false, false);

    for (i, s) in file.steps.iter().enumerate() {
        let p = sp.index(i);
        if !seen.insert(s.id.as_str()) {
            c.value(
                &p.key("id"),
                format!("step id `{}` is used twice", s.id),
                Some("give every step its own id".into()),
            );
        }
        if !is_identifier(&s.id) {
            c.value(
                &p.key("id"),
                format!("step id `{}` is not an identifier", s.id),
                Some("use letters, digits and _ (templates read it as steps.<id>.output)".into()),
            );
        }
        match (&s.agent, &s.prompt) {
            (Some(a), _) if !agents.contains(&a.as_str()) => {
                let hint = suggest(a, &agents, "agents").or(Some("declare it under `agents:`".into()));
                c.value(&p.key("agent"), format!("unknown agent `{a}`"), hint);
            }
            (Some(_), None) => c.key(
                &p,
                "the step has an agent but no `prompt`",
                Some("say what the agent should do in `prompt`".into()),
            ),
            (None, None) => c.key(
                &p,
                "the step has neither `agent` nor `prompt`",
                Some("give it an agent and a prompt, or a prompt alone to compute a value".into()),
            ),
            _ => {}
        }
        for (k, need) in s.needs.iter().enumerate() {
            match index.get(need.as_str()) {
                Some(&j) if j == i => {
                    c.value(&p.key("needs").index(k), format!("step `{}` needs itself", s.id), None)
                }
                Some(&j) => explicit[i].push(j),
                None => c.value(
                    &p.key("needs").index(k),
                    format!("unknown step `{need}`"),
                    suggest(need, &ids, "steps"),
                ),
            }
        }
        if let Some(prompt) = &s.prompt {
            for id in c.template(&p.key("prompt"), prompt, Some(&ids)) {
                reads[i].push((index[id.as_str()], "prompt".into()));
            }
        }
        if let Some(on_error) = s.on_error.as_deref().filter(|o| !matches!(o.trim(), "abort" | "skip")) {
            let path = p.key("on_error");
            if s.agent.is_none() {
                c.key(&path, "only a step with an agent can fail and recover", None);
            }
            for id in c.on_error_template(&path, on_error, &ids) {
                reads[i].push((index[id.as_str()], "on_error".into()));
            }
        }
        if let Some(when) = &s.when {
            any_when = true;
            for id in c.expression(&p.key("when"), when, &ids, false) {
                reads[i].push((index[id.as_str()], "when".into()));
            }
        }
        if let Some(l) = &s.loop_ {
            any_loop = true;
            let lp = p.key("loop");
            if s.agent.is_none() {
                c.key(&lp, "only a step with an agent can loop", None);
            }
            if !(1..=20).contains(&l.max) {
                c.value(&lp.key("max"), "loop.max must be between 1 and 20", None);
            }
            if let Some(until) = &l.until {
                for id in c.expression(&lp.key("until"), until, &ids, true) {
                    reads[i].push((index[id.as_str()], "loop.until".into()));
                }
            }
            if l.judge.as_deref().is_some_and(|j| j.trim().is_empty()) {
                c.value(&lp.key("judge"), "the judge's criteria are empty", None);
            }
        }
        for (value, target) in &s.route {
            any_route = true;
            let rp = p.key("route").key(value.clone());
            match index.get(target.as_str()) {
                None => c.value(&rp, format!("unknown step `{target}`"), suggest(target, &ids, "steps")),
                Some(&j) if j == i => c.value(&rp, format!("step `{}` routes to itself", s.id), None),
                Some(&j) => match &routed_by[j] {
                    Some((r, _)) if *r != i => c.value(
                        &rp,
                        format!("step `{target}` is already a route of `{}`", ids[*r]),
                        Some(
                            "a step can be the target of one router; use `when` for other conditions".into(),
                        ),
                    ),
                    Some(_) => c.value(
                        &rp,
                        format!("step `{target}` is the target of two routes of this step"),
                        None,
                    ),
                    None => routed_by[j] = Some((i, value.clone())),
                },
            }
        }
    }

    let pattern = file.pattern;
    if matches!(pattern, PatternKind::Conditional | PatternKind::Router) && n > 0 && !any_route && !any_when {
        c.value(
            &root().key("pattern"),
            format!("pattern `{}` has no step with `route` or `when`", pattern.as_str()),
            Some("route on a classifier's output, or use pattern: dag".into()),
        );
    }
    if pattern == PatternKind::Iterative && n > 0 && !any_loop {
        c.value(
            &root().key("pattern"),
            "pattern `iterative` has no step with `loop`",
            Some("add loop: {until: …, max: 3} to the step to refine".into()),
        );
    }
    if let Some(last) = &file.outputs.final_step
        && !ids.contains(&last.as_str())
    {
        c.value(
            &root().key("outputs").key("final"),
            format!("unknown step `{last}`"),
            suggest(last, &ids, "steps"),
        );
    }

    // The order the steps run in: explicit needs, the chain, routes.
    let mut deps = explicit.clone();
    for i in 0..n {
        if pattern.is_chain() && i > 0 {
            deps[i].push(i - 1);
        }
        if let Some((r, _)) = &routed_by[i] {
            deps[i].push(*r);
        }
    }
    // A step reading an earlier step's output waits for it; reading a later one is a
    // mistake unless it already waits for that step.
    let before_reads = deps.clone();
    for i in 0..n {
        for (j, key) in &reads[i] {
            if *j < i {
                deps[i].push(*j);
            } else if *j != i && !reaches(&before_reads, i, *j) {
                let path = sp.index(i).key(key.clone());
                c.value(
                    &path,
                    format!(
                        "step `{}` reads `steps.{}.output`, but `{}` comes later and is not in its `needs`",
                        ids[i], ids[*j], ids[*j]
                    ),
                    Some(format!("add `needs: [{}]`, or move the step after `{}`", ids[*j], ids[*j])),
                );
            } else if *j == i {
                let path = sp.index(i).key(key.clone());
                c.value(
                    &path,
                    format!("step `{}` reads its own output", ids[i]),
                    Some("in a loop's `until`, the draft is `output`".into()),
                );
            }
        }
    }
    for d in &mut deps {
        d.sort_unstable();
        d.dedup();
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<&str> = cycle.iter().map(|&i| ids[i]).collect();
        let (a, b) = (cycle[0], cycle[1]);
        let at = file.steps[a].needs.iter().position(|x| x == ids[b]);
        let path = match at {
            Some(k) => sp.index(a).key("needs").index(k),
            None => sp.index(a).key("id"),
        };
        c.value(
            &path,
            format!("dependency cycle: {}", names.join(" -> ")),
            Some("a step cannot wait, directly or not, for itself; remove one of these needs".into()),
        );
    }
    Analysis { deps, routed_by }
}

/// Whether `from` waits, directly or not, for `to`.
fn reaches(deps: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut stack = deps[from].clone();
    let mut seen = vec![false; deps.len()];
    while let Some(x) = stack.pop() {
        if x == to {
            return true;
        }
        if !std::mem::replace(&mut seen[x], true) {
            stack.extend(&deps[x]);
        }
    }
    false
}

/// A cycle as the path `a -> b -> … -> a` (a waits for b…), if the graph has one.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; deps.len()];
    let mut path = Vec::new();
    fn visit(i: usize, deps: &[Vec<usize>], state: &mut [u8], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for &d in &deps[i] {
            if state[d] == 1 {
                let start = path.iter().position(|&x| x == d).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(d);
                return Some(cycle);
            }
            if state[d] == 0
                && let Some(c) = visit(d, deps, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    for i in 0..deps.len() {
        if state[i] == 0
            && let Some(c) = visit(i, deps, &mut state, &mut path)
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_are_found_with_their_path() {
        // 0 <- 1 <- 2 <- 1: 1 waits for 2, 2 waits for 1.
        let deps = vec![vec![], vec![0, 2], vec![1]];
        assert_eq!(find_cycle(&deps), Some(vec![1, 2, 1]));
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
        assert!(reaches(&[vec![], vec![0], vec![1]], 2, 0));
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("triage_2"));
        assert!(!is_identifier("2x"));
        assert!(!is_identifier("a-b"));
    }
}
