//! Batch rescoring throughput: the first-party `rfm` scoring plugin run as a
//! component (fit, then `score-batch` in chunks, one fresh instance per
//! chunk, exactly as `plugins/scoring.rs` drives it) against the SAME logic
//! called natively (the `rapport-plugin-rfm` crate's `fit` and
//! `score_history` on the same inputs), on
//!
//! - the full CDNOW tenant (23,570 customers, 69,659 purchases), and
//! - a synthetic tenant of `RAPPORT_BENCH_CUSTOMERS` customers (default
//!   1,000,000) with 10 purchases each, generated deterministically from a
//!   seed.
//!
//! Inputs are built in memory as the contract's input types, so the figures
//! are rescoring, not database reads. The end-to-end batch job through the
//! real store (SQLite in a temp dir, CDNOW imported with `ingest_batch`,
//! then `PluginService::run_job`) is measured last.
//!
//! Run (after `scripts/build-plugins` with the same `CARGO_TARGET_DIR`):
//! `cargo bench --bench rescoring`; `RAPPORT_BENCH_CUSTOMERS=100000` for a
//! quick run.
//!
//! Every plugin score is compared with the native one (value, label,
//! segment, explanation, components) and every fit summary with the native
//! model, so a fast-but-wrong path cannot look good.
//!
//! Besides the job's own configuration (fresh instance per 500-customer
//! chunk, fuel on) it runs what could explain a gap: other chunk sizes, fuel
//! off, one instance kept across chunks, and "lean" histories (only kind,
//! time and amount: what RFM reads), which isolate the cost of lowering
//! line items, ids and JSON payloads the plugin never looks at. Every row
//! runs on the stock runtime (256 MiB instances): the fit streams the
//! population in chunks (`fit-chunk` / `fit-finish`), so a million
//! customers fit in it (before, that needed a bench-only 2 GiB runtime).
//!
//! The store section measures what a job spends in the database without
//! any plugin: saving two plugins' scores for every customer of a generated
//! tenant, in job-sized chunks (insert, then upsert), and reading every
//! history page; on SQLite and, with `RAPPORT_BENCH_POSTGRES_URL`, on
//! PostgreSQL. `RAPPORT_BENCH_ONLY=store` runs only that
//! (`RAPPORT_BENCH_STORE_CUSTOMERS`, default 50,000).
//!
//! `RAPPORT_BENCH_PROFILE=1` (or `=cdnow`) only scores synthetic (CDNOW)
//! chunks through the plugin for 8 s, for `perf record` without input
//! generation or compilation in the samples. Built with `--features
//! profiling` and run with `RAPPORT_WASM_PROFILER=perfmap`, the guest's own
//! functions are named in `perf report` too.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rapport::runtime::contract::inputs::{CustomerHistory, Purchase, PurchaseSummary};
use rapport::runtime::contract::scoring::CustomerScore;
use rapport::runtime::contract::types::{Customer, Interaction, LineItem, Money};
use rapport::runtime::fixture::FixtureServices;
use rapport::runtime::history::{HistoryBuilder, compact};
use rapport::runtime::{CallContext, Limits, Plugin, PluginDefinition, PluginKind, Runtime, RuntimeConfig};
use rapport::store::TenantId;
use rapport_plugin_rfm as rfm;
use sha2::{Digest, Sha256};

const CDNOW_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cdnow/CDNOW_master.txt");
/// Customers per `score-batch` call in the batch job
/// (`rapport::plugins::scoring::BATCH_SIZE`).
const JOB_CHUNK: usize = rapport::plugins::scoring::BATCH_SIZE;
/// Synthetic histories are generated (untimed) this many at a time; every
/// variant then scores the block in its own chunk size, so all variants run
/// interleaved under the same machine load.
const BLOCK: usize = 10_000;
const SEED: u64 = 0x5E_ED0F_4A99_0127;
const DAY_MS: i64 = 86_400_000;
/// "Now" of the synthetic tenant (2026-01-01T00:00:00Z).
const SYNTH_NOW: i64 = 1_767_225_600_000;
const PLUGIN_ID: &str = "rfm";

fn wasm_path(file: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("wasm32-wasip2/release").join(file)
}

fn read_wasm(file: &str) -> Vec<u8> {
    let path = wasm_path(file);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `scripts/build-plugins` (with the same CARGO_TARGET_DIR) first",
            path.display()
        )
    })
}

// ------------------------------------------------------------------ inputs

/// One tenant's rescoring inputs.
struct Dataset {
    name: String,
    customers: usize,
    purchases: usize,
    now: i64,
    config_json: String,
    population: Vec<PurchaseSummary>,
    source: Source,
}

enum Source {
    Built(Vec<CustomerHistory>),
    /// Regenerated block by block from the seed (1M full histories would
    /// take several GB).
    Synthetic,
}

