//! The single audit writer task: drains the queue in batches, assigns sequence numbers,
//! commits each batch in one transaction (group commit), then releases the requests waiting
//! on it (strict mode). A failed commit fails every event of the batch: their requests deny.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use prometheus::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{AuditError, AuditSink, Job, channel};
use crate::config::AuditSettings;
use crate::store::Store;

/// Most events committed together.
const MAX_BATCH: usize = 1024;

/// Starts the writer; returns the sink requests record through and the task, which ends once
/// every sink is dropped and the queue is drained.
pub async fn spawn_writer(
    settings: &AuditSettings,
    store: Arc<dyn Store>,
    commit_seconds: Histogram,
) -> Result<(AuditSink, JoinHandle<()>), crate::store::StoreError> {
    let next_seq = store.last_audit_seq().await? + 1;
    let (sink, rx) = channel(settings);
    let stats = Arc::clone(&sink.stats);
    let task = tokio::spawn(run(rx, store, next_seq, stats, commit_seconds));
    Ok((sink, task))
}

async fn run(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<dyn Store>,
    mut next_seq: u64,
    stats: Arc<super::AuditStats>,
    commit_seconds: Histogram,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        jobs.clear();
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        stats.queued.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
        for job in jobs.iter_mut() {
            job.event.seq = next_seq;
            next_seq += 1;
        }
        let events: Vec<_> = jobs.iter().map(|j| j.event.clone()).collect();
        let started = Instant::now();
        let result = store.append_audit(&events).await;
        stats.commits.fetch_add(1, Ordering::Relaxed);
        commit_seconds.observe(started.elapsed().as_secs_f64());
        stats
            .commit_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                for job in jobs.drain(..) {
                    if let Some(done) = job.done {
                        let _ = done.send(Ok(job.event.seq));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = jobs.len(), "audit commit failed; the requests waiting on it are denied");
                stats
                    .failures
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                // The sequence numbers are not reused: a gap is visible, never a silent loss.
                for job in jobs.drain(..) {
                    if let Some(done) = job.done {
                        let _ = done.send(Err(AuditError::Unavailable));
                    }
                }
            }
        }
    }
}
