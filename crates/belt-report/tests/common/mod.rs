//! Run results for the tests: one with rich Markdown, failures and retries, and one whose
//! model text is hostile to every output format.

#![allow(dead_code)]

use belt_core::RunResult;
use serde_json::json;

/// Markdown with every structure the reports must keep.
pub const RICH: &str = r#"*Simulated response: written offline by belt's simulated provider.*

# Executive summary

Remote monitoring **reduces readmissions** in *most* settings; see [the WHO report](https://www.who.int/reports/2024?a=1&b=2) and https://example.org/data.csv.

## Findings

1. Triage models cut waiting times
   - nested bullet with `inline code`
   - another nested bullet
2. Imaging assistants need local validation

| Region | Savings | Confidence |
|:--|--:|:-:|
| Europe | 12% | high |
| Asia-Pacific | 8% | medium |

> Quoted guidance from a clinician: keep a human in the loop.

```python
def total(xs):
    return sum(xs)
```

~~Obsolete claim~~ replaced by newer evidence.
"#;

/// Text that tries to break out of every format.
pub const HOSTILE: &str = r#"<script>alert('pwned')</script>

Plain #set page(width: 1pt) and #let x = 1 then ] and [ and $x^2$ and \ and \\ and */ and /* and // and "quotes" and <label> and @ref.

<img src=x onerror="alert(1)"> <iframe src="https://evil.example/"></iframe> <style>body{display:none}</style>

[click me](javascript:alert(1)) and ![tracker](http://evil.example/pixel.png) and [data](data:text/html,<script>alert(2)</script>)

= not a typst heading
- item with #emph[typst] and ]] closing
```typ
#panic("no")
```
Control characters: [\u{0}] [\u{1b}[31m] [\u{7}] end."#;

fn agent(
    step: &str,
    tier: &str,
    status: &str,
    output: Option<&str>,
    started: u64,
    duration: u64,
    cost: f64,
) -> serde_json::Value {
    json!({
        "step": step, "tier": tier, "status": status, "model": "openai/gpt-test",
        "inputs": [], "output": output, "error": null, "attempts": 1,
        "input_tokens": 120, "output_tokens": 640, "cost_usd": cost,
        "duration_ms": duration, "started_ms": started,
    })
}

/// A finished cascade of 4 workers (one failed after retries, one retried), 1 synthesizer
/// and an executive.
pub fn rich() -> RunResult {
    let hostile = HOSTILE.replace("\\u{0}", "\u{0}").replace("\\u{1b}", "\u{1b}").replace("\\u{7}", "\u{7}");
    let mut agents = vec![
        agent("decompose", "decomposer", "completed", Some("[]"), 0, 410, 0.0012),
        agent("worker/001", "worker", "completed", Some(RICH), 410, 820, 0.0021),
        agent("worker/002", "worker", "completed", Some(&hostile), 410, 640, 0.0019),
        agent("worker/003", "worker", "failed", None, 410, 1500, 0.0),
        agent(
            "worker/004",
            "worker",
            "completed",
            Some("## Costs\n\nCosts fall by a third (source: <https://example.org/costs>)."),
            410,
            990,
            0.0024,
        ),
        agent(
            "synth/1/001",
            "synthesizer",
            "completed",
            Some("## Synthesis\n\nThe workers agree on **monitoring**."),
            1910,
            700,
            0.0051,
        ),
        agent(
            "executive",
            "executive",
            "completed",
            Some("## Synthesis\n\nAI helps when validated locally."),
            2610,
            500,
            0.0033,
        ),
    ];
    agents[3]["error"] = json!("provider error 500: upstream | timeout\nafter 3 attempts");
    agents[3]["attempts"] = json!(3);
    agents[4]["attempts"] = json!(2);
    agents[5]["inputs"] = json!(["worker/001", "worker/002", "worker/004"]);
    agents[6]["inputs"] = json!(["synth/1/001"]);
    let plan: Vec<serde_json::Value> = [
        ("1", "Background: establish the key terms", "researcher"),
        ("2", "Risks | hostile <b>plan</b> #text", "risk analyst"),
        ("3", "Regulation in Europe", "policy expert"),
        ("4", "Costs and benefits", "economist"),
    ]
    .iter()
    .map(|(id, d, s)| json!({"id": id, "description": d, "specialization": s, "priority": 5, "dependencies": []}))
    .collect();
    let value = json!({
        "run_id": "01a1fd3e-0000-7000-8000-000000000001",
        "status": "partial",
        "stop_reason": "1 of 4 workers failed",
        "pattern": "cascade",
        "task": "Assess AI in healthcare <script>x</script> #set ] $",
        "plan": plan,
        "agents": agents,
        "final_output": format!("{RICH}\n\n## Closing\n\nThe final synthesis sentence: validate locally, then scale."),
        "usage": {"input_tokens": 840, "output_tokens": 4480, "calls": 10},
        "cost_usd": 0.016,
        "duration_ms": 3110,
        "documents": [],
        "simulated": false,
        "shape": [4, 1, 1],
        "started_at": "2026-11-21T07:14:55Z",
    });
    serde_json::from_value(value).expect("a valid RunResult")
}

/// A plain run of `workers` workers with simulated text, `groups` synthesizers and an
/// executive: the shape of `belt run --agents N`.
pub fn cascade(workers: usize) -> RunResult {
    let mut agents = vec![agent("decompose", "decomposer", "completed", Some("[]"), 0, 450, 0.0015)];
    let mut plan = Vec::new();
    let text = "## Findings\n\nA paragraph of findings that is long enough to wrap over a few lines of the page, \
                with **bold** and *emphasis*.\n\n- one point\n- another point\n\n**Key takeaway:** keep going.";
    for i in 1..=workers {
        let step = format!("worker/{i:03}");
        agents.push(agent(
            &step,
            "worker",
            "completed",
            Some(text),
            450 + (i as u64 % 7) * 30,
            300 + (i as u64 * 37) % 500,
            0.002,
        ));
        plan.push(json!({"id": i.to_string(), "description": format!("Subtask number {i}"), "specialization": "", "priority": 5, "dependencies": []}));
    }
    for g in 1..=(workers / 5).max(1) {
        agents.push(agent(
            &format!("synth/1/{g:03}"),
            "synthesizer",
            "completed",
            Some(text),
            1300,
            600,
            0.006,
        ));
    }
    agents.push(agent("executive", "executive", "completed", Some(text), 2000, 400, 0.004));
    let value = json!({
        "run_id": format!("01a1fd3e-0000-7000-8000-{workers:012}"),
        "status": "completed", "stop_reason": "all steps completed", "pattern": "cascade",
        "task": "Analyze the impact of AI on healthcare", "plan": plan, "agents": agents,
        "final_output": text, "usage": {"input_tokens": 1000, "output_tokens": 9000, "calls": workers + 3},
        "cost_usd": 0.05, "duration_ms": 2400, "documents": [], "simulated": true, "shape": [],
        "started_at": "2026-11-21T07:14:55Z",
    });
    serde_json::from_value(value).expect("a valid RunResult")
}

/// A run on a local model: `rich` with worker/001 and the executive answered by a model
/// without a price, and worker/002 and the executive cut off at their token cap.
pub fn local() -> RunResult {
    let mut v = serde_json::to_value(rich()).expect("a RunResult serializes");
    let agents = v["agents"].as_array_mut().expect("agents");
    for (i, unpriced, truncated) in [(1, true, false), (2, false, true), (6, true, true)] {
        let a = &mut agents[i];
        a["model"] = json!("llamacpp/qwen2.5-7b");
        if unpriced {
            a["unpriced"] = json!(true);
            a["cost_usd"] = json!(0.0);
        }
        a["finish_reason"] = json!(if truncated { "length" } else { "stop" });
    }
    v["usage"]["unpriced_calls"] = json!(2);
    v["cost_usd"] = json!(0.0127);
    serde_json::from_value(v).expect("a valid RunResult")
}