impl Dataset {
    fn histories(&self, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [CustomerHistory]> {
        match &self.source {
            Source::Built(all) => std::borrow::Cow::Borrowed(&all[range]),
            Source::Synthetic => std::borrow::Cow::Owned(range.map(|i| synthetic_customer(i).0).collect()),
        }
    }
}

fn customer(id: String, external_id: String, attributes: &str, created_at: i64) -> Customer {
    Customer {
        id,
        external_id,
        name: None,
        email: None,
        phone: None,
        attributes: attributes.to_string(),
        created_at,
    }
}

/// Ids shaped like the store's (36 characters), so the canonical ABI copies
/// as many bytes as in production.
fn id(prefix: &str, n: u64) -> String {
    format!("{prefix}-0000-7000-8000-{n:016x}{:04x}", n % 0xffff)
}

/// The CDNOW tenant as the batch job would read it from the store: one
/// customer per file customer, one `purchase` per row (amount in cents,
/// USD, `CD` line items), oldest first.
fn cdnow(now: i64) -> Dataset {
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, Vec<rapport::import::cdnow::Purchase>> = HashMap::new();
    let mut rejected = 0usize;
    rapport::import::cdnow::read(Path::new(CDNOW_FILE), &rapport::import::Progress::hidden(), |row| {
        match row.parsed {
            Ok(p) => {
                let entry = rows.entry(p.customer.clone()).or_insert_with(|| {
                    order.push(p.customer.clone());
                    Vec::new()
                });
                entry.push(p);
            }
            Err(_) => rejected += 1,
        }
        true
    })
    .unwrap_or_else(|e| panic!("{CDNOW_FILE}: {e}"));
    assert_eq!(rejected, 0, "CDNOW rows rejected");
    let created_at = now - 1000 * DAY_MS;
    let mut histories = Vec::with_capacity(order.len());
    let mut population = Vec::with_capacity(order.len());
    let mut purchases = 0usize;
    let mut next_interaction = 0u64;
    for (n, external) in order.iter().enumerate() {
        let mut bought = rows.remove(external).unwrap_or_default();
        bought.sort_by_key(|p| p.occurred_at);
        purchases += bought.len();
        let customer_id = id("c0de", n as u64);
        let millis = |p: &rapport::import::cdnow::Purchase| (p.occurred_at.unix_timestamp_nanos() / 1_000_000) as i64;
        population.push(PurchaseSummary {
            customer_id: customer_id.clone(),
            created_at,
            purchases: bought
                .iter()
                .map(|p| Purchase {
                    at: millis(p),
                    amount_minor: p.cents,
                    currency: "USD".into(),
                })
                .collect(),
        });
        let interactions = bought
            .iter()
            .map(|p| {
                next_interaction += 1;
                Interaction {
                    id: id("1a7e", next_interaction),
                    customer_id: customer_id.clone(),
                    kind: "purchase".into(),
                    channel: None,
                    occurred_at: millis(p),
                    amount: Some(Money {
                        currency: "USD".into(),
                        amount_minor: p.cents,
                    }),
                    items: p
                        .line_items()
                        .into_iter()
                        .map(|(quantity, unit)| LineItem {
                            sku: rapport::import::cdnow::SKU.into(),
                            quantity,
                            unit_price: Money {
                                currency: "USD".into(),
                                amount_minor: unit,
                            },
                        })
                        .collect(),
                    payload: "{}".into(),
                }
            })
            .collect();
        let interactions: Vec<Interaction> = interactions;
        histories.push(compact(
            customer(customer_id, external.clone(), r#"{"source":"cdnow"}"#, created_at),
            &interactions,
            false,
            now,
        ));
    }
    Dataset {
        name: "CDNOW".into(),
        customers: histories.len(),
        purchases,
        now,
        // The data is from 1997-98: a window reaching back that far (as in
        // the server's CDNOW test).
        config_json: r#"{"window_days":36500}"#.into(),
        population,
        source: Source::Built(histories),
    }
}

/// splitmix64: a tiny, stable generator (no dependency on `rand`'s
/// algorithm choices, so the data set never changes under us).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Synthetic customer `i`: 10 purchases over the last two years (so about
/// half fall in the default 365-day window), 1 to 4 line items each.
/// Depends only on (SEED, i).
fn synthetic_customer(i: usize) -> (CustomerHistory, PurchaseSummary) {
    let mut rng = SplitMix(SEED ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let customer_id = id("5e7d", i as u64);
    let created_at = SYNTH_NOW - 800 * DAY_MS;
    let mut times: Vec<i64> = (0..10)
        .map(|_| SYNTH_NOW - rng.below(730 * DAY_MS as u64) as i64)
        .collect();
    times.sort_unstable();
    let mut interactions = Vec::with_capacity(10);
    let mut purchases = Vec::with_capacity(10);
    for (k, at) in times.into_iter().enumerate() {
        let lines = 1 + rng.below(4) as usize;
        let items: Vec<LineItem> = (0..lines)
            .map(|_| LineItem {
                sku: format!("SKU-{:05}", rng.below(20_000)),
                quantity: 1 + rng.below(3) as i64,
                unit_price: Money {
                    currency: "USD".into(),
                    amount_minor: 100 + rng.below(9_900) as i64,
                },
            })
            .collect();
        let amount_minor = items.iter().map(|l| l.quantity * l.unit_price.amount_minor).sum();
        purchases.push(Purchase {
            at,
            amount_minor,
            currency: "USD".into(),
        });
        interactions.push(Interaction {
            id: id("1a7e", (i as u64) * 10 + k as u64),
            customer_id: customer_id.clone(),
            kind: "purchase".into(),
            channel: Some("web".into()),
            occurred_at: at,
            amount: Some(Money {
                currency: "USD".into(),
                amount_minor,
            }),
            items,
            payload: "{}".into(),
        });
    }
    let summary = PurchaseSummary {
        customer_id: customer_id.clone(),
        created_at,
        purchases,
    };
    let history = compact(
        customer(
            customer_id,
            format!("EXT{i:08}"),
            r#"{"source":"synthetic"}"#,
            created_at,
        ),
        &interactions,
        false,
        SYNTH_NOW,
    );
    (history, summary)
}

fn synthetic(customers: usize) -> Dataset {
    let population = (0..customers).map(|i| synthetic_customer(i).1).collect();
    Dataset {
        name: "synthetic".into(),
        customers,
        purchases: customers * 10,
        now: SYNTH_NOW,
        config_json: "{}".into(),
        population,
        source: Source::Synthetic,
    }
}

// ------------------------------------------------------------ native twin

/// The component's `summary_values` (plugins/rfm/src/component.rs): a
/// customer's window values from the raw purchases of their summary.
fn summary_values(s: &PurchaseSummary, now: i64, config: &rfm::Config) -> Option<rfm::RfmValues> {
    rfm::RfmValues::from_purchases(
        s.purchases.iter().map(|p| (p.at, Some(p.amount_minor))),
        now,
        config.window_days,
    )
}

/// The component's `fit`, natively: returns the model JSON (what the
/// component stores in kv and returns as its summary).
fn native_fit(population: &[PurchaseSummary], now: i64, config_json: &str) -> Result<String, String> {
    let config = rfm::Config::from_json(config_json).map_err(|e| e.to_string())?;
    let values: Vec<rfm::RfmValues> = population
        .iter()
        .filter_map(|s| summary_values(s, now, &config))
        .collect();
    let model = rfm::fit(&values, config.window_days, now).map_err(|e| e.to_string())?;
    let json = model.to_json();
    // The component parses its model back into the JSON summary it returns.
    let summary: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    std::hint::black_box(summary);
    Ok(json)
}

/// The component's `score-batch`, natively: config and model (from its
/// JSON, as the component reads it from kv) once per batch, then each
/// history converted and scored into the contract's `customer-score`.
fn native_score_batch(inputs: &[CustomerHistory], config_json: &str, model_json: &str) -> Vec<CustomerScore> {
    let config = rfm::Config::from_json(config_json).expect("valid config");
    let model = rfm::RfmModel::from_json(model_json).expect("valid model");
    inputs
        .iter()
        .map(|h| {
            // As the component reads its SDK history: the entries of the
            // purchase kind, by time and amount, straight from the input.
            let purchase = h.strings.iter().position(|s| *s == *config.purchase_kind);
            let values = rfm::RfmValues::from_purchases(
                h.interactions
                    .iter()
                    .filter(|e| Some(e.kind as usize) == purchase)
                    .map(|e| (e.occurred_at, e.amount.as_ref().map(|a| a.minor))),
                h.now,
                model.window_days,
            );
            let s = rfm::score(&model, values);
            CustomerScore {
                value: f64::from(s.total()),
                label: Some(s.cell.clone()),
                segment: Some(s.segment.name().to_owned()),
                explanation: s.explanation(model.window_days),
                components: vec![
                    ("r".to_owned(), f64::from(s.r)),
                    ("f".to_owned(), f64::from(s.f)),
                    ("m".to_owned(), f64::from(s.m)),
                ],
            }
        })
        .collect()
}

// ---------------------------------------------------------------- variants

/// One way of rescoring a dataset, and what it measured.
struct Variant {
    name: String,
    /// `None`: the native twin.
    plugin: Option<(Arc<Plugin>, CallContext)>,
    chunk: usize,
    /// Send only what RFM reads (kind, time, amount): no line items, no
    /// channel, no ids, no attributes. Shows what lowering and lifting the
    /// rest of the history costs.
    lean: bool,
    /// Keep one instance (`Session`) across the chunks of a 10,000-customer
    /// block instead of a fresh one per chunk as the job does.
    reuse: bool,
    /// The plugin is `bench-scorer`, not rfm: it sums the amounts and
    /// returns a fixed-text score (no label, segment or components), and
    /// has no fit. Its time is a floor for any scoring plugin given these
    /// histories: what moving them into a component costs, on the stock
    /// runtime, with almost no work and a small result.
    floor: bool,
    fit: Duration,
    fit_error: Option<String>,
    /// Set after the fit: the model the scores use (native variant only).
    model_json: Option<String>,
    score: Duration,
    customers: u64,
    failed: u64,
    mismatches: u64,
    fuel: u64,
    calls: u64,
}

impl Variant {
    fn native(chunk: usize) -> Variant {
        Variant::new("native (rfm crate)".into(), None, chunk)
    }

    fn lean(mut self) -> Variant {
        self.lean = true;
        self.name += ", lean histories";
        self
    }

    fn floor(mut self) -> Variant {
        self.floor = true;
        self
    }

    fn reuse(mut self) -> Variant {
        self.reuse = true;
        self.name += ", one instance per 10k";
        self
    }

    fn new(name: String, plugin: Option<(Arc<Plugin>, CallContext)>, chunk: usize) -> Variant {
        Variant {
            name,
            plugin,
            chunk,
            lean: false,
            reuse: false,
            floor: false,
            fit: Duration::ZERO,
            fit_error: None,
            model_json: None,
            score: Duration::ZERO,
            customers: 0,
            failed: 0,
            mismatches: 0,
            fuel: 0,
            calls: 0,
        }
    }
}

fn definition(wasm: &[u8], memory_mb: u32) -> PluginDefinition {
    PluginDefinition {
        id: PLUGIN_ID.into(),
        kind: PluginKind::ScoringRule,
        contract: "rapport:crm@0.1.0".into(),
        sha256: hex::encode(Sha256::digest(wasm)),
        wasm: wasm.to_vec(),
        capabilities: ["config", "kv"]
            .iter()
            .map(|c| c.parse().expect("known capability"))
            .collect::<BTreeSet<_>>(),
        allowed_hosts: Vec::new(),
        // What the rfm README's manifest asks for (timeout 60 s for the
        // fit, 64 KiB of kv), with the memory the runtime allows.
        limits: Limits {
            timeout_ms: 60_000,
            memory_mb,
            kv_max_bytes: 65_536,
            ..Limits::default()
        },
    }
}

fn load(wasm: &[u8], config: RuntimeConfig, memory_mb: u32) -> Arc<Plugin> {
    let started = Instant::now();
    let plugin = Runtime::new(config)
        .expect("runtime")
        .load(definition(wasm, memory_mb))
        .unwrap_or_else(|e| panic!("loading rfm: {e}"));
    eprintln!("  compiled rfm in {:.2} s", started.elapsed().as_secs_f64());
    plugin
}

fn context(config_json: &str) -> CallContext {
    CallContext {
        tenant: TenantId::for_tests("bench"),
        config_json: config_json.into(),
        services: Arc::new(FixtureServices::default()),
    }
}

/// The histories stripped of everything RFM does not read (customer
/// strings, channels, line items and their SKUs): what a contract that
/// sent only kind, time and amount would cost.
fn lean(chunk: &[CustomerHistory]) -> Vec<CustomerHistory> {
    chunk
        .iter()
        .map(|h| {
            let mut builder = HistoryBuilder::with_capacity(h.interactions.len());
            for e in &h.interactions {
                builder.push(
                    &h.strings[e.kind as usize],
                    None,
                    e.occurred_at,
                    e.amount
                        .as_ref()
                        .map(|a| (h.strings[a.currency as usize].as_str(), a.minor)),
                    [],
                    "{}",
                );
            }
            builder.finish(customer(String::new(), String::new(), "{}", 0), h.truncated, h.now)
        })
        .collect()
}

fn same(a: &CustomerScore, b: &CustomerScore) -> bool {
    a.value.to_bits() == b.value.to_bits()
        && a.label == b.label
        && a.segment == b.segment
        && a.explanation == b.explanation
        && a.components == b.components
}

/// Fits every variant (timed), checks plugin fits against the native model
/// and, where a plugin fit failed, stores the native model in its kv so its
/// scoring can still be measured (the row then says the fit failed).
async fn fit_all(ds: &Dataset, variants: &mut [Variant]) -> String {
    let mut native_model = None;
    for v in variants.iter_mut() {
        if v.floor {
            continue;
        }
        let started = Instant::now();
        let fitted = match &v.plugin {
            None => native_fit(&ds.population, ds.now, &ds.config_json),
            Some((plugin, ctx)) => {
                let (result, report) = plugin.fit(ctx.clone(), &ds.population, ds.now).await;
                v.fuel += report.fuel_used.unwrap_or(0);
                result.map_err(|e| e.to_string())
            }
        };
        v.fit = started.elapsed();
        match fitted {
            Ok(json) => {
                if v.plugin.is_none() {
                    native_model = Some(json.clone());
                }
                v.model_json = Some(json);
            }
            Err(e) => v.fit_error = Some(e),
        }
        eprintln!(
            "  {} / {}: fit {:.2} s{}",
            ds.name,
            v.name,
            v.fit.as_secs_f64(),
            v.fit_error
                .as_ref()
                .map(|e| format!(" FAILED: {e}"))
                .unwrap_or_default()
        );
    }
    let native_model = native_model.expect("the native fit succeeds");
    let expected: serde_json::Value = serde_json::from_str(&native_model).expect("model JSON");
    for v in variants.iter_mut() {
        let Some((_, ctx)) = &v.plugin else { continue };
        if v.floor {
            continue;
        }
        match &v.model_json {
            Some(json) => {
                let got: serde_json::Value = serde_json::from_str(json).expect("fit summary");
                assert_eq!(got, expected, "{}: plugin and native models differ", v.name);
            }
            None => {
                ctx.services
                    .kv_set(
                        &ctx.tenant,
                        PLUGIN_ID,
                        rfm::component::MODEL_KEY,
                        native_model.as_bytes(),
                        u64::MAX,
                    )
                    .await
                    .expect("seeding kv");
            }
        }
    }
    native_model
}

/// Scores the whole dataset with every variant, block by block.
async fn score_all(ds: &Dataset, variants: &mut [Variant], native_model: &str) {
    let mut start = 0;
    while start < ds.customers {
        let end = (start + BLOCK).min(ds.customers);
        let block = ds.histories(start..end);
        let reference = native_score_batch(&block, &ds.config_json, native_model);
        for v in variants.iter_mut() {
            // The session borrows its own handle on the plugin, not `v`.
            let reused = match (&v.plugin, v.reuse) {
                (Some((plugin, ctx)), true) => Some((plugin.clone(), ctx.clone())),
                _ => None,
            };
            let mut session = reused.as_ref().map(|(p, ctx)| p.session(ctx.clone()));
            for (n, chunk) in block.chunks(v.chunk).enumerate() {
                let expected = &reference[n * v.chunk..n * v.chunk + chunk.len()];
                let started = Instant::now();
                match &v.plugin {
                    None => {
                        let model = v.model_json.as_deref().expect("native model");
                        let scores = native_score_batch(chunk, &ds.config_json, model);
                        v.score += started.elapsed();
                        v.mismatches += scores.iter().zip(expected).filter(|(a, b)| !same(a, b)).count() as u64;
                    }
                    Some((plugin, ctx)) => {
                        let lean_chunk;
                        let chunk = if v.lean {
                            lean_chunk = lean(chunk);
                            &lean_chunk[..]
                        } else {
                            chunk
                        };
                        let started = Instant::now();
                        let (result, report) = match &mut session {
                            Some(session) => session.score_batch(chunk).await,
                            // One fresh instance per chunk, like the batch job.
                            None => plugin.score_batch(ctx.clone(), chunk).await,
                        };
                        v.score += started.elapsed();
                        v.calls += 1;
                        v.fuel += report.fuel_used.unwrap_or(0);
                        match result {
                            Ok(items) => {
                                for (item, want) in items.iter().zip(expected) {
                                    match item {
                                        Ok(s) if v.floor || same(s, want) => {}
                                        Ok(_) => v.mismatches += 1,
                                        Err(_) => v.failed += 1,
                                    }
                                }
                            }
                            Err(e) => {
                                if v.failed == 0 {
                                    eprintln!("  {}: score-batch failed: {e}", v.name);
                                }
                                v.failed += chunk.len() as u64;
                            }
                        }
                    }
                }
                v.customers += chunk.len() as u64;
            }
        }
        start = end;
    }
}

struct Row {
    dataset: String,
    customers: usize,
    name: String,
    chunk: usize,
    fit: Option<f64>,
    score: f64,
    /// Fit + score; `None` when the fit failed.
    total: Option<f64>,
    score_rate: f64,
    rate: Option<f64>,
    ratio: Option<f64>,
    score_ratio: f64,
    note: String,
}

fn rows(ds: &Dataset, variants: &[Variant]) -> Vec<Row> {
    let native = variants.iter().find(|v| v.plugin.is_none()).expect("a native variant");
    let native_total = (native.fit + native.score).as_secs_f64();
    let native_score = native.score.as_secs_f64();
    variants
        .iter()
        .map(|v| {
            let score = v.score.as_secs_f64();
            let fit = v.fit_error.is_none().then_some(v.fit.as_secs_f64());
            let total = fit.map(|f| f + score);
            let mut note = Vec::new();
            if let Some(e) = &v.fit_error {
                note.push(format!("fit FAILED ({e}); scored with the native model"));
            }
            if v.failed > 0 {
                note.push(format!("{} failed", v.failed));
            }
            if v.mismatches > 0 {
                note.push(format!("{} MISMATCHES", v.mismatches));
            }
            if v.calls > 0 && v.fuel > 0 {
                note.push(format!("fuel {:.0}/customer", v.fuel as f64 / ds.customers as f64));
            }
            Row {
                dataset: ds.name.clone(),
                customers: ds.customers,
                name: v.name.clone(),
                chunk: v.chunk,
                fit,
                score,
                total,
                score_rate: v.customers as f64 / score,
                rate: total.map(|t| ds.customers as f64 / t),
                ratio: total.map(|t| t / native_total),
                score_ratio: score / native_score,
                note: note.join("; "),
            }
        })
        .collect()
}

fn print_table(rows: &[Row]) {
    let opt = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "n/a".to_string(),
    };
    println!();
    println!(
        "{:<10} {:>9} {:<62} {:>6} {:>8} {:>9} {:>9} {:>13} {:>13} {:>11} {:>11}  notes",
        "dataset",
        "customers",
        "path",
        "chunk",
        "fit s",
        "score s",
        "total s",
        "customers/s",
        "scored/s",
        "plug/native",
        "score ratio"
    );
    for r in rows {
        println!(
            "{:<10} {:>9} {:<62} {:>6} {:>8} {:>9.3} {:>9} {:>13} {:>13.0} {:>11} {:>11.2}  {}",
            r.dataset,
            r.customers,
            r.name,
            r.chunk,
            opt(r.fit, 3),
            r.score,
            opt(r.total, 3),
            opt(r.rate, 0),
            r.score_rate,
            r.ratio.map(|x| format!("{x:.2}x")).unwrap_or("n/a".into()),
            r.score_ratio,
            r.note
        );
    }
}

// -------------------------------------------------------------- end to end

struct EndToEnd {
    customers: i64,
    purchases: u64,
    import: f64,
    warmup: f64,
    job: f64,
    failed: i64,
}

async fn end_to_end(wasm: &Path) -> anyhow::Result<EndToEnd> {
    let dir = tempfile::tempdir()?;
    let digest = hex::encode(Sha256::digest(std::fs::read(wasm)?));
    // The README's manifest entry, with the memory the server's default
    // runtime allows (256 MiB).
    let manifest = format!(
        "[[plugin]]\nid = \"rfm\"\nkind = \"scoring-rule\"\nversion = \"0.1.0\"\n\
         contract = \"rapport:crm@0.1.0\"\nartifact = {:?}\nsha256 = {digest:?}\n\
         capabilities = [\"kv\", \"config\"]\n[plugin.limits]\ntimeout_ms = 60000\n\
         memory_mb = 256\nkv_max_bytes = 65536\n\n\
         [[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"rfm\"\nenabled = true\n\
         config = {{ window_days = 36500 }}\n",
        wasm.display().to_string()
    );
    let manifest_path = dir.path().join("plugins.toml");
    std::fs::write(&manifest_path, manifest)?;
    let mut config = rapport::config::Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("rapport.db").display());
    config.plugins.manifest = Some(manifest_path);
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    let state = rapport::server::build_state(&config).await?;
    let tenant = TenantId::for_tests("acme");
    state.store.create_tenant("acme", Some("acme")).await?;

    let started = Instant::now();
    let summary = rapport::import::import_cdnow(
        &state.store,
        &tenant,
        Path::new(CDNOW_FILE),
        "USD",
        &rapport::import::Progress::hidden(),
    )
    .await?;
    let import = started.elapsed().as_secs_f64();
    anyhow::ensure!(summary.rejected_rows() == 0, "CDNOW rows rejected");

    // Compiles the component (a server does this once per artifact).
    let started = Instant::now();
    let fits = state.plugins.fit_scoring(&tenant, Some("rfm")).await?;
    let warmup = started.elapsed().as_secs_f64();
    for f in &fits {
        if let Err(e) = &f.result {
            anyhow::bail!("warm-up fit failed: {} ({})", e.message, e.code);
        }
    }

    let started = Instant::now();
    let job = state.plugins.create_scoring_job(&tenant, Some("rfm")).await?;
    let job = state.plugins.run_job(&tenant, &job.id).await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(job.error.is_none(), "job failed: {:?}", job.error);
    Ok(EndToEnd {
        customers: job.done,
        purchases: summary.interactions_created,
        import,
        warmup,
        job: secs,
        failed: job.failed_customers,
    })
}

// ------------------------------------------------------ store: save and read

/// Customers of the store section (`RAPPORT_BENCH_STORE_CUSTOMERS`).
const STORE_CUSTOMERS: i64 = 50_000;
/// Purchases per customer of the store section.
const STORE_PURCHASES: i64 = 5;

struct StoreFigures {
    backend: &'static str,
    customers: i64,
    first_save: f64,
    resave: f64,
    read: f64,
}

/// What a batch job spends in the store, without any plugin: saving two
/// plugins' scores for every customer in job-sized chunks (first save:
/// inserts; second: upserts over them) and reading every history page, on
/// the database at `url`. The tenant is generated by the database itself
/// (hence SQL here: 250,000 rows through the API would dwarf the figures).
#[allow(clippy::disallowed_methods)]
async fn store_io(url: &str, customers: i64) -> anyhow::Result<StoreFigures> {
    let db = rapport::db::Db::open(url).await?;
    let sqlite = db.backend() == rapport::db::Backend::Sqlite;
    let store = rapport::store::Store::new(db.clone());
    store.create_tenant("bench", Some("bench")).await?;
    let tenant = TenantId::for_tests("bench");
    let series = if sqlite {
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $2 - 1) SELECT i FROM n"
    } else {
        "SELECT i FROM generate_series(0, CAST($2 AS BIGINT) - 1) AS i"
    };
    let id = |prefix: &str, col: &str| {
        if sqlite {
            format!("printf('{prefix}%08d', {col})")
        } else {
            format!("'{prefix}' || lpad(CAST({col} AS TEXT), 8, '0')")
        }
    };
    sqlx::query(&format!(
        "INSERT INTO customers (tenant_id, id, external_id, attributes, created_at, updated_at) \
         SELECT $1, {}, {}, '{{}}', 0, 0 FROM ({series}) AS s",
        id("c", "i"),
        id("e", "i")
    ))
    .bind("bench")
    .bind(customers)
    .execute(db.pool())
    .await?;
    sqlx::query(&format!(
        "INSERT INTO interactions (tenant_id, id, customer_id, kind, occurred_at, amount_minor, currency, \
         payload, created_at) SELECT $1, {}, {}, 'purchase', {SYNTH_NOW} - i * 60000, 1000 + i % 5000, 'USD', \
         '{{}}', 0 FROM ({series}) AS s",
        id("i", "i"),
        id("c", &format!("(i % {customers})"))
    ))
    .bind("bench")
    .bind(customers * STORE_PURCHASES)
    .execute(db.pool())
    .await?;
    db.optimize().await?;
    let ids: Vec<String> = (0..customers).map(|i| format!("c{i:08}")).collect();
    let scores = |chunk: &[String], at: i64| -> Vec<rapport::store::scores::NewScore> {
        let mut out = Vec::with_capacity(chunk.len() * 2);
        for (n, customer) in chunk.iter().enumerate() {
            for plugin in ["rfm", "churn-bgnbd"] {
                out.push(rapport::store::scores::NewScore {
                    customer_id: customer.clone(),
                    plugin_id: plugin.to_string(),
                    value: (n as f64).mul_add(0.37, at as f64 * 1e-12),
                    label: Some("loyal".into()),
                    segment: Some(format!("s{}", n % 7)),
                    explanation: "r=5 f=4 m=3".into(),
                    components: vec![("r".into(), 5.0), ("f".into(), 4.0), ("m".into(), 3.0)],
                    computed_at: at,
                    job_id: None,
                    as_of: None,
                    plugin_version: None,
                });
            }
        }
        out
    };
    let save = |at: i64| {
        let (store, tenant, ids) = (&store, &tenant, &ids);
        async move {
            let started = Instant::now();
            for chunk in ids.chunks(JOB_CHUNK) {
                store.save_scores(tenant, &scores(chunk, at)).await?;
            }
            anyhow::Ok(started.elapsed().as_secs_f64())
        }
    };
    let first_save = save(SYNTH_NOW).await?;
    let resave = save(SYNTH_NOW + 1).await?;
    let started = Instant::now();
    let mut after: Option<String> = None;
    let mut read = 0;
    loop {
        let page = store
            .scoring_histories_page(&tenant, after.as_deref(), JOB_CHUNK, usize::MAX)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.customer.id.clone());
        read += page.iter().map(|h| h.interactions.len()).sum::<usize>();
    }
    let read_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        read as i64 == customers * STORE_PURCHASES,
        "read {read} interactions, expected {}",
        customers * STORE_PURCHASES
    );
    db.pool().close().await;
    Ok(StoreFigures {
        backend: if sqlite { "SQLite" } else { "PostgreSQL" },
        customers,
        first_save,
        resave,
        read: read_secs,
    })
}

