//! The file's keys for the run's time and limits: per-tier timeouts, the deadline, the
//! budget warning's threshold, `synthesize: no-executive` and `degrade`.

use std::collections::BTreeMap;
use std::time::Duration;

use belt_core::{RunOptions, SynthesizeMode, Tier};

use crate::{Format, ValidationContext, Workflow, WorkflowRun, check};

const FILE: &str = "\
name: limits
pattern: cascade
defaults: {timeout: 20, timeouts: {worker: 7, executive: 90}, deadline: 600}
budget: {calls: 50, warn_at: 0.5}
cascade: {task: Plan a park, agents: 12, synthesize: no-executive, degrade: true}
";

#[test]
fn the_time_and_limit_keys_reach_the_run() {
    let bound = Workflow::parse(FILE, Format::Yaml, "limits.yaml").unwrap().bind(BTreeMap::new()).unwrap();
    let mut options = RunOptions::default();
    bound.settings().apply(&mut options);
    assert_eq!(options.policies.for_tier(&Tier::Worker).timeout, Duration::from_secs(7));
    assert_eq!(options.policies.for_tier(&Tier::Executive).timeout, Duration::from_secs(90));
    assert_eq!(options.policies.for_tier(&Tier::Synthesizer).timeout, Duration::from_secs(20));
    assert_eq!(options.deadline, Some(Duration::from_secs(600)));
    assert_eq!(options.budget_warn_at, 0.5);
    let WorkflowRun::Cascade(cascade) = bound.orchestrator() else { panic!("a cascade") };
    assert_eq!(cascade.synthesize, SynthesizeMode::NoExecutive);
    assert_eq!(cascade.degrade, Some(crate::DEFAULT_DEGRADE_AT));
}

#[test]
fn values_out_of_range_are_validation_errors_with_their_line() {
    let bad = FILE
        .replace("worker: 7", "worker: -7")
        .replace("deadline: 600", "deadline: 0")
        .replace("warn_at: 0.5", "warn_at: 2")
        .replace("degrade: true", "degrade_at: 1.5");
    let d = check(&bad, Format::Yaml, "limits.yaml", &ValidationContext::default()).to_string();
    for key in ["defaults.timeouts.worker", "defaults.deadline", "budget.warn_at", "cascade.degrade_at"] {
        assert!(d.contains(key), "{key}: {d}");
    }
    assert!(d.contains("limits.yaml:3:"), "{d}");
}
