//! belt-llm
pub use belt_core::llm::*;