/// The store section on SQLite (temp dir) and, when
/// `RAPPORT_BENCH_POSTGRES_URL` names a server, on a fresh database there.
fn store_section(tokio: &tokio::runtime::Runtime) {
    let customers: i64 = std::env::var("RAPPORT_BENCH_STORE_CUSTOMERS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(STORE_CUSTOMERS);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut urls = vec![(
        format!("sqlite://{}", dir.path().join("store.db").display()),
        None::<(String, String)>,
    )];
    if let Some(admin) = std::env::var("RAPPORT_BENCH_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let name = format!("rapport_bench_{}", std::process::id());
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
        urls.push((format!("{base}/{name}"), Some((admin.clone(), name))));
    }
    println!(
        "\nstore: {customers} customers, {STORE_PURCHASES} purchases each; scores of 2 plugins saved in chunks of {JOB_CHUNK} customers"
    );
    println!(
        "{:<11} {:>12} {:>14} {:>12} {:>14} {:>12}",
        "backend", "first save s", "scores/s", "re-save s", "scores/s", "read all s"
    );
    for (url, pg) in urls {
        let figures = tokio.block_on(async {
            sqlx::any::install_default_drivers();
            if let Some((admin, name)) = &pg {
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await?;
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await?;
            }
            let figures = store_io(&url, customers).await;
            if let Some((admin, name)) = &pg {
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await?;
                sqlx::Executor::execute(&mut conn, format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await?;
            }
            figures
        });
        match figures {
            Ok(f) => {
                let scores = (f.customers * 2) as f64;
                println!(
                    "{:<11} {:>12.2} {:>14.0} {:>12.2} {:>14.0} {:>12.2}",
                    f.backend,
                    f.first_save,
                    scores / f.first_save,
                    f.resave,
                    scores / f.resave,
                    f.read
                );
            }
            Err(e) => println!("store section FAILED on {url}: {e:#}"),
        }
    }
}

