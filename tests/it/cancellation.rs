//! Cancellation safety of the write path (issue #18, item 2): a request or
//! transaction dropped at any await point must roll back and hand a clean
//! connection back to the pool, on both backends.
//!
//! The failure this guards against: wrk hanging up on in-flight batch
//! ingests with reward plugins left a pooled SQLite connection inside a
//! `BEGIN IMMEDIATE` nobody would end, so it held the write lock while idle;
//! every later write failed (`begin_with at non-zero transaction depth`,
//! then `database is locked`) and the server no longer stopped. Here writers
//! are dropped after seeded random delays under concurrent load, then every
//! later write must succeed, what was stored must be whole (interactions and
//! their reward points together, or neither), and the server must stop.

// This test counts what the dropped and later writes stored, straight from the tables.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::Row;

use crate::support::{self, Backend, TestApp, TestDb};
use rapport::db::Db;

/// Fixed seeds: a failure reproduces with the same drop points.
const SEED: u64 = 0x00C4_4CE1_0018;

/// `Db::begin_write` dropped mid-begin (SQLite: while `BEGIN IMMEDIATE`
/// waits for the lock another writer holds) or mid-transaction, by many
/// tasks at once: afterwards every connection of the pool begins, writes and
/// commits, and none is left inside a transaction.
async fn dropped_transactions_leave_clean_connections(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = Db::open(&test_db.url).await.unwrap();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut tasks = Vec::new();
    for n in 0..400u32 {
        let db = db.clone();
        // Drop points from "before the begin was sent" to "after the
        // commit", in microseconds, so every await point gets its share.
        let cancel_after = Duration::from_micros(rng.random_range(0..3_000));
        let hold = Duration::from_micros(rng.random_range(0..1_500));
        tasks.push(tokio::spawn(async move {
            let write = async {
                let mut tx = db.begin_write().await?;
                sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(format!("t{n}"))
                    .bind("dropped")
                    .bind(i64::from(n))
                    .execute(&mut *tx)
                    .await?;
                // Holding the write lock makes the other begins wait, so
                // some of them are dropped while waiting for it.
                tokio::time::sleep(hold).await;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(())
            };
            match tokio::time::timeout(cancel_after, write).await {
                // Finished or dropped: both are fine, nothing else is.
                Ok(Ok(())) | Err(_) => true,
                Ok(Err(e)) => panic!("write {n} failed before being dropped: {e}"),
            }
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap());
    }
    // Every later write succeeds, on as many connections at once as the pool
    // holds (a poisoned one would be among them) ...
    let mut writers = Vec::new();
    for n in 0..32u32 {
        let db = db.clone();
        writers.push(tokio::spawn(async move {
            let mut tx = db.begin_write().await.unwrap_or_else(|e| panic!("begin {n}: {e}"));
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, 'after', 0)")
                .bind(format!("after{n}"))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("insert {n}: {e}"));
            tx.commit().await.unwrap_or_else(|e| panic!("commit {n}: {e}"));
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let after: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM tenants WHERE name = 'after'")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 32);
    // ... and no idle connection is inside a transaction.
    let mut held = Vec::new();
    for _ in 0..db.pool().size() {
        let conn = db.pool().acquire().await.unwrap();
        assert!(
            !sqlx::Connection::is_in_transaction(&*conn),
            "a pooled connection is inside a transaction"
        );
        held.push(conn);
    }
    drop(held);
    // Dropped transactions stored nothing half-way: a row is there only if
    // its commit ran (they are single-row, so this is the count of commits
    // that finished; what matters is that it is readable and consistent).
    let stored: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM tenants WHERE name = 'dropped'")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert!((0..=400).contains(&stored));
    db.pool().close().await;
}

/// One test-reward plugin (1 point per currency unit) for tenant acme.
fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = support::plugin_manifest_entry("points", "test-reward", "reward-scheme", &[], "timeout_ms = 5000");
    text += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"points\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Clients that hang up on rewarded batch ingests after random delays,
/// several at once: afterwards every write succeeds, each stored purchase
/// carries exactly its points (a dropped batch rolled back whole), and the
/// server stops within its grace period.
async fn hung_up_batch_ingests_leave_the_server_healthy(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    let app = TestApp::start_with(backend, config).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let mut customers = Vec::new();
    for n in 0..8 {
        let (s, c) = app
            .post("/v1/customers", &acme.write, json!({ "external_id": format!("c{n}") }))
            .await;
        assert_eq!(s, 201, "{c}");
        customers.push(c["id"].as_str().unwrap().to_string());
    }
    let app = Arc::new(app);
    let customers = Arc::new(customers);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (app, token, customers) = (app.clone(), acme.write.clone(), customers.clone());
        let seed = rng.random::<u64>();
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut finished = 0;
            for round in 0..12u64 {
                let items: Vec<_> = (0..rng.random_range(20..120u64))
                    .map(|i| {
                        let customer = &customers[rng.random_range(0..customers.len())];
                        json!({ "customer_id": customer, "kind": "purchase", "currency": "USD", "amount": "2.00",
                                "idempotency_key": format!("k-{client}-{round}-{i}") })
                    })
                    .collect();
                // A client of its own per request: its timeout closes the
                // connection, which is what a hanging-up client does.
                let hang_up = Duration::from_millis(rng.random_range(1..60));
                let http = reqwest::Client::builder().timeout(hang_up).build().unwrap();
                let sent = http
                    .post(app.url("/v1/interactions/batch"))
                    .bearer_auth(&token)
                    .json(&json!({ "items": items }))
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status();
                        // A body cut off by the timeout is a hang-up too.
                        if let Ok(body) = response.text().await {
                            assert!(status.is_success(), "{status}: {body}");
                            finished += 1;
                        }
                    }
                    Err(e) => assert!(e.is_timeout(), "{e}"),
                }
            }
            finished
        }));
    }
    let mut finished = 0;
    for c in clients {
        finished += c.await.unwrap();
    }
    eprintln!("{finished} of 48 batches finished before their client hung up");

    // Every later write succeeds: singles and a batch, more of them than
    // the pool has connections, several at once.
    let mut writes = Vec::new();
    for n in 0..24 {
        let (app, token, customer) = (app.clone(), acme.write.clone(), customers[n % customers.len()].clone());
        writes.push(tokio::spawn(async move {
            let item = json!({ "customer_id": customer, "kind": "purchase", "currency": "USD", "amount": "2.00",
                               "idempotency_key": format!("after-{n}") });
            let (s, b) = if n % 4 == 0 {
                app.post("/v1/interactions/batch", &token, json!({ "items": [item] }))
                    .await
            } else {
                app.post("/v1/interactions", &token, item).await
            };
            assert!(s.is_success(), "write {n} after the hang-ups: {s} {b}");
        }));
    }
    for w in writes {
        w.await.unwrap();
    }

    // Whole or nothing: 2 points for each stored purchase, per customer.
    let pool = app.server.state.store.db().pool().clone();
    for customer in customers.iter() {
        let purchases: i64 =
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM interactions WHERE tenant_id = $1 AND customer_id = $2")
                .bind(&acme.id)
                .bind(customer)
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
        let points: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM loyalty_ledger \
             WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(&acme.id)
        .bind(customer)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(
            points,
            2 * purchases,
            "customer {customer}: {purchases} purchases, {points} points"
        );
    }

    // The server stops (what SIGTERM runs) within a grace period: a
    // connection stuck in a transaction used to keep it from stopping.
    let app = Arc::into_inner(app).expect("every client task has ended");
    let TestApp { server, db: _db, .. } = app;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("the server did not stop within 30 s")
        .unwrap();
}

both_backends!(
    dropped_transactions_leave_clean_connections,
    hung_up_batch_ingests_leave_the_server_healthy,
);
