//! Bulk import (`rapport import ...`): a customers CSV, an interactions CSV,
//! or the CDNOW purchase history, into one tenant.
//!
//! A reader thread parses the file (blocking I/O stays off the async
//! runtime) and sends rows down a bounded channel; the async side collects
//! them into chunks of [`CHUNK`] rows, ensures a chunk's customers in one
//! transaction and stores its interactions in another, both with
//! multi-row statements (`Store::ensure_customers`,
//! `Store::import_interactions`): per-row transactions and statements made
//! imports commit-bound (a few thousand rows a second). Every row carries
//! its line number, so a rejected row is reported as `line N: reason`. A
//! malformed row never stops the import; an unreadable file, a broken
//! header or a database failure does.
//!
//! Imported interactions do not queue their customers for the background
//! rescore worker one by one; the command schedules one scoring job for the
//! tenant at the end ([`schedule_scoring`]), which a server's worker runs.
//!
//! Re-running an import is safe: customers are matched by external id and
//! every interaction has a deterministic idempotency key, so rows already
//! present count as "replayed" and nothing is stored twice.

pub mod cdnow;
pub mod csv_files;
pub mod fields;
pub mod summary;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::store::customers::NewCustomer;
use crate::store::interactions::{IngestOutcome, NewInteraction, NewLineItem};
use crate::store::money::{Amount, Currency};
use crate::store::scores::ScoringJob;
use crate::store::{Store, StoreError, TenantId};

pub use summary::{Rejections, Summary};

/// Rows per chunk (one transaction for its customers, one for its
/// interactions): past a few thousand rows, commits no longer matter and
/// bigger chunks only hold the write lock longer.
pub const CHUNK: usize = 5_000;

/// Rows parsed ahead of the database: enough to keep a chunk ready while
/// the previous one commits, small enough to bound memory.
const CHANNEL_ROWS: usize = 2 * CHUNK;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Customers from a CSV file (header: external_id,name,email,phone,...).
    ///
    /// Columns may come in any order; only external_id is required; any
    /// other column becomes a string attribute. Existing customers (same
    /// external_id) are left unchanged and counted as replayed.
    Customers {
        file: PathBuf,
        #[arg(long)]
        tenant: String,
    },
    /// Interactions from a CSV file (header: customer_external_id,kind,occurred_at,...).
    ///
    /// customer_external_id, kind and occurred_at (RFC 3339 or YYYY-MM-DD)
    /// are required; amount, currency, channel, idempotency_key, and sku,
    /// quantity, unit_price (one line item) are optional. order_id groups
    /// consecutive rows of one customer's order into one interaction with
    /// several line items (a basket). Unknown customers are created. Rows
    /// without an idempotency_key get one derived from their content (an
    /// order's from its customer and order_id), so re-running a file stores
    /// nothing twice.
    Interactions {
        file: PathBuf,
        #[arg(long)]
        tenant: String,
    },
    /// The CDNOW purchase history (CDNOW_master.txt or a folder holding it).
    ///
    /// CDNOW_sample.txt works too. One customer per CDNOW id (external_id as
    /// written, e.g. 00001) and one purchase per line, amounts exact to the
    /// cent; re-running stores nothing twice.
    Cdnow {
        path: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Currency of the dollar_value column (2 decimals).
        #[arg(long, default_value = "USD")]
        currency: String,
    },
}

