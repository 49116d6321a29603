//! Specs that carry a workflow file's text: checked (every mistake at once, with its line
//! and column) and bound to their inputs by belt-workflow, then run as any spec.

use std::sync::Arc;

use belt_core::RunOptions;
use belt_core::limits::Limits;
use belt_workflow::{Bound, Diagnostics, ModelChoice, PatternKind, ValidationContext, Workflow};

use crate::error::AppError;
use crate::models::SIMULATED_MODEL;
use crate::prepare::{
    App, Common, Prepared, WORKFLOW_ORIGIN, is_simulated, merge_limits, parse_formats, workflow_format,
};
use crate::spec::RunSpec;

/// Fields a workflow's file decides; a spec with a workflow leaves them out.
fn refuse_fields_of_the_file(spec: &RunSpec) -> Result<(), AppError> {
    let set: Vec<&str> = [
        (!spec.task.trim().is_empty(), "task"),
        (spec.pattern.is_some(), "pattern"),
        (spec.plan.is_some(), "plan"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if set.is_empty() {
        return Ok(());
    }
    Err(AppError::Invalid(format!(
        "a run of a workflow takes its task, pattern and plan from the file; leave {} out",
        set.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" and ")
    )))
}

fn origin(spec: &RunSpec) -> &str {
    spec.workflow_file.as_deref().unwrap_or(WORKFLOW_ORIGIN)
}

fn invalid(origin: &str, diagnostics: &Diagnostics) -> AppError {
    let n = diagnostics.len();
    AppError::Invalid(format!(
        "{origin} has {n} error{}; nothing was run:\n{diagnostics}",
        if n == 1 { "" } else { "s" }
    ))
}

/// The file parsed and bound to the spec's inputs, with the spec's models over the file's
/// defaults: `model` takes the place of `defaults.model`, a tier's model that of the
/// cascade's tier (see [`Bound::with_models`]); agents without a model get the spec's.
pub(crate) fn bind(app: &App, spec: &RunSpec, text: &str) -> Result<Bound, AppError> {
    let origin = origin(spec);
    let w = Workflow::parse(text, workflow_format(spec, text), origin).map_err(|d| invalid(origin, &d))?;
    let cx = ValidationContext {
        tools: Some(app.tool_host().builtin_names()),
        servers: app.tool_host().configured_servers().keys().cloned().collect(),
        ..ValidationContext::default()
    };
    let bound = w.bind_in(spec.inputs.clone(), &cx).map_err(|d| invalid(origin, &d))?;
    let choice = ModelChoice {
        model: spec.model.clone(),
        worker: spec.worker_model.clone(),
        synthesizer: spec.synthesizer_model.clone(),
        executive: spec.executive_model.clone(),
    };
    let bound = bound.with_models(&choice).map_err(|e| AppError::Invalid(format!("{origin}: {e}")))?;
    let bound = bound.with_context(spec.context.clone());
    Ok(bound.with_default_model(spec.model.clone().unwrap_or_else(|| SIMULATED_MODEL.to_string())))
}

/// Where the run's USD budget comes from: the spec's (over the file's), else the file's.
fn budget_from(spec: &RunSpec, origin: &str) -> String {
    match spec.budget_usd {
        Some(_) => crate::prepare::BUDGET_FROM_SPEC.to_string(),
        None => format!("`budget.usd` of {origin}"),
    }
}

/// True when some agent or tier of the file names no model (so the spec's model serves).
pub(crate) fn needs_default_model(bound: &Bound) -> bool {
    let f = bound.file();
    if f.defaults.model.is_some() {
        return false;
    }
    match f.pattern {
        PatternKind::Cascade => {
            let t = &f.defaults.models;
            [&t.decomposer, &t.worker, &t.synthesizer, &t.executive].iter().any(|m| m.is_none())
        }
        PatternKind::Swarm => f.swarm.as_ref().is_none_or(|s| s.model.is_none()),
        _ => f.agents.iter().any(|a| a.model.is_none()),
    }
}

impl App {
    /// The agents and tiers of `spec`'s workflow that keep a model of their own although the
    /// spec names `model` (see [`Bound::own_models`]), for a front end to say so; empty
    /// without a workflow or a model, or when the file does not bind.
    pub fn models_the_file_keeps(&self, spec: &RunSpec) -> Vec<(String, String)> {
        let (Some(text), Some(_)) = (&spec.workflow, &spec.model) else { return Vec::new() };
        // The file's own, less the tiers the spec names models for.
        let set = [
            ("the worker tier", &spec.worker_model),
            ("the swarm", &spec.worker_model),
            ("the synthesizer tier", &spec.synthesizer_model),
            ("the executive tier", &spec.executive_model),
        ];
        let file_only =
            RunSpec { worker_model: None, synthesizer_model: None, executive_model: None, ..spec.clone() };
        let own = bind(self, &file_only, text).map(|b| b.own_models()).unwrap_or_default();
        own.into_iter().filter(|(who, _)| !set.iter().any(|(w, m)| w == who && m.is_some())).collect()
    }

    /// What `belt validate` checks beyond the file itself: a USD budget the file sets with
    /// a model whose price is unknown (see [`crate::prepare`]). Required inputs not given
    /// get a placeholder, as they choose no model.
    pub fn check_workflow_prices(&self, spec: &RunSpec) -> Result<(), AppError> {
        let Some(text) = &spec.workflow else { return Ok(()) };
        let mut spec = spec.clone();
        if let Ok(w) = Workflow::parse(text, workflow_format(&spec, text), origin(&spec)) {
            for (name, def) in &w.file().inputs {
                if def.default.is_none() && !spec.inputs.contains_key(name) {
                    spec.inputs.insert(name.clone(), def.kind.placeholder().to_string());
                }
            }
        }
        // A file that does not bind is reported by its diagnostics.
        let Ok(bound) = bind(self, &spec, text) else { return Ok(()) };
        let mut options = RunOptions::default().with_providers(self.providers(&spec)?);
        bound.settings().apply(&mut options);
        crate::prepare::priced_under_usd_cap(&bound.models(), &options, &budget_from(&spec, origin(&spec)))
    }

    /// Every mistake of a workflow file at once, as `FILE:LINE:COL: key: message (hint)`:
    /// syntax, keys, types, references, providers this application does not know, and —
    /// when `inputs` is given — missing and unknown inputs.
    pub fn check_workflow(
        &self,
        text: &str,
        format: belt_workflow::Format,
        origin: &str,
        inputs: Option<std::collections::BTreeMap<String, String>>,
    ) -> Diagnostics {
        let cx = ValidationContext {
            providers: Some(self.known_providers()),
            tools: Some(self.tool_host().builtin_names()),
            servers: self.tool_host().configured_servers().keys().cloned().collect(),
            inputs,
            ..ValidationContext::default()
        };
        belt_workflow::check(text, format, origin, &cx)
    }
}

/// [`App::prepare`] for a spec with a workflow's text.
pub(crate) fn prepare(app: &App, spec: &RunSpec, text: &str, common: Common) -> Result<Prepared, AppError> {
    refuse_fields_of_the_file(spec)?;
    if common.degrade.is_some() || common.load_switch.is_some() {
        return Err(AppError::Invalid(
            "degrade and fast_model apply to runs of a task; in a workflow file, a cascade degrades with \
             `cascade: {degrade: true}`"
                .into(),
        ));
    }
    let origin = origin(spec);
    let diagnostics =
        app.check_workflow(text, workflow_format(spec, text), origin, Some(spec.inputs.clone()));
    if !diagnostics.is_empty() {
        return Err(invalid(origin, &diagnostics));
    }
    let bound = bind(app, spec, text)?;
    if crate::patterns::for_workflow(bound.file().pattern.as_str()).is_none() {
        return Err(AppError::Invalid(format!(
            "{origin}: pattern `{}` is not registered",
            bound.file().pattern.as_str()
        )));
    }
    let task = bound.task().map_err(|e| AppError::Invalid(format!("{origin}: {e}")))?;
    let settings = bound.settings();

    let mut providers = app.providers(spec)?;
    for (name, limits) in &settings.providers {
        let file = Limits {
            max_concurrency: limits.max_concurrency,
            rpm: limits.rpm,
            tpm: limits.tpm,
            ..Limits::default()
        };
        merge_limits(&mut providers, name, &file);
    }
    let orchestrator = bound.orchestrator();
    crate::prepare::keys_present(&bound.models(), &providers)?;
    belt_core::Orchestrator::validate(&orchestrator, &providers).map_err(AppError::Invalid)?;
    let simulated = bound.models().iter().any(|m| is_simulated(m));
    let providers = crate::prepare::only_what_simulated_runs_call(providers, &bound.models());

    // Defaults, then the file's settings, then what the spec says explicitly.
    let mut options = RunOptions::default().with_providers(providers);
    settings.apply(&mut options);
    options.parallel = !spec.sequential;
    options.review_plan = spec.review_plan;
    common.apply(spec, &mut options);
    crate::prepare::priced_under_usd_cap(&bound.models(), &options, &budget_from(spec, origin))?;

    let mut recorded = spec.clone();
    recorded.out = spec.out.clone().or_else(|| settings.out_dir.as_ref().map(Into::into));
    let formats = match (&spec.formats, settings.formats.is_empty()) {
        (None, false) => {
            let list = settings.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",");
            recorded.formats = Some(list.clone());
            parse_formats(&list)?
        }
        _ => {
            recorded.formats = Some(common.formats_text.clone());
            common.formats
        }
    };
    options.definition = Some(recorded.to_definition());
    // The agents' tools: checked now, started with the run, when the orchestrator is built
    // again over them.
    let host = app.tool_host();
    let plan = host.plan(spec, &bound.tool_names(), &bound.file().mcp_servers)?;
    let rebuild: Option<crate::prepare::Rebuild> = plan.as_ref().map(|_| {
        let bound = bound.clone();
        Box::new(move |tools, groups| {
            Arc::new(bound.with_tools(tools).with_tool_groups(groups).orchestrator())
                as Arc<dyn belt_core::Orchestrator>
        }) as crate::prepare::Rebuild
    });
    Ok(Prepared {
        spec: recorded,
        task,
        orchestrator: Arc::new(orchestrator),
        options,
        formats,
        simulated,
        tools: plan.map(|p| (host.clone(), p)),
        rebuild,
    })
}
