//! Tasks and plans: what a run is asked to do and how it is split into subtasks.

use std::borrow::Cow;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// What the user asked for: a description and, optionally, a free-form JSON context (the
/// facts, constraints or settings of this run). Agents see the context rendered under the
/// task ([`Task::brief`]); patterns read it by path ([`crate::Ctx::context`],
/// [`context_at`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub description: String,
    /// A JSON string is background text; an object or array is structured context.
    /// Left out of the JSON when absent, so a task without one serializes as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

impl Task {
    pub fn new(description: impl Into<String>) -> Self {
        Task { description: description.into(), context: None }
    }

    /// The same task with `context` (`null` is no context).
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = (!context.is_null()).then_some(context);
        self
    }

    /// What agents are told the task is: the description, and the context rendered under
    /// `Context:` when there is one. A text context reads exactly as the task with its
    /// context appended did before structured contexts existed, so prompts of runs
    /// recorded then hash the same on resume.
    pub fn brief(&self) -> Cow<'_, str> {
        let task = self.description.trim();
        match self.context.as_ref().map(render_context) {
            Some(context) if !context.trim().is_empty() => {
                Cow::Owned(format!("{task}\n\nContext:\n{}", context.trim()))
            }
            _ => Cow::Borrowed(task),
        }
    }
}

/// A context as agents read it: a string as it is, anything else as indented JSON.
pub fn render_context(context: &Value) -> Cow<'_, str> {
    match context {
        Value::String(text) => Cow::Borrowed(text),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(serde_json::to_string_pretty(other).unwrap_or_default()),
    }
}

/// The value at `path` in `context`: a dotted path (`customer.tier`, `items.0`) or a JSON
/// pointer (`/customer/tier`). `None` when nothing is there.
pub fn context_at<'a>(context: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    if path.starts_with('/') {
        return context.pointer(path);
    }
    let path = path.strip_prefix("context.").unwrap_or(path);
    if path.is_empty() || path == "context" {
        return Some(context);
    }
    path.split('.').try_fold(context, |value, key| match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A context value as a word to compare or route on: a string as it is, `true`, `42`…
/// (`None` for null, objects and arrays).
pub fn context_word(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One unit of work in a plan. Unknown keys are refused (a misspelled `dependencies` would
/// otherwise be a plan without them); every key but `description` may be `null`, which
/// means the same as leaving it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subtask {
    /// Unique within the plan, at most 128 characters, no `/`, `\`, control characters, `.`
    /// or `..`. Numbers are accepted in JSON and kept as text; a missing id becomes the
    /// subtask's 1-based position (an empty one is refused). Not yet numbered (empty), it is
    /// left out of the JSON, so that the JSON reads back as the same subtask.
    #[serde(default, deserialize_with = "string_or_number", skip_serializing_if = "String::is_empty")]
    #[schemars(with = "Option<String>")]
    pub id: String,
    pub description: String,
    /// The kind of expert the subtask needs (default `general`).
    #[serde(default = "default_specialization", deserialize_with = "specialization_or_null")]
    #[schemars(with = "Option<String>")]
    pub specialization: String,
    /// Higher runs first among subtasks that are ready at the same time.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(with = "Option<i32>")]
    pub priority: i32,
    /// Ids of subtasks whose outputs this one needs; it starts once they complete.
    #[serde(default, alias = "depends_on", deserialize_with = "strings_or_numbers")]
    #[schemars(with = "Option<Vec<String>>")]
    pub dependencies: Vec<String>,
    /// The kind of agent meant to run the subtask (`researcher`, `analyst`…), as the plan
    /// names it; the worker is told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// Free-form JSON for this subtask alone (facts, inputs, settings); its worker sees it
    /// rendered under the subtask. Boxed: rarely set, and a JSON value is 72 bytes that
    /// every subtask of a plan would otherwise carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Value>")]
    pub context: Option<Box<Value>>,
}

fn default_specialization() -> String {
    "general".to_string()
}

impl Subtask {
    pub fn new(id: impl Into<String>, description: impl Into<String>) -> Self {
        Subtask {
            id: id.into(),
            description: description.into(),
            specialization: default_specialization(),
            priority: 0,
            dependencies: Vec::new(),
            agent_type: None,
            context: None,
        }
    }
    /// The same subtask with `context` (`null` is no context).
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = (!context.is_null()).then(|| Box::new(context));
        self
    }
    /// What a worker is told of the subtask beyond its description: its agent type and its
    /// context, one section each (empty when it has neither, so such prompts are as before).
    pub fn details(&self) -> String {
        let mut out = String::new();
        if let Some(kind) = self.agent_type.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            out.push_str(&format!("Agent type: {kind}\n"));
        }
        if let Some(context) = self.context.as_deref().map(render_context)
            && !context.trim().is_empty()
        {
            out.push_str(&format!("Subtask context:\n{}\n", context.trim()));
        }
        out
    }
    pub fn agent_type(mut self, agent_type: impl Into<String>) -> Self {
        self.agent_type = Some(agent_type.into());
        self
    }
    pub fn specialization(mut self, s: impl Into<String>) -> Self {
        self.specialization = s.into();
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
    pub fn depends_on(mut self, ids: &[&str]) -> Self {
        self.dependencies = ids.iter().map(|s| s.to_string()).collect();
        self
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdRepr {
    S(String),
    N(i64),
}

impl From<IdRepr> for String {
    fn from(v: IdRepr) -> String {
        match v {
            IdRepr::S(s) => s,
            IdRepr::N(n) => n.to_string(),
        }
    }
}

/// An id, or `null` (no id: numbered by position).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let Some(id) = Option::<IdRepr>::deserialize(d)? else { return Ok(String::new()) };
    let id: String = id.into();
    if id.trim().is_empty() {
        return Err(serde::de::Error::custom(
            "an empty subtask id; leave `id` out to number the subtask by its position",
        ));
    }
    Ok(id)
}

fn strings_or_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<IdRepr>>::deserialize(d)?.unwrap_or_default().into_iter().map(String::from).collect())
}

