//! The executor that sends attempts to runners.

use std::path::Path;
use std::sync::Arc;

use super::{Remote, Shipment};
use crate::error::Result;
use crate::exec::{AttemptLink, AttemptSpec, Executor, LaunchError};
use crate::model::Task;

/// An executor that sends attempts to runners when they go remote
/// ([`Remote::goes_remote`]) and starts the others with `local`.
pub struct RemoteExecutor {
    remote: Arc<Remote>,
    local: Arc<dyn Executor>,
    /// The files its attempts need on runners (a published workflow's),
    /// or why they cannot be shipped.
    shipment: Option<std::result::Result<Arc<Shipment>, String>>,
}

impl RemoteExecutor {
    /// Attempts go to `remote`'s queue, or to `local`.
    pub fn new(remote: Arc<Remote>, local: Arc<dyn Executor>) -> RemoteExecutor {
        RemoteExecutor {
            remote,
            local,
            shipment: None,
        }
    }

    /// The same executor, shipping the files of `source` (found under
    /// `root`, the run's workflow folder) with every attempt it queues.
    /// When they cannot be shipped (missing, too many, too large), each
    /// attempt that would go to a runner is refused, saying why.
    pub fn shipping(mut self, root: &Path, source: &crate::model::Source) -> RemoteExecutor {
        self.shipment = Some(
            Shipment::new(root, source)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        );
        self
    }
}

impl Executor for RemoteExecutor {
    fn launch(&self, spec: AttemptSpec, link: AttemptLink) -> Result<Option<u32>, LaunchError> {
        let need = spec.task.requires.as_deref().cloned().unwrap_or_default();
        let remote = self
            .remote
            .goes_remote_with(&need, &self.remote.remote_need(&spec.task))
            .map_err(|e| LaunchError::Refused(e.to_string()))?;
        if !remote {
            return self.local.launch(spec, link);
        }
        let shipment = match &self.shipment {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(why)) => return Err(LaunchError::Refused(why.clone())),
        };
        self.remote
            .enqueue(&spec, link, shipment)
            .map_err(|e| LaunchError::Refused(e.to_string()))?;
        Ok(None)
    }

    fn not_ready(
        &self,
        task: &Task,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.local.not_ready(task)
    }

    fn clean_up_run(&self, run: &str) -> Result<Vec<String>, String> {
        self.local.clean_up_run(run)
    }
}
