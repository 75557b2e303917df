//! Reward-scheme plugins on the ingest path, end to end: real components
//! from `plugins/testing/` (`test-reward`: 1 point per currency unit and a
//! rank-1 tier at a rolling spend of 1000.00; `hostile-reward`: intents the
//! host must refuse), declared in a real manifest and run by
//! `POST /v1/interactions` (single and batch) and
//! `GET /v1/customers/{id}/loyalty/redeemable`.
//!
//! What must hold: points are exact and awarded exactly once (a replayed
//! ingest adds nothing), a failing plugin never loses the interaction and
//! has no effect at all (all or nothing), failures count towards
//! suspension, and another tenant sees none of it.

use crate::support;
use std::path::{Path, PathBuf};

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use serde_json::{Value, json};

/// A reward-scheme plugin entry; `hostile-reward` imports `kv` (for its
/// `kv-write` mode), so it is granted.
fn plugin_entry(id: &str, crate_name: &str, limits: &str) -> String {
    let capabilities: &[&str] = match crate_name {
        "hostile-reward" => &["kv"],
        "rapport-plugin-tiered-points" => &["config"],
        _ => &[],
    };
    support::plugin_manifest_entry(id, crate_name, "reward-scheme", capabilities, limits)
}

/// acme: `points` only. globex: `points` then `hostile` (tolerant limit).
/// initech: `fragile` (the hostile plugin, suspended after 2 failures) and
/// `points`, disabled. hooli: the first-party `tiered-points`. stark:
/// `looper` and wayne: `waiter`, the hostile plugin with long deadlines for
/// its `loop` and `wait` modes.
/// umbrella is not in the manifest: no reward plugin at all.
fn manifest(dir: &Path) -> PathBuf {
    let mut text = String::new();
    text += &plugin_entry("points", "test-reward", "timeout_ms = 2000");
    text += &plugin_entry(
        "hostile",
        "hostile-reward",
        "timeout_ms = 2000\nmax_consecutive_failures = 1000",
    );
    text += &plugin_entry(
        "fragile",
        "hostile-reward",
        "timeout_ms = 2000\nmax_consecutive_failures = 2",
    );
    text += &plugin_entry("tiered", "rapport-plugin-tiered-points", "timeout_ms = 2000");
    text += &plugin_entry(
        "looper",
        "hostile-reward",
        &format!("timeout_ms = {LOOP_MS}\nmax_consecutive_failures = 1000"),
    );
    text += &plugin_entry("waiter", "hostile-reward", "timeout_ms = 60000");
    let tenants: [(&str, &[&str]); 6] = [
        ("acme", &["points"]),
        ("globex", &["points", "hostile"]),
        ("initech", &["fragile", "-points"]),
        ("hooli", &["tiered"]),
        ("stark", &["looper"]),
        ("wayne", &["waiter"]),
    ];
    for (tenant, plugins) in tenants {
        text += &format!("[[tenant]]\nid = {tenant:?}\n");
        // "-id": listed for the tenant but disabled.
        for plugin in plugins {
            let (id, enabled) = match plugin.strip_prefix('-') {
                Some(id) => (id, false),
                None => (*plugin, true),
            };
            text += &format!("[[tenant.plugin]]\nid = {id:?}\nenabled = {enabled}\n");
        }
        text += "\n";
    }
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The deadline of stark's looping reward plugin: far longer than the
/// other tenant's writes take, so that they must finish before it does.
const LOOP_MS: u64 = 6000;

struct Setup {
    app: TestApp,
    acme: TestTenant,
    globex: TestTenant,
    initech: TestTenant,
    umbrella: TestTenant,
    hooli: TestTenant,
    stark: TestTenant,
    wayne: TestTenant,
    _dir: tempfile::TempDir,
}

async fn start(backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let initech = app.tenant_with_id("initech").await;
    let umbrella = app.tenant_with_id("umbrella").await;
    let hooli = app.tenant_with_id("hooli").await;
    let stark = app.tenant_with_id("stark").await;
    let wayne = app.tenant_with_id("wayne").await;
    Setup {
        app,
        acme,
        globex,
        initech,
        umbrella,
        hooli,
        stark,
        wayne,
        _dir: dir,
    }
}

async fn customer(app: &TestApp, t: &TestTenant, external_id: &str) -> String {
    let (s, c) = app
        .post("/v1/customers", &t.write, json!({ "external_id": external_id }))
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn purchase(app: &TestApp, t: &TestTenant, customer_id: &str, amount: &str, extra: Value) -> Value {
    let mut body = json!({ "customer_id": customer_id, "kind": "purchase", "currency": "USD", "amount": amount });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, b) = app.post("/v1/interactions", &t.write, body).await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn account(app: &TestApp, t: &TestTenant, customer_id: &str) -> Value {
    let (s, a) = app.get(&format!("/v1/customers/{customer_id}/loyalty"), &t.read).await;
    assert_eq!(s, 200, "{a}");
    a
}

async fn ledger(app: &TestApp, t: &TestTenant, customer_id: &str) -> Vec<Value> {
    let (s, l) = app
        .get(&format!("/v1/customers/{customer_id}/loyalty/ledger"), &t.read)
        .await;
    assert_eq!(s, 200, "{l}");
    l["items"].as_array().unwrap().clone()
}

/// The reward entry of `plugin` in an ingest response.
fn reward<'a>(body: &'a Value, plugin: &str) -> &'a Value {
    body["rewards"]
        .as_array()
        .unwrap_or_else(|| panic!("no rewards: {body}"))
        .iter()
        .find(|r| r["plugin"] == plugin)
        .unwrap_or_else(|| panic!("no reward entry for {plugin}: {body}"))
}

