//! The pattern registry: every pattern of belt's library — its name, what it does in a
//! line, what it needs to run, and, for those a task alone can run, how to build it.
//!
//! `belt patterns`, `GET /v1/patterns`, the MCP `list_patterns` tool, the `pattern` field
//! of a [`crate::RunSpec`] (`belt run --pattern`) and workflow files' `pattern:` key all
//! read [`REGISTRY`]; no front end builds a pattern itself.
//!
//! Beside the library, a program registers orchestrators of its own ([`Registered`], through
//! [`crate::App::register`]): each is a pattern a spec names like any other, with typed
//! arguments (the spec's `args`, checked against its schemars type when the run is
//! prepared), and `belt-server` makes each its own MCP tool, `orchestrate_{name}`. They live
//! in the process that registered them: a run of one is recorded like every run (its spec,
//! `args` included), and resumes — `belt resume`, a worker, a restarted server — only in a
//! process that registered the same name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use belt_core::patterns::Refine;
use belt_core::{Cascade, Dynamic, Flow, Orchestrator, Strategy, Swarm, SynthesizeMode};
use serde::Serialize;

/// What a pattern builder gets: the spec's choices, checked and with defaults applied.
#[derive(Debug, Clone)]
pub struct Team {
    /// Workers (subtasks); the most of them with `min_agents`.
    pub agents: usize,
    /// The fewest workers when the decomposer chooses how many (cascade).
    pub min_agents: Option<usize>,
    /// How the cascade's decomposer splits the task.
    pub strategy: Strategy,
    pub models: TierModels,
    pub group_size: usize,
    pub synthesize: SynthesizeMode,
    /// Critique-and-revise rounds (0: the pattern's default).
    pub refine: u32,
    /// Continuations asked of a worker cut off by its token cap (cascade).
    pub continue_truncated: u32,
    /// Graceful degradation (cascade): the fraction of a tier's failed steps at which it
    /// falls a level; `None`: it does not degrade.
    pub degrade: Option<f64>,
}

/// The model of each tier, resolved (`provider/model`, or a fallback chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierModels {
    /// The run's model: the decomposer's, and every tier's that names none.
    pub base: String,
    pub worker: String,
    pub synthesizer: String,
    pub executive: String,
}