/// A value, or its default for `null` (plans written by tools that spell "not set" as null).
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn specialization_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(default_specialization))
}

/// A plan that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("the plan is empty; give at least one subtask")]
    Empty,
    #[error("subtask {index} has an empty description")]
    EmptyDescription { index: usize },
    #[error("subtask id `{0}` appears more than once; ids must be unique")]
    DuplicateId(String),
    #[error("subtask `{subtask}` depends on `{dependency}`, which is not in the plan (ids: {known})")]
    UnknownDependency { subtask: String, dependency: String, known: String },
    #[error("the plan has a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("subtask id {id:?} cannot be used: {why}")]
    BadId { id: String, why: &'static str },
}

/// The longest subtask id.
pub const MAX_ID_CHARS: usize = 128;

/// Why `id` cannot name a subtask, if it cannot: ids end up in step ids, file names of
/// reports and logs, so they hold no path separators or control characters.
fn bad_id(id: &str) -> Option<&'static str> {
    if id.chars().count() > MAX_ID_CHARS {
        Some("ids are at most 128 characters")
    } else if id.chars().any(char::is_control) {
        Some("ids hold no control characters")
    } else if id.contains(['/', '\\']) {
        Some("ids hold no `/` or `\\`")
    } else if id == "." || id == ".." {
        Some("`.` and `..` are not ids")
    } else {
        None
    }
}

/// Fill missing ids with positions, then check ids, dependencies and cycles.
pub fn normalize_plan(plan: &mut [Subtask]) -> Result<(), PlanError> {
    if plan.is_empty() {
        return Err(PlanError::Empty);
    }
    for (i, s) in plan.iter_mut().enumerate() {
        if s.id.trim().is_empty() {
            s.id = (i + 1).to_string();
        }
        if s.description.trim().is_empty() {
            return Err(PlanError::EmptyDescription { index: i + 1 });
        }
    }
    validate_plan(plan)
}

