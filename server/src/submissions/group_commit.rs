//! Group commit for visits posted one at a time: requests that arrive while a transaction is
//! committing wait and go together in the next one, so each pays a share of one fsync instead
//! of one each. The database still decides every outcome (see [`super::ingest`]), so several
//! server processes, each with its own committer, behave the same.

use tokio::sync::{mpsc, oneshot};

use super::ingest::{Incoming, Outcome, ingest};
use crate::db::Db;
use crate::error::{AppError, Problem, Result, unavailable};

/// The most visits one group transaction takes.
const MAX_GROUP: usize = 256;

/// Why a group failed, for each of its visits: a dependency failing is the same problem for each
/// (503/507), anything else an internal error.
#[derive(Clone)]
enum Failed {
    Unavailable(Problem),
    Internal(String),
}

struct Pending {
    item: Incoming,
    reply: oneshot::Sender<Result<Outcome, Failed>>,
}

#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    pub fn start(db: Db) -> GroupCommit {
        let (queue, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(run(db, rx));
        GroupCommit { queue }
    }

    /// Stores one visit (in a group with whatever else is waiting) and returns its outcome.
    pub async fn submit(&self, item: Incoming) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { item, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the group committer has stopped"))?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(Failed::Unavailable(problem))) => Err(problem.into()),
            Ok(Err(Failed::Internal(e))) => Err(AppError::Internal(anyhow::anyhow!(
                "storing a group of visits: {e}"
            ))),
            Err(_) => Err(AppError::Internal(anyhow::anyhow!(
                "the group committer dropped a visit"
            ))),
        }
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("submission_group_size").record(group.len() as f64);
        let (items, replies): (Vec<Incoming>, Vec<_>) =
            group.into_iter().map(|p| (p.item, p.reply)).unzip();
        let storing = std::time::Instant::now();
        let stored = ingest(&db, &items).await;
        metrics::histogram!("submission_group_commit_seconds").record(storing.elapsed());
        match stored {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let failed = match e {
                    AppError::Internal(e) => match unavailable(&e) {
                        Some(problem) => Failed::Unavailable(problem),
                        None => Failed::Internal(format!("{e:#}")),
                    },
                    AppError::Problem(p) => Failed::Internal(p.detail),
                };
                if let Failed::Internal(message) = &failed {
                    tracing::error!(error = %message, visits = replies.len(), "a group of visits failed to store");
                }
                for reply in replies {
                    let _ = reply.send(Err(failed.clone()));
                }
            }
        }
    }
}
