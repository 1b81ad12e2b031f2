//! The live picture of a running run: an SVG file rewritten atomically
//! after committed events.
//!
//! The orchestrator computes the outlook (cheap) when a redraw is due and
//! hands it to a drawing thread, so layout never stalls scheduling. The
//! picture costs a run at most about a tenth of its time:
//!
//! - each drawing's layout is chosen to fit a fortieth of the time the
//!   picture has been kept so far ([`render::svg_within`]): layout-rs with
//!   its optimiser, without it, a plain layered layout, or, for a picture
//!   too big for any of them yet, one node counting the nodes by state. A
//!   quick run of a big graph is drawn plainly; a long one in full;
//! - redraws are paced so that drawing takes at most about a twentieth
//!   of the time: small graphs are redrawn after every commit, huge ones less
//!   often;
//! - the run's end does not wait for its picture: the final outlook is
//!   handed to the drawing thread, and the run's outcome is returned at
//!   once. Whoever wants the final picture waits for it
//!   ([`crate::RunOutcome::final_picture`]); and so that a program that
//!   returns from `main` right after its run (the CLI, a workflow program)
//!   still leaves it on disk, the process waits at exit for the final
//!   pictures still being drawn ([`wait_for_all`], registered with
//!   `atexit`).
//!
//! No state is left undrawn: the thread always draws the newest outlook it
//! was handed (one handed while it draws replaces any that waits), a
//! redraw skipped by the pacing is made up when the run goes idle
//! ([`LivePicture::catch_up`]), and the final picture is always drawn.
//! Beyond [`outlook::LIVE_MAX_NODES`] nodes the picture counts them by
//! state instead of drawing each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::history::RunState;
use crate::picture::outlook::{self, Outlook};
use crate::picture::render;

/// A drawing may take this share of the time the picture has been kept
/// (1/`SHARE`), and the final drawing another: together with the pacing,
/// the picture costs a run under a tenth of its time.
const SHARE: u32 = 40;
/// After a drawing that took `d`, the next waits until `PACE × d` has
/// passed: drawing takes at most about a twentieth of the time.
const PACE: u32 = 19;
/// What any drawing may take, however young the picture: a graph of a
/// few dozen nodes is drawn in full from the first commit.
const FLOOR: Duration = Duration::from_micros(200);

/// What the drawing thread draws next.
#[derive(Default)]
struct Slot {
    /// The newest outlook not drawn yet.
    next: Option<Outlook>,
    /// No more outlooks come: draw what waits, then stop.
    closed: bool,
    /// The drawing thread has stopped (or died): draw here.
    gone: bool,
}

/// The slot with the condition the drawing thread waits on.
type Shared = Arc<(Mutex<Slot>, Condvar)>;

pub(crate) struct LivePicture {
    path: PathBuf,
    shared: Shared,
    /// Whether the drawing thread started (else: draw inline). It is
    /// never joined: it ends once it drew the final outlook.
    thread: bool,
    /// When the picture started: each drawing's layout fits a share of
    /// the time since.
    started: Instant,
    last: Option<Instant>,
    /// Nanoseconds the last drawing took (outlook + layout + write).
    cost: Arc<AtomicU64>,
    /// A redraw was skipped by the pacing since the last one.
    behind: bool,
    /// The final outlook was handed over: nothing more is drawn.
    closed: bool,
}

/// The final pictures being drawn, by path (a path once per picture),
/// with the process that draws them.
struct Landing {
    pending: Mutex<Vec<PathBuf>>,
    landed: Condvar,
    pid: u32,
}

/// The process's [`Landing`]; registers [`wait_at_exit`] the first time.
fn landing() -> &'static Landing {
    static LANDING: OnceLock<Landing> = OnceLock::new();
    static AT_EXIT: Once = Once::new();
    let l = LANDING.get_or_init(|| Landing {
        pending: Mutex::new(Vec::new()),
        landed: Condvar::new(),
        pid: std::process::id(),
    });
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no
        // arguments; libc calls it from `exit`.
        if unsafe { libc::atexit(wait_at_exit) } != 0 {
            warn!("cannot make the process wait for its final live pictures at exit");
        }
    });
    l
}