async fn purchase_earns_points_exactly_once(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let alice = customer(&app, &acme, "alice").await;

    let body = purchase(&app, &acme, &alice, "123.45", json!({ "idempotency_key": "order-1" })).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["amount"]["amount_minor"], 12345);
    assert_eq!(body["rewards"].as_array().unwrap().len(), 1, "{body}");
    let r = reward(&body, "points");
    assert_eq!(r["status"], "applied", "{body}");
    assert!(r["tier_change"].is_null(), "{body}");
    assert!(r.get("error").is_none(), "{body}");
    let entries = r["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{body}");
    assert_eq!(entries[0]["kind"], "earn");
    assert_eq!(entries[0]["points"], 123);
    assert_eq!(entries[0]["reason"], "1 point per unit");
    assert_eq!(entries[0]["interaction_id"], id.as_str());
    assert_eq!(entries[0]["idempotency_key"], format!("reward:{id}:points:0"));
    assert!(entries[0]["expires_at"].is_null());
    let a = account(&app, &acme, &alice).await;
    assert_eq!(a["balance"], 123, "{a}");
    assert_eq!(a["lifetime_earned"], 123, "{a}");

    // The retried event replays: same interaction, the same entry reported,
    // no plugin run and no new points.
    let (s, again) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "123.45",
                    "idempotency_key": "order-1" }),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    let r = reward(&again, "points");
    assert_eq!(r["status"], "replayed", "{again}");
    assert_eq!(r["entries"][0]["id"], entries[0]["id"], "{again}");
    assert_eq!(r["entries"][0]["points"], 123);
    let a = account(&app, &acme, &alice).await;
    assert_eq!(a["balance"], 123, "{a}");
    assert_eq!(a["lifetime_earned"], 123, "{a}");
    assert_eq!(ledger(&app, &acme, &alice).await.len(), 1);

    // The same key with another body is still a conflict, and awards nothing.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "999.00",
                    "idempotency_key": "order-1" }),
        )
        .await;
    assert_error(s, &b, 409, "idempotency_conflict");

    // Below one unit and non-purchases earn nothing, but the plugin ran.
    let body = purchase(&app, &acme, &alice, "0.99", json!({})).await;
    assert_eq!(reward(&body, "points")["status"], "applied");
    assert_eq!(reward(&body, "points")["entries"], json!([]));
    let (s, body) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": alice, "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(reward(&body, "points")["entries"], json!([]));
    // A second purchase adds exactly floor(amount / 1.00).
    purchase(&app, &acme, &alice, "20.00", json!({})).await;
    let a = account(&app, &acme, &alice).await;
    assert_eq!(a["balance"], 143, "{a}");
    assert_eq!(a["lifetime_earned"], 143, "{a}");
}

