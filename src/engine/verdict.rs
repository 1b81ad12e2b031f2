//! Attempt verdicts, as pure functions.
