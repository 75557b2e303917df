//! End-to-end plugin tests through the HTTP API: real components built from
//! `plugins/testing/` (by `scripts/build-plugins`), declared in a real
//! manifest, enabled per tenant, and called by `POST /v1/customers/{id}/score`
//! and `GET /v1/customers/{id}/recommendations`.
//!
//! Hostile plugins must each end with a precise error code, count towards
//! suspension, and never stop the server from serving other tenants.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Backend, TestApp, TestTenant, assert_error};

/// acme enables everything; globex only the well-behaved scorer.
fn manifest(dir: &Path) -> PathBuf {
    let mut text = String::new();
    text += &support::plugin_manifest_entry(
        "scorer",
        "test-scorer",
        "scoring-rule",
        &["log", "config"],
        "timeout_ms = 2000",
    );
    text += &support::plugin_manifest_entry(
        "probe",
        "tenant-probe",
        "scoring-rule",
        &["customers"],
        "timeout_ms = 2000",
    );
    text += &support::plugin_manifest_entry(
        "xsell",
        "test-cross-sell",
        "cross-sell",
        &["catalog"],
        "timeout_ms = 2000",
    );
    text += &support::plugin_manifest_entry("loop", "hostile-loop", "scoring-rule", &[], "timeout_ms = 200");
    text += &support::plugin_manifest_entry(
        "bomb",
        "hostile-memory-bomb",
        "scoring-rule",
        &[],
        "timeout_ms = 5000\nmemory_mb = 16",
    );
    text += &support::plugin_manifest_entry(
        "panic",
        "hostile-panic",
        "scoring-rule",
        &[],
        "timeout_ms = 2000\nmax_consecutive_failures = 3",
    );
    text += &support::plugin_manifest_entry(
        "oversized",
        "hostile-oversized",
        "scoring-rule",
        &[],
        "timeout_ms = 5000",
    );
    text += &support::plugin_manifest_entry("garbage", "hostile-garbage", "scoring-rule", &[], "timeout_ms = 2000");
    // Uses kv, which is deliberately not granted.
    text += &support::plugin_manifest_entry(
        "ungranted",
        "hostile-ungranted",
        "scoring-rule",
        &["log"],
        "timeout_ms = 2000",
    );
    text += "[[tenant]]\nid = \"acme\"\n";
    for (id, enabled) in [
        ("scorer", true),
        ("probe", false),
        ("xsell", true),
        ("loop", false),
        ("bomb", false),
        ("panic", false),
        ("oversized", false),
        ("garbage", false),
        ("ungranted", false),
    ] {
        text += &format!("[[tenant.plugin]]\nid = {id:?}\nenabled = {enabled}\n");
        if id == "scorer" {
            text += "config = { bonus = 0.5 }\n";
        }
    }
    text += "\n[[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(backend: Backend) -> (TestApp, TestTenant, TestTenant, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    // These tests count exactly which calls each plugin gets; the background
    // rescore worker would call the enabled hostile plugins too.
    config.plugins.rescore_interval_ms = Some(0);
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    (app, acme, globex, dir)
}