/// Check that ids are unique, every dependency exists, and there is no cycle.
pub fn validate_plan(plan: &[Subtask]) -> Result<(), PlanError> {
    // Fx: ids are hashed once per subtask and dependency; SipHash's resistance to chosen keys
    // buys nothing for a map that lives for this call and answers yes or no.
    let mut index: FxHashMap<&str, usize> =
        FxHashMap::with_capacity_and_hasher(plan.len(), Default::default());
    for (i, s) in plan.iter().enumerate() {
        if let Some(why) = bad_id(&s.id) {
            return Err(PlanError::BadId { id: s.id.clone(), why });
        }
        if index.insert(s.id.as_str(), i).is_some() {
            return Err(PlanError::DuplicateId(s.id.clone()));
        }
    }
    for s in plan {
        for d in &s.dependencies {
            if !index.contains_key(d.as_str()) {
                let mut known: Vec<&str> = plan.iter().map(|s| s.id.as_str()).take(20).collect();
                if plan.len() > 20 {
                    known.push("…");
                }
                return Err(PlanError::UnknownDependency {
                    subtask: s.id.clone(),
                    dependency: d.clone(),
                    known: known.join(", "),
                });
            }
        }
    }
    // Iterative depth-first search with colours; on a back edge, the cycle is the part of
    // the current path from the target onwards.
    let deps: Vec<Vec<usize>> =
        plan.iter().map(|s| s.dependencies.iter().map(|d| index[d.as_str()]).collect()).collect();
    let mut colour = vec![0u8; plan.len()]; // 0 new, 1 on the path, 2 done
    // One path for every root: it is empty again when a root's search ends.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..plan.len() {
        if colour[root] != 0 {
            continue;
        }
        path.push((root, 0));
        colour[root] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match colour[dep] {
                    0 => {
                        colour[dep] = 1;
                        path.push((dep, 0));
                    }
                    1 => {
                        let start = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[start..].iter().map(|&(n, _)| plan[n].id.clone()).collect();
                        cycle.push(plan[dep].id.clone());
                        return Err(PlanError::Cycle(cycle));
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                path.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_strings_and_fills_ids() {
        let mut plan: Vec<Subtask> = serde_json::from_str(
            r#"[{"id": 1, "description": "a"}, {"description": "b", "dependencies": [1]},
                {"id": "x", "description": "c", "depends_on": ["2"], "priority": 3}]"#,
        )
        .unwrap();
        normalize_plan(&mut plan).unwrap();
        assert_eq!(plan[0].id, "1");
        assert_eq!(plan[1].id, "2");
        assert_eq!(plan[1].dependencies, vec!["1"]);
        assert_eq!(plan[2].dependencies, vec!["2"]);
        assert_eq!(plan[2].priority, 3);
        assert_eq!(plan[0].specialization, "general");
    }

    #[test]
    fn a_plan_keeps_agent_type_and_context_and_reads_null_as_left_out() {
        let plan: Vec<Subtask> = serde_json::from_str(
            r#"[{"id": null, "description": "a", "specialization": null, "priority": null,
                 "dependencies": null, "agent_type": "researcher", "context": {"region": "EU"}},
                {"description": "b", "depends_on": null, "agent_type": null, "context": null}]"#,
        )
        .unwrap();
        assert_eq!(plan[0].id, "");
        assert_eq!((plan[0].specialization.as_str(), plan[0].priority), ("general", 0));
        assert!(plan[0].dependencies.is_empty() && plan[1].dependencies.is_empty());
        assert_eq!(plan[0].agent_type.as_deref(), Some("researcher"));
        assert_eq!(plan[0].context.as_deref(), Some(&serde_json::json!({"region": "EU"})));
        assert_eq!((&plan[1].agent_type, &plan[1].context), (&None, &None));
        // Kept through a record (JSON) and shown to the worker.
        let back: Vec<Subtask> = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
        let details = plan[0].details();
        assert!(
            details.contains("Agent type: researcher") && details.contains("\"region\": \"EU\""),
            "{details}"
        );
        assert_eq!(plan[1].details(), "");
        // The description is not optional, and a key the plan does not know is named.
        let e = serde_json::from_str::<Vec<Subtask>>(r#"[{"description": null}]"#).unwrap_err();
        assert!(e.to_string().contains("invalid type: null"), "{e}");
        let e = serde_json::from_str::<Vec<Subtask>>(r#"[{"description": "a", "agent": "x"}]"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `agent`") && e.to_string().contains("`agent_type`"),
            "{e}"
        );
    }

    #[test]
    fn a_task_brief_renders_its_context_and_paths_read_it() {
        let text = Task::new(" t ").with_context(serde_json::json!("Budget is tight. "));
        assert_eq!(text.brief(), "t\n\nContext:\nBudget is tight.");
        assert_eq!(Task::new("t").brief(), "t");
        assert_eq!(Task::new("t").with_context(serde_json::Value::Null).context, None);
        let cx = serde_json::json!({"customer": {"tier": "gold", "ids": [7, 9]}, "ok": true});
        let task = Task::new("t").with_context(cx.clone());
        assert!(task.brief().starts_with("t\n\nContext:\n{"), "{}", task.brief());
        assert_eq!(context_at(&cx, "customer.tier"), Some(&serde_json::json!("gold")));
        assert_eq!(context_at(&cx, "context.customer.ids.1"), Some(&serde_json::json!(9)));
        assert_eq!(context_at(&cx, "/customer/ids/0"), Some(&serde_json::json!(7)));
        assert_eq!(context_at(&cx, "customer.nope"), None);
        assert_eq!(context_word(&cx["ok"]).as_deref(), Some("true"));
        assert_eq!(context_word(&cx["customer"]), None);
        // A task without a context serializes as it did before contexts existed.
        assert_eq!(serde_json::to_string(&Task::new("t")).unwrap(), r#"{"description":"t"}"#);
    }

    #[test]
    fn refuses_unknown_keys_empty_ids_and_ids_that_are_paths() {
        let e = serde_json::from_str::<Vec<Subtask>>(r#"[{"description": "a", "dependences": ["b"]}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `dependences`") && e.contains("`dependencies`"), "{e}");
        let e = serde_json::from_str::<Vec<Subtask>>(r#"[{"id": " ", "description": "a"}]"#).unwrap_err();
        assert!(e.to_string().contains("empty subtask id"), "{e}");
        for id in ["../../etc/passwd", "a\u{0}b", "..", "a\\b"] {
            let err = validate_plan(&[Subtask::new(id, "x")]).unwrap_err();
            assert!(matches!(&err, PlanError::BadId { id: bad, .. } if bad == id), "{id:?}: {err}");
        }
        assert!(validate_plan(&[Subtask::new("x".repeat(129), "x")]).is_err());
        assert!(validate_plan(&[Subtask::new("data-2.v1_x", "x")]).is_ok());
    }

    #[test]
    fn rejects_unknown_dependency_naming_it() {
        let plan = vec![Subtask::new("a", "x"), Subtask::new("b", "y").depends_on(&["zz"])];
        let err = validate_plan(&plan).unwrap_err();
        assert!(matches!(&err, PlanError::UnknownDependency { dependency, .. } if dependency == "zz"));
        assert!(err.to_string().contains("`zz`"));
    }

    #[test]
    fn rejects_cycle_with_its_path() {
        let plan = vec![
            Subtask::new("a", "x"),
            Subtask::new("b", "y").depends_on(&["a", "d"]),
            Subtask::new("c", "z").depends_on(&["b"]),
            Subtask::new("d", "w").depends_on(&["c"]),
        ];
        let err = validate_plan(&plan).unwrap_err();
        assert_eq!(err, PlanError::Cycle(vec!["b".into(), "d".into(), "c".into(), "b".into()]));
        assert_eq!(err.to_string(), "the plan has a dependency cycle: b -> d -> c -> b");
        let self_loop = vec![Subtask::new("a", "x").depends_on(&["a"])];
        assert_eq!(validate_plan(&self_loop).unwrap_err(), PlanError::Cycle(vec!["a".into(), "a".into()]));
    }

    #[test]
    fn a_subtask_not_yet_numbered_reads_back_as_itself() {
        // A plan file without ids, as a run records it before normalizing (issue 18: its
        // `"id": ""` was refused when `belt resume` read the run's definition back).
        let plan: Vec<Subtask> = serde_json::from_str(r#"[{"description": "a"}]"#).unwrap();
        let text = serde_json::to_string(&plan).unwrap();
        assert!(!text.contains("\"id\""), "{text}");
        assert_eq!(serde_json::from_str::<Vec<Subtask>>(&text).unwrap(), plan);
    }

    #[test]
    fn rejects_duplicates_and_empty() {
        assert_eq!(normalize_plan(&mut []).unwrap_err(), PlanError::Empty);
        let plan = vec![Subtask::new("a", "x"), Subtask::new("a", "y")];
        assert_eq!(validate_plan(&plan).unwrap_err(), PlanError::DuplicateId("a".into()));
    }

    mod properties {
        //! Plans from outside (a `--plan` file, a `plan` in a JSON body): whatever the text,
        //! parsing and checking end in a plan that can run or an error that says why.

        use super::*;
        use belt_testkit::proptest::prelude::*;
        use belt_testkit::{check, mutate};

        fn id() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => "[a-d]",
                1 => Just(String::new()),
                1 => Just(" ".to_string()),
                1 => prop::sample::select(&["..", ".", "a/b", "a\\b", "x\u{0}", "é"][..]).prop_map(String::from),
                1 => "\\PC{0,4}",
                1 => Just("x".repeat(129)),
            ]
        }

        fn subtask() -> impl Strategy<Value = Subtask> {
            (
                id(),
                prop_oneof![4 => "[a-z ]{1,8}", 1 => Just(" ".to_string())],
                any::<i32>(),
                prop::collection::vec(id(), 0..3),
            )
                .prop_map(|(id, description, priority, dependencies)| Subtask {
                    id,
                    description,
                    specialization: default_specialization(),
                    priority,
                    dependencies,
                    agent_type: None,
                    context: None,
                })
        }

        /// The ids of `plan` in an order where each comes after its dependencies, if there is one.
        fn topological(plan: &[Subtask]) -> Option<Vec<&str>> {
            let mut done: Vec<&str> = Vec::new();
            while done.len() < plan.len() {
                let next = plan.iter().find(|s| {
                    !done.contains(&s.id.as_str())
                        && s.dependencies.iter().all(|d| done.contains(&d.as_str()))
                })?;
                done.push(&next.id);
            }
            Some(done)
        }

        #[test]
        fn any_plan_is_normalized_into_a_runnable_one_or_refused_with_a_reason() {
            check(
                "plan normalization",
                256,
                || prop::collection::vec(subtask(), 0..8),
                |mut plan| {
                    let before = plan.clone();
                    match normalize_plan(&mut plan) {
                        Ok(()) => {
                            let ids: std::collections::HashSet<&str> =
                                plan.iter().map(|s| s.id.as_str()).collect();
                            prop_assert_eq!(ids.len(), plan.len(), "ids are unique");
                            prop_assert!(
                                plan.iter().all(|s| !s.id.trim().is_empty() && bad_id(&s.id).is_none())
                            );
                            prop_assert!(topological(&plan).is_some(), "no cycle: {:?}", plan);
                            // What is accepted is what a plan file of it reads back as.
                            let text = serde_json::to_string(&plan).unwrap();
                            let back: Vec<Subtask> = serde_json::from_str(&text).unwrap();
                            prop_assert_eq!(back, plan);
                        }
                        Err(e) => {
                            prop_assert!(!e.to_string().trim().is_empty());
                            if let PlanError::Cycle(path) = &e {
                                prop_assert!(path.len() >= 2 && path.first() == path.last(), "{:?}", path);
                                prop_assert!(topological(&before).is_none());
                            }
                        }
                    }
                    Ok(())
                },
            );
        }

        #[test]
        fn any_plan_text_parses_or_is_refused_with_a_reason() {
            let valid = r#"[
  {"id": "a", "description": "Collect the data", "specialization": "data", "priority": 2},
  {"id": 2, "description": "Analyze it", "dependencies": ["a"]},
  {"description": "Write it up", "depends_on": [2], "priority": -1}
]
"#;
            check(
                "plan files",
                256,
                || mutate::text(vec![valid.into()], &["\"id\"", "\"dependencies\"", "\"description\""]),
                |text| {
                    match serde_json::from_str::<Vec<Subtask>>(&text) {
                        Ok(mut plan) => {
                            if let Err(e) = normalize_plan(&mut plan) {
                                prop_assert!(!e.to_string().trim().is_empty());
                            }
                        }
                        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
                    }
                    Ok(())
                },
            );
        }
    }
}