impl TierModels {
    /// Every model the run may call, each once.
    pub fn all(&self) -> Vec<&str> {
        let mut all = vec![self.base.as_str(), &self.worker, &self.synthesizer, &self.executive];
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The coder over the sandboxed `run_code` (probed at its first call, so a machine without
/// bubblewrap fails the run with the fix in its reason).
fn coder(t: &Team) -> Arc<dyn Orchestrator> {
    let coder =
        belt_core::patterns::Coder::new(&t.models.worker, belt_tools::sandbox::run_code_tool_probing());
    Arc::new(if t.refine > 0 { coder.max_rounds(t.refine as usize) } else { coder })
}

/// Builds a pattern's orchestrator for a run.
pub type Build = fn(&Team) -> Arc<dyn Orchestrator>;

/// One entry of the library.
#[derive(Clone, Copy)]
pub struct Pattern {
    pub name: &'static str,
    /// What it does, in a line.
    pub summary: &'static str,
    /// Its `pattern:` value in workflow files, if they have it.
    pub workflow: Option<&'static str>,
    /// How a spec with only a task runs it; `None`: it needs a workflow file or Rust.
    pub build: Option<Build>,
}

impl Pattern {
    /// True when a task alone is enough to run it (`belt run --pattern NAME`).
    pub fn from_task(&self) -> bool {
        self.build.is_some()
    }

    /// How to run it, in a few words: `belt run --pattern`, `workflow: KEY`, `from Rust`.
    pub fn how(&self) -> String {
        match (self.from_task(), self.workflow) {
            (true, _) => "belt run --pattern".to_string(),
            (false, Some(key)) => format!("workflow: {key}"),
            (false, None) => "from Rust".to_string(),
        }
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern").field("name", &self.name).field("from_task", &self.from_task()).finish()
    }
}

/// The listing of a pattern (`belt patterns --json`): name, summary, whether a task alone
/// runs it, and its workflow key.
impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Pattern", 4)?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("summary", self.summary)?;
        st.serialize_field("from_task", &self.from_task())?;
        st.serialize_field("workflow", &self.workflow)?;
        st.end()
    }
}

/// The library, in the order the README's table lists it.
pub const REGISTRY: &[Pattern] = &[
    Pattern {
        name: "cascade",
        summary: "workers -> a synthesizer per group of 5 -> an executive; --refine N adds critique-and-revise rounds",
        workflow: Some("cascade"),
        build: Some(cascade),
    },
    Pattern {
        name: "swarm",
        summary: "specialists by domain (news, academic, product...), results grouped by domain and deduplicated",
        workflow: Some("swarm"),
        build: Some(|t| Arc::new(Swarm::new(t.agents, &t.models.worker))),
    },
    Pattern {
        name: "iterative",
        summary: "draft -> judge -> revise until the judge accepts or --refine N drafts",
        workflow: Some("iterative"),
        build: Some(|t| Arc::new(iterative(&t.models.worker, t.refine))),
    },
    Pattern {
        name: "dynamic",
        summary: "the LLM designs a team of agents (name, role, system prompt) for the task",
        workflow: None,
        build: Some(|t| Arc::new(Dynamic::new(t.agents, &t.models.worker))),
    },
    Pattern {
        name: "coder",
        summary: "write a program for the task, run it in the sandbox (run_code), read the errors, fix; up to --refine N rounds (default 3)",
        workflow: None,
        build: Some(coder),
    },
    Pattern {
        name: "pipeline",
        summary: "stages in order, each fed the previous output; per-stage on_error; fan-out stages",
        workflow: Some("sequential"),
        build: None,
    },
    Pattern {
        name: "parallel",
        summary: "fan-out / fan-in with required and optional branches",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "router",
        summary: "one agent chosen by a value, a predicate or an LLM classifier; unknown routes list the valid ones",
        workflow: Some("conditional"),
        build: None,
    },
    Pattern {
        name: "dag",
        summary: "steps with dependencies; cycles rejected with their path; dependents of a failure skipped",
        workflow: Some("dag"),
        build: None,
    },
    Pattern {
        name: "state_machine",
        summary: "guarded transitions with actions; invalid ones name both states; history recorded",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "saga",
        summary: "steps with compensations, undone in reverse order on failure",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "supervisor",
        summary: "tasks routed by capability, success recorded per agent, fallback to another capable agent",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "blackboard",
        summary: "shared keyed state with atomic updates; contributors woken when a key they watch changes",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "event_driven",
        summary: "handlers subscribed to event types, a bounded queue, drain or cancel with a deadline",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "balance",
        summary: "least-loaded capable agent, priority queue (FIFO within a priority), batches",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "hitl",
        summary: "approval, selection and free input with stable ids, timeouts and defaults",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "conductor",
        summary: "an LLM plans phases, each run by a named sub-orchestrator in its own scope",
        workflow: None,
        build: None,
    },
    Pattern {
        name: "flow",
        summary: "any async function over the context, as a whole run",
        workflow: None,
        build: None,
    },
];

/// The pattern called `name`.
pub fn get(name: &str) -> Option<&'static Pattern> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// The pattern a workflow file's `pattern:` value runs (`router` is also `conditional`).
pub fn for_workflow(key: &str) -> Option<&'static Pattern> {
    REGISTRY
        .iter()
        .find(|p| p.workflow == Some(key))
        .or_else(|| REGISTRY.iter().find(|p| p.name == key && p.workflow.is_some()))
}

/// The patterns a task alone runs, by name.
pub fn from_task() -> impl Iterator<Item = &'static Pattern> {
    REGISTRY.iter().filter(|p| p.from_task())
}

/// The pattern a spec's `pattern` names, if a task alone can run it; else the message
/// every front end shows.
pub(crate) fn runnable(name: &str) -> Result<&'static Pattern, String> {
    let names = from_task().map(|p| p.name).collect::<Vec<_>>().join(", ");
    match get(name) {
        Some(p) if p.from_task() => Ok(p),
        Some(_) => Err(format!(
            "`{name}` needs more than a task (agents, steps, routes); run it from Rust or a workflow \
             file. pattern (--pattern) takes: {names}"
        )),
        None => Err(format!(
            "unknown pattern `{name}`; pattern (--pattern) takes: {names} (`belt patterns` lists all; an \
             orchestrator a program registers runs, and resumes, only in a process that registered it)"
        )),
    }
}

/// Builds a registered orchestrator for a run from its team and its `args` (JSON); an
/// `Err` says what is wrong with the arguments.
type BuildWithArgs =
    Arc<dyn Fn(&Team, serde_json::Value) -> Result<Arc<dyn Orchestrator>, String> + Send + Sync>;

/// The run settings an orchestrator's MCP tool (`orchestrate_{name}`) takes beside its own
/// arguments, under the names of [`crate::RunSpec`]'s fields; its arguments may not use them.
pub const TOOL_SETTINGS: &[&str] =
    &["task", "model", "agents", "budget_usd", "budget_tokens", "budget_calls"];

/// An orchestrator a program registered ([`crate::App::register`]; see the module docs).
#[derive(Clone)]
pub struct Registered {
    /// The pattern name a spec gives (`pattern`).
    pub name: String,
    /// What it does, for people and for an LLM choosing a tool.
    pub description: String,
    /// The JSON Schema of its arguments (the spec's `args`), from their schemars type.
    pub args_schema: serde_json::Value,
    build: BuildWithArgs,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("name", &self.name).finish()
    }
}

