//! Runs: registration, the run loop, takeovers.

mod run;

pub(crate) use run::*;
