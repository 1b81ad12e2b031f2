//! How a run ended, as an engine reports it.

use std::path::{Path, PathBuf};

use crate::model::RunStatus;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// The run id.
    pub run: String,
    /// The final status.
    pub status: RunStatus,
    /// Why it did not succeed.
    pub reason: Option<String>,
    /// The database holding its history.
    pub db: PathBuf,
    /// The live picture of the run, when kept. The run ends without
    /// waiting for its final drawing: [`RunOutcome::final_picture`] waits.
    pub picture: Option<PathBuf>,
}

impl RunOutcome {
    /// True when every node succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// The live picture once its final drawing is on disk (`None` when
    /// the run kept none). A run's outcome does not wait for its picture:
    /// the final drawing is made on the picture's own thread after the
    /// run ended, and this blocks until it is written (at once when it
    /// is). A process also waits for it when it exits, so a program that
    /// only needs the file after it ended need not call this.
    pub fn final_picture(&self) -> Option<&Path> {
        let path = self.picture.as_deref()?;
        crate::picture::live::wait_for(path);
        Some(path)
    }

    /// A process exit code for programs: 0 when the run succeeded, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.succeeded() {
            0
        } else {
            1
        }
    }
}
