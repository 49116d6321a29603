//! The cascade's decomposition: a task split into subtasks by the decomposer model,
//! following a [`Strategy`], with dependencies between the subtasks, checked and repaired
//! so that a bad plan from the model never fails the run.
//!
//! One call both chooses the strategy (`--strategy auto`) and decomposes: the reply is
//! `{"strategy": "...", "subtasks": [...]}`, the strategy an enum of the four. A separate
//! classification call would cost a round trip and a prompt of its own for a one-word
//! answer; the decomposer reads the task either way, and the strategies' guidance fits in
//! one paragraph of its prompt. With an explicit strategy the enum has that one value.
//!
//! What happens to the reply, in order:
//! 1. **Quality check**: empty subtasks and duplicates (same words, case and punctuation
//!    aside) reject the plan (`plan_rejected`); the decomposer is asked once more in the
//!    same conversation, with the problems stated. A second bad plan keeps its good
//!    subtasks and the strategy's template fills in the rest (`plan_fallback`).
//! 2. **Size**: past the most subtasks asked, the first ones are kept; short of the fewest,
//!    the strategy's template tops the plan up (`plan_fallback`), as when the call fails.
//! 3. **Dependencies** (1-based subtask numbers in the reply, ids in the plan): those on
//!    unknown subtasks or on themselves are removed, and each cycle is broken by removing
//!    its dependency on a later subtask (`plan_repaired`). The engine then runs a subtask
//!    once its dependencies completed, with their outputs in its prompt.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ctx::{Ctx, StepError};
use crate::event::{EventKind, PlanSource};
use crate::llm::{CallHints, LlmRequest, Message, OutputSchema};
use crate::orchestrator::Plan;
use crate::plan::{PlanError, Subtask, Task, validate_plan};
use crate::step::{StepId, StepSpec, Tier};

/// How the decomposer splits a task (`--strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The decomposer chooses one of the others from the task, in the same call.
    #[default]
    Auto,
    /// The aspects of a topic: background, state, stakeholders, risks, outlook.
    Research,
    /// A software lifecycle: requirements, design, implementation, tests, operations.
    Software,
    /// A data analysis: framing, data, analyses, robustness, conclusions.
    Analysis,
    /// A plan of action: goals, resources, phases, risks, tracking.
    Planning,
}

impl Strategy {
    /// The strategies a plan can follow (all but `auto`).
    pub const CONCRETE: [Strategy; 4] =
        [Strategy::Research, Strategy::Software, Strategy::Analysis, Strategy::Planning];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Research => "research",
            Strategy::Software => "software",
            Strategy::Analysis => "analysis",
            Strategy::Planning => "planning",
        }
    }

    /// The strategy's paragraph of the decomposer's prompt.
    fn guidance(self) -> &'static str {
        match self {
            Strategy::Auto | Strategy::Research => {
                "research: cover the distinct aspects of the topic (background, current state, \
                 stakeholders, evidence, risks, outlook); subtasks are mostly independent."
            }
            Strategy::Software => {
                "software: follow the software lifecycle (requirements, architecture and interfaces, \
                 implementation of the components, tests, deployment, documentation); an \
                 implementation depends on the design it follows, tests on what they test."
            }
            Strategy::Analysis => {
                "analysis: frame the question, gather and clean the data, analyse it from several \
                 angles (trends, comparisons, drivers), check the findings' robustness and draw \
                 conclusions; analyses depend on the data, conclusions on the analyses."
            }
            Strategy::Planning => {
                "planning: set goals and constraints, assess resources and risks, lay out phases \
                 and milestones, assign responsibilities and define how progress is tracked; later \
                 steps depend on the earlier ones they build on."
            }
        }
    }

    /// The strategy's template: (aspect, specialist, index of an aspect it depends on).
    fn aspects(self) -> &'static [(&'static str, &'static str, Option<usize>)] {
        match self {
            Strategy::Auto | Strategy::Research => &RESEARCH,
            Strategy::Software => &SOFTWARE,
            Strategy::Analysis => &ANALYSIS,
            Strategy::Planning => &PLANNING,
        }
    }

    /// Template subtasks `from..to` (0-based) for `task`: one aspect of the strategy each,
    /// cycling with a part number once the aspects run out, with the template's
    /// dependencies among the subtasks in that range. The plan when the decomposer's reply
    /// is unusable (`auto` uses `research`'s).
    pub fn template(self, task: &str, from: usize, to: usize) -> Vec<Subtask> {
        let task = task.trim();
        let aspects = self.aspects();
        (from..to)
            .map(|i| {
                let (aspect, specialist, after) = aspects[i % aspects.len()];
                let round = i / aspects.len();
                let description = if round == 0 {
                    format!("{aspect}: {task}")
                } else {
                    format!("{aspect} (part {}): {task}", round + 1)
                };
                let mut s = Subtask::new((i + 1).to_string(), description).specialization(specialist);
                if let Some(d) = after.map(|a| round * aspects.len() + a).filter(|&d| d >= from) {
                    s.dependencies.push((d + 1).to_string());
                }
                s
            })
            .collect()
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Strategy::Auto),
            "research" => Ok(Strategy::Research),
            "software" => Ok(Strategy::Software),
            "analysis" => Ok(Strategy::Analysis),
            "planning" => Ok(Strategy::Planning),
            other => Err(format!(
                "`{other}` is not a strategy; use auto, research, software, analysis or planning"
            )),
        }
    }
}