/// Runs an import command and prints its summary on stdout, then schedules
/// the tenant's scoring job if it stored anything.
pub async fn run(store: &Store, cmd: ImportCommand) -> anyhow::Result<()> {
    let started = Instant::now();
    let (label, path, tenant, summary) = match cmd {
        ImportCommand::Customers { file, tenant } => {
            let progress = Progress::stderr("customers");
            let tenant = TenantId::from_operator(tenant);
            let summary = import_customers(store, &tenant, &file, &progress).await?;
            ("customers", file, tenant, summary)
        }
        ImportCommand::Interactions { file, tenant } => {
            let progress = Progress::stderr("interactions");
            let tenant = TenantId::from_operator(tenant);
            let summary = import_interactions(store, &tenant, &file, &progress).await?;
            ("interactions", file, tenant, summary)
        }
        ImportCommand::Cdnow { path, tenant, currency } => {
            let progress = Progress::stderr("cdnow");
            let file = cdnow::resolve(&path);
            let tenant = TenantId::from_operator(tenant);
            let summary = import_cdnow(store, &tenant, &file, &currency, &progress).await?;
            ("cdnow", file, tenant, summary)
        }
    };
    // An import can grow a tenant a hundredfold at once: refresh the
    // planner's statistics now rather than at the server's next round.
    if let Err(error) = store.db().optimize().await {
        tracing::warn!(%error, "refreshing planner statistics after the import failed");
    }
    println!("import {label} from {}", path.display());
    println!("{summary}");
    println!("elapsed:               {:.1} s", started.elapsed().as_secs_f64());
    if let Some(job) = schedule_scoring(store, &tenant, &summary).await? {
        println!(
            "scoring job:           {} queued (a server's rescore worker starts it)",
            job.id
        );
    }
    Ok(())
}

/// Schedules the one scoring job an import needs
/// ([`Store::schedule_import_scoring`]), if it stored any customer or
/// interaction: imported rows do not queue their customers for the
/// background worker. Library callers that score right away (tests,
/// benchmarks) may skip it.
pub async fn schedule_scoring(
    store: &Store,
    tenant: &TenantId,
    summary: &Summary,
) -> Result<Option<ScoringJob>, ImportError> {
    if summary.customers_created == 0 && summary.interactions_created == 0 {
        return Ok(None);
    }
    Ok(Some(store.schedule_import_scoring(tenant).await?))
}

/// Imports a customers CSV (see [`ImportCommand::Customers`]).
pub async fn import_customers(
    store: &Store,
    tenant: &TenantId,
    file: &Path,
    progress: &Progress,
) -> Result<Summary, ImportError> {
    check_tenant(store, tenant).await?;
    let path = file.to_path_buf();
    let (mut rows, reader) = spawn_reader(progress, move |progress, emit| {
        csv_files::read_customers(&path, progress, emit)
    });
    let mut sink = Sink::new(store, tenant, progress);
    let consumed = async {
        let mut chunk: Vec<(u64, NewCustomer)> = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.recv().await {
            sink.summary.rows_read += 1;
            match row.parsed {
                Err(reason) => sink.summary.reject(row.line, reason),
                Ok(c) => {
                    chunk.push((
                        row.line,
                        NewCustomer {
                            external_id: c.external_id,
                            name: c.name,
                            email: c.email,
                            phone: c.phone,
                            attributes: c.attributes,
                        },
                    ));
                    if chunk.len() >= CHUNK {
                        sink.customers_chunk(std::mem::take(&mut chunk)).await?;
                    }
                }
            }
        }
        sink.customers_chunk(chunk).await
    }
    .await;
    finish(rows, reader, consumed, progress).await?;
    Ok(sink.summary)
}

/// Imports an interactions CSV (see [`ImportCommand::Interactions`]).
pub async fn import_interactions(
    store: &Store,
    tenant: &TenantId,
    file: &Path,
    progress: &Progress,
) -> Result<Summary, ImportError> {
    check_tenant(store, tenant).await?;
    let path = file.to_path_buf();
    let (mut rows, reader) = spawn_reader(progress, move |progress, emit| {
        csv_files::read_interactions(&path, progress, emit)
    });
    let mut sink = Sink::new(store, tenant, progress);
    let consumed = async {
        while let Some(row) = rows.recv().await {
            let r = match row.parsed {
                Err(reason) => {
                    sink.summary.rows_read += 1;
                    sink.summary.reject(row.line, reason);
                    continue;
                }
                Ok(r) => r,
            };
            // An order's later rows came merged into this one.
            sink.summary.rows_read += 1 + r.merged_lines.len() as u64;
            let customer = NewCustomer::with_external_id(r.customer_external_id);
            let new = NewInteraction {
                customer_id: None,
                customer_external_id: None,
                kind: r.kind,
                channel: r.channel,
                occurred_at: Some(r.occurred_at),
                amount: r.amount.map(Amount::new),
                currency: r.currency,
                items: r
                    .items
                    .into_iter()
                    .map(|i| NewLineItem {
                        sku: i.sku,
                        quantity: i.quantity,
                        unit_price: Amount::new(i.unit_price),
                    })
                    .collect(),
                payload: serde_json::Value::Object(serde_json::Map::new()),
                idempotency_key: Some(r.idempotency_key),
            };
            sink.push_merged(row.line, r.merged_lines, customer, new).await?;
        }
        sink.flush().await
    }
    .await;
    finish(rows, reader, consumed, progress).await?;
    Ok(sink.summary)
}

