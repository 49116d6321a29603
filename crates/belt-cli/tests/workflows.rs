//! End-to-end tests of workflow files: `belt init`, `belt validate`, `belt schema` and
//! `belt run -f`, driving the real binary in a temp dir on the simulated provider.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-workflows-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.join(name), text).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(dir: &Dir, args: &[&str]) -> Command {
    common::belt_command(&dir.0, &dir.join("home"), args)
}

fn belt(dir: &Dir, args: &[&str]) -> Output {
    command(dir, args).output().expect("run belt")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows").join(name);
    std::fs::read_to_string(path).unwrap()
}

const TEMPLATES: [(&str, &str); 4] = [
    ("research", "research.yaml"),
    ("pipeline", "pipeline.yaml"),
    ("review-dag", "review-dag.yaml"),
    ("support-router", "support-router.yaml"),
];

#[test]
fn init_writes_each_template_and_each_runs_as_is() {
    for (template, file) in TEMPLATES {
        let dir = Dir::new(template);
        let o = belt(&dir, &["init", "--template", template]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("belt run -f {file}")), "{}", stdout(&o));
        assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), example(file), "the example's text");

        // It is never overwritten by accident.
        std::fs::write(dir.join(file), "# mine\n").unwrap();
        let o = belt(&dir, &["init", "--template", template]);
        assert_eq!(code(&o), 2);
        assert!(stderr(&o).contains("already exists; pass --force"), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), "# mine\n");
        let o = belt(&dir, &["init", "--template", template, "--force"]);
        assert_eq!(code(&o), 0);
        assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), example(file));

        let o = belt(&dir, &["validate", file]);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("valid"), "{}", stdout(&o));

        let o = belt(
            &dir,
            &[
                "run",
                "-f",
                file,
                "--sim-latency-ms",
                "0",
                "--quiet",
                "--json",
                "--out",
                "out",
                "--events",
                "ev",
            ],
        );
        assert_eq!(code(&o), 0, "{template}: {}", stderr(&o));
        let r = json(&o);
        assert_eq!(r["status"], "completed", "{template}");
        assert_eq!(r["simulated"], true);
        let events = std::fs::read_to_string(dir.join("ev")).unwrap();
        let first: Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
        assert_eq!(
            (&first["type"], &first["simulated"]),
            (&"run_started".into(), &true.into()),
            "{template}"
        );
        assert!(!r["final_output"].as_str().unwrap_or("").is_empty());
        let reports: Vec<_> = std::fs::read_dir(dir.join("out")).unwrap().collect();
        assert!(!reports.is_empty(), "{template} wrote its report");
    }
    let dir = Dir::new("unknown-template");
    let o = belt(&dir, &["init", "--template", "nope"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("research, pipeline, review-dag, support-router"), "{}", stderr(&o));
}

const FIVE_MISTAKES: &str = "\
name: five
inputs:
  topic: {default: rust}
agents:
  - id: writer
    rol: a writer
    model: simulatd/default
pattern: dag
steps:
  - id: draft
    agent: writr
    prompt: Write about {{ inputs.topik }}.
  - id: review
    agent: writer
    needs: [polish]
    prompt: Review {{ steps.draft.output }}
  - id: polish
    agent: writer
    needs: [review]
    prompt: Polish.
";

