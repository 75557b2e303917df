//! Plugin call overhead, side by side (run: `cargo bench --bench plugin_call`
//! after `scripts/build-plugins`):
//!
//! 1. `fresh`  — what every one-shot call pays: new `Store` + instantiate from
//!    the `InstancePre` + call + result checks (`Plugin::score`);
//! 2. `warm`   — a call on a reused instance (`Session::score`);
//! 3. `native` — the same scoring code (`bench-scorer/src/model.rs`, included
//!    verbatim) as a plain Rust function, building the same result.
//!
//! Each runs with fuel metering on (the default) and off, on a 10-interaction
//! history and on a 1000-interaction one (where guest compute dominates and
//! the fuel cost shows). divan prints the full table; a summary with medians
//! and ratios to native follows, with the floor under it: the same component
//! called through bare wasmtime (`plugin_call/raw_wasmtime.rs`), on a sync
//! and on an async engine, in the same run.

#[path = "plugin_call/raw_wasmtime.rs"]
// The one measured exception to "only the runtime knows wasmtime".
#[allow(clippy::disallowed_types)]
mod raw_wasmtime;

#[path = "../../plugins/testing/bench-scorer/src/model.rs"]
mod model;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rapport::runtime::contract::inputs::CustomerHistory;
use rapport::runtime::contract::scoring::CustomerScore;
use rapport::runtime::contract::types::{Customer, Interaction, Money};
use rapport::runtime::fixture::FixtureServices;
use rapport::runtime::{CallContext, Limits, Plugin, PluginDefinition, PluginKind, Runtime, RuntimeConfig};
use rapport::store::TenantId;
use sha2::{Digest, Sha256};

struct Setup {
    tokio: tokio::runtime::Runtime,
    fuel: Arc<Plugin>,
    nofuel: Arc<Plugin>,
    ctx: CallContext,
    empty: CustomerHistory,
    small: CustomerHistory,
    large: CustomerHistory,
    raw_sync: raw_wasmtime::Raw,
    raw_async: raw_wasmtime::Raw,
}

fn wasm_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("wasm32-wasip2/release/bench_scorer.wasm")
}

/// A customer with `n` purchases (every fourth without an amount), as
/// the server hands it to a plugin: compacted by the host's history builder.
fn history(n: usize) -> CustomerHistory {
    let interactions: Vec<Interaction> = (0..n)
        .map(|i| Interaction {
            id: format!("i{i}"),
            customer_id: "c1".into(),
            kind: "purchase".into(),
            channel: None,
            occurred_at: i as i64,
            amount: (i % 4 != 3).then(|| Money {
                currency: "USD".into(),
                amount_minor: 1000 + i as i64,
            }),
            items: Vec::new(),
            payload: "{}".into(),
        })
        .collect();
    let customer = Customer {
        id: "c1".into(),
        external_id: "E1".into(),
        name: Some("Ada".into()),
        email: None,
        phone: None,
        attributes: "{}".into(),
        created_at: 0,
    };
    rapport::runtime::history::compact(customer, &interactions, false, 1_000_000)
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let path = wasm_path();
        let wasm = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `scripts/build-plugins` (with the same CARGO_TARGET_DIR) first",
                path.display()
            )
        });
        let raw_sync = raw_wasmtime::Raw::new(&wasm, false);
        let raw_async = raw_wasmtime::Raw::new(&wasm, true);
        let def = PluginDefinition {
            id: "bench-scorer".into(),
            kind: PluginKind::ScoringRule,
            contract: "rapport:crm@0.1.0".into(),
            sha256: hex::encode(Sha256::digest(&wasm)),
            wasm,
            capabilities: BTreeSet::new(),
            allowed_hosts: Vec::new(),
            limits: Limits::default(),
        };
        let fuel = Runtime::new(RuntimeConfig::default())
            .unwrap()
            .load(def.clone())
            .unwrap();
        let nofuel = Runtime::new(RuntimeConfig {
            consume_fuel: false,
            ..RuntimeConfig::default()
        })
        .unwrap()
        .load(def)
        .unwrap();
        Setup {
            tokio: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            fuel,
            nofuel,
            ctx: CallContext {
                tenant: TenantId::for_tests("bench"),
                config_json: "{}".into(),
                services: Arc::new(FixtureServices::default()),
            },
            empty: history(0),
            small: history(10),
            large: history(1000),
            raw_sync,
            raw_async,
        }
    })
}

