//! Scheduling decisions, as pure functions of the run's state.
