//! Command-line arguments.

use std::path::PathBuf;

use belt_core::SynthesizeMode;
use belt_store::StoreSpec;
use clap::{Args, Parser, Subcommand};

/// belt: run many LLM agents in parallel under hard limits and synthesize their work.
#[derive(Debug, Parser)]
#[command(name = "belt", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Where runs are kept: sqlite://PATH or memory [default: sqlite://$BELT_HOME/belt.db,
    /// BELT_HOME defaulting to the user's data directory]
    #[arg(long, global = true, env = "BELT_STORE", value_parser = parse_store)]
    pub store: Option<StoreSpec>,
    /// Configuration file: providers, limits, prices, default model
    /// [default: ./belt.toml, else $BELT_HOME/belt.toml, if present]
    #[arg(long, global = true, env = "BELT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// belt's own directory: the default store, belt.toml, the API token [default:
    /// $BELT_HOME, else the user's data directory]. For clients that start `belt mcp` with
    /// an environment of their own.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    #[command(flatten)]
    pub otel: crate::otel::OtelArgs,
    #[command(flatten)]
    pub log: crate::diagnostics::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_store(s: &str) -> Result<StoreSpec, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task: decompose it, run the agents, synthesize, and write a report.
    Run(Box<RunArgs>),
    /// Continue an interrupted or cancelled run: completed steps are replayed from the
    /// store, never paid for again.
    Resume(ResumeArgs),
    /// The runs in the store.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Steps that failed for good (the dead-letter queue).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Render the report of a finished run from the store, in any format.
    Report(ReportArgs),
    /// Check a workflow file: every mistake, each as file:line:column: key: message (hint).
    /// Exit 0 when valid, 2 when not.
    Validate(crate::workflow_cmd::ValidateArgs),
    /// Print the JSON Schema of workflow files (for editor completion and checks).
    Schema,
    /// Write a commented starter workflow into the current directory.
    Init(crate::workflow_cmd::InitArgs),
    /// The pattern library: every pattern with one line, and which `--pattern` runs.
    Patterns {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API, live event streams and the dashboard (see the README's
    /// "`belt serve` and MCP" section).
    Serve(ServeArgs),
    /// Be an MCP server on stdin/stdout: belt's runs as tools for an AI assistant
    /// (Claude Desktop, IDEs). See the README's "`belt serve` and MCP" section.
    Mcp(McpArgs),
    /// Drive runs from a shared store (PostgreSQL, or one SQLite file on this host): queued
    /// runs, and runs whose process died, resumed from their record. SIGTERM hands the runs
    /// back after their calls in flight. See the README's "Running on several machines".
    Worker(WorkerArgs),
    /// Budget pools: what every run drawing from each has spent and holds reserved.
    #[command(subcommand)]
    Budget(BudgetCommand),
    /// Check this machine's setup: belt.toml, providers and which API keys are set, local
    /// model servers (which answer, their models), the store, the API token. One line each,
    /// ok/warn/fail with what to do; exit 0 when nothing failed.
    Doctor,
    /// Models with known prices and capabilities, which providers are ready, and the models
    /// of local servers that answer (llama.cpp, vLLM, LM Studio, Ollama).
    Models {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs BELT_API_TOKEN set.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub addr: String,
    /// Model of requests that name none [default: as `belt run` chooses]
    #[arg(short, long, env = "BELT_MODEL")]
    pub model: Option<String>,
    /// Runs executing at once; more wait in a queue.
    #[arg(long, default_value_t = 8)]
    pub max_runs: usize,
    /// Runs waiting for a slot; beyond that, new runs get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queued: usize,
    /// Requests per second per token (bursts of four times that).
    #[arg(long, default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Another host name `/mcp` may be reached by (the Host header is checked against
    /// loopback names and these, against DNS rebinding). Repeatable.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// POST every run event (but step_delta) to URL, signed with HMAC-SHA256 in
    /// X-Belt-Signature (key: BELT_WEBHOOK_SECRET, generated and printed when unset).
    /// Repeatable; more with POST /v1/webhooks.
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    /// Let webhooks target loopback, private and link-local addresses (refused by default,
    /// so that API clients cannot make the server call its own network).
    #[arg(long)]
    pub allow_private_webhooks: bool,
    /// Drive no runs here: an API node over a shared store (`--store postgres://…`) that
    /// queues runs for `belt worker`s and serves any run's state, documents and events.
    #[arg(long)]
    pub no_execute: bool,
    /// Let pages of ORIGIN (e.g. https://app.example.com) call the API from a browser
    /// (CORS). Repeatable; none by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs driven at once.
    #[arg(long, default_value_t = 4)]
    pub max_runs: usize,
    /// This worker's name in the runs' leases [default: the host name]
    #[arg(long)]
    pub name: Option<String>,
    /// Only say when the store is unavailable, not each run taken and ended.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct McpArgs {
    #[command(subcommand)]
    pub command: Option<McpCommand>,
    /// Model of requests that name none [default: as `belt run` chooses]
    #[arg(short, long, env = "BELT_MODEL")]
    pub model: Option<String>,
    /// Runs executing at once; more wait in a queue.
    #[arg(long, default_value_t = 4)]
    pub max_runs: usize,
}

/// `belt mcp …`: the MCP servers whose tools runs use.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// List an MCP server's tools: their names as models call them, descriptions and
    /// parameter schemas. NAME is a server of belt.toml's [mcp.NAME] or of --mcp.
    Tools {
        name: String,
        /// A server not in belt.toml, as NAME=COMMAND ARGS… or NAME=URL.
        #[arg(long, value_name = "NAME=COMMAND|URL")]
        mcp: Vec<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (see `belt runs list`).
    pub run_id: String,
    /// Finish a run that ended failed, partial or out of budget (after a provider outage,
    /// say): its completed steps are replayed, its failed and skipped ones run again, and a
    /// new result is recorded.
    #[arg(long)]
    pub retry_failed: bool,
    /// Directory for the report [default: the run's own --out]
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write every event of this resumption as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Print the RunResult as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run (see `belt runs list`).
    pub run_id: String,
    /// Formats, comma-separated: md, html, pdf, docx, or all.
    #[arg(short, long, value_name = "FORMATS", default_value = "md", value_parser = parse_formats)]
    pub format: String,
    /// Directory for the documents.
    #[arg(short, long, value_name = "DIR", default_value = "belt-out")]
    pub out: PathBuf,
}

/// Check a `--format` list (md, html, pdf, docx, all) and keep it as written.
pub fn parse_formats(s: &str) -> Result<String, String> {
    belt_app::parse_formats(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Recent runs: status, pattern, task, steps, cost, duration, start.
    List {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
        /// How many, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One run: its steps by tier with status, tokens, cost and time.
    Show {
        run_id: String,
        /// The RunResult (or, for an unfinished run, its recorded steps) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A run's events as JSON lines.
    Events {
        run_id: String,
        /// Keep printing new events until the run finishes.
        #[arg(long)]
        follow: bool,
    },
    /// A run's steps as a waterfall on one time axis: queued, waiting to retry, in the call;
    /// tool calls under their agent; totals per tier.
    Trace {
        run_id: String,
        /// The same as JSON: every step's start, end and where its time went.
        #[arg(long)]
        json: bool,
        /// Columns to draw in (default: the terminal's width, or 80).
        #[arg(long)]
        width: Option<usize>,
    },
    /// A finished run's RunResult as JSON.
    Export { run_id: String },
    /// Delete a run with its steps and events.
    Rm { run_id: String },
    /// Cancel a queued or running run, whichever process drives it (it sees the request at
    /// its next heartbeat, within a few seconds).
    Cancel { run_id: String },
}

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Each pool's day and month: spent, reserved by calls in flight, and its caps.
    Show {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Steps that failed for good, with their errors.
    List {
        /// As a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Call a dead-lettered step again with its recorded request, as a run of its own;
    /// on success the letter is removed.
    Retry {
        /// The letter's id (see `belt dlq list`).
        id: u64,
        /// The RunResult of the retry as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The arguments of `belt run`: translated into a [`belt_app::RunSpec`] (by
/// `run_cmd::spec`), which the store records and `belt resume` runs again. Values are
/// checked there, once for every front end; clap only reads their types. An option left out
/// stays `None`, so that a workflow file's own setting applies under it.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// What the agents should do, e.g. "Analyze the impact of AI on healthcare".
    #[arg(required_unless_present = "file", default_value = "", hide_default_value = true)]
    pub task: String,
    /// Context every agent sees with the task: text (a brief, facts, constraints), JSON
    /// (`{"tier": "gold"}`: structured context, read by workflow templates as
    /// `context.*`), or a file holding either.
    #[arg(long, value_name = "FILE|JSON|TEXT")]
    pub context: Option<String>,

    /// Run a workflow file (YAML or TOML; see `belt init`) instead of a task.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "task")]
    pub file: Option<PathBuf>,
    /// An input of the workflow file, as KEY=VALUE (repeatable).
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub input: Vec<String>,

    /// Number of worker agents (subtasks), 1-100000 [default: 5]
    #[arg(short = 'n', long, allow_negative_numbers = true)]
    pub agents: Option<u32>,
    // Smarter decomposition (issue 16).
    /// The fewest worker agents: the decomposer chooses how many, from --min-agents to
    /// --max-agents (cascade) [default: 1]
    #[arg(long, value_name = "N", conflicts_with = "agents", allow_negative_numbers = true)]
    pub min_agents: Option<u32>,
    /// The most worker agents, the decomposer choosing how many (cascade) [default: the
    /// larger of --min-agents and 5]
    #[arg(long, value_name = "N", conflicts_with = "agents", allow_negative_numbers = true)]
    pub max_agents: Option<u32>,
    /// How the task is decomposed: auto (the decomposer chooses from the task), research,
    /// software, analysis or planning (cascade) [default: auto]
    #[arg(long, value_parser = parse_strategy)]
    pub strategy: Option<belt_core::Strategy>,

    /// Orchestration pattern: cascade, swarm, iterative, dynamic or coder (`belt patterns` lists
    /// them all; the others run from Rust and workflow files) [default: cascade]
    #[arg(long)]
    pub pattern: Option<String>,
    /// Critique-and-revise rounds, 0-20: for the cascade, over its final synthesis
    /// [default: 0]; for `--pattern iterative`, the most drafts [default there: 3].
    #[arg(long, value_name = "N")]
    pub refine: Option<u32>,
    /// Ask a worker cut off by its token cap to continue where it stopped, up to N times,
    /// 0-5 (cascade) [default: 0]. A truncated step is marked in the summary either way.
    #[arg(long, value_name = "N")]
    pub continue_truncated: Option<u32>,

    /// Tools the workers may call, comma-separated or repeated: `web` (web_search and
    /// fetch_url), `web_search`, `fetch_url`, `run_code` (Python or sh in a sandbox),
    /// `calculator`, `clock`, an MCP server's name (all its tools) or SERVER.TOOL
    #[arg(long, value_name = "NAMES")]
    pub tools: Vec<String>,
    /// Tools the synthesizers may call (names as for --tools)
    #[arg(long, value_name = "NAMES")]
    pub synthesizer_tools: Vec<String>,
    /// Tools the executive may call (names as for --tools)
    #[arg(long, value_name = "NAMES")]
    pub executive_tools: Vec<String>,
    /// An MCP server for this run, as NAME=COMMAND ARGS… (stdio) or NAME=URL (Streamable
    /// HTTP), repeatable; its tools are offered with --tools NAME. belt.toml's [mcp.NAME]
    /// declares servers for every run
    #[arg(long, value_name = "NAME=COMMAND|URL")]
    pub mcp: Vec<String>,
    /// Seconds one tool call may take [default: 60, or the server's `timeout`]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub tool_timeout: Option<f64>,

    /// Model for every tier, as provider/model [default: $BELT_MODEL, else the first provider
    /// whose API key is set, else a local Ollama, else simulated/default]. With -f FILE it
    /// takes the place of the file's `defaults.model`; $BELT_MODEL only fills in where the
    /// file names no model
    #[arg(short, long)]
    pub model: Option<String>,
    /// Model for the workers (overrides --model; with -f FILE, a cascade's or swarm's
    /// `defaults.models.worker` or swarm `model`).
    #[arg(long)]
    pub worker_model: Option<String>,
    /// Model for the synthesizers (overrides --model; with -f FILE, a cascade's).
    #[arg(long)]
    pub synthesizer_model: Option<String>,
    /// Model for the executive (overrides --model; with -f FILE, a cascade's).
    #[arg(long)]
    pub executive_model: Option<String>,

    /// Most LLM calls in flight at once [default: 16]
    #[arg(short, long, allow_negative_numbers = true)]
    pub concurrency: Option<u32>,
    /// Run the subtasks one at a time, in priority order.
    #[arg(long)]
    pub sequential: bool,
    /// Seconds one attempt of a step may take, for every tier
    /// (default: 180 workers, 240 synthesizers, 300 executive).
    #[arg(long, allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    /// Retries of a step after a retryable error (timeout, 429, 5xx, connection) [default: 2]
    #[arg(long, allow_negative_numbers = true)]
    pub retries: Option<u32>,
    // Time limits (issue 16).
    /// Time one attempt of a worker may take, over --timeout (e.g. 90, 90s, 2m)
    /// [default: 180s]. A step whose attempts time out ends `timed_out`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub worker_timeout: Option<f64>,
    /// Time one attempt of a synthesizer may take, over --timeout [default: 240s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub synthesizer_timeout: Option<f64>,
    /// Time one attempt of the executive may take, over --timeout [default: 300s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub executive_timeout: Option<f64>,
    /// Time the whole run may take (e.g. 600s, 10m, 1h): then no new step starts, the calls
    /// in flight are cancelled, and the run ends partial (exit 3) with what it has and the
    /// reason.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub deadline: Option<f64>,
    /// Degrade gracefully (cascade): when too many workers or synthesizers fail, fall to a
    /// cascade without synthesizers, then to a single agent, instead of failing; each fall
    /// an event and a line of the report.
    #[arg(long)]
    pub degrade: bool,
    /// The share of a tier's failed steps at which --degrade falls a level, 0-1 (sets
    /// --degrade) [default: 0.3]
    #[arg(long, value_name = "SHARE", value_parser = parse_share, allow_negative_numbers = true)]
    pub degrade_at: Option<f64>,
    /// Switch the workers to this faster model when their provider signals load (3 calls
    /// answered 429 or slower than --slow-call)
    #[arg(long, value_name = "MODEL")]
    pub fast_model: Option<String>,
    /// A worker's call slower than this is a sign of load, for --fast-model [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_negative_numbers = true)]
    pub slow_call: Option<f64>,
    /// Workers per synthesizer, 2-1000 [default: 5]
    #[arg(long, allow_negative_numbers = true)]
    pub group_size: Option<u32>,
    /// auto: as the tier shape says; always: also an executive over fewer than
    /// group-size workers; never: no synthesis, the report combines the workers' outputs;
    /// no-executive: the synthesizers run, their outputs combined without an executive
    /// [default: auto]
    #[arg(long, value_parser = parse_synthesize)]
    pub synthesize: Option<SynthesizeMode>,
    /// Fail the run without paying for synthesis when fewer than this fraction of the
    /// workers succeed [default: 0.5]
    #[arg(long, allow_negative_numbers = true)]
    pub min_success: Option<f64>,

    /// Stop starting calls before the cost would pass this many US dollars.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_usd: Option<f64>,
    /// Stop starting calls before the tokens (input + output) would pass this.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_tokens: Option<u64>,
    /// Stop starting calls after this many provider calls (retries count).
    #[arg(long, allow_negative_numbers = true)]
    pub budget_calls: Option<u64>,
    /// Also draw from this budget pool of belt.toml ([budget_pools.NAME]: caps per day and
    /// month that every run naming it shares, in every process of a PostgreSQL store).
    #[arg(long, value_name = "NAME")]
    pub budget_pool: Option<String>,
    /// Fire the `budget_warning` event when this share of a cap is spent: a fraction or a
    /// percentage (0.5, 50%) [default: 80%]
    #[arg(long, value_name = "SHARE", value_parser = parse_share, allow_negative_numbers = true)]
    pub budget_warn_at: Option<f64>,

    /// A JSON array of subtasks ({id, description, specialization, priority,
    /// dependencies}); their count sets the number of agents and decomposition is skipped.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Directory for the report [default: belt-out, or the workflow file's]
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Report formats, comma-separated: md, html, pdf, docx, or all [default: md]
    #[arg(long, value_name = "FORMATS")]
    pub format: Option<String>,
    /// Also write every event as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Print the RunResult as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Queue the run in the store for `belt worker`s and print its id, instead of running it
    /// here (follow it with `belt runs events --follow ID`).
    #[arg(long)]
    pub detach: bool,

    /// Ask for approval of the plan before any worker runs (on the terminal; see
    /// --approve-all for unattended runs). Rejected or unanswered, nothing more is paid for.
    #[arg(long)]
    pub review_plan: bool,
    /// Approve every approval request at once, and take the default of every other
    /// question (for unattended runs).
    #[arg(long)]
    pub approve_all: bool,
    /// Wait at most this many seconds for an answer to any question, then take its default.
    #[arg(long, value_name = "SECONDS")]
    pub hitl_timeout: Option<u64>,

    /// With OpenTelemetry export on, put the run into this W3C trace context (the caller's
    /// trace, under its span): 00-<32 hex>-<16 hex>-<2 hex>
    #[arg(long, env = "TRACEPARENT", value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,

    /// Serve identical requests from the store's response cache for this many seconds
    /// (hits cost nothing and are marked in events).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "86400")]
    pub cache: Option<u64>,

    /// Seed of the simulated provider (same seed, same texts) [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Fixed latency of the simulated provider in milliseconds (default: random 200-800).
    #[arg(long, allow_negative_numbers = true)]
    pub sim_latency_ms: Option<u64>,
    /// Fraction of simulated calls that fail (429, 500 or timeout), from 0 to 1 [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub sim_fail_rate: Option<f64>,
}

fn parse_strategy(s: &str) -> Result<belt_core::Strategy, String> {
    s.parse()
}

fn parse_synthesize(s: &str) -> Result<SynthesizeMode, String> {
    s.parse()
}

/// A duration in seconds, as `90`, `90s`, `1.5m`, `2h` or `500ms` (checked by belt-app).
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    number.trim().parse::<f64>().map(|n| n * scale).map_err(|_| {
        format!("`{s}` is not a duration; write seconds (90, 90s) or minutes (10m), hours (1h), ms (500ms)")
    })
}

/// A share of a cap, as a fraction (`0.5`) or a percentage (`50%`) (checked by belt-app).
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (t, 1.0),
    };
    number
        .trim()
        .parse::<f64>()
        .map(|n| n * scale)
        .map_err(|_| format!("`{s}` is not a share of a cap; write a fraction (0.5) or a percentage (50%)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shares_read_as_people_write_them() {
        for (text, secs) in [("600", 600.0), ("600s", 600.0), ("10m", 600.0), ("1h", 3600.0), ("250ms", 0.25)]
        {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        assert!(parse_duration("ten minutes").unwrap_err().contains("not a duration"));
        assert_eq!(parse_share("50%"), Ok(0.5));
        assert_eq!(parse_share("0.9"), Ok(0.9));
        assert!(parse_share("half").is_err());
    }
}
