//! The pattern registry: every pattern of belt's library — its name, what it does in a
//! line, what it needs to run, and, for those a task alone can run, how to build it.
//!
//! `belt patterns`, `GET /v1/patterns`, the MCP `list_patterns` tool, the `pattern` field
//! of a [`crate::RunSpec`] (`belt run --pattern`) and workflow files' `pattern:` key all
//! read [`REGISTRY`]; no front end builds a pattern itself.

use std::sync::Arc;

use belt_core::patterns::Refine;
use belt_core::{Cascade, Dynamic, Flow, Orchestrator, Swarm, SynthesizeMode};
use serde::Serialize;

/// What a pattern builder gets: the spec's choices, checked and with defaults applied.
#[derive(Debug, Clone)]
pub struct Team {
    /// Workers (subtasks).
    pub agents: usize,
    pub models: TierModels,
    pub group_size: usize,
    pub synthesize: SynthesizeMode,
    /// Critique-and-revise rounds (0: the pattern's default).
    pub refine: u32,
    /// Continuations asked of a worker cut off by its token cap (cascade).
    pub continue_truncated: u32,
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
            "unknown pattern `{name}`; pattern (--pattern) takes: {names} (`belt patterns` lists all)"
        )),
    }
}

fn cascade(t: &Team) -> Arc<dyn Orchestrator> {
    let mut cascade = Cascade::new(t.agents, &t.models.base);
    cascade.group_size = t.group_size;
    cascade.synthesize = t.synthesize;
    cascade.refine = t.refine as usize;
    cascade.continue_truncated = t.continue_truncated as usize;
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
            models,
            group_size: 5,
            synthesize: SynthesizeMode::Auto,
            refine: 0,
            continue_truncated: 0,
        };
        for p in from_task() {
            let o = (p.build.unwrap())(&team);
            assert_eq!(o.name(), p.name, "the orchestrator of `{}` names itself so", p.name);
        }
        assert!(runnable("saga").unwrap_err().contains("needs more than a task"));
        assert!(runnable("pyramid").unwrap_err().contains("unknown pattern `pyramid`"));
    }
}
