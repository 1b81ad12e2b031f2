//! End-to-end tests: real Python subprocesses, real SQLite files, the real
//! example binaries and CLI. One test binary, so the suite links once.

mod cli;
mod control;
mod durability;
mod engine;
mod escape;
mod examples;
mod execution;
mod fork;
mod pictures;
mod promises;
mod python_helper;
mod shapes;
mod stop;
mod structure;
mod typed;
mod ui;
mod util;
