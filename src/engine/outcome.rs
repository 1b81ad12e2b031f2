//! How a run ended, as an engine reports it.

use std::path::PathBuf;

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
    /// The live picture of the run, when kept.
    pub picture: Option<PathBuf>,
}

impl RunOutcome {
    /// True when every node succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
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
