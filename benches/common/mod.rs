//! What every bench shares: medians, timing, knobs from the environment.
//! Each bench includes this file as `mod common;` (not every bench uses
//! every item).
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The median of some durations.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// The median time of `reps` runs of `f`.
pub fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

/// A whole number from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
