//! The tasks of a pipeline: starting each collection's writers and the
//! consumers that feed them, the same way for `run` and `serve` ([`Tasks`]),
//! waiting for them, and naming the real cause when one of them fails.
//!
//! A consumer whose writer stopped fails too, but it is not the cause: the
//! writer's own error is (the store refused a batch, the broker refused a
//! dead letter). Reporting the consumer's "writer stopped" would send an
//! operator to the wrong server, so [`finish`] reports the writer's error.

use crate::error::{Error, Result};
use crate::observe::counters::Counters;
use crate::route::dead_letter::DeadLetters;
use crate::sink::write::{self, WriterSetup};
use crate::source::consume::{ConsumerTask, StopWhen};
use hpn_common::{RecordKind, Topology};
use lapin::Channel;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The consumers and writers of one broker connection, of one collection
/// or of several.
#[derive(Default)]
pub struct Tasks {
    consumers: JoinSet<Result<()>>,
    writers: JoinSet<Result<()>>,
}

/// Where one collection's consumers take messages from and set refused
/// ones aside.
pub struct Source<'a> {
    pub kind: RecordKind,
    pub topology: &'a Topology,
    pub dead_letters: &'a DeadLetters,
    pub counters: &'a Arc<Counters>,
    pub stop: StopWhen,
}

impl Tasks {
    /// Start one collection: `writers` writers (at least one) set up by
    /// `setup`, each owning a share of the keys, and a consumer on each of
    /// `channels` routing records to them, as [`ConsumerTask::new`] makes it
    /// from the settings, then `adjust`ed. The writers stop once every
    /// consumer has.
    pub fn start(
        &mut self,
        source: Source<'_>,
        channels: Vec<Channel>,
        writers: usize,
        setup: WriterSetup<'_>,
        mut adjust: impl FnMut(&mut ConsumerTask),
    ) {
        let (router, partition) = write::writers(source.kind, writers, source.counters, setup);
        for writer in partition {
            self.writers.spawn(writer.run());
        }
        for channel in channels {
            let mut consumer = ConsumerTask::new(
                source.kind,
                channel,
                source.topology.clone(),
                router.clone(),
                source.dead_letters.clone(),
                source.counters.clone(),
                &setup.config.tuning,
                source.stop.clone(),
            );
            adjust(&mut consumer);
            self.consumers.spawn(consumer.run());
        }
    }

    /// Wait for every consumer, then every writer (see [`finish`]).
    pub async fn finish(&mut self) -> Result<()> {
        finish(&mut self.consumers, &mut self.writers).await
    }

    /// After a lost connection: let every consumer end (each does after the
    /// message it is on), then every writer write what it was given. The
    /// first failure that is not the lost connection (`lost`) wins over `outcome`.
    pub async fn wind_down(&mut self, mut outcome: Result<()>, lost: impl Fn(&Error) -> bool) -> Result<()> {
        while self.consumers.join_next().await.is_some() {}
        while let Some(done) = self.writers.join_next().await {
            match done {
                Ok(Err(e)) if !lost(&e) => outcome = Err(e),
                Err(e) => outcome = Err(Error::Task(e.to_string())),
                Ok(_) => {}
            }
        }
        outcome
    }

    /// Stop every task at once: what they hold is unacknowledged, and
    /// returns to its queue when the connection closes.
    pub fn abort_all(&mut self) {
        self.consumers.abort_all();
        self.writers.abort_all();
    }
}

/// Wait for a collection's consumers, then its writers. The first failure
/// ends the wait and is returned, except that a consumer whose writer
/// stopped is not the cause: the writer's own error (a store refusal, say)
/// is what the run reports.
async fn finish(consumers: &mut JoinSet<Result<()>>, writers: &mut JoinSet<Result<()>>) -> Result<()> {
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