fn native(input: &CustomerHistory) -> CustomerScore {
    let value = model::bench_value(input.interactions.iter().map(|i| i.amount.as_ref().map(|m| m.minor)));
    CustomerScore {
        value,
        label: None,
        segment: None,
        explanation: "sum(amount_minor * 0.01) + count".to_string(),
        components: Vec::new(),
    }
}

fn fresh(plugin: &Plugin, input: &CustomerHistory) -> f64 {
    let s = setup();
    let (result, _) = s.tokio.block_on(plugin.score(s.ctx.clone(), input));
    result.unwrap().value
}

/// Runs `calls` calls on one reused instance.
fn warm_loop(plugin: &Plugin, input: &CustomerHistory, calls: u64) -> f64 {
    let s = setup();
    s.tokio.block_on(async {
        let mut session = plugin.session(s.ctx.clone());
        let mut v = 0.0;
        for _ in 0..calls {
            v = session.score(input).await.0.unwrap().value;
        }
        v
    })
}

#[divan::bench(args = ["fuel", "nofuel"])]
fn fresh_instance(bencher: divan::Bencher, fuel: &str) {
    let s = setup();
    let plugin = if fuel == "fuel" { &s.fuel } else { &s.nofuel };
    bencher.bench(|| fresh(plugin, &s.small));
}

#[divan::bench(args = ["fuel", "nofuel"])]
fn warm_instance(bencher: divan::Bencher, fuel: &str) {
    let s = setup();
    let plugin = if fuel == "fuel" { &s.fuel } else { &s.nofuel };
    let mut session = plugin.session(s.ctx.clone());
    bencher.bench_local(|| s.tokio.block_on(session.score(&s.small)).0.unwrap().value);
}

#[divan::bench]
fn native_function(bencher: divan::Bencher) {
    let s = setup();
    bencher.bench(|| native(divan::black_box(&s.small)).value);
}

#[divan::bench(args = ["fuel", "nofuel"])]
fn warm_instance_1000_interactions(bencher: divan::Bencher, fuel: &str) {
    let s = setup();
    let plugin = if fuel == "fuel" { &s.fuel } else { &s.nofuel };
    let mut session = plugin.session(s.ctx.clone());
    bencher.bench_local(|| s.tokio.block_on(session.score(&s.large)).0.unwrap().value);
}

#[divan::bench]
fn native_function_1000_interactions(bencher: divan::Bencher) {
    let s = setup();
    bencher.bench(|| native(divan::black_box(&s.large)).value);
}

