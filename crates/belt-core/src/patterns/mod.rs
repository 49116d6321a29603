//! Orchestration patterns: short functions and types over [`crate::Ctx`]. None of them
//! contains retry, timeout, budget or accounting code: the engine does that for all.

pub mod cascade;

pub use cascade::{Cascade, SynthesizeMode, TierSettings};
