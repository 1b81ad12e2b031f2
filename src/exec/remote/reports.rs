//! What runners report of the attempts they hold.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::{check_relative, Remote, ReportError, WireEnd, WireFile};
use crate::exec::{AttemptId, Report};
use crate::history::LogLine;
use crate::model::Mutation;

impl Remote {
    fn held_by(&self, id: &AttemptId, runner: &str) {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), runner.to_string());
    }

    /// The name of the runner that held attempt `id` (forgotten now), if
    /// this server saw one: what its record names. Reads the store when
    /// the runner's name is not known yet; its id stands in when that
    /// fails.
    pub(super) fn ran_on(&self, id: &AttemptId) -> Option<String> {
        let runner = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)?;
        Some(self.runner_name(&runner))
    }

    fn runner_name(&self, runner: &str) -> String {
        if let Some(n) = self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(runner)
        {
            return n.clone();
        }
        match self.store.runners() {
            Ok((all, _)) => {
                let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                for r in all {
                    names.insert(r.spec.id, r.spec.name);
                }
                names
                    .get(runner)
                    .cloned()
                    .unwrap_or_else(|| runner.to_string())
            }
            Err(e) => {
                tracing::warn!(runner, error = %e, "reading the runner's name failed; its id stands in");
                runner.to_string()
            }
        }
    }

    fn sender(&self, id: &AttemptId) -> Option<mpsc::UnboundedSender<Report>> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The file of content `sha256` that attempt `id`, held by `runner`,
    /// needs: where it is on this machine and what it is. Fenced like a
    /// report.
    pub fn shipped_file(
        &self,
        id: &AttemptId,
        runner: &str,
        sha256: &str,
    ) -> std::result::Result<(PathBuf, WireFile), ReportError> {
        self.store.claim_holds(id, runner)?;
        let shipment = self
            .shipments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        shipment
            .find(sha256)
            .ok_or_else(|| ReportError::NoSuchFile {
                attempt: id.clone(),
                sha256: sha256.to_string(),
            })
    }

    /// Where artefact `path` of attempt `id`, uploaded by `runner`, goes
    /// (relative to the attempt's [`artefact_dir`](super::artefact_dir)):
    /// only a runner that holds the attempt may upload, only what its
    /// task `produces`.
    pub fn artefact_path(
        &self,
        id: &AttemptId,
        runner: &str,
        path: &str,
    ) -> std::result::Result<PathBuf, ReportError> {
        self.store.claim_holds(id, runner)?;
        let declared = self
            .produces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|d| d.iter().any(|p| p == path));
        if !declared {
            return Err(ReportError::NotDeclared {
                attempt: id.clone(),
                path: path.to_string(),
            });
        }
        check_relative(path).map_err(|why| ReportError::NotDeclared {
            attempt: id.clone(),
            path: why,
        })
    }

    /// A mutation attempt `id` sent through `runner`: handed to the engine
    /// waiting for it; its answer (ack, or the error) is returned.
    pub async fn mutation(
        &self,
        id: &AttemptId,
        runner: &str,
        mutation: Mutation,
    ) -> std::result::Result<std::result::Result<(), String>, ReportError> {
        self.store.claim_holds(id, runner)?;
        self.held_by(id, runner);
        let tx = self
            .sender(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        let (reply, answer) = oneshot::channel();
        tx.send(Report::Mutation {
            attempt: id.clone(),
            mutation,
            reply,
        })
        .map_err(|_| ReportError::NotWaiting(id.clone()))?;
        answer
            .await
            .map_err(|_| ReportError::NotWaiting(id.clone()))
    }

    /// Log lines of attempt `id` as `runner` streams them: (line number,
    /// stream, text), handed to the engine (which stores them as they
    /// come and shows them to followers).
    pub fn logs(
        &self,
        id: &AttemptId,
        runner: &str,
        lines: Vec<(u32, String, String)>,
    ) -> std::result::Result<(), ReportError> {
        self.store.claim_holds(id, runner)?;
        self.held_by(id, runner);
        let tx = self
            .sender(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        for (line, stream, text) in lines {
            let line = LogLine {
                node: id.node.clone(),
                attempt: id.attempt,
                line,
                stream,
                text,
            };
            tx.send(Report::Log {
                attempt: id.clone(),
                line,
            })
            .map_err(|_| ReportError::NotWaiting(id.clone()))?;
        }
        Ok(())
    }

    /// The end of attempt `id`, reported by `runner`: the claim ends
    /// (fenced) and the engine judges it.
    pub fn end(
        &self,
        id: &AttemptId,
        runner: &str,
        end: WireEnd,
    ) -> std::result::Result<(), ReportError> {
        // Out of the map first: a sweep meanwhile cannot call it lost.
        let tx = self
            .take(id)
            .ok_or_else(|| ReportError::NotWaiting(id.clone()))?;
        if let Err(e) = self.store.finish_claim(id, runner) {
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), tx);
            return Err(e.into());
        }
        self.held_by(id, runner);
        let mut end = end.into_end(id);
        end.runner = self.ran_on(id);
        let _ = tx.send(Report::Finished {
            attempt: id.clone(),
            end,
        });
        Ok(())
    }
}