type Aspect = (&'static str, &'static str, Option<usize>);

const RESEARCH: [Aspect; 15] = [
    ("Background, scope and key definitions", "researcher", None),
    ("Current state and recent developments", "analyst", None),
    ("Key stakeholders and their interests", "policy expert", None),
    ("Economic impact, costs and benefits", "economist", None),
    ("Risks, challenges and failure modes", "risk analyst", None),
    ("Opportunities and emerging applications", "strategist", None),
    ("Regulation, policy and governance", "policy expert", None),
    ("Technology and how it works in practice", "technologist", None),
    ("Case studies and real-world examples", "researcher", None),
    ("Future outlook over the next decade", "futurist", None),
    ("Ethical and social considerations", "ethicist", None),
    ("Implementation and adoption barriers", "consultant", None),
    ("Metrics and evidence of impact", "data scientist", None),
    ("Comparison with alternatives", "analyst", None),
    ("Open questions and research gaps", "researcher", None),
];

const SOFTWARE: [Aspect; 10] = [
    ("Requirements and acceptance criteria", "product analyst", None),
    ("Architecture, components and interfaces", "software architect", Some(0)),
    ("Implementation of the core components", "software engineer", Some(1)),
    ("Data model and storage", "data engineer", Some(1)),
    ("Tests and quality assurance", "QA engineer", Some(2)),
    ("Security review and threat model", "security engineer", Some(1)),
    ("Deployment, operations and monitoring", "DevOps engineer", Some(2)),
    ("Documentation and developer experience", "technical writer", Some(2)),
    ("Performance and scalability", "performance engineer", Some(2)),
    ("Maintenance and future evolution", "tech lead", None),
];

const ANALYSIS: [Aspect; 10] = [
    ("Question framing, scope and hypotheses", "analyst", None),
    ("Data sources and collection", "data engineer", Some(0)),
    ("Data quality and cleaning", "data scientist", Some(1)),
    ("Descriptive statistics and trends", "statistician", Some(2)),
    ("Comparisons and benchmarks", "analyst", Some(2)),
    ("Drivers and causal factors", "economist", Some(2)),
    ("Segments and outliers", "data scientist", Some(2)),
    ("Robustness and sensitivity checks", "statistician", Some(3)),
    ("Conclusions and recommendations", "consultant", Some(3)),
    ("Limitations and further analysis", "researcher", None),
];

const PLANNING: [Aspect; 10] = [
    ("Goals, scope and success criteria", "strategist", None),
    ("Constraints, resources and budget", "project manager", Some(0)),
    ("Stakeholders and responsibilities", "coordinator", Some(0)),
    ("Risks and contingencies", "risk analyst", Some(1)),
    ("Phases, milestones and timeline", "project manager", Some(1)),
    ("Dependencies and critical path", "planner", Some(4)),
    ("Communication plan", "communications lead", Some(2)),
    ("Progress tracking and metrics", "analyst", Some(4)),
    ("Launch and handover", "operations lead", Some(4)),
    ("Review and lessons learned", "consultant", None),
];

/// Template subtasks `from..to` of the research strategy (see [`Strategy::template`]).
pub fn template_subtasks(task: &str, from: usize, to: usize) -> Vec<Subtask> {
    Strategy::Research.template(task, from, to)
}

// ---------------------------------------------------------------------------------------
// Reading a reply

/// A subtask as read from a decomposer's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanItem {
    pub description: String,
    pub specialization: Option<String>,
    pub priority: Option<i32>,
    /// The numbers (or ids) of the subtasks this one depends on, as the reply wrote them.
    pub dependencies: Vec<String>,
}

/// Read subtasks from a model's reply, tolerantly: a JSON array (of objects or strings),
/// possibly inside a code fence or wrapped in an object such as `{"subtasks": [...]}`;
/// otherwise a numbered or bulleted list. Returns nothing when neither is found. Items
/// without a description are left out.
pub fn parse_plan(text: &str) -> Vec<PlanItem> {
    let mut items = parse_reply(text).1;
    items.retain(|i| !i.description.is_empty());
    items
}

/// The strategy a reply names (`{"strategy": ..., "subtasks": [...]}`), if any, and its
/// items, those with an empty description included (the quality check reports them).
fn parse_reply(text: &str) -> (Option<String>, Vec<PlanItem>) {
    let mut candidates: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(0, |i| i + 1);
        let Some(end) = after[body_start..].find("```") else { break };
        candidates.push(&after[body_start..body_start + end]);
        rest = &after[body_start + end + 3..];
    }
    candidates.push(text);
    for c in &candidates {
        if let Some((strategy, items)) = parse_json_plan(c)
            && !items.is_empty()
        {
            return (strategy, items);
        }
    }
    let items =
        candidates.iter().map(|c| parse_list_plan(c)).find(|items| !items.is_empty()).unwrap_or_default();
    (None, items)
}