#[test]
fn validate_lists_every_mistake_with_line_and_column() {
    let dir = Dir::new("validate");
    dir.write("five.yaml", FIVE_MISTAKES);
    let o = belt(&dir, &["validate", "five.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "five.yaml:6:5: agents[0].rol: unknown key `rol` (did you mean `role`?)\n\
         five.yaml:7:12: agents[0].model: unknown provider `simulatd` in `simulatd/default` (did you mean `simulated`?)\n\
         five.yaml:11:12: steps[0].agent: unknown agent `writr` (did you mean `writer`?)\n\
         five.yaml:12:13: steps[0].prompt: the template uses `inputs.topik`, which is not a declared input (did you mean `topic`?)\n\
         five.yaml:15:13: steps[1].needs[0]: dependency cycle: review -> polish -> review (a step cannot wait, directly or not, for itself; remove one of these needs)\n"
    );
    assert!(stderr(&o).contains("5 errors"), "{}", stderr(&o));

    let o = belt(&dir, &["validate", "five.yaml", "--json"]);
    assert_eq!(code(&o), 2);
    let d = json(&o);
    assert_eq!(d.as_array().unwrap().len(), 5);
    assert_eq!(d[2]["key"], "steps[0].agent");
    assert_eq!(d[2]["line"], 11);
    assert_eq!(d[2]["column"], 12);

    // `belt run -f` refuses the same file before any call.
    let o = belt(&dir, &["run", "-f", "five.yaml", "--quiet"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("five.yaml has 5 errors; nothing was run"), "{}", stderr(&o));
    assert!(stderr(&o).contains("five.yaml:11:12: steps[0].agent"), "{}", stderr(&o));
}

#[test]
fn inputs_are_required_typed_and_used() {
    let dir = Dir::new("inputs");
    dir.write(
        "brief.toml",
        "name = \"brief\"\ndescription = \"A brief on {{ inputs.topic }}\"\npattern = \"sequential\"\n\n\
         [inputs.topic]\ndescription = \"the subject\"\n\n[inputs.words]\ntype = \"integer\"\ndefault = 100\n\n\
         [[steps]]\nid = \"title\"\nprompt = \"{{ inputs.topic | title }} in {{ inputs.words }} words\"\n",
    );
    let o = belt(&dir, &["run", "-f", "brief.toml", "--quiet"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("brief.toml:5:9: inputs.topic: the required input `topic` (the subject) is missing (pass --input topic=…)"),
        "{}",
        stderr(&o)
    );
    let o = belt(&dir, &["validate", "brief.toml", "--input", "topic=x", "--input", "words=many"]);
    assert_eq!(code(&o), 2);
    assert!(stdout(&o).contains("input `words`: `many` is not an integer"), "{}", stdout(&o));
    let o = belt(&dir, &["validate", "brief.toml"]);
    assert_eq!(code(&o), 0, "without --input, a required input is not a mistake of the file: {}", stdout(&o));

    let o = belt(
        &dir,
        &["run", "-f", "brief.toml", "--input", "topic=solar power", "--quiet", "--json", "--out", "out"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["task"], "A brief on solar power");
    assert_eq!(r["final_output"], "Solar Power in 100 words");
    assert_eq!(r["pattern"], "brief");

    let o = belt(&dir, &["run", "a task", "--input", "topic=x"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("use it with -f FILE"), "{}", stderr(&o));
    let o = belt(&dir, &["run", "-f", "brief.toml", "--input", "topic"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("is not KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn schema_is_json_schema_of_the_format() {
    let dir = Dir::new("schema");
    let o = belt(&dir, &["schema"]);
    assert_eq!(code(&o), 0);
    let s = json(&o);
    assert_eq!(s["title"], "WorkflowFile");
    assert!(s["$schema"].as_str().unwrap().contains("json-schema.org"));
    let props = s["properties"].as_object().unwrap();
    for key in ["name", "inputs", "defaults", "budget", "providers", "agents", "pattern", "steps", "outputs"]
    {
        assert!(props.contains_key(key), "{key}");
    }
    assert_eq!(s["additionalProperties"], false, "unknown keys are errors");
    let step = &s["$defs"]["StepDef"]["properties"];
    for key in ["id", "agent", "prompt", "needs", "when", "loop", "route"] {
        assert!(step.get(key).is_some(), "step key {key}");
    }
    let agent = &s["$defs"]["AgentDef"]["properties"];
    for key in ["id", "role", "model", "system", "temperature", "tools", "output_schema"] {
        assert!(agent.get(key).is_some(), "agent key {key}");
    }
}

#[test]
fn hostile_files_are_refused_with_a_clear_error() {
    let dir = Dir::new("hostile");
    let mut bomb = String::from(
        "name: x\npattern: dag\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    dir.write("bomb.yaml", &bomb);
    let o = belt(&dir, &["validate", "bomb.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stdout(&o).starts_with("bomb.yaml:"), "{}", stdout(&o));
    assert!(stdout(&o).contains("alias"), "{}", stdout(&o));

    dir.write(
        "deep.yaml",
        &format!("name: x\npattern: dag\nsteps: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    );
    let o = belt(&dir, &["validate", "deep.yaml"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("deep.yaml:3:"), "{}", stdout(&o));

    dir.write("huge.yaml", &format!("name: x\npattern: dag\ndescription: '{}'\n", "a".repeat(2 << 20)));
    let o = belt(&dir, &["validate", "huge.yaml"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("limited to 1048576 bytes"), "{}", stderr(&o));
}

/// Provider calls per StepId, from a simulated call log.
fn calls(log: &Path) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let step = line.split_whitespace().next().unwrap_or_default().to_string();
        *m.entry(step).or_default() += 1;
    }
    m
}

#[test]
fn a_killed_workflow_run_resumes_from_its_recorded_file() {
    let args = [
        "run",
        "-f",
        "pipeline.yaml",
        // Slow enough that the run is still going when the poll below sees its first step,
        // however loaded the machine (each poll starts a belt process).
        "--sim-latency-ms",
        "1500",
        "--seed",
        "3",
        "--quiet",
        "--json",
        "--out",
        "out",
    ];
    let reference = Dir::new("resume-reference");
    reference.write("pipeline.yaml", &example("pipeline.yaml"));
    let full = belt(&reference, &args);
    assert_eq!(code(&full), 0, "{}", stderr(&full));
    let full = json(&full);

    let dir = Dir::new("resume");
    dir.write("pipeline.yaml", &example("pipeline.yaml"));
    let mut child = command(&dir, &args).env("BELT_SIM_CALL_LOG", dir.join("before.log")).spawn().unwrap();
    // Kill it once its first step is on record (a generous deadline: on a machine busy with
    // other builds, starting each polling process can take seconds).
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_id = loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = common::wait(child, Duration::from_secs(10));
            panic!("the first step was never recorded; the run said: {}", common::stderr(&out));
        }
        // One process per poll (the list has each run's status and recorded steps), so a
        // loaded machine still polls well within a step's 1.5 s.
        let list = json(&belt(&dir, &["runs", "list", "--json"]));
        if let Some(id) = list[0]["run_id"].as_str() {
            assert_eq!(list[0]["status"], "running", "the run ended before it could be killed");
            if list[0]["steps"].as_u64().is_some_and(|n| n > 0) {
                break id.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // The file changes after the run started: the resume runs the recorded text.
    dir.write("pipeline.yaml", "name: broken\n");

    let resumed = command(&dir, &["resume", &run_id, "--quiet", "--json"])
        .env("BELT_SIM_CALL_LOG", dir.join("after.log"))
        .output()
        .unwrap();
    assert_eq!(code(&resumed), 0, "{}", stderr(&resumed));
    let resumed = json(&resumed);
    assert_eq!(resumed["status"], "completed");
    assert_eq!(resumed["run_id"].as_str().unwrap(), run_id);
    assert_eq!(resumed["final_output"], full["final_output"], "the same end as an uninterrupted run");
    assert_eq!(resumed["usage"], full["usage"], "each call counted once");
    let again = calls(&dir.join("after.log"));
    assert!(!again.contains_key("steps/outline"), "the recorded step was not called again: {again:?}");
    assert!(again.contains_key("steps/edit"), "{again:?}");
}

/// A workflow run's progress lines name the workflow's own steps, not the cascade's plan and
/// workers the engine wraps them in (`plan ready (orchestrator): 1 subtasks`, `workers: 1
/// started` for a three-step router).
#[test]
fn a_workflow_run_shows_its_own_steps() {
    let dir = Dir::new("own-steps");
    std::fs::write(dir.join("router.yaml"), example("support-router.yaml")).unwrap();
    let o = belt(&dir, &["run", "-f", "router.yaml", "--sim-latency-ms", "0", "--out", "out"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("belt: steps/classify (triage) done in "), "{err}");
    let routed = err.lines().filter(|l| l.contains(") done in ")).count();
    assert_eq!(routed, 2, "the classifier and the one route it chose: {err}");
    for cascade in ["plan ready", "subtasks", "workers:"] {
        assert!(!err.contains(cascade), "`{cascade}` in a workflow's progress: {err}");
    }

    // A cascade still shows its plan and workers, counted in words that agree with the number.
    let o = belt(&dir, &["run", "Name a river", "--agents", "1", "--sim-latency-ms", "0", "--out", "out"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("plan ready (model): 1 subtask; tiers 1\n"), "{err}");
    assert!(err.contains("workers: 1 started"), "{err}");
}
