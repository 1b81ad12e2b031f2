//! The live picture of a running run: an SVG file rewritten atomically
//! after committed events.
//!
//! The orchestrator computes the outlook (cheap) when a redraw is due and
//! hands it to a drawing thread, so layout never stalls scheduling. Redraws
//! are paced so that drawing takes at most about a sixth of the time:
//! small graphs are redrawn after every commit, huge ones less often; the
//! final picture is always drawn. Beyond [`outlook::LIVE_MAX_NODES`] nodes
//! the picture counts them by state instead of drawing each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::history::RunState;
use crate::picture::outlook::{self, Outlook};
use crate::picture::render;

pub(crate) struct LivePicture {
    path: PathBuf,
    tx: Option<SyncSender<Outlook>>,
    thread: Option<JoinHandle<()>>,
    last: Option<Instant>,
    /// Nanoseconds the last drawing took (outlook + layout + write).
    cost: Arc<AtomicU64>,
}

fn write_atomically(path: &Path, svg: &str) {
    let tmp = path.with_extension("svg.tmp");
    if let Err(e) = std::fs::write(&tmp, svg).and_then(|()| std::fs::rename(&tmp, path)) {
        warn!(path = %path.display(), error = %e, "cannot write the live picture");
    }
}

impl LivePicture {
    pub(crate) fn new(path: PathBuf) -> LivePicture {
        let (tx, rx) = sync_channel::<Outlook>(1);
        let cost = Arc::new(AtomicU64::new(0));
        let thread = {
            let (path, cost) = (path.clone(), cost.clone());
            std::thread::Builder::new()
                .name("orch-live-picture".into())
                .spawn(move || {
                    for o in rx {
                        let started = Instant::now();
                        write_atomically(&path, &render::svg(&o));
                        cost.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                })
                .ok()
        };
        LivePicture {
            path,
            tx: Some(tx),
            thread,
            last: None,
            cost,
        }
    }

    /// Draws `state` if a redraw is due (or `last`), then, when `last`,
    /// waits for the drawing thread to finish.
    pub(crate) fn update(&mut self, state: &RunState, last: bool) {
        let cost = Duration::from_nanos(self.cost.load(Ordering::Relaxed));
        if !last && self.last.is_some_and(|t| t.elapsed() < cost * 5) {
            return;
        }
        let started = Instant::now();
        let opts = outlook::Options {
            max_nodes: outlook::LIVE_MAX_NODES,
            ..Default::default()
        };
        let o = outlook::outlook(state, opts);
        self.cost
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.last = Some(Instant::now());
        let Some(tx) = &self.tx else { return };
        if last {
            let _ = tx.send(o);
            self.finish();
        } else if let Err(TrySendError::Disconnected(o)) = tx.try_send(o) {
            // No drawing thread: draw here.
            write_atomically(&self.path, &render::svg(&o));
        }
        // A full channel means the thread is still drawing: skip this one.
    }

    fn finish(&mut self) {
        self.tx = None;
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