async fn batch_with_mixed_items(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let alice = customer(&app, &acme, "alice").await;
    let items = json!({ "items": [
        { "customer_external_id": "bob", "kind": "purchase", "currency": "USD", "amount": "10.00" },
        { "customer_id": alice, "kind": "no such kind" },
        { "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "25.50", "idempotency_key": "k1" },
        { "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "25.50", "idempotency_key": "k1" },
        { "customer_id": alice, "kind": "visit" },
        { "customer_id": "missing", "kind": "purchase", "currency": "USD", "amount": "5.00" },
    ]});
    let (s, body) = app.post("/v1/interactions/batch", &acme.write, items.clone()).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (
            body["created"].as_u64(),
            body["replayed"].as_u64(),
            body["failed"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{body}"
    );
    let results = body["results"].as_array().unwrap();
    let points = |i: usize| -> Vec<i64> {
        let r = &results[i]["rewards"];
        let entry = r.as_array().unwrap().iter().find(|e| e["plugin"] == "points").unwrap();
        entry["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["points"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(results[0]["status"], "created");
    assert_eq!(points(0), vec![10]);
    assert_eq!(results[1]["status"], "error");
    assert!(results[1].get("rewards").is_none(), "{body}");
    assert_eq!(results[2]["status"], "created");
    assert_eq!(points(2), vec![25]);
    // The in-batch repeat replays the entry written moments before.
    assert_eq!(results[3]["status"], "replayed");
    assert_eq!(results[3]["rewards"][0]["status"], "replayed");
    assert_eq!(
        results[3]["rewards"][0]["entries"][0]["id"],
        results[2]["rewards"][0]["entries"][0]["id"]
    );
    assert_eq!(results[4]["status"], "created");
    assert_eq!(points(4), Vec::<i64>::new());
    assert_eq!(results[5]["status"], "error");
    assert_eq!(results[5]["error"]["code"], "not_found", "{body}");

    let bob = results[0]["interaction"]["customer_id"].as_str().unwrap().to_string();
    assert_eq!(account(&app, &acme, &bob).await["balance"], 10);
    assert_eq!(account(&app, &acme, &alice).await["balance"], 25);

    // Retrying the whole batch: the keyed item replays, the others are new
    // interactions (they had no key) and earn again: exactly 10 + 0 more.
    let (s, body) = app.post("/v1/interactions/batch", &acme.write, items).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][3]["status"], "replayed");
    assert_eq!(body["results"][2]["status"], "replayed");
    assert_eq!(account(&app, &acme, &alice).await["balance"], 25);
    assert_eq!(account(&app, &acme, &bob).await["balance"], 20);
    assert_eq!(ledger(&app, &acme, &alice).await.len(), 1);
}

async fn tier_change_is_applied(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let (s, base) = app
        .post("/v1/loyalty/tiers", &acme.admin, json!({ "name": "Base", "rank": 0 }))
        .await;
    assert_eq!(s, 201, "{base}");
    let (s, gold) = app
        .post("/v1/loyalty/tiers", &acme.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    assert_eq!(s, 201, "{gold}");
    let gold_id = gold["id"].as_str().unwrap();
    let alice = customer(&app, &acme, "alice").await;

    // A purchase of 2020 only counts in its own 12-month window.
    let old = purchase(
        &app,
        &acme,
        &alice,
        "900.00",
        json!({ "occurred_at": "2020-03-01T12:00:00Z" }),
    )
    .await;
    assert!(reward(&old, "points")["tier_change"].is_null(), "{old}");
    let body = purchase(&app, &acme, &alice, "600.00", json!({})).await;
    assert!(reward(&body, "points")["tier_change"].is_null(), "{body}");
    // 600.00 + 400.00 reaches 1000.00 (this interaction included).
    let body = purchase(&app, &acme, &alice, "400.00", json!({})).await;
    let r = reward(&body, "points");
    assert_eq!(r["status"], "applied", "{body}");
    assert_eq!(r["entries"][0]["points"], 400);
    assert_eq!(
        r["tier_change"],
        json!({ "from_tier_id": null, "to_tier_id": gold_id, "reason": "rolling spend >= 100000 minor" }),
        "{body}"
    );
    let a = account(&app, &acme, &alice).await;
    assert_eq!(a["tier"]["id"], gold_id, "{a}");
    assert_eq!(a["balance"], 1900, "{a}");
    assert_eq!(a["lifetime_earned"], 1900, "{a}");
    let (s, changes) = app
        .get(&format!("/v1/customers/{alice}/loyalty/tier-changes"), &acme.read)
        .await;
    assert_eq!(s, 200, "{changes}");
    let changes = changes
        .as_array()
        .or_else(|| changes["items"].as_array())
        .unwrap()
        .clone();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["to_tier_id"], gold_id);
    // Already Gold: no further change.
    let body = purchase(&app, &acme, &alice, "5.00", json!({})).await;
    assert!(reward(&body, "points")["tier_change"].is_null(), "{body}");
}

async fn failing_plugin_keeps_the_interaction(backend: Backend) {
    let Setup {
        app, globex, initech, ..
    } = start(backend).await;
    let bob = customer(&app, &globex, "bob").await;

    // points runs first and applies; hostile's negative earn is rejected.
    let body = purchase(&app, &globex, &bob, "50.00", json!({})).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(reward(&body, "points")["status"], "applied");
    assert_eq!(reward(&body, "points")["entries"][0]["points"], 50);
    let h = reward(&body, "hostile");
    assert_eq!(h["status"], "failed", "{body}");
    assert_eq!(h["entries"], json!([]));
    assert_eq!(h["error"]["code"], "plugin_invalid_output", "{body}");
    let (s, stored) = app.get(&format!("/v1/interactions/{id}"), &globex.read).await;
    assert_eq!(s, 200, "{stored}");

    // Each refusal is all or nothing: the 10-point bait never lands.
    let cases = [
        ("overdraw", "plugin_invalid_intent", "insufficient_points"),
        ("unknown-tier", "plugin_invalid_intent", "unknown tier"),
        ("panic", "plugin_trap", "panicked on purpose"),
        ("error", "plugin_internal", "refusing on purpose"),
    ];
    for (channel, code, needle) in cases {
        let body = purchase(&app, &globex, &bob, "50.00", json!({ "channel": channel })).await;
        assert_eq!(reward(&body, "points")["entries"][0]["points"], 50, "{channel}: {body}");
        let h = reward(&body, "hostile");
        assert_eq!(h["status"], "failed", "{channel}: {body}");
        assert_eq!(h["error"]["code"], code, "{channel}: {body}");
        assert!(
            h["error"]["message"].as_str().unwrap().contains(needle),
            "{channel}: {body}"
        );
        assert_eq!(h["entries"], json!([]), "{channel}: {body}");
    }
    let a = account(&app, &globex, &bob).await;
    assert_eq!(a["balance"], 250, "{a}");
    assert!(a["tier"].is_null(), "{a}");
    let entries = ledger(&app, &globex, &bob).await;
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e["reason"] == "1 point per unit"), "{entries:?}");

    // In a batch too: both items stored, only points applied.
    let (s, body) = app
        .post(
            "/v1/interactions/batch",
            &globex.write,
            json!({ "items": [
                { "customer_id": bob, "kind": "purchase", "currency": "USD", "amount": "7.00", "channel": "overdraw" },
                { "customer_id": bob, "kind": "purchase", "currency": "USD", "amount": "3.00" },
            ]}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["created"], 2, "{body}");
    for item in body["results"].as_array().unwrap() {
        assert_eq!(reward(item, "hostile")["status"], "failed", "{body}");
        assert_eq!(reward(item, "points")["status"], "applied", "{body}");
    }
    assert_eq!(account(&app, &globex, &bob).await["balance"], 260);
    // hostile tolerates 1000 failures: still active, misbehaviour counted
    // (7 failures, less the typed `internal` error, which is an answer).
    let (s, p) = app.get("/v1/plugins/hostile", &globex.read).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "active", "{p}");
    assert_eq!(p["consecutive_failures"], 6, "{p}");

    // A kv write during on-interaction works on both backends: the plugin
    // runs before the ingest's write transaction, not under its lock.
    let body = purchase(&app, &globex, &bob, "50.00", json!({ "channel": "kv-write" })).await;
    let h = reward(&body, "hostile");
    assert_eq!(h["status"], "applied", "{body}");
    assert_eq!(h["entries"][0]["points"], 1, "{body}");
    assert_eq!(h["entries"][0]["reason"], "kv written", "{body}");
    assert_eq!(account(&app, &globex, &bob).await["balance"], 311);

    // fragile (the same component) is suspended for initech after 2
    // failures; later interactions are still stored, without it.
    let carol = customer(&app, &initech, "carol").await;
    for _ in 0..2 {
        let body = purchase(&app, &initech, &carol, "10.00", json!({})).await;
        assert_eq!(reward(&body, "fragile")["status"], "failed", "{body}");
    }
    let (_, p) = app.get("/v1/plugins/fragile", &initech.read).await;
    assert_eq!(p["status"], "suspended", "{p}");
    let body = purchase(&app, &initech, &carol, "10.00", json!({})).await;
    assert!(body.get("rewards").is_none(), "{body}");
    let (s, timeline) = app
        .get(&format!("/v1/customers/{carol}/interactions"), &initech.read)
        .await;
    assert_eq!(s, 200);
    assert_eq!(timeline["items"].as_array().unwrap().len(), 3);
    assert_eq!(account(&app, &initech, &carol).await["balance"], 0);
}

async fn tenants_are_isolated(backend: Backend) {
    let Setup {
        app,
        acme,
        globex,
        umbrella,
        ..
    } = start(backend).await;
    let alice = customer(&app, &acme, "alice").await;
    purchase(&app, &acme, &alice, "30.00", json!({})).await;

    // Another tenant's key cannot ingest for, or read, acme's customer.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &globex.write,
            json!({ "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "99.00" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .get(&format!("/v1/customers/{alice}/loyalty/redeemable"), &globex.read)
        .await;
    assert_error(s, &b, 404, "not_found");
    assert_eq!(account(&app, &acme, &alice).await["balance"], 30);

    // A tenant without reward plugins: interactions carry no rewards and no
    // account is created behind the customer's back.
    let zed = customer(&app, &umbrella, "zed").await;
    let body = purchase(&app, &umbrella, &zed, "500.00", json!({})).await;
    assert!(body.get("rewards").is_none(), "{body}");
    let a = account(&app, &umbrella, &zed).await;
    assert_eq!(a["balance"], 0, "{a}");
    assert!(a["created_at"].is_null(), "{a}");

    // The same external id in globex is a different customer with its own points.
    let alice_g = customer(&app, &globex, "alice").await;
    assert_ne!(alice, alice_g);
    purchase(&app, &globex, &alice_g, "4.00", json!({})).await;
    assert_eq!(account(&app, &globex, &alice_g).await["balance"], 4);
    assert_eq!(account(&app, &acme, &alice).await["balance"], 30);
}

async fn create_reward(app: &TestApp, t: &TestTenant, body: Value) -> String {
    let (s, r) = app.post("/v1/loyalty/rewards", &t.admin, body).await;
    assert_eq!(s, 201, "{r}");
    r["id"].as_str().unwrap().to_string()
}

/// The catalogue used by the redeemable tests, returning the ids of
/// (cheap, expensive, tiered, sold out, inactive).
async fn catalogue(app: &TestApp, t: &TestTenant) -> [String; 5] {
    [
        create_reward(app, t, json!({ "name": "Mug", "cost_points": 50 })).await,
        create_reward(app, t, json!({ "name": "Bike", "cost_points": 500 })).await,
        create_reward(
            app,
            t,
            json!({ "name": "Lounge", "cost_points": 10, "min_tier_rank": 1 }),
        )
        .await,
        create_reward(app, t, json!({ "name": "Tote", "cost_points": 20, "stock": 0 })).await,
        create_reward(app, t, json!({ "name": "Old", "cost_points": 30, "active": false })).await,
    ]
}

fn ids(body: &Value) -> Vec<String> {
    body["rewards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn redeemable_rewards(backend: Backend) {
    let Setup {
        app,
        acme,
        globex,
        umbrella,
        ..
    } = start(backend).await;

    // acme: decided by test-reward (and the host's own rules).
    let [mug, _bike, lounge, _tote, _old] = catalogue(&app, &acme).await;
    let alice = customer(&app, &acme, "alice").await;
    let path = format!("/v1/customers/{alice}/loyalty/redeemable");
    let (s, body) = app.get(&path, &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["balance"], 0);
    assert_eq!(ids(&body), Vec::<String>::new());
    assert_eq!(
        body["plugins"],
        json!([{ "plugin": "points", "status": "ok" }]),
        "{body}"
    );
    purchase(&app, &acme, &alice, "123.00", json!({})).await;
    let (_, body) = app.get(&path, &acme.read).await;
    assert_eq!(body["balance"], 123);
    assert_eq!(ids(&body), vec![mug.clone()], "{body}");
    // With the rank-1 tier the tiered reward opens up.
    let (_, gold) = app
        .post("/v1/loyalty/tiers", &acme.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    let (s, b) = app
        .put(
            &format!("/v1/customers/{alice}/loyalty/tier"),
            &acme.admin,
            json!({ "tier_id": gold["id"], "reason": "vip" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, body) = app.get(&path, &acme.read).await;
    assert_eq!(ids(&body), vec![lounge.clone(), mug.clone()], "{body}");

    // globex: hostile answers "everything", the intersection still holds.
    let [g_mug, ..] = catalogue(&app, &globex).await;
    let bob = customer(&app, &globex, "bob").await;
    purchase(&app, &globex, &bob, "60.00", json!({})).await;
    let (s, body) = app
        .get(&format!("/v1/customers/{bob}/loyalty/redeemable"), &globex.read)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["balance"], 60);
    assert_eq!(ids(&body), vec![g_mug], "{body}");
    assert_eq!(
        body["plugins"],
        json!([{ "plugin": "points", "status": "ok" }, { "plugin": "hostile", "status": "ok" }]),
        "{body}"
    );

    // umbrella: no reward plugin, the host's rules alone.
    let [u_mug, u_bike, ..] = catalogue(&app, &umbrella).await;
    let zed = customer(&app, &umbrella, "zed").await;
    let (s, b) = app
        .post(
            &format!("/v1/customers/{zed}/loyalty/ledger"),
            &umbrella.write,
            json!({ "kind": "earn", "points": 600, "reason": "welcome" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, body) = app
        .get(&format!("/v1/customers/{zed}/loyalty/redeemable"), &umbrella.read)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(ids(&body), vec![u_mug, u_bike], "{body}");
    assert_eq!(body["plugins"], json!([]));

    // Unknown customer: 404.
    let (s, b) = app.get("/v1/customers/nope/loyalty/redeemable", &acme.read).await;
    assert_error(s, &b, 404, "not_found");

    // Both additions are in the generated OpenAPI document.
    let (s, doc) = app.get("/v1/openapi.json", "").await;
    assert_eq!(s, 200);
    assert!(
        doc["paths"]["/v1/customers/{customer_id}/loyalty/redeemable"]["get"].is_object(),
        "no redeemable path"
    );
    let schemas = &doc["components"]["schemas"];
    for name in [
        "Redeemable",
        "RewardRun",
        "RewardStatus",
        "RewardTierChange",
        "IngestResponse",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
}

/// The first-party `tiered-points` plugin (default config: Bronze/Silver/Gold
/// at 0 / 500.00 / 2000.00 rolling spend earning 1x / 1.5x / 2x, points
/// expiring after 365 days, a welcome bonus of 100) through the same path.
async fn first_party_tiered_points(backend: Backend) {
    let Setup { app, hooli, .. } = start(backend).await;
    let mut tiers = std::collections::HashMap::new();
    for (name, rank) in [("Bronze", 0), ("Silver", 1), ("Gold", 2)] {
        let (s, t) = app
            .post("/v1/loyalty/tiers", &hooli.admin, json!({ "name": name, "rank": rank }))
            .await;
        assert_eq!(s, 201, "{t}");
        tiers.insert(name, t["id"].as_str().unwrap().to_string());
    }
    let ann = customer(&app, &hooli, "ann").await;

    // First purchase: Bronze, 123 points at 1x plus the welcome bonus.
    let body = purchase(&app, &hooli, &ann, "123.45", json!({})).await;
    let r = reward(&body, "tiered");
    assert_eq!(r["status"], "applied", "{body}");
    let points: Vec<i64> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["points"].as_i64().unwrap())
        .collect();
    assert_eq!(points.iter().sum::<i64>(), 223, "{body}");
    assert!(points.contains(&123) && points.contains(&100), "{body}");
    assert!(
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["expires_at"].is_string()),
        "{body}"
    );
    assert_eq!(r["tier_change"]["to_tier_id"], tiers["Bronze"].as_str(), "{body}");

    // 123.45 + 500.00 crosses 500.00: Silver, and this purchase earns 1.5x.
    let body = purchase(&app, &hooli, &ann, "500.00", json!({})).await;
    let r = reward(&body, "tiered");
    assert_eq!(r["entries"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(r["entries"][0]["points"], 750, "{body}");
    assert_eq!(r["tier_change"]["from_tier_id"], tiers["Bronze"].as_str(), "{body}");
    assert_eq!(r["tier_change"]["to_tier_id"], tiers["Silver"].as_str(), "{body}");
    let a = account(&app, &hooli, &ann).await;
    assert_eq!(a["balance"], 973, "{a}");
    assert_eq!(a["lifetime_earned"], 973, "{a}");
    assert_eq!(a["tier"]["name"], "Silver", "{a}");
}

/// The money overflow of issue 11: purchases of i64::MAX cents with reward
/// plugins on answered 500 and then broke the customer's statistics. Above
/// the ceiling is a 422; at the ceiling the interaction is stored whatever
/// the plugins make of it (points past an entry's bound are refused, so the
/// plugin's run fails, never the ingest), and everything stays readable.
async fn amounts_at_the_ceiling_with_reward_plugins(backend: Backend) {
    let Setup { app, acme, hooli, .. } = start(backend).await;
    for t in [&acme, &hooli] {
        let c = customer(&app, t, "whale").await;
        let (s, b) = app
            .post(
                "/v1/interactions",
                &t.write,
                json!({ "customer_id": c, "kind": "purchase", "currency": "USD", "amount": "92233720368547758.07" }),
            )
            .await;
        assert_error(s, &b, 422, "validation_failed");
        for _ in 0..2 {
            let body = purchase(&app, t, &c, "10000000000000.00", json!({})).await;
            assert!(body["rewards"].is_array(), "{body}");
        }
        let (s, b) = app.get(&format!("/v1/customers/{c}"), &t.read).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["stats"]["total_spend"][0]["amount"], "20000000000000.00", "{b}");
        let a = account(&app, t, &c).await;
        assert!(a["balance"].as_i64().is_some_and(|b| b >= 0), "{a}");
        let (s, b) = app.get(&format!("/v1/customers/{c}/loyalty/redeemable"), &t.read).await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn admin_retries_a_plugin(backend: Backend) {
    let Setup {
        app, globex, initech, ..
    } = start(backend).await;
    let carol = customer(&app, &initech, "carol").await;
    let body = purchase(&app, &initech, &carol, "42.00", json!({})).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(body["rewards"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(reward(&body, "fragile")["status"], "failed");
    let retry = format!("/v1/interactions/{id}/rewards/retry");

    // points was disabled at ingest; once enabled, an admin re-runs it.
    let (s, b) = app.post(&retry, &initech.write, json!({ "plugin": "points" })).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.post("/v1/plugins/points/enable", &initech.admin, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, run) = app.post(&retry, &initech.admin, json!({ "plugin": "points" })).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["plugin"], "points");
    assert_eq!(run["status"], "applied", "{run}");
    assert_eq!(run["entries"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(run["entries"][0]["points"], 42);
    assert_eq!(run["entries"][0]["interaction_id"], id.as_str());
    assert_eq!(run["entries"][0]["idempotency_key"], format!("reward:{id}:points:0"));
    assert_eq!(account(&app, &initech, &carol).await["balance"], 42);
    // At most once.
    let (s, b) = app.post(&retry, &initech.admin, json!({ "plugin": "points" })).await;
    assert_error(s, &b, 409, "rewards_already_applied");
    assert_eq!(account(&app, &initech, &carol).await["balance"], 42);

    // A plugin that fails again reports it, counts it (fragile: 2 -> suspended)...
    let (s, run) = app.post(&retry, &initech.admin, json!({ "plugin": "fragile" })).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "plugin_invalid_output", "{run}");
    let (s, b) = app.post(&retry, &initech.admin, json!({ "plugin": "fragile" })).await;
    assert_error(s, &b, 409, "plugin_not_active");
    assert_eq!(account(&app, &initech, &carol).await["balance"], 42);

    // Unknown plugin, unknown interaction, another tenant: 404.
    let (s, b) = app.post(&retry, &initech.admin, json!({ "plugin": "nope" })).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/interactions/nope/rewards/retry",
            &initech.admin,
            json!({ "plugin": "points" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.post(&retry, &globex.admin, json!({ "plugin": "points" })).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(&retry, &initech.admin, json!({ "plugin": "points", "x": 1 }))
        .await;
    assert_eq!(s.as_u16() / 100, 4, "{b}");
}

/// Concurrent ingests for one customer (singles and batches) each get their
/// points exactly once: the account lock serialises them, nothing is lost
/// or doubled, and nobody deadlocks.
async fn concurrent_ingests_add_up(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let alice = customer(&app, &acme, "alice").await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for n in 0..12 {
        let (app, token, alice) = (app.clone(), acme.write.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let item = json!({ "customer_id": alice, "kind": "purchase", "currency": "USD", "amount": "3.00",
                               "idempotency_key": format!("c-{n}") });
            let (s, b) = if n % 3 == 0 {
                app.post(
                    "/v1/interactions/batch",
                    &token,
                    json!({ "items": [item.clone(), item] }),
                )
                .await
            } else {
                app.post("/v1/interactions", &token, item).await
            };
            assert!(s.is_success(), "{b}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let a = account(&app, &acme, &alice).await;
    assert_eq!(a["balance"], 36, "{a}");
    assert_eq!(a["lifetime_earned"], 36, "{a}");
    assert_eq!(ledger(&app, &acme, &alice).await.len(), 12);
}

/// Polls `plugin`'s kv key `key` of tenant `t` until it exists: how a test
/// knows a hostile-reward call in `loop` or `wait` mode is running.
async fn wait_for_kv(app: &TestApp, t: &TestTenant, plugin: &str, key: &str) -> Vec<u8> {
    let tenant = rapport::store::TenantId::for_tests(t.id.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = app.server.state.store.kv_get(&tenant, plugin, key).await.unwrap() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "{plugin} never wrote kv {key}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A busy-looping reward plugin of one tenant (stark) does not hold the
/// database's write lock while it runs: another tenant's writes, its own
/// reward ingest included, complete while stark's call is still looping.
async fn looping_reward_plugin_does_not_block_other_tenants(backend: Backend) {
    let Setup { app, acme, stark, .. } = start(backend).await;
    let tony = customer(&app, &stark, "tony").await;
    let app = std::sync::Arc::new(app);
    let looping = {
        let (app, token) = (app.clone(), stark.write.clone());
        tokio::spawn(async move {
            app.post(
                "/v1/interactions",
                &token,
                json!({ "customer_id": tony, "kind": "purchase", "currency": "USD", "amount": "9.00",
                        "channel": "loop" }),
            )
            .await
        })
    };
    wait_for_kv(&app, &stark, "looper", "started").await;

    // acme writes while stark's plugin loops: a customer, a purchase with
    // its reward plugin, a manual ledger entry.
    let alice = customer(&app, &acme, "alice").await;
    let body = purchase(&app, &acme, &alice, "5.00", json!({})).await;
    assert_eq!(reward(&body, "points")["status"], "applied", "{body}");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{alice}/loyalty/ledger"),
            &acme.write,
            json!({ "kind": "earn", "points": 7, "reason": "welcome" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        !looping.is_finished(),
        "stark's looping call ({LOOP_MS} ms) ended before acme's writes did"
    );
    assert_eq!(account(&app, &acme, &alice).await["balance"], 12);

    // stark's interaction is stored; the plugin timed out, nothing applied.
    let (s, body) = looping.await.unwrap();
    assert_eq!(s, 201, "{body}");
    let looper = reward(&body, "looper");
    assert_eq!(looper["status"], "failed", "{body}");
    assert_eq!(looper["error"]["code"], "plugin_timeout", "{body}");
    let tony = body["customer_id"].as_str().unwrap();
    assert_eq!(account(&app, &stark, tony).await["balance"], 0);
}

/// The account changes while a reward plugin runs: the ingest does not
/// apply the answer computed on the old account; it runs the plugin again
/// on the new one and applies that, exactly once.
async fn account_change_during_the_plugin_reruns_it(backend: Backend) {
    let Setup { app, wayne, .. } = start(backend).await;
    let bruce = customer(&app, &wayne, "bruce").await;
    let app = std::sync::Arc::new(app);
    let waiting = {
        let (app, token, bruce) = (app.clone(), wayne.write.clone(), bruce.clone());
        tokio::spawn(async move {
            app.post(
                "/v1/interactions",
                &token,
                json!({ "customer_id": bruce, "kind": "purchase", "currency": "USD", "amount": "2.00",
                        "channel": "wait", "idempotency_key": "wait-1" }),
            )
            .await
        })
    };
    wait_for_kv(&app, &wayne, "waiter", "started").await;
    // Changed under the plugin's feet (and not blocked by its ingest).
    let (s, b) = app
        .post(
            &format!("/v1/customers/{bruce}/loyalty/ledger"),
            &wayne.write,
            json!({ "kind": "earn", "points": 100, "reason": "gift" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        !waiting.is_finished(),
        "the waiting plugin's ingest ended before it was let go"
    );
    let tenant = rapport::store::TenantId::for_tests(wayne.id.clone());
    app.server
        .state
        .store
        .kv_set(&tenant, "waiter", "go", b"1", 1024 * 1024)
        .await
        .unwrap();

    let (s, body) = waiting.await.unwrap();
    assert_eq!(s, 201, "{body}");
    let waiter = reward(&body, "waiter");
    assert_eq!(waiter["status"], "applied", "{body}");
    assert_eq!(waiter["entries"][0]["points"], 1, "{body}");
    assert_eq!(waiter["entries"][0]["reason"], "waited", "{body}");
    // Run twice: once on the stale account, once on the current one.
    assert_eq!(wait_for_kv(&app, &wayne, "waiter", "runs").await, b"2");
    let a = account(&app, &wayne, &bruce).await;
    assert_eq!(
        (a["balance"].clone(), a["lifetime_earned"].clone()),
        (json!(101), json!(101)),
        "{a}"
    );
    assert_eq!(ledger(&app, &wayne, &bruce).await.len(), 2);

    // A replay neither runs it again nor adds anything.
    let (s, body) = app
        .post(
            "/v1/interactions",
            &wayne.write,
            json!({ "customer_id": bruce, "kind": "purchase", "currency": "USD", "amount": "2.00",
                    "channel": "wait", "idempotency_key": "wait-1" }),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(reward(&body, "waiter")["status"], "replayed", "{body}");
    assert_eq!(wait_for_kv(&app, &wayne, "waiter", "runs").await, b"2");
    assert_eq!(account(&app, &wayne, &bruce).await["balance"], 101);
}

both_backends!(
    amounts_at_the_ceiling_with_reward_plugins,
    looping_reward_plugin_does_not_block_other_tenants,
    account_change_during_the_plugin_reruns_it,
    concurrent_ingests_add_up,
    admin_retries_a_plugin,
    first_party_tiered_points,
    purchase_earns_points_exactly_once,
    batch_with_mixed_items,
    tier_change_is_applied,
    failing_plugin_keeps_the_interaction,
    tenants_are_isolated,
    redeemable_rewards,
);
