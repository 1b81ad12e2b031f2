//! The live picture of a running run: an SVG file rewritten atomically
//! after committed events.
//!
//! The orchestrator computes the outlook (cheap) when a redraw is due and
//! hands it to a drawing thread, so layout never stalls scheduling. Redraws
//! are paced so that drawing takes at most about a sixth of the time:
//! small graphs are redrawn after every commit, huge ones less often. No
//! state is left undrawn: the thread always draws the newest outlook it
//! was handed (one handed while it draws replaces any that waits), a
//! redraw skipped by the pacing is made up when the run goes idle
//! ([`LivePicture::catch_up`]), and the final picture is always drawn.
//! Beyond [`outlook::LIVE_MAX_NODES`] nodes the picture counts them by
//! state instead of drawing each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::history::RunState;
use crate::picture::outlook::{self, Outlook};
use crate::picture::render;

/// What the drawing thread draws next.
#[derive(Default)]
struct Slot {
    /// The newest outlook not drawn yet.
    next: Option<Outlook>,
    /// No more outlooks come: draw what waits, then stop.
    closed: bool,
}

/// The slot with the condition the drawing thread waits on.
type Shared = Arc<(Mutex<Slot>, Condvar)>;

pub(crate) struct LivePicture {
    path: PathBuf,
    shared: Shared,
    /// The drawing thread (`None`: it could not start; draw inline).
    thread: Option<JoinHandle<()>>,
    last: Option<Instant>,
    /// Nanoseconds the last drawing took (outlook + layout + write).
    cost: Arc<AtomicU64>,
    /// A redraw was skipped by the pacing since the last one.
    behind: bool,
}

fn write_atomically(path: &Path, svg: &str) {
    let tmp = path.with_extension("svg.tmp");
    if let Err(e) = std::fs::write(&tmp, svg).and_then(|()| std::fs::rename(&tmp, path)) {
        warn!(path = %path.display(), error = %e, "cannot write the live picture");
    }
}

fn lock(m: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The drawing thread: draws the newest outlook handed to it until closed.
fn draw_loop(shared: &Shared, path: &Path, cost: &AtomicU64) {
    let (slot, ready) = &**shared;
    loop {
        let next = {
            let mut s = lock(slot);
            loop {
                if let Some(o) = s.next.take() {
                    break o;
                }
                if s.closed {
                    return;
                }
                s = ready.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        let started = Instant::now();
        write_atomically(path, &render::svg(&next));
        cost.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl LivePicture {
    pub(crate) fn new(path: PathBuf) -> LivePicture {
        let shared: Shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let cost = Arc::new(AtomicU64::new(0));
        let thread = {
            let (path, cost, shared) = (path.clone(), cost.clone(), shared.clone());
            std::thread::Builder::new()
                .name("orch-live-picture".into())
                .spawn(move || draw_loop(&shared, &path, &cost))
                .ok()
        };
        LivePicture {
            path,
            shared,
            thread,
            last: None,
            cost,
            behind: false,
        }
    }

    /// Draws `state` if a redraw is due (or `last`), then, when `last`,
    /// waits for the drawing thread to finish.
    pub(crate) fn update(&mut self, state: &RunState, last: bool) {
        let cost = Duration::from_nanos(self.cost.load(Ordering::Relaxed));
        if !last && self.last.is_some_and(|t| t.elapsed() < cost * 5) {
            self.behind = true;
            return;
        }
        self.draw(state);
        if last {
            self.finish();
        }
    }

    /// Draws `state` if a redraw was skipped since the last one: the run
    /// goes idle (it waits for input, a signal, a backoff), and its
    /// picture must not stay at an older moment meanwhile.
    pub(crate) fn catch_up(&mut self, state: &RunState) {
        if self.behind {
            self.draw(state);
        }
    }

    /// Computes the outlook of `state` and hands it to the drawing thread
    /// (in place of any it has not started on), or draws it here when
    /// there is no thread.
    fn draw(&mut self, state: &RunState) {
        let started = Instant::now();
        let opts = outlook::Options {
            max_nodes: outlook::LIVE_MAX_NODES,
            ..Default::default()
        };
        let o = outlook::outlook(state, opts);
        self.cost
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.last = Some(Instant::now());
        self.behind = false;
        if self.thread.is_none() {
            write_atomically(&self.path, &render::svg(&o));
            return;
        }
        let (slot, ready) = &*self.shared;
        lock(slot).next = Some(o);
        ready.notify_one();
    }

    /// Lets the thread draw what waits, and waits for it to stop.
    fn finish(&mut self) {
        let (slot, ready) = &*self.shared;
        lock(slot).closed = true;
        ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LivePicture {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, EventKind};
    use crate::model::{Mutation, Origin, Task};

    fn state_with(nodes: &[&str]) -> RunState {
        let mut s = RunState::new("r");
        s.apply(&Event {
            seq: 1,
            at: "2026-01-01T00:00:00.000Z".into(),
            kind: EventKind::BatchCommitted {
                origin: Origin::Registration,
                mutations: nodes
                    .iter()
                    .map(|n| Mutation::add_node(*n, Task::command(["true"])))
                    .collect(),
            },
        });
        s
    }

    #[test]
    fn a_redraw_skipped_by_the_pacing_is_made_up_when_the_run_goes_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.svg");
        let mut p = LivePicture::new(path.clone());
        p.update(&state_with(&["first"]), false);
        // Drawing is now as slow as a second: the next update is paced out.
        p.cost.store(1_000_000_000, Ordering::Relaxed);
        let newer = state_with(&["first", "second_node"]);
        p.update(&newer, false);
        assert!(p.behind, "the pacing skipped it");
        p.catch_up(&newer);
        assert!(!p.behind);
        p.finish();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("second_node"), "the newest state is drawn");
    }

    #[test]
    fn the_final_picture_is_the_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.svg");
        let mut p = LivePicture::new(path.clone());
        for i in 0..20 {
            let names: Vec<String> = (0..=i).map(|k| format!("n{k}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            p.update(&state_with(&refs), i == 19);
        }
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("n19"), "the last update is drawn");
    }
}