fn parse_json_plan(text: &str) -> Option<(Option<String>, Vec<PlanItem>)> {
    use serde_json::Value;
    let array = |v: Value| -> Option<(Option<String>, Vec<Value>)> {
        match v {
            Value::Array(a) => Some((None, a)),
            Value::Object(mut o) => {
                let strategy = o.get("strategy").and_then(Value::as_str).map(str::to_string);
                ["subtasks", "tasks", "plan", "items"]
                    .iter()
                    .find_map(|k| o.remove(*k))
                    .and_then(|v| if let Value::Array(a) = v { Some((strategy, a)) } else { None })
            }
            _ => None,
        }
    };
    let slice = |open: char, close: char| -> Option<&str> {
        let (s, e) = (text.find(open)?, text.rfind(close)?);
        (s < e).then(|| &text[s..=e])
    };
    // The object first: its list would also parse as a bare array, without the strategy.
    let (strategy, values) = [slice('{', '}'), slice('[', ']')]
        .into_iter()
        .flatten()
        .find_map(|s| serde_json::from_str::<Value>(s).ok().and_then(array))?;
    Some((strategy, values.into_iter().filter_map(json_item).collect()))
}

/// One item of a JSON plan: a string, or an object with a description (possibly empty).
fn json_item(v: serde_json::Value) -> Option<PlanItem> {
    use serde_json::Value;
    let str_of = |o: &serde_json::Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| o.get(*k).and_then(Value::as_str)).map(|s| s.trim().to_string())
    };
    match v {
        Value::String(s) => Some(PlanItem {
            description: s.trim().to_string(),
            specialization: None,
            priority: None,
            dependencies: Vec::new(),
        }),
        Value::Object(o) => {
            let priority = o.get("priority").and_then(|p| {
                p.as_i64()
                    .or_else(|| p.as_f64().map(|f| f as i64))
                    .or_else(|| p.as_str()?.trim().parse().ok())
            });
            let dependencies = ["dependencies", "depends_on"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_array))
                .into_iter()
                .flatten()
                .filter_map(|d| match d {
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
                    _ => None,
                })
                .collect();
            Some(PlanItem {
                description: str_of(&o, &["description", "task", "subtask", "title", "name"])
                    .unwrap_or_default(),
                specialization: str_of(&o, &["specialization", "specialist", "role", "expert"])
                    .filter(|s| !s.is_empty()),
                priority: priority.map(|p| p.clamp(-1000, 1000) as i32),
                dependencies,
            })
        }
        _ => None,
    }
}

