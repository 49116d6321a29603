//! Command-line arguments.

use std::path::PathBuf;

use belt_core::SynthesizeMode;
use clap::{Args, Parser, Subcommand};

/// belt: run many LLM agents in parallel under hard limits and synthesize their work.
#[derive(Debug, Parser)]
#[command(name = "belt", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task: decompose it, run the agents, synthesize, and write a report.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// What the agents should do, e.g. "Analyze the impact of AI on healthcare".
    pub task: String,

    /// Number of worker agents (subtasks).
    #[arg(short = 'n', long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=100_000), allow_negative_numbers = true)]
    pub agents: i64,

    /// Orchestration pattern.
    #[arg(long, default_value = "cascade")]
    pub pattern: String,

    /// Model for every tier, as provider/model (default: $BELT_MODEL, else simulated/default).
    #[arg(short, long, env = "BELT_MODEL")]
    pub model: Option<String>,
    /// Model for the workers (overrides --model).
    #[arg(long)]
    pub worker_model: Option<String>,
    /// Model for the synthesizers (overrides --model).
    #[arg(long)]
    pub synthesizer_model: Option<String>,
    /// Model for the executive (overrides --model).
    #[arg(long)]
    pub executive_model: Option<String>,

    /// Most LLM calls in flight at once.
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(i64).range(1..=100_000), allow_negative_numbers = true)]
    pub concurrency: i64,
    /// Run the subtasks one at a time, in priority order.
    #[arg(long)]
    pub sequential: bool,
    /// Seconds one attempt of a step may take, for every tier
    /// (default: 180 workers, 240 synthesizers, 300 executive).
    #[arg(long, allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    /// Retries of a step after a retryable error (timeout, 429, 5xx, connection).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    pub retries: u32,
    /// Workers per synthesizer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(2..=1000), allow_negative_numbers = true)]
    pub group_size: i64,
    /// auto: as the tier shape says; always: also an executive over fewer than
    /// group-size workers; never: no synthesis, the report combines the workers' outputs.
    #[arg(long, default_value = "auto", value_parser = parse_synthesize)]
    pub synthesize: SynthesizeMode,
    /// Fail the run without paying for synthesis when fewer than this fraction of the
    /// workers succeed.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub min_success: f64,

    /// Stop starting calls before the cost would pass this many US dollars.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_usd: Option<f64>,
    /// Stop starting calls before the tokens (input + output) would pass this.
    #[arg(long, allow_negative_numbers = true)]
    pub budget_tokens: Option<u64>,
    /// Stop starting calls after this many provider calls (retries count).
    #[arg(long, allow_negative_numbers = true)]
    pub budget_calls: Option<u64>,

    /// A JSON array of subtasks ({id, description, specialization, priority,
    /// dependencies}); their count sets the number of agents and decomposition is skipped.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Directory for the report.
    #[arg(short, long, value_name = "DIR", default_value = "belt-out")]
    pub out: PathBuf,
    /// Also write every event as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Print the RunResult as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,

    /// Seed of the simulated provider (same seed, same texts).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Fixed latency of the simulated provider in milliseconds (default: random 200-800).
    #[arg(long, allow_negative_numbers = true)]
    pub sim_latency_ms: Option<u64>,
    /// Fraction of simulated calls that fail (429, 500 or timeout), from 0 to 1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub sim_fail_rate: f64,
}

fn parse_synthesize(s: &str) -> Result<SynthesizeMode, String> {
    s.parse()
}
