//! belt-app: the application layer of belt, between its front ends (the CLI, the HTTP API,
//! the MCP server, workflow files, workers) and the engine.
//!
//! - [`RunSpec`] is a run's whole definition as one serde type: what the HTTP body and the
//!   MCP tools deserialize into, what the CLI builds from its arguments, and what the store
//!   records, so any process that reads the store can rebuild the run. [`lenient`] makes
//!   its schema one that MCP clients can fill, and takes the numbers they send as strings.
//! - [`App::prepare`] turns a spec into what [`belt_core::run`] needs, with every check in
//!   one place: the same mistake gets the same message from every front end.
//! - [`patterns::REGISTRY`] is the pattern library as the front ends see it (names, what
//!   each does, how to build those a task alone runs).
//! - [`config`] reads `belt.toml` (providers, limits, prices, the default model) and
//!   [`models::choose`] picks the model of runs that name none.
//!
//! ```
//! use belt_app::{App, RunSpec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = App::new(belt_app::Config::default());
//! // The same JSON a client POSTs to /v1/runs:
//! let spec: RunSpec = serde_json::from_str(r#"{"task": "Plan a city park", "agents": 7, "sim_latency_ms": 0}"#)
//!     .expect("a valid spec");
//! let mut prepared = app.prepare(&spec).expect("a runnable spec");
//! let result = prepared.start().await.expect("started").result().await;
//! assert_eq!(result.status, belt_core::RunStatus::Completed);
//! assert_eq!(result.shape, vec![7, 1]);
//!
//! // Every front end gets this message for this mistake:
//! let bad: RunSpec = serde_json::from_str(r#"{"task": "x", "group_size": 1}"#).unwrap();
//! assert_eq!(
//!     app.prepare(&bad).err().unwrap().to_string(),
//!     "invalid value '1' for group_size (--group-size): must be from 2 to 1000"
//! );
//! # }
//! ```

pub mod config;
mod error;
pub mod files;
pub mod hitl;
mod legacy;
pub mod lenient;
pub mod local;
pub mod models;
pub mod patterns;
mod prepare;
#[cfg(test)]
mod properties;
mod spec;
pub mod tools;
pub mod worker;
mod workflow;

pub use config::Config;
pub use error::AppError;
pub use models::{Choice, SIMULATED_MODEL};
pub use prepare::{
    App, Env, MAX_AGENTS, MAX_CACHE_SECS, MAX_HITL_SECS, MAX_SIM_LATENCY_MS, MAX_TIMEOUT_SECS, Prepared,
    WORKFLOW_ORIGIN, parse_formats,
};
pub use spec::{DEFAULT_PATTERN, RunSpec, TierPolicy};
