//! Waiting for a set of consumers and the writers they feed, and naming the
//! real cause when one of them fails.
//!
//! A consumer whose writer stopped fails too, but it is not the cause: the
//! writer's own error is (the store refused a batch, the broker refused a
//! dead letter). Reporting the consumer's "writer stopped" would send an
//! operator to the wrong server, so [`finish`] reports the writer's error.

use crate::error::{Error, Result};
use tokio::task::JoinSet;

/// Wait for a collection's consumers, then its writers. The first failure
/// ends the wait and is returned, except that a consumer whose writer
/// stopped is not the cause: the writer's own error (a store refusal, say)
/// is what the run reports.
pub async fn finish(consumers: &mut JoinSet<Result<()>>, writers: &mut JoinSet<Result<()>>) -> Result<()> {
    let joined = |j: std::result::Result<Result<()>, tokio::task::JoinError>| {
        j.map_err(|e| Error::Task(e.to_string())).and_then(|r| r)
    };
    loop {
        tokio::select! {
            Some(done) = consumers.join_next() => match joined(done) {
                Err(Error::WriterStopped(kind)) => {
                    // That writer has already ended: the first writer to finish says why.
                    while let Some(done) = writers.join_next().await {
                        joined(done)?;
                    }
                    return Err(Error::WriterStopped(kind));
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            },
            Some(done) = writers.join_next() => joined(done)?,
            else => return Ok(()),
        }
    }
}
