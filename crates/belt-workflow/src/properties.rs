//! Property tests: workflow files as people and programs really send them — the examples
//! with bytes flipped, cut off, lines removed, doubled or swapped, stray keys — and text
//! that is not a workflow at all. Whatever the text: no panic, no hang; every mistake is a
//! diagnostic with a message and a place inside the file; a file that checks clean binds,
//! renders its task and runs (on the simulated provider, with a call cap) to an end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use belt_core::{Budget, RunOptions};
use belt_llm::SimConfig;
use belt_testkit::proptest::prelude::*;
use belt_testkit::{check, mutate};

use crate::{Diagnostics, Format, MAX_DEPTH, MAX_FILE_BYTES, ValidationContext, Workflow};

/// The example files, as the corpus to mutate.
fn examples() -> Vec<(String, Format)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let mut out: Vec<(String, Format)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let format = Format::from_path(&p)?;
            Some((std::fs::read_to_string(&p).unwrap(), format))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 7, "the examples are the corpus");
    out
}

/// Every diagnostic says something, about a place within `text` (0:0 is "unknown").
fn well_formed(d: &Diagnostics, text: &str) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count() as u64;
    for d in d.iter() {
        prop_assert!(!d.message.trim().is_empty(), "a diagnostic without a message: {:?}", d);
        prop_assert!(d.line <= lines, "{}:{} is past the last line ({})", d.line, d.column, lines);
        prop_assert!(!d.to_string().trim().is_empty());
    }
    Ok(())
}

/// Check `text` as `format`; when it is clean, bind it, render its task and run it. `true`
/// when it ran.
fn exercise(text: &str, format: Format, runtime: &tokio::runtime::Runtime) -> Result<bool, TestCaseError> {
    let cx = ValidationContext::default();
    let diagnostics = crate::check(text, format, "flow", &cx);
    well_formed(&diagnostics, text)?;
    let Ok(workflow) = Workflow::parse(text, format, "flow") else {
        prop_assert!(!diagnostics.is_empty(), "parse failed but check found nothing");
        return Ok(false);
    };
    if !diagnostics.is_empty() {
        return Ok(false);
    }
    // Every input given as "1": a number, a string and a choice of many files alike.
    let inputs: BTreeMap<String, String> =
        workflow.file().inputs.keys().map(|k| (k.clone(), "1".into())).collect();
    let bound = match workflow.bind(inputs) {
        Ok(b) => b,
        Err(d) => {
            prop_assert!(!d.is_empty());
            well_formed(&d, text)?;
            return Ok(false);
        }
    };
    let task = match bound.task() {
        Ok(t) => t,
        Err(e) => {
            prop_assert!(!e.trim().is_empty());
            return Ok(false);
        }
    };
    let mut options =
        RunOptions::default().with_providers(belt_llm::providers(SimConfig::default().latency_ms(0)));
    bound.settings().apply(&mut options);
    // A mutant may ask for 100,000 agents: a cap on calls keeps each case small, and running
    // into it is an end like any other.
    options.budget = Budget { max_calls: Some(64), ..Budget::default() }.or(options.budget);
    let result = runtime.block_on(async {
        let handle = belt_core::run(bound.orchestrator(), task, options).await;
        match handle {
            Ok(h) => Ok(h.result().await),
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Ok(r) => prop_assert!(r.usage.calls <= 64, "the cap held: {} calls", r.usage.calls),
        Err(e) => prop_assert!(!e.trim().is_empty()),
    }
    Ok(true)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

#[test]
fn mutated_examples_are_checked_without_panic_and_run_when_clean() {
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    check(
        "mutated workflow examples",
        256,
        || {
            let corpus = examples();
            let texts: Vec<String> = corpus.iter().map(|(t, _)| t.clone()).collect();
            (mutate::text(texts, &[]), any::<bool>())
        },
        move |(text, as_toml)| {
            let runtime = runtime();
            // Sniffing never panics; each text is read as what it sniffs as, and as the other.
            let sniffed = Format::sniff(&text);
            let mut ran = exercise(&text, sniffed, &runtime)?;
            let other = if as_toml { Format::Toml } else { Format::Yaml };
            if other != sniffed {
                ran |= exercise(&text, other, &runtime)?;
            }
            if ran {
                runs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    // Else the property never reached binding and running.
    assert!(seen.load(Ordering::Relaxed) > 0, "no mutant checked clean and ran");
}

#[test]
fn any_text_is_checked_without_panic() {
    check("arbitrary workflow text", 256, any::<String>, |text| {
        for format in [Format::Yaml, Format::Toml] {
            let d = crate::check(&text, format, "flow", &ValidationContext::default());
            well_formed(&d, &text)?;
        }
        Ok(())
    });
}

#[test]
fn files_over_the_size_limit_are_refused_with_the_limit_named() {
    check(
        "workflow size limit",
        16,
        || (0usize..2, -64i64..64, any::<bool>()),
        |(n, around, as_toml)| {
            let (base, _) = examples().swap_remove(n);
            // The example padded with a comment to the limit, give or take a few bytes.
            let target = (MAX_FILE_BYTES as i64 + around) as usize;
            let mut text = base.clone();
            text.push('#');
            text.push_str(&"x".repeat(target.saturating_sub(text.len())));
            text.push('\n');
            let format = if as_toml { Format::Toml } else { Format::Yaml };
            let d = crate::check(&text, format, "flow", &ValidationContext::default());
            let refused = d.iter().any(|d| d.message.contains("limited to 1048576 bytes"));
            prop_assert_eq!(refused, text.len() > MAX_FILE_BYTES, "{} bytes: {}", text.len(), d);
            Ok(())
        },
    );
}

#[test]
fn nesting_past_the_limit_is_refused_and_never_overflows_the_stack() {
    check(
        "workflow nesting limit",
        64,
        || (1usize..4 * MAX_DEPTH, any::<bool>(), any::<bool>()),
        |(depth, as_toml, maps)| {
            let (open, close) = if maps { ("{a = ", "}") } else { ("[", "]") };
            let (open, close) = if !as_toml && maps { ("{a: ", "}") } else { (open, close) };
            let inner = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let (text, format) = if as_toml {
                (format!("name = \"n\"\npattern = \"sequential\"\nx = {inner}\n"), Format::Toml)
            } else {
                (format!("name: n\npattern: sequential\nx: {inner}\n"), Format::Yaml)
            };
            // Sniffing reads TOML before the size and depth checks: it must survive it too.
            let _ = Format::sniff(&text);
            let d = crate::check(&text, format, "flow", &ValidationContext::default());
            well_formed(&d, &text)?;
            prop_assert!(!d.is_empty(), "`x` is not a key of the format");
            if depth + 1 > MAX_DEPTH {
                prop_assert!(
                    d.iter().any(|d| d.message.contains("deeper")
                        || d.message.contains("nest")
                        || d.message.contains("depth")),
                    "depth {}: {}",
                    depth,
                    d
                );
            }
            Ok(())
        },
    );
}