/// Imports a CDNOW file (see [`cdnow`] for how rows map to customers and
/// purchases). `currency` must have two decimals, like the file's amounts.
pub async fn import_cdnow(
    store: &Store,
    tenant: &TenantId,
    file: &Path,
    currency: &str,
    progress: &Progress,
) -> Result<Summary, ImportError> {
    let currency = Currency::parse("currency", currency).map_err(|e| ImportError::Option(e.to_string()))?;
    if currency.exponent != 2 {
        return Err(ImportError::Option(format!(
            "--currency {}: CDNOW amounts have 2 decimals, {} has {}",
            currency.code, currency.code, currency.exponent
        )));
    }
    check_tenant(store, tenant).await?;
    let path = file.to_path_buf();
    let (mut rows, reader) = spawn_reader(progress, move |progress, emit| cdnow::read(&path, progress, emit));
    let mut sink = Sink::new(store, tenant, progress);
    let consumed = async {
        while let Some(row) = rows.recv().await {
            sink.summary.rows_read += 1;
            let purchase = match row.parsed {
                Err(reason) => {
                    sink.summary.reject(row.line, reason);
                    continue;
                }
                Ok(p) => p,
            };
            let customer = NewCustomer {
                attributes: [("source".to_string(), serde_json::Value::from("cdnow"))]
                    .into_iter()
                    .collect(),
                ..NewCustomer::with_external_id(purchase.customer.clone())
            };
            let items = purchase
                .line_items()
                .into_iter()
                .map(|(quantity, unit)| NewLineItem {
                    sku: cdnow::SKU.to_string(),
                    quantity,
                    unit_price: Amount::new(fields::format_cents(unit)),
                })
                .collect();
            let new = NewInteraction {
                customer_id: None,
                customer_external_id: None,
                kind: "purchase".to_string(),
                channel: None,
                occurred_at: Some(purchase.occurred_at),
                amount: Some(Amount::new(fields::format_cents(purchase.cents))),
                currency: Some(currency.code.clone()),
                items,
                payload: serde_json::Value::Object(serde_json::Map::new()),
                idempotency_key: Some(purchase.idempotency_key),
            };
            sink.push(row.line, customer, new).await?;
        }
        sink.flush().await
    }
    .await;
    finish(rows, reader, consumed, progress).await?;
    Ok(sink.summary)
}

async fn check_tenant(store: &Store, tenant: &TenantId) -> Result<(), ImportError> {
    match store.get_tenant(tenant.as_str()).await {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { .. }) => Err(ImportError::UnknownTenant(tenant.as_str().to_owned())),
        Err(e) => Err(e.into()),
    }
}

type Reader = tokio::task::JoinHandle<Result<(), ImportError>>;

/// Runs a file reader on the blocking pool, its rows flowing into a bounded
/// channel. When the receiver is dropped (the import failed), the reader
/// stops at its next row.
fn spawn_reader<T: Send + 'static>(
    progress: &Progress,
    read: impl FnOnce(&Progress, &mut dyn FnMut(Row<T>) -> bool) -> Result<(), ImportError> + Send + 'static,
) -> (mpsc::Receiver<Row<T>>, Reader) {
    let (tx, rx) = mpsc::channel(CHANNEL_ROWS);
    let progress = progress.clone();
    let handle = tokio::task::spawn_blocking(move || read(&progress, &mut |row| tx.blocking_send(row).is_ok()));
    (rx, handle)
}

/// Waits for the reader and reports the first cause of failure: a reader
/// error (I/O, header) explains an early end better than anything after it.
async fn finish<T>(
    rows: mpsc::Receiver<Row<T>>,
    reader: Reader,
    consumed: Result<(), ImportError>,
    progress: &Progress,
) -> Result<(), ImportError> {
    drop(rows);
    let read = reader.await.map_err(|e| ImportError::Reader(e.to_string()))?;
    progress.finish();
    read?;
    consumed
}