/// Median per-call time over `rounds` rounds of `per_round` calls.
fn median(rounds: usize, per_round: u64, mut f: impl FnMut(u64)) -> Duration {
    f(per_round); // warm up
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f(per_round);
            t.elapsed() / per_round as u32
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

fn summary() {
    let s = setup();
    let same = |a: f64, b: f64| assert_eq!(a.to_bits(), b.to_bits(), "wasm and native disagree");
    same(fresh(&s.fuel, &s.small), native(&s.small).value);
    same(warm_loop(&s.fuel, &s.large, 1), native(&s.large).value);
    same(s.raw_sync.fresh(&s.small), native(&s.small).value);
    same(s.raw_async.warm(&s.small, 2), native(&s.small).value);
    let rows: Vec<(&str, Duration)> = vec![
        (
            "native fn, 10 interactions",
            median(31, 20_000, |n| {
                for _ in 0..n {
                    divan::black_box(native(divan::black_box(&s.small)));
                }
            }),
        ),
        (
            "fresh instance + call, fuel on",
            median(31, 500, |n| {
                for _ in 0..n {
                    divan::black_box(fresh(&s.fuel, &s.small));
                }
            }),
        ),
        (
            "fresh instance + call, fuel off",
            median(31, 500, |n| {
                for _ in 0..n {
                    divan::black_box(fresh(&s.nofuel, &s.small));
                }
            }),
        ),
        (
            "fresh instance + call, empty history",
            median(31, 500, |n| {
                for _ in 0..n {
                    divan::black_box(fresh(&s.fuel, &s.empty));
                }
            }),
        ),
        (
            "warm call, empty history",
            median(31, 2_000, |n| {
                divan::black_box(warm_loop(&s.fuel, &s.empty, n));
            }),
        ),
        (
            "warm call, fuel on",
            median(31, 2_000, |n| {
                divan::black_box(warm_loop(&s.fuel, &s.small, n));
            }),
        ),
        (
            "warm call, fuel off",
            median(31, 2_000, |n| {
                divan::black_box(warm_loop(&s.nofuel, &s.small, n));
            }),
        ),
        (
            "floor: bare wasmtime async, fresh + call",
            median(31, 500, |n| {
                for _ in 0..n {
                    divan::black_box(s.raw_async.fresh(&s.small));
                }
            }),
        ),
        (
            "floor: bare wasmtime sync, fresh + call",
            median(31, 500, |n| {
                for _ in 0..n {
                    divan::black_box(s.raw_sync.fresh(&s.small));
                }
            }),
        ),
        (
            "floor: bare wasmtime async, warm call",
            median(31, 2_000, |n| {
                divan::black_box(s.raw_async.warm(&s.small, n));
            }),
        ),
        (
            "floor: bare wasmtime sync, warm call",
            median(31, 2_000, |n| {
                divan::black_box(s.raw_sync.warm(&s.small, n));
            }),
        ),
        (
            "floor: bare wasmtime sync, warm, empty",
            median(31, 2_000, |n| {
                divan::black_box(s.raw_sync.warm(&s.empty, n));
            }),
        ),
        (
            "native fn, 1000 interactions",
            median(31, 2_000, |n| {
                for _ in 0..n {
                    divan::black_box(native(divan::black_box(&s.large)));
                }
            }),
        ),
        (
            "warm call 1000 interactions, fuel on",
            median(31, 200, |n| {
                divan::black_box(warm_loop(&s.fuel, &s.large, n));
            }),
        ),
        (
            "warm call 1000 interactions, fuel off",
            median(31, 200, |n| {
                divan::black_box(warm_loop(&s.nofuel, &s.large, n));
            }),
        ),
    ];
    let native_small = rows[0].1.as_secs_f64();
    let native_large = rows
        .iter()
        .find(|r| r.0.starts_with("native fn, 1000"))
        .map(|r| r.1.as_secs_f64())
        .unwrap();
    println!("\nsummary (median of 31 rounds, per call):");
    for (name, d) in &rows {
        let base = if name.contains("1000") {
            native_large
        } else {
            native_small
        };
        println!(
            "  {name:<40} {:>10.3} µs   {:>8.1}x native",
            d.as_secs_f64() * 1e6,
            d.as_secs_f64() / base
        );
    }
    let n = rows.len();
    let fuel_cost = rows[n - 2].1.as_secs_f64() / rows[n - 1].1.as_secs_f64();
    println!(
        "  fuel metering cost on guest-heavy calls: {:+.1}%",
        (fuel_cost - 1.0) * 100.0
    );
}

fn main() {
    // `RAPPORT_BENCH_PROFILE=fresh|warm` loops one case for 5 s (for perf).
    match std::env::var("RAPPORT_BENCH_PROFILE").as_deref() {
        Ok("fresh") => {
            let s = setup();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                fresh(
                    &s.fuel,
                    if std::env::var_os("RAPPORT_BENCH_EMPTY").is_some() {
                        &s.empty
                    } else {
                        &s.small
                    },
                );
            }
        }
        Ok("warm") => {
            let s = setup();
            warm_loop(&s.fuel, &s.empty, 500_000);
        }
        _ => {
            divan::main();
            summary();
        }
    }
}
