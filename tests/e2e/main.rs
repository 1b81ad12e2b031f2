//! End-to-end tests: real Python subprocesses, real SQLite files, the real
//! example binaries and CLI. One test binary, so the suite links once.

mod bounds;
mod cli;
mod containers;
mod control;
mod durability;
mod engine;
mod escape;
mod estimate;
mod events;
mod examples;
mod execution;
mod failure_policy;
mod files;
mod fork;
mod fuzz;
mod logs;
mod loops;
mod pictures;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres;
mod promises;
mod python_helper;
mod rules;
mod runners;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod runners_multi;
mod scheduler;
mod server;
mod shapes;
mod stop;
mod structure;
mod typed;
mod ui;
mod util;
mod web;
