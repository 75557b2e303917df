//! Writes plugin run history (`store::plugin_runs`) off the call path.
//!
//! A call hands its record to a bounded channel with `try_send` and moves
//! on: it never waits for the database. One background task (started on the
//! first record, so it lives on the caller's tokio runtime) drains the
//! channel in batches of up to [`BATCH`] rows per transaction. When the
//! channel is full (the database cannot keep up), records are dropped and
//! counted in `rapport_plugin_runs_dropped_total`: history is a diagnostic,
//! never worth slowing or failing a call for.

use std::sync::OnceLock;

use tokio::sync::mpsc;

use crate::store::Store;
use crate::store::plugin_runs::NewRun;

/// Records waiting to be written, all tenants together.
const QUEUE: usize = 10_000;
/// Rows per write transaction.
const BATCH: usize = 500;

#[derive(Debug, Default)]
pub struct RunLog {
    sender: OnceLock<mpsc::Sender<NewRun>>,
}

impl RunLog {
    /// Queues `run` for writing; never blocks.
    pub fn record(&self, store: &Store, run: NewRun) {
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_loop(store.clone(), rx));
            tx
        });
        if sender.try_send(run).is_err() {
            metrics::counter!("rapport_plugin_runs_dropped_total").increment(1);
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<NewRun>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(e) = store.record_plugin_runs(&batch).await {
            tracing::warn!(error = %e, runs = batch.len(), "could not record plugin runs");
        }
        batch.clear();
    }
}