impl Registered {
    /// An orchestrator named `name` whose runs `factory` builds from the run's team and its
    /// arguments, of type `A`: read from the spec's `args` (absent: `{}`), refused with
    /// serde's message when they do not fit `A`, and described by `A`'s JSON Schema.
    pub fn new<A, F>(name: &str, description: &str, factory: F) -> Result<Registered, String>
    where
        A: serde::de::DeserializeOwned + schemars::JsonSchema,
        F: Fn(A, &Team) -> Result<Arc<dyn Orchestrator>, String> + Send + Sync + 'static,
    {
        check_name(name)?;
        if description.trim().is_empty() {
            return Err(format!(
                "orchestrator `{name}`: the description is empty; say what it does (an LLM reads it to \
                 choose the tool)"
            ));
        }
        let args_schema = serde_json::to_value(schemars::schema_for!(A)).map_err(|e| e.to_string())?;
        check_args_schema(name, &args_schema)?;
        let build: BuildWithArgs = Arc::new(move |team, args| {
            let args: A = serde_json::from_value(args).map_err(|e| e.to_string())?;
            factory(args, team)
        });
        Ok(Registered {
            name: name.to_string(),
            description: description.trim().to_string(),
            args_schema,
            build,
        })
    }

    /// Its MCP tool: `orchestrate_{name}`.
    pub fn tool_name(&self) -> String {
        format!("orchestrate_{}", self.name)
    }

    /// The orchestrator of a run with `args` (absent: `{}`).
    pub(crate) fn build(
        &self,
        team: &Team,
        args: Option<&serde_json::Value>,
    ) -> Result<Arc<dyn Orchestrator>, String> {
        let args = args.cloned().unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        (self.build)(team, args).map_err(|e| format!("args of pattern `{}`: {e}", self.name))
    }
}

/// A name a spec, a URL and an MCP tool can carry: lowercase letters, digits, `_` and `-`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(format!(
            "`{name}` cannot name an orchestrator: use 1 to 48 lowercase letters, digits, `_` or `-`, \
             starting with a letter (its MCP tool is `orchestrate_NAME`)"
        ));
    }
    if get(name).is_some() {
        return Err(format!("`{name}` is a pattern of belt's library; give your orchestrator another name"));
    }
    Ok(())
}

/// Arguments are a JSON object (its MCP tool's arguments sit beside [`TOOL_SETTINGS`]).
fn check_args_schema(name: &str, schema: &serde_json::Value) -> Result<(), String> {
    if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        return Err(format!(
            "orchestrator `{name}`: its arguments must be a struct (a JSON object), not {}",
            schema.get("type").map_or("a schema without a type".to_string(), |t| t.to_string())
        ));
    }
    let props = schema.get("properties").and_then(|p| p.as_object());
    if let Some(taken) = props.and_then(|p| p.keys().find(|k| TOOL_SETTINGS.contains(&k.as_str()))) {
        return Err(format!(
            "orchestrator `{name}`: its argument `{taken}` has the name of a run setting its tool takes \
             ({}); rename it",
            TOOL_SETTINGS.join(", ")
        ));
    }
    Ok(())
}

/// The orchestrators a process registered, by name (an [`crate::App`] holds one).
#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<String, Arc<Registered>>>,
}