fn parse_list_plan(text: &str) -> Vec<PlanItem> {
    text.lines()
        .filter_map(|line| {
            let l = line.trim();
            let digits = l.chars().take_while(char::is_ascii_digit).count();
            let body = if digits > 0 {
                let rest = &l[digits..];
                rest.strip_prefix('.')
                    .or_else(|| rest.strip_prefix(')'))
                    .or_else(|| rest.strip_prefix(':'))?
            } else {
                l.strip_prefix("- ").or_else(|| l.strip_prefix("* ")).or_else(|| l.strip_prefix("• "))?
            };
            let body = body.trim().trim_matches('*').trim();
            (!body.is_empty()).then(|| PlanItem {
                description: body.to_string(),
                specialization: None,
                priority: None,
                dependencies: Vec::new(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Quality check and repair

/// A description reduced to its words, lower case: what two duplicates share.
fn normalized(description: &str) -> String {
    description
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What makes a plan unfit, in words (empty and duplicate subtasks, by 1-based number),
/// or `None` when it is fit.
pub fn quality_problems(items: &[PlanItem]) -> Option<String> {
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let key = normalized(&item.description);
        if key.is_empty() {
            problems.push(format!("subtask {} has an empty description", i + 1));
        } else if let Some(first) = seen.get(&key) {
            problems.push(format!("subtask {} repeats subtask {first}", i + 1));
        } else {
            seen.insert(key, i + 1);
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The unique, non-empty items of `items`, each with its 1-based number in `items`; a
/// dependency on a dropped duplicate is turned into one on the subtask it repeated.
fn keep_fit(items: Vec<PlanItem>) -> Vec<(usize, PlanItem)> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let key = normalized(&item.description);
        let number = (i + 1).to_string();
        if key.is_empty() {
            continue;
        }
        if let Some(first) = seen.get(&key) {
            alias.insert(number, first.clone());
            continue;
        }
        seen.insert(key, number);
        kept.push((i + 1, item));
    }
    for (_, item) in &mut kept {
        for d in &mut item.dependencies {
            if let Some(first) = alias.get(d.as_str()) {
                *d = first.clone();
            }
        }
    }
    kept
}

/// Remove the dependencies of `plan` that cannot stand: on unknown subtasks, on the
/// subtask itself, repeated ones, and one per cycle (its dependency on a later subtask)
/// until there is none. Returns the `(subtask, dependency)` pairs removed.
pub fn repair_dependencies(plan: &mut [Subtask]) -> Vec<(String, String)> {
    let position: HashMap<String, usize> = plan.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
    let mut removed = Vec::new();
    for s in plan.iter_mut() {
        let mut kept: Vec<String> = Vec::with_capacity(s.dependencies.len());
        for d in std::mem::take(&mut s.dependencies) {
            if d == s.id || !position.contains_key(&d) || kept.contains(&d) {
                removed.push((s.id.clone(), d));
            } else {
                kept.push(d);
            }
        }
        s.dependencies = kept;
    }
    // Each round removes one edge, so this ends; the bound guards against a plan whose
    // other faults (duplicate ids) validate_plan reports before cycles.
    let edges: usize = plan.iter().map(|s| s.dependencies.len()).sum();
    for _ in 0..=edges {
        let Err(PlanError::Cycle(path)) = validate_plan(plan) else { break };
        // path[k] depends on path[k + 1]; a plan lists prerequisites first, so the edge
        // to drop is a dependency on a later subtask (a cycle always has one).
        let pairs: Vec<(&String, &String)> = path.windows(2).map(|w| (&w[0], &w[1])).collect();
        let later = |(a, b): &(&String, &String)| position.get(*b) > position.get(*a);
        let Some(&(from, to)) = pairs.iter().find(|p| later(p)).or(pairs.last()) else { break };
        let (from, to) = (from.clone(), to.clone());
        if let Some(&i) = position.get(&from) {
            plan[i].dependencies.retain(|d| *d != to);
        }
        removed.push((from, to));
    }
    removed
}

// ---------------------------------------------------------------------------------------
// The decomposition

/// A decomposition's settings: the decomposer model's, how many subtasks, the strategy.
#[derive(Debug, Clone)]
pub struct Decomposer {
    pub model: Arc<str>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// The fewest subtasks; equal to `max` for an exact number.
    pub min: usize,
    pub max: usize,
    pub strategy: Strategy,
}

/// A parsed reply: the strategy it names and its items.
struct Reply {
    text: String,
    strategy: Option<String>,
    items: Vec<PlanItem>,
}

impl Decomposer {
    /// The plan for `task` (see the [module docs](self)). Fails only when the run is
    /// stopping (budget, cancel); every other problem is repaired or filled in.
    pub async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        let step = StepId::new("decompose");
        let request = self.request(task);
        let (reply, problem) = match self.ask(ctx, "decompose", request.clone()).await? {
            Ok(reply) => match quality_problems(&reply.items) {
                None => (Some(reply), None),
                Some(reason) => {
                    ctx.emit_event(
                        Some(&step),
                        EventKind::PlanRejected { reason: reason.clone(), attempt: 1 },
                    );
                    self.ask_again(ctx, request, reply, &reason).await?
                }
            },
            Err(reason) => (None, Some(reason)),
        };
        let strategy = self.strategy_of(reply.as_ref());
        ctx.emit_event(
            Some(&step),
            EventKind::StrategyChosen {
                strategy: strategy.to_string(),
                auto: self.strategy == Strategy::Auto,
            },
        );
        let items = reply.map(|r| keep_fit(r.items)).unwrap_or_default();
        let mut subtasks = self.subtasks(ctx, &step, items);
        let from_model = subtasks.len();
        let problem = problem.or_else(|| match from_model {
            0 => Some("the decomposer's reply held no usable subtasks".to_string()),
            k if k < self.min && self.min == self.max => {
                Some(format!("the decomposer gave {k} of {} subtasks", self.min))
            }
            k if k < self.min => {
                Some(format!("the decomposer gave {k} subtasks, fewer than the {} asked", self.min))
            }
            _ => None,
        });
        if let Some(reason) = problem {
            let to = self.min.max(from_model);
            ctx.emit_event(Some(&step), EventKind::PlanFallback { reason, templated: to - from_model });
            subtasks.extend(strategy.template(&task.description, from_model, to));
        }
        let source = if from_model == 0 { PlanSource::Template } else { PlanSource::Model };
        Ok(Plan { subtasks, source })
    }

    /// The decomposer's reply on step `id`, parsed; `Err(reason)` when the call failed
    /// (the outer error: the run is stopping).
    async fn ask(
        &self,
        ctx: &Ctx,
        id: &str,
        request: LlmRequest,
    ) -> Result<Result<Reply, String>, StepError> {
        match ctx.llm(StepSpec::new(id, Tier::Decomposer), request).await {
            Ok(reply) => {
                let (strategy, items) = parse_reply(&reply.text);
                Ok(Ok(Reply { text: reply.text.to_string(), strategy, items }))
            }
            // A stopping run (budget, cancel) ends here; any other failure falls back.
            Err(e) if ctx.stopping().is_some() => Err(e),
            Err(e) => Ok(Err(format!("the decomposition call failed: {e}"))),
        }
    }

    /// The second and last request, after `first` was rejected for `reason`: the same
    /// conversation, the problems stated. Returns the reply to use (the better of the two)
    /// and, when the second is unfit too, why templates fill in.
    async fn ask_again(
        &self,
        ctx: &Ctx,
        mut request: LlmRequest,
        first: Reply,
        reason: &str,
    ) -> Result<(Option<Reply>, Option<String>), StepError> {
        request.messages.push(Message::assistant(first.text.clone()));
        request.messages.push(Message::user(format!(
            "That plan cannot be used: {reason}. Write the whole plan again as the same JSON object, \
             every subtask with its own distinct, non-empty description."
        )));
        let step = StepId::new("decompose/retry");
        let second = match self.ask(ctx, "decompose/retry", request).await? {
            Ok(second) => second,
            Err(failed) => return Ok((Some(first), Some(format!("{reason}; asked again, {failed}")))),
        };
        match quality_problems(&second.items) {
            None => Ok((Some(second), None)),
            Some(again) => {
                ctx.emit_event(Some(&step), EventKind::PlanRejected { reason: again.clone(), attempt: 2 });
                // The reply with more usable subtasks is kept; templates fill in the rest.
                let best = if keep_fit(second.items.clone()).len() > keep_fit(first.items.clone()).len() {
                    second
                } else {
                    first
                };
                Ok((Some(best), Some(format!("the plan was rejected twice: {again}"))))
            }
        }
    }

    /// The strategy the plan follows: the one asked for, else the model's choice, else
    /// research.
    fn strategy_of(&self, reply: Option<&Reply>) -> Strategy {
        if self.strategy != Strategy::Auto {
            return self.strategy;
        }
        reply
            .and_then(|r| r.strategy.as_deref())
            .and_then(|s| s.parse::<Strategy>().ok())
            .filter(|s| *s != Strategy::Auto)
            .unwrap_or(Strategy::Research)
    }

    /// The kept items as subtasks numbered from 1, at most `max`, their dependencies on
    /// the reply's numbers turned into ids and repaired (`plan_repaired`).
    fn subtasks(&self, ctx: &Ctx, step: &StepId, items: Vec<(usize, PlanItem)>) -> Vec<Subtask> {
        let total = items.len();
        let id_of: HashMap<String, String> = items
            .iter()
            .enumerate()
            .map(|(i, (number, _))| (number.to_string(), (i + 1).to_string()))
            .collect();
        // Dependencies on numbers that are no kept subtask (empty, unknown) are removed
        // here, before the renumbering could make them name another subtask.
        let mut removed = Vec::new();
        let mut subtasks: Vec<Subtask> = items
            .into_iter()
            .take(self.max)
            .enumerate()
            .map(|(i, (_, item))| {
                let id = (i + 1).to_string();
                let mut s = Subtask::new(id.clone(), item.description)
                    .specialization(item.specialization.unwrap_or_else(|| "general".into()))
                    .priority(item.priority.unwrap_or(0));
                for d in item.dependencies {
                    match id_of.get(&d) {
                        Some(dep) => s.dependencies.push(dep.clone()),
                        None => removed.push((id.clone(), d)),
                    }
                }
                s
            })
            .collect();
        removed.extend(repair_dependencies(&mut subtasks));
        if !removed.is_empty() || total > self.max {
            let mut reasons = Vec::new();
            if total > self.max {
                reasons
                    .push(format!("the decomposer gave {total} subtasks; the first {} are kept", self.max));
            }
            if !removed.is_empty() {
                let pairs: Vec<String> = removed.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
                reasons.push(format!(
                    "removed dependencies that were unknown, on the subtask itself or closed a cycle: {}",
                    pairs.join(", ")
                ));
            }
            ctx.emit_event(Some(step), EventKind::PlanRepaired { reason: reasons.join("; "), removed });
        }
        subtasks
    }

    /// The decomposition request: the prompt, the strategy's guidance and the schema of
    /// `{"strategy", "subtasks": [{description, specialization, priority, dependencies}]}`.
    pub fn request(&self, task: &Task) -> LlmRequest {
        let (min, max) = (self.min, self.max);
        let count = if min == max {
            format!("exactly {max}")
        } else {
            format!("between {min} and {max} (as many as the task needs)")
        };
        let choices: Vec<Strategy> =
            if self.strategy == Strategy::Auto { Strategy::CONCRETE.to_vec() } else { vec![self.strategy] };
        let guidance: Vec<String> = choices.iter().map(|s| format!("- {}", s.guidance())).collect();
        let strategy = if self.strategy == Strategy::Auto {
            "First choose the strategy that fits the task best:"
        } else {
            "Follow this strategy:"
        };
        let prompt = format!(
            "Task: {task}\n\n\
             Decompose the task into {count} subtasks that together cover it, each one well scoped \
             for a separate specialist. {strategy}\n{guidance}\n\n\
             Reply with only a JSON object {{\"strategy\": \"...\", \"subtasks\": [...]}} whose list \
             holds {count} objects, each with the keys \"description\" (one sentence, distinct from \
             the others), \"specialization\" (the kind of expert), \"priority\" (1-10, higher first) \
             and \"dependencies\" (the numbers, counting from 1, of earlier subtasks whose results \
             this one needs; [] when it needs none).",
            task = task.brief(),
            guidance = guidance.join("\n"),
        );
        let hints = if min == max {
            CallHints::plan(&task.brief(), max)
        } else {
            CallHints::plan_between(&task.brief(), min, max)
        };
        LlmRequest::new(self.model.clone(), prompt)
            .system("You are a planner who splits complex tasks into well-scoped subtasks.")
            .temperature(self.temperature)
            .max_tokens(self.max_tokens)
            .output_schema(plan_schema(&choices))
            .hints(hints)
    }
}

/// `{"strategy": one of `choices`, "subtasks": [{description, specialization, priority,
/// dependencies: [integer]}]}`, in strict form.
fn plan_schema(choices: &[Strategy]) -> OutputSchema {
    let names: Vec<&str> = choices.iter().map(|s| s.as_str()).collect();
    OutputSchema::new(
        "plan",
        serde_json::json!({
            "type": "object",
            "properties": {
                "strategy": { "type": "string", "enum": names },
                "subtasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "description": { "type": "string" },
                            "specialization": { "type": "string" },
                            "priority": { "type": "integer" },
                            "dependencies": { "type": "array", "items": { "type": "integer" } },
                        },
                        "required": ["description", "specialization", "priority", "dependencies"],
                        "additionalProperties": false,
                    },
                },
            },
            "required": ["strategy", "subtasks"],
            "additionalProperties": false,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_fenced_wrapped_and_lists() {
        let plain = r#"[{"description": "A", "specialization": "x", "priority": 3}, {"description": "B"}]"#;
        let items = parse_plan(plain);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].priority, Some(3));
        assert_eq!(items[0].specialization.as_deref(), Some("x"));

        let fenced = "Here is the plan:\n```json\n[\"one\", \"two\", \"three\"]\n```\nGood luck!";
        assert_eq!(parse_plan(fenced).len(), 3);

        let wrapped = r#"{"subtasks": [{"task": "a", "priority": "7"}]}"#;
        let items = parse_plan(wrapped);
        assert_eq!(items[0].description, "a");
        assert_eq!(items[0].priority, Some(7));

        let list = "Plan:\n1. First thing\n2) **Second thing**\n- third\nnot an item";
        let items = parse_plan(list);
        let d: Vec<&str> = items.iter().map(|i| i.description.as_str()).collect();
        assert_eq!(d, vec!["First thing", "Second thing", "third"]);

        assert!(parse_plan("I cannot help with that.").is_empty());
        assert!(parse_plan("[not json").is_empty());
    }

    #[test]
    fn reads_the_strategy_dependencies_and_empty_items() {
        let text = r#"{"strategy": "software", "subtasks": [
            {"description": "Design", "dependencies": []},
            {"description": "Build", "dependencies": [1, "1"]},
            {"description": "  ", "dependencies": [2]}]}"#;
        let (strategy, items) = parse_reply(text);
        assert_eq!(strategy.as_deref(), Some("software"));
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].dependencies, vec!["1", "1"]);
        assert_eq!(items[2].description, "");
        // The public reader leaves empty items out, as it always did.
        assert_eq!(parse_plan(text).len(), 2);
    }

    #[test]
    fn templates_cycle_with_parts() {
        let t = template_subtasks("AI in healthcare", 0, 20);
        assert_eq!(t.len(), 20);
        assert!(t[0].description.contains("AI in healthcare"));
        assert!(t[15].description.contains("(part 2)"));
        assert_eq!(t[19].id, "20");
        let ids: std::collections::HashSet<_> = t.iter().map(|s| &s.description).collect();
        assert_eq!(ids.len(), 20);
    }

    #[test]
    fn every_strategy_has_a_valid_template_with_its_own_aspects() {
        for s in Strategy::CONCRETE {
            for (from, to) in [(0, 3), (0, 12), (2, 7), (9, 25)] {
                let mut t = s.template("Ship the app", from, to);
                assert_eq!(t.len(), to - from);
                // Dependencies stay inside the range, so a topped-up plan validates.
                let mut plan = s.template("Ship the app", 0, from);
                plan.append(&mut t);
                assert!(validate_plan(&plan).is_ok(), "{s} {from}..{to}");
            }
        }
        let software = Strategy::Software.template("Ship the app", 0, 5);
        assert!(software[0].description.starts_with("Requirements"));
        assert_eq!(software[2].dependencies, vec!["2"], "implementation follows the architecture");
        assert!(Strategy::Research.template("x", 0, 15).iter().all(|s| s.dependencies.is_empty()));
        assert_ne!(
            Strategy::Analysis.template("x", 0, 1)[0].description,
            Strategy::Planning.template("x", 0, 1)[0].description
        );
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in
            [Strategy::Auto, Strategy::Research, Strategy::Software, Strategy::Analysis, Strategy::Planning]
        {
            assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
        }
        let e = "code".parse::<Strategy>().unwrap_err();
        assert!(e.contains("`code`") && e.contains("software"), "{e}");
    }

    fn item(d: &str, deps: &[&str]) -> PlanItem {
        PlanItem {
            description: d.into(),
            specialization: None,
            priority: None,
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_quality_check_names_empty_and_duplicate_subtasks() {
        assert_eq!(quality_problems(&[item("A", &[]), item("B", &[])]), None);
        let items = [item("Market size.", &[]), item(" ", &[]), item("market SIZE", &[]), item("C", &["3"])];
        let p = quality_problems(&items).unwrap();
        assert_eq!(p, "subtask 2 has an empty description; subtask 3 repeats subtask 1");
        let kept = keep_fit(items.to_vec());
        let numbers: Vec<usize> = kept.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, vec![1, 4]);
        assert_eq!(kept[1].1.dependencies, vec!["1"], "a dependency on a duplicate goes to its original");
    }

    #[test]
    fn repair_keeps_good_dependencies_and_breaks_cycles_at_a_later_subtask() {
        let mut plan = vec![
            Subtask::new("1", "a").depends_on(&["3"]),
            Subtask::new("2", "b").depends_on(&["1", "1", "2", "9"]),
            Subtask::new("3", "c").depends_on(&["2"]),
            Subtask::new("4", "d").depends_on(&["3"]),
        ];
        let removed = repair_dependencies(&mut plan);
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(removed, vec![pair("2", "1"), pair("2", "2"), pair("2", "9"), pair("1", "3")]);
        assert!(validate_plan(&plan).is_ok());
        assert!(plan[0].dependencies.is_empty());
        assert_eq!(plan[1].dependencies, vec!["1"]);
        assert_eq!(plan[2].dependencies, vec!["2"]);
        assert_eq!(plan[3].dependencies, vec!["3"]);
        let mut fine = vec![Subtask::new("1", "a"), Subtask::new("2", "b").depends_on(&["1"])];
        assert!(repair_dependencies(&mut fine).is_empty());
        assert_eq!(fine[1].dependencies, vec!["1"]);
    }

    mod runs {
        //! Whole cascades on the scripted provider, whose decomposer says what each test needs.

        use std::sync::Arc;

        use crate::event::{Event, EventKind, PlanSource};
        use crate::llm::LlmError;
        use crate::patterns::Cascade;
        use crate::patterns::decompose::Strategy;
        use crate::patterns::testkit::{options, record};
        use crate::plan::Task;
        use crate::result::{RunResult, RunStatus};
        use crate::run::run;
        use crate::testing::ScriptedProvider;

        async fn run_cascade(
            cascade: Cascade,
            provider: ScriptedProvider,
        ) -> (RunResult, Vec<Arc<Event>>, Arc<ScriptedProvider>) {
            let p = Arc::new(provider);
            let mut handle =
                run(cascade, Task::new("Build a todo app"), options(&p)).await.expect("run starts");
            let mut events = handle.events().expect("events");
            let result = handle.result().await;
            let mut all = Vec::new();
            while let Some(e) = events.recv().await {
                all.push(e);
            }
            (result, all, p)
        }

        fn kinds<'e>(events: &'e [Arc<Event>], name: &str) -> Vec<&'e EventKind> {
            events.iter().filter(|e| e.kind.type_name() == name).map(|e| &e.kind).collect()
        }

        fn plan_json(items: &[(&str, &[u32])]) -> String {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|(d, deps)| serde_json::json!({"description": d, "specialization": "x", "priority": 5, "dependencies": deps}))
                .collect();
            serde_json::json!({"strategy": "software", "subtasks": items}).to_string()
        }

        fn deps(r: &RunResult) -> Vec<Vec<&str>> {
            r.plan.iter().map(|s| s.dependencies.iter().map(String::as_str).collect()).collect()
        }

        #[tokio::test]
        async fn dependencies_from_the_model_are_kept_and_dependents_get_their_inputs() {
            let reply = plan_json(&[("Design", &[]), ("Build", &[1]), ("Test", &[1, 2])]);
            let p = ScriptedProvider::new("t").reply_for("decompose", &reply);
            let (r, events, _) = run_cascade(Cascade::new(3, "t/m"), p).await;
            assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
            assert_eq!(deps(&r), vec![vec![], vec!["1"], vec!["1", "2"]]);
            let inputs: Vec<&str> = record(&r, "worker/003").inputs.iter().map(|s| s.as_str()).collect();
            assert_eq!(inputs, vec!["worker/001", "worker/002"]);
            assert!(kinds(&events, "plan_repaired").is_empty());
            assert!(kinds(&events, "plan_fallback").is_empty());
        }

        #[tokio::test]
        async fn a_cycle_from_the_model_is_broken_with_a_plan_repaired_event() {
            let reply = plan_json(&[("Design", &[3]), ("Build", &[1, 7]), ("Test", &[2])]);
            let p = ScriptedProvider::new("t").reply_for("decompose", &reply);
            let (r, events, _) = run_cascade(Cascade::new(3, "t/m"), p).await;
            assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
            assert_eq!(deps(&r), vec![vec![], vec!["1"], vec!["2"]]);
            let repaired = kinds(&events, "plan_repaired");
            let [EventKind::PlanRepaired { reason, removed }] = repaired.as_slice() else {
                panic!("{repaired:?}")
            };
            let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
            assert_eq!(removed, &vec![pair("2", "7"), pair("1", "3")]);
            assert!(reason.contains("cycle"), "{reason}");
        }

        #[tokio::test]
        async fn duplicates_are_asked_for_again_once_and_the_second_plan_is_used() {
            let bad = plan_json(&[("Design it", &[]), ("design IT.", &[]), ("", &[])]);
            let good = plan_json(&[("Design", &[]), ("Build", &[1]), ("Test", &[2])]);
            let p =
                ScriptedProvider::new("t").reply_for("decompose/retry", &good).reply_for("decompose", &bad);
            let (r, events, p) = run_cascade(Cascade::new(3, "t/m"), p).await;
            assert_eq!(p.calls("decompose"), 1);
            assert_eq!(p.calls("decompose/retry"), 1);
            let rejected = kinds(&events, "plan_rejected");
            let [EventKind::PlanRejected { reason, attempt: 1 }] = rejected.as_slice() else {
                panic!("{rejected:?}")
            };
            assert_eq!(reason, "subtask 2 repeats subtask 1; subtask 3 has an empty description");
            assert!(kinds(&events, "plan_fallback").is_empty());
            let d: Vec<&str> = r.plan.iter().map(|s| s.description.as_str()).collect();
            assert_eq!(d, vec!["Design", "Build", "Test"]);
        }

        #[tokio::test]
        async fn a_plan_rejected_twice_keeps_its_good_subtasks_and_the_template_fills_in() {
            let bad = plan_json(&[("Design it", &[]), ("Build it", &[1]), ("design it", &[])]);
            let p = ScriptedProvider::new("t").reply_for("decompose", &bad);
            let mut cascade = Cascade::new(3, "t/m");
            cascade.strategy = Strategy::Software;
            let (r, events, p) = run_cascade(cascade, p).await;
            assert_eq!(p.calls("decompose/retry"), 1, "asked once more, not twice");
            let attempts: Vec<u32> = kinds(&events, "plan_rejected")
                .iter()
                .filter_map(|k| {
                    if let EventKind::PlanRejected { attempt, .. } = k { Some(*attempt) } else { None }
                })
                .collect();
            assert_eq!(attempts, vec![1, 2]);
            let fallback = kinds(&events, "plan_fallback");
            assert!(
                matches!(fallback.as_slice(), [EventKind::PlanFallback { templated: 1, .. }]),
                "{fallback:?}"
            );
            assert_eq!(r.plan.len(), 3);
            assert_eq!(r.plan[1].dependencies, vec!["1"]);
            // The software template's fourth aspect, at position 3.
            assert!(
                r.plan[2].description.starts_with("Implementation of the core components"),
                "{:?}",
                r.plan[2]
            );
        }

        #[tokio::test]
        async fn the_strategy_is_the_one_asked_for_or_the_models_choice() {
            let p =
                ScriptedProvider::new("t").always_fail("decompose", LlmError::InvalidRequest("no".into()));
            let mut cascade = Cascade::new(4, "t/m");
            cascade.strategy = Strategy::Planning;
            let (r, events, _) = run_cascade(cascade, p).await;
            let chosen = kinds(&events, "strategy_chosen");
            assert!(
                matches!(chosen.as_slice(), [EventKind::StrategyChosen { strategy, auto: false }] if strategy == "planning")
            );
            assert!(r.plan[0].description.starts_with("Goals, scope and success criteria"));
            assert_eq!(r.plan[1].dependencies, vec!["1"], "the planning template's dependencies");
            assert!(
                events
                    .iter()
                    .any(|e| matches!(&e.kind, EventKind::PlanReady { source: PlanSource::Template, .. }))
            );

            // Auto: the model names the strategy in its reply.
            let reply =
                plan_json(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])]).replace("software", "analysis");
            let p = ScriptedProvider::new("t").reply_for("decompose", &reply);
            let (_, events, _) = run_cascade(Cascade::new(4, "t/m"), p).await;
            let chosen = kinds(&events, "strategy_chosen");
            assert!(
                matches!(chosen.as_slice(), [EventKind::StrategyChosen { strategy, auto: true }] if strategy == "analysis"),
                "{chosen:?}"
            );

            // Auto, and the model failed: research's template.
            let p =
                ScriptedProvider::new("t").always_fail("decompose", LlmError::InvalidRequest("no".into()));
            let (r, events, _) = run_cascade(Cascade::new(2, "t/m"), p).await;
            let chosen = kinds(&events, "strategy_chosen");
            assert!(
                matches!(chosen.as_slice(), [EventKind::StrategyChosen { strategy, auto: true }] if strategy == "research")
            );
            assert!(r.plan[0].description.starts_with("Background, scope and key definitions"));
        }

        #[tokio::test]
        async fn between_min_and_max_the_models_count_stands_and_is_clamped_outside() {
            let range =
                |min: usize, max: usize| Cascade { min_agents: Some(min), ..Cascade::new(max, "t/m") };
            let items = |n: usize| -> String {
                let names: Vec<String> = (1..=n).map(|i| format!("Part {i}")).collect();
                let list: Vec<(&str, &[u32])> = names.iter().map(|s| (s.as_str(), &[][..])).collect();
                plan_json(&list)
            };
            let (r, events, _) =
                run_cascade(range(3, 6), ScriptedProvider::new("t").reply_for("decompose", &items(4))).await;
            assert_eq!(r.plan.len(), 4);
            assert!(kinds(&events, "plan_fallback").is_empty() && kinds(&events, "plan_repaired").is_empty());

            let (r, events, _) =
                run_cascade(range(3, 6), ScriptedProvider::new("t").reply_for("decompose", &items(9))).await;
            assert_eq!(r.plan.len(), 6, "at most max");
            let repaired = kinds(&events, "plan_repaired");
            assert!(
                matches!(repaired.as_slice(), [EventKind::PlanRepaired { reason, .. }] if reason.contains("first 6"))
            );

            let (r, events, _) =
                run_cascade(range(3, 6), ScriptedProvider::new("t").reply_for("decompose", &items(2))).await;
            assert_eq!(r.plan.len(), 3, "at least min");
            let fallback = kinds(&events, "plan_fallback");
            assert!(
                matches!(fallback.as_slice(), [EventKind::PlanFallback { templated: 1, reason }] if reason.contains("fewer than the 3")),
                "{fallback:?}"
            );

            let bad = Cascade { min_agents: Some(7), ..Cascade::new(6, "t/m") };
            let providers = crate::llm::Providers::new().with(Arc::new(ScriptedProvider::new("t")));
            let e = crate::Orchestrator::validate(&bad, &providers).unwrap_err();
            assert!(e.contains("1 to 6") && e.contains('7'), "{e}");
        }
    }
}
