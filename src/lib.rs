//! belt: multi-agent LLM orchestration in Rust.
//!
//! This crate gathers belt's library crates under one name: [`core`] (the durable step
//! engine, events, policies, budget and patterns) and [`llm`] (providers). Most programs
//! need only the re-exports at the top level.
//!
//! ```
//! use belt::{Cascade, RunOptions, RunStatus, SimConfig, Task};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let options = RunOptions::default().with_providers(belt::providers(SimConfig::default().latency_ms(0)));
//! let handle = belt::run(Cascade::new(7, "simulated/default"), Task::new("Plan a city park"), options)
//!     .await
//!     .expect("valid options");
//! let result = handle.result().await;
//! assert_eq!(result.status, RunStatus::Completed);
//! assert_eq!(result.shape, vec![7, 1]); // seven workers, one synthesizer
//! # }
//! ```

pub use belt_core as core;
pub use belt_llm as llm;

pub use belt_core::*;
pub use belt_llm::{SimConfig, SimulatedProvider, providers};