/// An interaction waiting for its batch, with the customer it belongs to.
struct Pending {
    line: u64,
    /// Lines of an order's later rows merged into this interaction: they
    /// share its fate (stored, replayed or rejected with it).
    merged: Vec<u64>,
    customer: NewCustomer,
    interaction: NewInteraction,
}

/// The database side of an import: customers by external id, and
/// interactions in chunks of [`CHUNK`].
///
/// A chunk's customers are ensured in one write transaction, then its
/// interactions stored in another, each with multi-row statements. The
/// customers' ids are cached for the run, and every interaction is stored
/// by `customer_id`, so its idempotency fingerprint is the same on every run.
struct Sink<'a> {
    store: &'a Store,
    tenant: &'a TenantId,
    progress: &'a Progress,
    summary: Summary,
    /// External id -> what ensuring it gave this run: the customer's id, or
    /// why its rows are rejected (invalid, erased).
    customers: HashMap<String, Result<String, String>>,
    batch: Vec<Pending>,
}

impl<'a> Sink<'a> {
    fn new(store: &'a Store, tenant: &'a TenantId, progress: &'a Progress) -> Sink<'a> {
        Sink {
            store,
            tenant,
            progress,
            summary: Summary::default(),
            customers: HashMap::new(),
            batch: Vec::with_capacity(CHUNK),
        }
    }

    /// Records a store error against a row, or fails the import when the
    /// database itself is at fault.
    fn row_error(&mut self, line: u64, err: StoreError) -> Result<(), ImportError> {
        self.rows_error(line, &[], err)
    }

    /// [`Sink::row_error`] for an interaction made of several rows.
    fn rows_error(&mut self, line: u64, merged: &[u64], err: StoreError) -> Result<(), ImportError> {
        match err {
            StoreError::Database(_) | StoreError::Corrupt(_) => Err(ImportError::Store(err)),
            other => {
                let why = reason(&other);
                for line in std::iter::once(line).chain(merged.iter().copied()) {
                    self.summary.reject(line, why.clone());
                }
                Ok(())
            }
        }
    }

    /// Ensures a customers CSV's chunk of rows: new ones created, existing
    /// ones (and a repeated row) counted as replayed, invalid ones rejected.
    async fn customers_chunk(&mut self, chunk: Vec<(u64, NewCustomer)>) -> Result<(), ImportError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let (lines, news): (Vec<u64>, Vec<NewCustomer>) = chunk.into_iter().unzip();
        let results = self.store.ensure_customers(self.tenant, news).await?;
        for (line, result) in lines.into_iter().zip(results) {
            match result {
                Ok(e) if e.created => self.summary.customers_created += 1,
                Ok(_) => self.summary.replayed += 1,
                Err(e) => self.row_error(line, e)?,
            }
        }
        self.progress.message(&self.summary);
        Ok(())
    }

    /// Queues an interaction of `customer` (created if new).
    async fn push(&mut self, line: u64, customer: NewCustomer, interaction: NewInteraction) -> Result<(), ImportError> {
        self.push_merged(line, Vec::new(), customer, interaction).await
    }

    /// [`Sink::push`] for an interaction made of the rows at `line` and
    /// `merged` (an order's line items).
    async fn push_merged(
        &mut self,
        line: u64,
        merged: Vec<u64>,
        customer: NewCustomer,
        interaction: NewInteraction,
    ) -> Result<(), ImportError> {
        self.batch.push(Pending {
            line,
            merged,
            customer,
            interaction,
        });
        if self.batch.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Ensures the chunk's new customers, then stores its interactions.
    async fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.ensure_customers(&batch).await?;
        let mut lines = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for mut pending in batch {
            match self.customers.get(&pending.customer.external_id) {
                Some(Ok(id)) => {
                    pending.interaction.customer_id = Some(id.clone());
                    lines.push((pending.line, pending.merged));
                    items.push(pending.interaction);
                }
                found => {
                    let why = match found {
                        Some(Err(why)) => why.clone(),
                        _ => "customer_external_id: not created".to_string(),
                    };
                    for line in std::iter::once(pending.line).chain(pending.merged) {
                        self.summary.reject(line, why.clone());
                    }
                }
            }
        }
        let results = self.store.import_interactions(self.tenant, items).await?;
        for ((line, merged), result) in lines.into_iter().zip(results) {
            match result {
                Ok(outcome) => {
                    match outcome {
                        IngestOutcome::Created => self.summary.interactions_created += 1,
                        IngestOutcome::Replayed => self.summary.replayed += 1,
                    }
                    self.summary.merged_rows += merged.len() as u64;
                }
                Err(e) => self.rows_error(line, &merged, e)?,
            }
        }
        self.progress.message(&self.summary);
        Ok(())
    }

