//! Named points where the orchestrator can be made to die (`kill -9`
//! style) for durability tests: `ORCH_FAULT=<point>:<node>`, with the
//! point one of `after_spawn` (the attempt's process started and
//! recorded), `start_unwritten` (the attempt's process started and ran
//! for a moment, its start not written yet), `after_exit` (the process ended, nothing recorded),
//! `before_commit` (the batch validated, not written) and `after_commit`
//! (the batch written). A testing aid, compiled only with the `testing`
//! feature: in the default build `ORCH_FAULT` does nothing.

#[cfg(feature = "testing")]
use tracing::warn;

/// A point of the run loop where a fault may strike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    AfterSpawn,
    StartUnwritten,
    AfterExit,
    BeforeCommit,
    AfterCommit,
}

impl Fault {
    /// The fault `ORCH_FAULT` asks for (never without the `testing`
    /// feature).
    pub(crate) fn from_env() -> Option<(Fault, String)> {
        #[cfg(feature = "testing")]
        {
            let spec = std::env::var("ORCH_FAULT").ok()?;
            let (point, node) = spec.split_once(':')?;
            let point = match point {
                "after_spawn" => Fault::AfterSpawn,
                "start_unwritten" => Fault::StartUnwritten,
                "after_exit" => Fault::AfterExit,
                "before_commit" => Fault::BeforeCommit,
                "after_commit" => Fault::AfterCommit,
                other => {
                    warn!(point = other, "ORCH_FAULT names an unknown point; ignored");
                    return None;
                }
            };
            Some((point, node.to_string()))
        }
        #[cfg(not(feature = "testing"))]
        None
    }

    /// True for the points after something was written: the queued
    /// events are flushed before dying there.
    pub(crate) fn flushes_first(self) -> bool {
        matches!(self, Fault::AfterSpawn | Fault::AfterCommit)
    }
}