async fn customer_with_purchases(app: &TestApp, t: &TestTenant, external_id: &str, purchases: usize) -> String {
    let (s, c) = app
        .post("/v1/customers", &t.write, json!({ "external_id": external_id }))
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    for n in 0..purchases {
        let (s, b) = app
            .post(
                "/v1/interactions",
                &t.write,
                json!({ "customer_id": id, "kind": "purchase", "currency": "USD",
                        "items": [{ "sku": format!("SKU-{n}"), "quantity": 1, "unit_price": "10.00" }] }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    id
}

async fn enable(app: &TestApp, t: &TestTenant, plugin: &str) {
    let (s, b) = app
        .post(&format!("/v1/plugins/{plugin}/enable"), &t.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn score(app: &TestApp, t: &TestTenant, customer: &str, plugin: Option<&str>) -> (u16, Value) {
    let path = match plugin {
        Some(p) => format!("/v1/customers/{customer}/score?plugin={p}"),
        None => format!("/v1/customers/{customer}/score"),
    };
    let (s, b) = app.post(&path, &t.read, json!({})).await;
    (s.as_u16(), b)
}

fn only_result(body: &Value) -> &Value {
    let results = body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"));
    assert_eq!(results.len(), 1, "{body}");
    &results[0]
}

async fn well_behaved_plugins(backend: Backend) {
    let (app, acme, globex, _dir) = start(backend).await;
    let alice = customer_with_purchases(&app, &acme, "alice", 2).await;

    // Every active scoring plugin runs; the tenant's config reaches it
    // (bonus 0.5 on top of 2 purchases).
    let (s, body) = score(&app, &acme, &alice, None).await;
    assert_eq!(s, 200, "{body}");
    let r = only_result(&body);
    assert_eq!(r["plugin"], "scorer");
    assert_eq!(r["status"], "ok", "{body}");
    assert_eq!(r["score"]["value"], 2.5);
    assert_eq!(r["score"]["label"], "2");
    assert_eq!(r["score"]["segment"], "buyer");
    assert_eq!(r["score"]["components"]["purchases"], 2.0);
    assert_eq!(r["score"]["components"]["spend_minor"], 2000.0);

    // globex's key on acme's customer: not found, never data.
    let (s, b) = score(&app, &globex, &alice, None).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 404, "not_found");
    // A plugin globex does not have, or another kind, is not found either.
    let bob = customer_with_purchases(&app, &globex, "bob", 0).await;
    let (s, b) = score(&app, &globex, &bob, Some("panic")).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 404, "not_found");
    let (s, b) = score(&app, &acme, &alice, Some("xsell")).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 404, "not_found");
    // A disabled plugin asked for by name: a conflict the admin can fix.
    let (s, b) = score(&app, &acme, &alice, Some("probe")).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 409, "plugin_not_active");
    let (s, body) = score(&app, &globex, &bob, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        only_result(&body)["score"]["value"],
        0.0,
        "globex has no bonus configured: {body}"
    );

    // The tenant-probe plugin asks the host for a customer id it read from
    // the input: its own tenant's customer is found, globex's is not.
    enable(&app, &acme, "probe").await;
    let (s, c) = app
        .post(
            "/v1/customers",
            &acme.write,
            json!({ "external_id": "spy", "attributes": { "probe_customer_id": bob } }),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let spy = c["id"].as_str().unwrap();
    let (_, body) = score(&app, &acme, spy, Some("probe")).await;
    assert_eq!(
        only_result(&body)["score"]["value"],
        0.0,
        "another tenant's customer leaked: {body}"
    );
    let (s, c) = app
        .post(
            "/v1/customers",
            &acme.write,
            json!({ "external_id": "ally", "attributes": { "probe_customer_id": alice } }),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let (_, body) = score(&app, &acme, c["id"].as_str().unwrap(), Some("probe")).await;
    assert_eq!(
        only_result(&body)["score"]["value"],
        1.0,
        "own customer not visible: {body}"
    );

    // Cross-sell: catalogue products not owned and not in the basket, by price.
    for (sku, price) in [
        ("SKU-0", "10.00"),
        ("CHEAP", "1.00"),
        ("MID", "5.00"),
        ("DEAR", "50.00"),
    ] {
        let (s, b) = app
            .post(
                "/v1/products",
                &acme.write,
                json!({ "sku": sku, "name": sku, "price": { "currency": "USD", "amount": price } }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, body) = app
        .get(
            &format!("/v1/customers/{alice}/recommendations?basket=MID&limit=5"),
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let skus: Vec<&str> = body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, ["DEAR", "CHEAP"], "{body}");
    assert_eq!(body["recommendations"][0]["plugin"], "xsell");

    // A recommendation of a SKU the catalogue does not hold (`echo:` makes
    // test-cross-sell recommend it) never reaches the client: it is dropped,
    // noted in the call's logs and counted per plugin.
    let (s, body) = app
        .get(
            &format!("/v1/customers/{alice}/recommendations?basket=echo:GHOST,echo:CHEAP&limit=5"),
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let skus: Vec<&str> = body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sku"].as_str().unwrap())
        .collect();
    assert_eq!(
        skus,
        ["CHEAP", "DEAR", "MID"],
        "known echoes stay, unknown ones go: {body}"
    );
    assert_eq!(body["recommendations"][0]["reason"], "echoed", "{body}");
    let logs = body["runs"][0]["logs"].as_array().unwrap();
    let note = logs
        .iter()
        .find(|l| l["message"].as_str().unwrap_or("").contains("not in the catalogue"))
        .unwrap_or_else(|| panic!("no log note of the dropped SKU: {body}"));
    assert_eq!(note["fields"], json!([["count", "1"], ["skus", "GHOST"]]), "{body}");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rapport_plugin_unknown_skus_total{") && l.contains("plugin=\"xsell\"")),
        "{metrics}"
    );
    let (s, b) = app
        .get(&format!("/v1/customers/{alice}/recommendations?limit=0"), &acme.read)
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .get(&format!("/v1/customers/{alice}/recommendations"), &globex.read)
        .await;
    assert_error(s, &b, 404, "not_found");
}

async fn hostile_plugins_are_contained(backend: Backend) {
    let (app, acme, globex, _dir) = start(backend).await;
    // The deadline below is timed: let every plugin finish compiling first.
    app.wait_ready().await;
    let alice = customer_with_purchases(&app, &acme, "alice", 1).await;
    let bob = customer_with_purchases(&app, &globex, "bob", 1).await;
    for p in ["loop", "bomb", "panic", "oversized", "garbage", "ungranted"] {
        enable(&app, &acme, p).await;
    }

    // While acme's infinite loop runs to its 200 ms deadline, globex is served.
    let looping = {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/customers/{alice}/score?plugin=loop"));
        let token = acme.read.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let (s, body) = score(&app, &globex, &bob, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(only_result(&body)["status"], "ok");
    let other_tenant_latency = started.elapsed();
    let (loop_elapsed, body) = looping.await.unwrap();
    let r = only_result(&body);
    assert_eq!(r["error"]["code"], "plugin_timeout", "{body}");
    assert!(
        loop_elapsed < Duration::from_millis(200 + 1_500),
        "deadline not enforced: {loop_elapsed:?}"
    );
    assert!(
        other_tenant_latency < Duration::from_millis(1_500),
        "other tenant waited {other_tenant_latency:?}"
    );

    let expect = [
        ("bomb", "plugin_memory_limit", ""),
        ("panic", "plugin_trap", "hostile plugin panicked on purpose"),
        ("oversized", "plugin_output_too_large", ""),
        ("garbage", "plugin_invalid_output", "NaN"),
    ];
    for (plugin, code, needle) in expect {
        let (s, body) = score(&app, &acme, &alice, Some(plugin)).await;
        assert_eq!(s, 200, "{plugin}: {body}");
        let r = only_result(&body);
        assert_eq!(r["status"], "error", "{plugin}: {body}");
        assert_eq!(r["error"]["code"], code, "{plugin}: {body}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(needle),
            "{plugin}: {body}"
        );
    }

    // A component importing what it was not granted never loads: it is
    // unavailable (with the import named), a call naming it is refused, and
    // none of this counts towards its suspension.
    let (s, p) = app.get("/v1/plugins/ungranted", &acme.read).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "unavailable", "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("rapport:crm/kv"), "{p}");
    let (s, b) = score(&app, &acme, &alice, Some("ungranted")).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 409, "plugin_not_active");
    assert!(b["error"]["message"].as_str().unwrap().contains("unavailable"), "{b}");
    let (_, p) = app.get("/v1/plugins/ungranted", &acme.read).await;
    assert_eq!(p["consecutive_failures"], 0, "{p}");

    // panic allows 3 consecutive failures: it failed once above; two more
    // suspend it for acme, which the API shows until an admin resumes it.
    for _ in 0..2 {
        let (_, body) = score(&app, &acme, &alice, Some("panic")).await;
        assert_eq!(only_result(&body)["error"]["code"], "plugin_trap");
    }
    let (s, p) = app.get("/v1/plugins/panic", &acme.read).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "suspended", "{p}");
    assert_eq!(p["consecutive_failures"], 3, "{p}");
    let (s, b) = score(&app, &acme, &alice, Some("panic")).await;
    assert_error(reqwest::StatusCode::from_u16(s).unwrap(), &b, 409, "plugin_not_active");
    // Without `plugin=`, a suspended plugin is simply skipped.
    let (_, body) = score(&app, &acme, &alice, None).await;
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["plugin"] != "panic"),
        "{body}"
    );
    let (s, p) = app.post("/v1/plugins/panic/resume", &acme.admin, json!({})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "active", "{p}");

    // The server is still healthy and globex never noticed.
    let (s, body) = score(&app, &globex, &bob, None).await;
    assert_eq!(s, 200);
    assert_eq!(only_result(&body)["score"]["value"], 1.0);
    assert_eq!(app.get("/healthz", "").await.0, 200);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rapport_plugin_errors_total"), "{metrics}");
}

both_backends!(well_behaved_plugins, hostile_plugins_are_contained);