impl Registry {
    /// Add `entry`; a name registered already is refused.
    pub fn add(&self, entry: Registered) -> Result<(), String> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(&entry.name) {
            return Err(format!("an orchestrator named `{}` is registered already", entry.name));
        }
        entries.insert(entry.name.clone(), Arc::new(entry));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Registered>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Every registered orchestrator, by name.
    pub fn all(&self) -> Vec<Arc<Registered>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

fn cascade(t: &Team) -> Arc<dyn Orchestrator> {
    let mut cascade = Cascade::new(t.agents, &t.models.base);
    cascade.min_agents = t.min_agents;
    cascade.strategy = t.strategy;
    cascade.group_size = t.group_size;
    cascade.synthesize = t.synthesize;
    cascade.refine = t.refine as usize;
    cascade.continue_truncated = t.continue_truncated as usize;
    cascade.degrade = t.degrade;
    cascade.worker.model = t.models.worker.as_str().into();
    cascade.synthesizer.model = t.models.synthesizer.as_str().into();
    cascade.executive.model = t.models.executive.as_str().into();
    Arc::new(cascade)
}

/// `iterative`: the task drafted, judged and revised until the judge accepts a draft or
/// `refine` drafts (default 3) were written.
fn iterative(model: &str, refine: u32) -> impl Orchestrator + use<> {
    let drafts =
        if refine == 0 { belt_core::patterns::iterative::DEFAULT_MAX_ITERATIONS } else { refine as usize };
    let refine = Refine::llm(model)
        .judge(
            model,
            "a complete, accurate and specific answer to the task, well structured, with no gaps or \
             unsupported claims",
        )
        .max_iterations(drafts);
    Flow::new("iterative", move |ctx, task| {
        let refine = refine.clone();
        async move {
            match refine.run(&ctx, task.brief().into_owned()).await {
                Ok(done) => Ok(done.output.to_string()),
                // A stopping run keeps its best draft; any other failure fails the run.
                Err(e) if ctx.stopping().is_some() && e.last_draft.is_some() => {
                    Ok(e.last_draft.map(|d| d.to_string()).unwrap_or_default())
                }
                Err(e) => Err(e.error),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workflow_pattern_is_in_the_registry() {
        // The file format's own list of `pattern:` values, from its JSON Schema.
        let schema = serde_json::to_value(schemars::schema_for!(belt_workflow::PatternKind)).unwrap();
        let mut keys: Vec<String> = Vec::new();
        collect_strings(&schema, &mut keys);
        assert!(keys.len() >= 7, "the schema lists the pattern values: {schema}");
        for key in keys {
            let entry =
                for_workflow(&key).unwrap_or_else(|| panic!("workflow pattern `{key}` is not registered"));
            assert!(entry.workflow.is_some());
        }
        // And every registered workflow key parses as the format's pattern.
        for p in REGISTRY.iter().filter_map(|p| p.workflow) {
            serde_json::from_value::<belt_workflow::PatternKind>(serde_json::json!(p)).unwrap();
        }
    }

    fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("enum", serde_json::Value::Array(a)) => {
                            out.extend(a.iter().filter_map(|s| s.as_str().map(String::from)))
                        }
                        ("const", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_strings(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
            _ => {}
        }
    }

    /// The model calls docs/choosing-a-pattern.md gives each pattern, as a run counts them.
    #[tokio::test]
    async fn call_counts_are_those_of_the_decision_guide() {
        let app = crate::App::new(crate::Config::default()).with_env(Arc::new(|_| None));
        let run = |json: String| {
            let spec: crate::RunSpec = serde_json::from_str(&json).unwrap();
            let mut prepared = app.prepare(&spec).unwrap();
            async move { prepared.start().await.unwrap().result().await }
        };
        let calls = |pattern: &str, agents: usize, extra: &str| {
            run(format!(
                r#"{{"task": "Plan a city park", "pattern": "{pattern}", "agents": {agents}, "sim_latency_ms": 0{extra}}}"#
            ))
        };
        // The cascade: 1 + N + S + E.
        for (n, expected) in [(3, 4), (5, 7), (12, 16), (50, 62), (55, 70)] {
            let r = calls("cascade", n, "").await;
            assert_eq!(r.usage.calls, expected, "cascade of {n}: {:?}", r.shape);
        }
        assert_eq!(calls("cascade", 4, r#", "synthesize": "always""#).await.usage.calls, 6);
        assert_eq!(calls("cascade", 12, r#", "synthesize": "never""#).await.usage.calls, 13);
        assert_eq!(calls("swarm", 7, "").await.usage.calls, 8);
        assert_eq!(calls("dynamic", 4, "").await.usage.calls, 6);
        // Iterative: a draft and a verdict per round, at most 2D.
        let r = calls("iterative", 1, r#", "refine": 2"#).await;
        let drafts = r
            .agents
            .iter()
            .filter(|a| a.step.as_str().ends_with("/draft") && a.status == belt_core::AgentStatus::Completed)
            .count();
        assert!((1..=2).contains(&drafts), "{drafts} drafts");
        assert_eq!(r.usage.calls, 2 * drafts as u64);
    }

    #[test]
    fn names_are_unique_and_the_runnable_ones_build() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        let models = TierModels {
            base: "simulated/default".into(),
            worker: "simulated/w".into(),
            synthesizer: "simulated/s".into(),
            executive: "simulated/e".into(),
        };
        let team = Team {
            agents: 3,
            min_agents: None,
            strategy: Strategy::Auto,
            models,
            group_size: 5,
            synthesize: SynthesizeMode::Auto,
            refine: 0,
            continue_truncated: 0,
            degrade: None,
        };
        for p in from_task() {
            let o = (p.build.unwrap())(&team);
            assert_eq!(o.name(), p.name, "the orchestrator of `{}` names itself so", p.name);
        }
        assert!(runnable("saga").unwrap_err().contains("needs more than a task"));
        assert!(runnable("pyramid").unwrap_err().contains("unknown pattern `pyramid`"));
    }
}
