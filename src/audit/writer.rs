//! The single audit writer: a dedicated thread that drains the queue in batches, appends each
//! batch to the log with one fsync (group commit), releases the requests waiting on it
//! (`strict`), feeds the query index ([`super::index`]), and signs a checkpoint every
//! `audit.checkpointEvery` records and at shutdown.
//!
//! Failure handling, never a silent drop:
//! - `strict`: a failed commit fails every request waiting on the batch (they are denied) and
//!   counts the records as failures;
//! - `batched`: the batch is kept and retried with backoff; meanwhile the queue fills and
//!   `audit.onFull` applies (block or deny). Only at shutdown, after repeated failures, are
//!   records given up — and then they are counted and logged.
//! - the index is secondary: a failed index write is counted and repaired from the log at the
//!   next start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::index::AuditIndex;
use super::log::LogFile;
use super::{AuditError, AuditEvent, AuditSink, AuditStats, Job, channel};
use crate::config::{AuditSettings, Durability};

/// Most records committed together.
const MAX_BATCH: usize = super::log::MAX_COMMIT_RECORDS;

/// The key checkpoints are signed with.
pub struct Signer {
    /// Key id.
    pub kid: String,
    /// 64-byte Ed25519 secret key.
    pub secret: Vec<u8>,
}

/// What the writer reports to metrics.
#[derive(Clone)]
pub struct WriterMetrics {
    /// One group commit: write + fsync.
    pub commit_seconds: Histogram,
    /// Index writes that failed (repaired at the next start).
    pub index_failures: IntCounter,
}

/// Starts the writer thread over an open log; returns the sink requests record through and
/// the thread, which ends once every sink is dropped and the queue is drained.
pub fn spawn_writer(
    settings: &AuditSettings,
    log: LogFile,
    index: Arc<AuditIndex>,
    signer: Option<Signer>,
    metrics: WriterMetrics,
) -> std::io::Result<(AuditSink, std::thread::JoinHandle<()>)> {
    let (sink, rx) = channel(settings);
    let stats = Arc::clone(&sink.stats);
    index.fold_outcomes(settings.durability == Durability::Strict);
    let writer = Writer {
        rx,
        log,
        index,
        signer,
        metrics,
        stats,
        durability: settings.durability,
        flush_interval: settings.flush_interval,
        checkpoint_every: settings.checkpoint_every,
    };
    let thread = std::thread::Builder::new()
        .name("actgate-audit".into())
        .spawn(move || writer.run())?;
    Ok((sink, thread))
}

struct Writer {
    rx: mpsc::Receiver<Job>,
    log: LogFile,
    index: Arc<AuditIndex>,
    signer: Option<Signer>,
    metrics: WriterMetrics,
    stats: Arc<AuditStats>,
    durability: Durability,
    flush_interval: Duration,
    checkpoint_every: u64,
}

impl Writer {
    fn run(mut self) {
        let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        let mut closed = false;
        while !closed {
            jobs.clear();
            match self.rx.blocking_recv() {
                Some(job) => jobs.push(job),
                None => break,
            }
            if self.durability == Durability::Batched {
                // Group commit: let a flush interval's worth of records gather.
                std::thread::sleep(self.flush_interval);
            }
            while jobs.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.stats
                .queued
                .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
            self.commit(&mut jobs, &mut closed);
        }
        self.checkpoint();
        if let Err(e) = self.log.finish() {
            tracing::error!(error = %e, "closing the audit log failed; its zero-filled tail stays and is cut at the next start");
        }
    }

    fn commit(&mut self, jobs: &mut Vec<Job>, closed: &mut bool) {
        let (mut events, dones): (Vec<Box<AuditEvent>>, Vec<_>) =
            jobs.drain(..).map(|j| (j.event, j.done)).unzip();
        let before = self.log.last_seq;
        let mut attempt = 0u32;
        let positions = loop {
            let started = Instant::now();
            let result = self.log.append(&mut events);
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(positions) => break positions,
                Err(e) => {
                    attempt += 1;
                    tracing::error!(error = %e, records = events.len(), attempt, "audit log append failed");
                    let give_up = self.durability == Durability::Strict
                        || (*closed || self.rx.is_closed()) && attempt >= 5;
                    if give_up {
                        self.stats
                            .failures
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        for done in dones.into_iter().flatten() {
                            let _ = done.send(Err(AuditError::Unavailable));
                        }
                        if self.durability == Durability::Batched {
                            tracing::error!(
                                records = events.len(),
                                "audit records lost at shutdown after repeated write failures"
                            );
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt.min(10))));
                }
            }
        };
        self.stats
            .written
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for done in dones.into_iter().flatten() {
            let _ = done.send(Ok(0));
        }
        // The index follows the log; one that fell behind replays the log (this batch
        // included) before it takes new entries.
        let indexed = if self.index.is_behind() {
            self.index
                .catch_up(self.log.last_seq, &mut |_, _| {})
                .map(|_| ())
        } else {
            self.index.append(&events, &positions)
        };
        if let Err(e) = indexed {
            self.metrics.index_failures.inc();
            tracing::error!(error = %e, "audit index write failed; the log has the records, and the index replays them from the log at the next batch or start");
        }
        if self.checkpoint_every > 0
            && before / self.checkpoint_every != self.log.last_seq / self.checkpoint_every
        {
            self.checkpoint();
        }
    }

    fn checkpoint(&mut self) {
        let Some(signer) = &self.signer else { return };
        match self.log.checkpoint(&signer.kid, &signer.secret) {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "audit checkpoint signed"),
            Ok(None) => {}
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "audit checkpoint failed");
            }
        }
    }
}
