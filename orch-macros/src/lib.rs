//! Procedural macros for orch.
//!
//! This crate is the home of the `#[task]` attribute (typed native tasks,
//! checked at compile time); `orch` depends on it from the start so that
//! the workspace layout does not change when the macros arrive. Generated
//! code will call only `::orch::__private`, and all logic stays in plain,
//! unit-testable functions of this crate.