    /// Creates (or finds) the customers of `batch` not seen yet this run, in
    /// one transaction (see `Store::ensure_customers`), and remembers each
    /// one's id or why its rows are rejected.
    async fn ensure_customers(&mut self, batch: &[Pending]) -> Result<(), ImportError> {
        let wanted: BTreeMap<&str, &NewCustomer> = batch
            .iter()
            .map(|p| (p.customer.external_id.as_str(), &p.customer))
            .filter(|(external_id, _)| !self.customers.contains_key(*external_id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let (external_ids, news): (Vec<String>, Vec<NewCustomer>) =
            wanted.into_iter().map(|(e, c)| (e.to_string(), c.clone())).unzip();
        let results = self.store.ensure_customers(self.tenant, news).await?;
        for (external_id, result) in external_ids.into_iter().zip(results) {
            let known = match result {
                Ok(e) if e.erased => Err(reason(&StoreError::conflict(
                    "customer_erased",
                    "this customer's data has been erased",
                ))),
                Ok(e) => {
                    self.summary.customers_created += u64::from(e.created);
                    Ok(e.id)
                }
                Err(e @ (StoreError::Database(_) | StoreError::Corrupt(_))) => return Err(e.into()),
                // The row names the customer in its customer column, hence
                // the field name in the reason.
                Err(StoreError::Invalid { field, message }) if field == "external_id" => {
                    Err(format!("customer_external_id: {message}"))
                }
                Err(other) => Err(reason(&other)),
            };
            self.customers.insert(external_id, known);
        }
        Ok(())
    }
}

/// A rejection reason for the summary. Store messages that embed a row's
/// own value (an idempotency key, say) are replaced by their stable code so
/// that such rows group together.
fn reason(err: &StoreError) -> String {
    match err {
        StoreError::Conflict {
            code: "idempotency_conflict",
            ..
        } => "idempotency key already stored with different content (idempotency_conflict)".to_string(),
        StoreError::Conflict { code, message } => format!("{message} ({code})"),
        other => other.to_string(),
    }
}

/// Why an import stopped. Row-level problems are not errors: they are
/// counted in the [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: read error: {source}", path.display())]
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error("{}: bad header: {message}", path.display())]
    Header { path: PathBuf, message: String },
    #[error("tenant {0:?} does not exist (create it with `rapport tenant create NAME --id {0}`)")]
    UnknownTenant(String),
    #[error("invalid option: {0}")]
    Option(String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("the file reader stopped unexpectedly: {0}")]
    Reader(String),
}

/// One data row of an input file: parsed, or rejected with a reason.
#[derive(Debug)]
pub struct Row<T> {
    /// 1-based line number in the file.
    pub line: u64,
    pub parsed: Result<T, String>,
}

/// Progress in bytes of the input file, drawn on stderr only when stderr
/// is a terminal (so logs and CI output stay clean).
#[derive(Clone, Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    pub fn hidden() -> Progress {
        Progress(ProgressBar::hidden())
    }

    /// A bar labelled `label` on stderr, or a hidden one if stderr is not a TTY.
    pub fn stderr(label: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let style = ProgressStyle::with_template("{prefix} [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style);
        bar.set_prefix(label.to_string());
        Progress(bar)
    }

    fn set_length(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn message(&self, summary: &Summary) {
        if !self.0.is_hidden() {
            self.0.set_message(format!(
                "{} rows, {} rejected",
                summary.rows_read,
                summary.rejected_rows()
            ));
        }
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