/// Run by `exit` (returning from `main` included): the final pictures
/// still being drawn land before the process ends. Not in a forked child,
/// which has none of the drawing threads.
extern "C" fn wait_at_exit() {
    if landing().pid == std::process::id() {
        wait_for_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until the final picture at `path` is on disk (at once when none
/// is being drawn there).
pub(crate) fn wait_for(path: &Path) {
    let l = landing();
    let mut pending = lock(&l.pending);
    while pending.iter().any(|p| p == path) {
        pending = l.landed.wait(pending).unwrap_or_else(|p| p.into_inner());
    }
}

/// Waits until every final picture being drawn in this process is on
/// disk.
pub(crate) fn wait_for_all() {
    let l = landing();
    let mut pending = lock(&l.pending);
    while !pending.is_empty() {
        pending = l.landed.wait(pending).unwrap_or_else(|p| p.into_inner());
    }
}

fn write_atomically(path: &Path, svg: &str) {
    let tmp = path.with_extension("svg.tmp");
    if let Err(e) = std::fs::write(&tmp, svg).and_then(|()| std::fs::rename(&tmp, path)) {
        warn!(path = %path.display(), error = %e, "cannot write the live picture");
    }
}

/// The time a drawing may take, `since` the picture started.
fn budget(since: Duration) -> Duration {
    (since / SHARE).max(FLOOR)
}

/// Lays `o` out within the budget of a picture started at `started` and
/// writes it to `path`.
fn draw_one(o: &Outlook, path: &Path, started: Instant) {
    let t = Instant::now();
    let budget = budget(started.elapsed());
    let (svg, layout) = render::svg_within(o, budget);
    // Says which layout the budget allowed, for whoever wonders why the
    // picture is plain.
    let note = format!(
        "<!-- orch live picture: {} layout (a budget of {:.1} ms) -->\n",
        layout.name(),
        budget.as_secs_f64() * 1e3
    );
    let svg = match svg.find("?>\n") {
        Some(k) => format!("{}{note}{}", &svg[..k + 3], &svg[k + 3..]),
        None => svg,
    };
    write_atomically(path, &svg);
    debug!(
        path = %path.display(),
        event = o.event,
        nodes = o.nodes.len(),
        layout = ?layout,
        ms = t.elapsed().as_secs_f64() * 1e3,
        "live picture drawn"
    );
}

/// Marks the drawing thread gone when it ends, however it ends; a final
/// picture it was to draw is no longer awaited.
struct Gone<'a> {
    shared: &'a Shared,
    path: &'a Path,
}

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.shared.0);
        s.gone = true;
        if s.closed {
            let l = landing();
            let mut pending = lock(&l.pending);
            if let Some(k) = pending.iter().position(|p| p == self.path) {
                pending.remove(k);
            }
            l.landed.notify_all();
        }
    }
}

/// The drawing thread: draws the newest outlook handed to it until closed.
fn draw_loop(shared: &Shared, path: &Path, cost: &AtomicU64, started: Instant) {
    let _gone = Gone { shared, path };
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
        let t = Instant::now();
        draw_one(&next, path, started);
        cost.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl LivePicture {
    pub(crate) fn new(path: PathBuf) -> LivePicture {
        let shared: Shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let cost = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let thread = {
            let (path, cost, shared) = (path.clone(), cost.clone(), shared.clone());
            std::thread::Builder::new()
                .name("orch-live-picture".into())
                .spawn(move || draw_loop(&shared, &path, &cost, started))
                .is_ok()
        };
        LivePicture {
            path,
            shared,
            thread,
            started,
            last: None,
            cost,
            behind: false,
            closed: false,
        }
    }

    /// Draws `state` if a redraw is due (or `last`); when `last`, hands
    /// the drawing thread its final outlook without waiting for it.
    pub(crate) fn update(&mut self, state: &RunState, last: bool) {
        if self.closed {
            return;
        }
        let cost = Duration::from_nanos(self.cost.load(Ordering::Relaxed));
        if !last && self.last.is_some_and(|t| t.elapsed() < cost * PACE) {
            self.behind = true;
            return;
        }
        self.draw(state);
        if last {
            self.close();
        }
    }

    /// Draws `state` if a redraw was skipped since the last one: the run
    /// goes idle (it waits for input, a signal, a backoff), and its
    /// picture must not stay at an older moment meanwhile.
    pub(crate) fn catch_up(&mut self, state: &RunState) {
        if self.behind && !self.closed {
            self.draw(state);
        }
    }

    /// Computes the outlook of `state` and hands it to the drawing thread
    /// (in place of any it has not started on), or draws it here when
    /// there is no thread.
    fn draw(&mut self, state: &RunState) {
        let t = Instant::now();
        let opts = outlook::Options {
            max_nodes: outlook::LIVE_MAX_NODES,
            ..Default::default()
        };
        let o = outlook::outlook(state, opts);
        self.cost
            .store(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.last = Some(Instant::now());
        self.behind = false;
        let (slot, ready) = &*self.shared;
        let mut s = lock(slot);
        if !self.thread || s.gone {
            drop(s);
            draw_one(&o, &self.path, self.started);
            return;
        }
        s.next = Some(o);
        ready.notify_one();
    }

    /// No more outlooks come: the drawing thread draws what waits and
    /// stops, and the final picture is awaited ([`wait_for`]) until it
    /// has. Does not wait.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let (slot, ready) = &*self.shared;
        let mut s = lock(slot);
        if !s.gone {
            lock(&landing().pending).push(self.path.clone());
        }
        s.closed = true;
        ready.notify_one();
    }
}

impl Drop for LivePicture {
    fn drop(&mut self) {
        self.close();
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
        p.close();
        wait_for(&path);
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
        // Closed by the last update: later ones draw nothing.
        p.update(&state_with(&["after_the_end"]), true);
        wait_for(&path);
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("n19"), "the last update is drawn");
        assert!(!svg.contains("after_the_end"));
    }

    #[test]
    fn a_picture_dropped_without_a_last_update_still_lands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.svg");
        let mut p = LivePicture::new(path.clone());
        p.update(&state_with(&["only_node"]), false);
        drop(p);
        wait_for(&path);
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("only_node"));
        wait_for_all();
    }

    #[test]
    fn a_drawing_may_take_a_fortieth_of_the_time_so_far_and_a_little_at_first() {
        assert_eq!(budget(Duration::ZERO), FLOOR);
        assert_eq!(budget(Duration::from_secs(2)), Duration::from_millis(50));
    }
}