// -------------------------------------------------------------------- main

fn main() {
    // The job logs where its time goes (load / score / save), at info.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAPPORT_BENCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rapport::plugins=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let synthetic_customers: usize = std::env::var("RAPPORT_BENCH_CUSTOMERS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    // `RAPPORT_BENCH_ONLY=store`: only the store section (no plugin).
    if std::env::var("RAPPORT_BENCH_ONLY").as_deref() == Ok("store") {
        store_section(&tokio);
        return;
    }
    let wasm = read_wasm("rapport_plugin_rfm.wasm");
    let path = wasm_path("rapport_plugin_rfm.wasm");

    eprintln!("loading inputs ...");
    let started = Instant::now();
    let cdnow = cdnow(rapport::store::now_ms());
    eprintln!(
        "  CDNOW: {} customers, {} purchases in {:.2} s",
        cdnow.customers,
        cdnow.purchases,
        started.elapsed().as_secs_f64()
    );

    eprintln!("compiling the rfm component ...");
    let stock = RuntimeConfig::default();
    let default_plugin = load(&wasm, stock.clone(), stock.max_memory_mb);
    let floor_plugin = load(&read_wasm("bench_scorer.wasm"), stock.clone(), stock.max_memory_mb);
    let nofuel_plugin = load(
        &wasm,
        RuntimeConfig {
            consume_fuel: false,
            ..stock.clone()
        },
        stock.max_memory_mb,
    );
    // `RAPPORT_BENCH_PROFILE=1`: only the job's plugin configuration scoring
    // the same 10,000 synthetic histories in chunks for 8 s, nothing else
    // (for `perf record`: no input generation or compilation in the samples).
    // `RAPPORT_BENCH_PROFILE=cdnow` does the same with the CDNOW histories.
    if let Some(which) = std::env::var_os("RAPPORT_BENCH_PROFILE") {
        let (block, population, now, config_json) = if which == "cdnow" {
            let Source::Built(histories) = cdnow.source else {
                unreachable!("CDNOW histories are built in memory")
            };
            (histories, cdnow.population, cdnow.now, cdnow.config_json)
        } else {
            let block: Vec<CustomerHistory> = (0..BLOCK).map(|i| synthetic_customer(i).0).collect();
            let population: Vec<PurchaseSummary> = (0..BLOCK).map(|i| synthetic_customer(i).1).collect();
            (block, population, SYNTH_NOW, "{}".to_owned())
        };
        let model = native_fit(&population, now, &config_json).expect("fit");
        let ctx = context(&config_json);
        let scored = tokio.block_on(async {
            ctx.services
                .kv_set(
                    &ctx.tenant,
                    PLUGIN_ID,
                    rfm::component::MODEL_KEY,
                    model.as_bytes(),
                    u64::MAX,
                )
                .await
                .expect("kv");
            eprintln!("profiling: scoring for 8 s ...");
            let end = Instant::now() + Duration::from_secs(8);
            let mut scored = 0usize;
            while Instant::now() < end {
                for chunk in block.chunks(JOB_CHUNK) {
                    let (result, _) = default_plugin.score_batch(ctx.clone(), chunk).await;
                    scored += result.expect("score-batch").len();
                }
            }
            scored
        });
        println!("profiling: {scored} customers scored in 8 s");
        return;
    }

    let variant = |name: &str, plugin: &Arc<Plugin>, chunk: usize, ds: &Dataset| {
        Variant::new(
            name.to_string(),
            Some((plugin.clone(), context(&ds.config_json))),
            chunk,
        )
    };

    let mut table = Vec::new();
    // CDNOW variants live in this block: freed before the synthetic tenant.
    {
        // CDNOW: the job's configuration, fuel off, other chunk sizes (the
        // chunk is capped by `max_output_bytes`: ~210 bytes of score per
        // customer, so 1 MiB holds ~4,900), and lean histories.
        let mut cdnow_variants = vec![
            Variant::native(JOB_CHUNK),
            variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &cdnow),
            variant("plugin, default runtime (fuel on)", &default_plugin, 100, &cdnow),
            variant("plugin, default runtime (fuel on)", &default_plugin, 2_000, &cdnow),
            variant("plugin, fuel off", &nofuel_plugin, JOB_CHUNK, &cdnow),
            variant("plugin, fuel off", &nofuel_plugin, 2_000, &cdnow),
            variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &cdnow).reuse(),
            variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &cdnow).lean(),
            variant(
                "floor: bench-scorer (sums amounts, fixed text)",
                &floor_plugin,
                JOB_CHUNK,
                &cdnow,
            )
            .floor(),
        ];
        tokio.block_on(async {
            eprintln!("CDNOW: fitting ...");
            let model = fit_all(&cdnow, &mut cdnow_variants).await;
            eprintln!("CDNOW: scoring ...");
            score_all(&cdnow, &mut cdnow_variants, &model).await;
        });
        table.extend(rows(&cdnow, &cdnow_variants));
    }
    // What one `score-batch` call costs besides the customers: a fresh
    // instance, the config and the model read from kv and parsed.
    let fixed = tokio.block_on(async {
        let ctx = context(&cdnow.config_json);
        let model = native_fit(&cdnow.population, cdnow.now, &cdnow.config_json).expect("native fit");
        ctx.services
            .kv_set(
                &ctx.tenant,
                PLUGIN_ID,
                rfm::component::MODEL_KEY,
                model.as_bytes(),
                u64::MAX,
            )
            .await
            .expect("kv");
        let mut samples = Vec::new();
        for _ in 0..101 {
            let started = Instant::now();
            let (result, _) = default_plugin.score_batch(ctx.clone(), &[]).await;
            samples.push(started.elapsed());
            result.expect("empty batch");
        }
        samples.sort();
        samples[samples.len() / 2]
    });
    drop(cdnow);

    eprintln!("generating {synthetic_customers} synthetic customers ...");
    let started = Instant::now();
    let synth = synthetic(synthetic_customers);
    eprintln!(
        "  {} customers, {} purchases in {:.2} s",
        synth.customers,
        synth.purchases,
        started.elapsed().as_secs_f64()
    );
    let mut synth_variants = vec![
        Variant::native(JOB_CHUNK),
        variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &synth),
    ];
    synth_variants.extend([
        variant("plugin, fuel off", &nofuel_plugin, 2_000, &synth),
        variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &synth).reuse(),
        variant("plugin, default runtime (fuel on)", &default_plugin, JOB_CHUNK, &synth).lean(),
    ]);
    tokio.block_on(async {
        eprintln!("synthetic: fitting ...");
        let model = fit_all(&synth, &mut synth_variants).await;
        eprintln!("synthetic: scoring ...");
        score_all(&synth, &mut synth_variants, &model).await;
    });
    table.extend(rows(&synth, &synth_variants));
    drop(synth_variants);
    drop(synth);

    eprintln!("end to end: CDNOW through SQLite ...");
    let e2e = tokio.block_on(end_to_end(&path));

    println!("\nrescoring benchmark (rfm plugin vs the same logic natively; inputs in memory)");
    println!(
        "customers/s = customers / (fit + score); scored/s = customers / score time; \
         plug/native = total time ratio; score ratio = score time ratio"
    );
    print_table(&table);
    println!();
    println!(
        "fixed cost of one score-batch call (fresh instance + config + model from kv), default runtime: {:.0} µs (median of 101)",
        fixed.as_secs_f64() * 1e6
    );
    store_section(&tokio);
    match e2e {
        Ok(e) => println!(
            "end to end (SQLite, CDNOW): import {} purchases {:.1} s; compile + first fit {:.2} s; \
             batch job (fit + rescore + save) {} customers in {:.2} s = {:.0} customers/s, {} failed",
            e.purchases,
            e.import,
            e.warmup,
            e.customers,
            e.job,
            e.customers as f64 / e.job,
            e.failed
        ),
        Err(e) => println!("end to end (SQLite, CDNOW): FAILED: {e:#}"),
    }
}
