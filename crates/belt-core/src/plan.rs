//! Tasks and plans: what a run is asked to do and how it is split into subtasks.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub description: String,
}

impl Task {
    pub fn new(description: impl Into<String>) -> Self {
        Task { description: description.into() }
    }
}

/// One unit of work in a plan. Unknown keys are refused (a misspelled `dependencies` would
/// otherwise be a plan without them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subtask {
    /// Unique within the plan, at most 128 characters, no `/`, `\`, control characters, `.`
    /// or `..`. Numbers are accepted in JSON and kept as text; a missing id becomes the
    /// subtask's 1-based position (an empty one is refused). Not yet numbered (empty), it is
    /// left out of the JSON, so that the JSON reads back as the same subtask.
    #[serde(default, deserialize_with = "string_or_number", skip_serializing_if = "String::is_empty")]
    #[schemars(with = "String")]
    pub id: String,
    pub description: String,
    #[serde(default = "default_specialization")]
    pub specialization: String,
    /// Higher runs first among subtasks that are ready at the same time.
    #[serde(default)]
    pub priority: i32,
    /// Ids of subtasks whose outputs this one needs; it starts once they complete.
    #[serde(default, alias = "depends_on", deserialize_with = "strings_or_numbers")]
    #[schemars(with = "Vec<String>")]
    pub dependencies: Vec<String>,
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
        }
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

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id: String = IdRepr::deserialize(d)?.into();
    if id.trim().is_empty() {
        return Err(serde::de::Error::custom(
            "an empty subtask id; leave `id` out to number the subtask by its position",
        ));
    }
    Ok(id)
}

fn strings_or_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<IdRepr>::deserialize(d)?.into_iter().map(String::from).collect())
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
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(plan.len());
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
    for root in 0..plan.len() {
        if colour[root] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
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
