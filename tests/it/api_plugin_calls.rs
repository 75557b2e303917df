//! End-to-end plugin tests through the HTTP API: real components built from
//! `plugins/testing/` (by `scripts/build-plugins`), declared in a real
//! manifest, enabled per tenant, and called by `POST /v1/customers/{id}/score`
//! and `GET /v1/customers/{id}/recommendations`; a score as of a date; the
//! co-purchase plugin's fit read back through `GET /v1/plugins/{id}/fit`.
//!
//! Hostile plugins must each end with a precise error code, count towards
//! suspension, and never stop the server from serving other tenants.

use crate::support;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use serde_json::{Value, json};

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
    let (s, b) = app.post(&path, &t.write, json!({})).await;
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
        let token = acme.write.clone();
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

/// acme: the first-party co-purchase plugin (kv for its model) with loose
/// thresholds, and the test scorer. globex: only the scorer.
fn co_purchase_manifest(dir: &Path) -> PathBuf {
    let mut text = String::new();
    text += &support::plugin_manifest_entry(
        "xsell",
        "rapport-plugin-co-purchase",
        "cross-sell",
        &["config", "kv", "log"],
        "timeout_ms = 5000",
    );
    text += &support::plugin_manifest_entry(
        "scorer",
        "test-scorer",
        "scoring-rule",
        &["log", "config"],
        "timeout_ms = 5000",
    );
    text += "[[tenant]]\nid = \"acme\"\n\
             [[tenant.plugin]]\nid = \"xsell\"\nenabled = true\nconfig = { min_support = 0.2, min_confidence = 0.5 }\n\
             [[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n\n\
             [[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn basket(app: &TestApp, t: &TestTenant, customer_id: &str, skus: &[&str]) {
    let items: Vec<Value> = skus
        .iter()
        .map(|sku| json!({ "sku": sku, "quantity": 1, "unit_price": "1.00" }))
        .collect();
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": customer_id, "kind": "purchase", "currency": "USD", "items": items }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// After a cross-sell fit, `GET /v1/plugins/{id}/fit` shows what the fit
/// returned (the co-purchase rules with support, confidence and lift, as
/// mlxtend computes them on these four baskets) and the model the plugin
/// kept in kv, paged; another tenant's key gets 404, a platform key 403.
async fn fit_endpoint_shows_the_co_purchase_rules(backend: Backend) {
    if !support::plugin_wasm("rapport-plugin-co-purchase").is_file() {
        eprintln!("SKIPPED fit_endpoint_shows_the_co_purchase_rules: co-purchase is not built");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(co_purchase_manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;

    // Never fitted: no fit, no kv.
    let (s, body) = app.get("/v1/plugins/xsell/fit", &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        json!({ "plugin": "xsell", "fit": null, "kv": { "items": [], "next_cursor": null } })
    );

    let ada = customer_with_purchases(&app, &acme, "ada", 0).await;
    for skus in [&["A", "B"][..], &["A", "B", "C"], &["A", "C"], &["B", "D"]] {
        basket(&app, &acme, &ada, skus).await;
    }
    let (s, body) = app.post("/v1/cross-sell/fit", &acme.admin, json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ok", "{body}");

    let (s, body) = app.get("/v1/plugins/xsell/fit", &acme.read).await;
    assert_eq!(s, 200, "{body}");
    let fit = &body["fit"];
    assert_eq!(fit["status"], "succeeded", "{body}");
    assert!(fit["fitted_at"].is_string() && fit["duration_ms"].is_i64(), "{body}");
    assert_eq!(fit["job_id"], Value::Null, "{body}");
    let summary = &fit["summary"];
    assert_eq!(summary["baskets"], 4, "{body}");
    assert_eq!(summary["rules_kept"], 3, "{body}");
    // A→C (2 of A's 3 baskets hold C), C→A and D→B (always together).
    let rules = summary["top_rules"].as_array().unwrap();
    let rule = |a: &str, c: &str| {
        rules
            .iter()
            .find(|r| r["antecedent"] == a && r["consequent"] == c)
            .unwrap_or_else(|| panic!("no rule {a}→{c}: {body}"))
    };
    let (ac, ca, db) = (rule("A", "C"), rule("C", "A"), rule("D", "B"));
    assert!(
        close(&ac["support"], 0.5) && close(&ac["confidence"], 2.0 / 3.0) && close(&ac["lift"], 4.0 / 3.0),
        "{ac}"
    );
    assert!(
        close(&ca["support"], 0.5) && close(&ca["confidence"], 1.0) && close(&ca["lift"], 4.0 / 3.0),
        "{ca}"
    );
    assert!(
        close(&db["support"], 0.25) && close(&db["confidence"], 1.0) && close(&db["lift"], 4.0 / 3.0),
        "{db}"
    );
    assert_eq!(rules.len(), 3, "{body}");
    // The model it kept, as JSON.
    let kv = body["kv"]["items"].as_array().unwrap();
    assert_eq!(kv.len(), 1, "{body}");
    assert_eq!(kv[0]["key"], "model");
    assert_eq!(kv[0]["encoding"], "json");
    assert_eq!(kv[0]["value"]["baskets"], 4, "{body}");
    assert_eq!(kv[0]["value"]["rules"].as_array().map(Vec::len), Some(3), "{body}");
    assert!(kv[0]["bytes"].as_i64().unwrap() > 0);
    assert_eq!(body["kv"]["next_cursor"], Value::Null);
    let (s, paged) = app.get("/v1/plugins/xsell/fit?limit=1", &acme.read).await;
    assert_eq!(s, 200, "{paged}");
    assert_eq!(paged["kv"], body["kv"]);
    // More entries (as a plugin keeping several keys would): paged in key
    // order, binary values as base64, other text as a string.
    let store = &app.server.state.store;
    let tenant = rapport::store::TenantId::for_tests("acme");
    store
        .kv_set(&tenant, "xsell", "a-bytes", &[0xff, 0x00], 1 << 20)
        .await
        .unwrap();
    store
        .kv_set(&tenant, "xsell", "z-note", b"plain words", 1 << 20)
        .await
        .unwrap();
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/plugins/xsell/fit?limit=1&cursor={c}"),
            None => "/v1/plugins/xsell/fit?limit=1".to_string(),
        };
        let (s, page) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["fit"], body["fit"]);
        let items = page["kv"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        entries.push(items[0].clone());
        match page["kv"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let shown: Vec<(&str, &str, &Value)> = entries
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["encoding"].as_str().unwrap(), &e["value"]))
        .collect();
    assert_eq!(shown.len(), 3, "{entries:?}");
    assert_eq!(shown[0], ("a-bytes", "base64", &json!("/wA=")));
    assert_eq!((shown[1].0, shown[1].1), ("model", "json"));
    assert_eq!(shown[2], ("z-note", "text", &json!("plain words")));
    for bad in ["limit=0", "limit=101"] {
        let (s, b) = app.get(&format!("/v1/plugins/xsell/fit?{bad}"), &acme.read).await;
        assert_error(s, &b, 422, "validation_failed");
    }
    let (s, b) = app.get("/v1/plugins/xsell/fit?cursor=nonsense!", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");

    // Another tenant: the plugin is not theirs; a platform key acts on no
    // tenant's data; an unknown plugin is not found.
    let (s, b) = app.get("/v1/plugins/xsell/fit", &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/plugins/xsell/fit", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/plugins/nope/fit", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
}

/// `POST /v1/customers/{id}/score?as_of=` scores the customer as they were
/// then: later purchases are left out.
async fn score_as_of_a_date(backend: Backend) {
    let (app, acme, _globex, _dir) = start(backend).await;
    let ada = customer_with_purchases(&app, &acme, "ada", 0).await;
    for (at, price) in [("2020-01-01T00:00:00Z", "10.00"), ("2022-01-01T00:00:00Z", "25.00")] {
        let (s, b) = app
            .post(
                "/v1/interactions",
                &acme.write,
                json!({ "customer_id": ada, "kind": "purchase", "currency": "USD", "occurred_at": at,
                        "items": [{ "sku": "SKU", "quantity": 1, "unit_price": price }] }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, body) = app
        .post(
            &format!("/v1/customers/{ada}/score?plugin=scorer&as_of=2021-01-01T00:00:00Z"),
            &acme.write,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["as_of"], "2021-01-01T00:00:00Z");
    let r = only_result(&body);
    assert_eq!(r["score"]["label"], "1", "{body}");
    assert_eq!(
        r["score"]["explanation"],
        "1 purchase(s), spend 1000 minor units, bonus 0.5"
    );
    let (_, body) = score(&app, &acme, &ada, Some("scorer")).await;
    assert_eq!(body["as_of"], Value::Null);
    assert_eq!(only_result(&body)["score"]["label"], "2", "{body}");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{ada}/score?as_of=yesterday"),
            &acme.write,
            json!({}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_query");
}

/// The flood: mallory's slow plugin (a loop to its 300 ms deadline) and
/// the victim's scorer, which one counted failure would suspend.
async fn start_flood(backend: Backend) -> (TestApp, TestTenant, TestTenant, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = support::plugin_manifest_entry(
        "slow",
        "hostile-loop",
        "scoring-rule",
        &[],
        "timeout_ms = 300\nmax_consecutive_failures = 1000",
    );
    text += &support::plugin_manifest_entry(
        "scorer",
        "test-scorer",
        "scoring-rule",
        &["log", "config"],
        "timeout_ms = 2000\nmax_consecutive_failures = 1",
    );
    text += "[[tenant]]\nid = \"mallory\"\n[[tenant.plugin]]\nid = \"slow\"\nenabled = true\n";
    text += "\n[[tenant]]\nid = \"victim\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(path);
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    // Small shares, so that a modest flood overfills mallory's.
    config.plugins.max_concurrent_calls_per_tenant = Some(2);
    config.plugins.max_concurrent_calls_per_plugin = Some(2);
    let app = TestApp::start_with(backend, config).await;
    let mallory = app.tenant_with_id("mallory").await;
    let victim = app.tenant_with_id("victim").await;
    (app, mallory, victim, dir)
}

async fn a_flood_from_one_tenant_leaves_others_served(backend: Backend) {
    let (app, mallory, victim, _dir) = start_flood(backend).await;
    let m = customer_with_purchases(&app, &mallory, "m", 0).await;
    let v = customer_with_purchases(&app, &victim, "v", 1).await;

    // 24 concurrent slow calls against a share of 2: two run to their
    // deadline at a time, the others wait up to 300 ms for a share.
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url(&format!("/v1/customers/{m}/score?plugin=slow"));
            let token = mallory.write.clone();
            tokio::spawn(async move {
                let response = client.post(url).bearer_auth(token).send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: Value = response.json().await.unwrap();
                (status, retry_after, body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;

    // Meanwhile the victim scores, reads and writes, all served.
    for n in 0..10 {
        let (s, body) = score(&app, &victim, &v, None).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(only_result(&body)["status"], "ok", "{body}");
        let (s, body) = app.get(&format!("/v1/customers/{v}"), &victim.read).await;
        assert_eq!(s, 200, "{body}");
        let (s, body) = app
            .post(
                "/v1/interactions",
                &victim.write,
                json!({ "customer_id": v, "kind": "visit", "idempotency_key": format!("visit-{n}") }),
            )
            .await;
        assert_eq!(s, 201, "{body}");
    }

    let (mut busy, mut timeouts) = (0, 0);
    for handle in flood {
        let (status, retry_after, body) = handle.await.unwrap();
        match status {
            429 => {
                assert_error(reqwest::StatusCode::TOO_MANY_REQUESTS, &body, 429, "plugin_busy");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(!message.contains("256") && !message.contains("limit of"), "{body}");
                assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{body}");
                busy += 1;
            }
            200 => {
                assert_eq!(only_result(&body)["error"]["code"], "plugin_timeout", "{body}");
                timeouts += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(busy > 0, "the flood was never refused ({timeouts} timeouts)");
    assert!(timeouts >= 2, "{timeouts} calls ran");

    // Only the calls that ran and timed out count against mallory's plugin;
    // the victim's scorer, which one counted failure would suspend, is
    // untouched.
    let (s, p) = app.get("/v1/plugins/slow", &mallory.read).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["consecutive_failures"], timeouts, "{p}");
    assert_eq!(p["status"], "active", "{p}");
    let (s, p) = app.get("/v1/plugins/scorer", &victim.read).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["status"], "active", "{p}");
    assert_eq!(p["consecutive_failures"], 0, "{p}");

    // The shares are back: mallory is served again.
    let (s, body) = score(&app, &mallory, &m, Some("slow")).await;
    assert_eq!(s, 200, "{body}");
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
        metrics.contains(r#"rapport_plugin_errors_total{plugin="slow",tenant="mallory",cause="busy"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("# HELP rapport_plugins_suspended"), "{metrics}");
    assert!(metrics.contains("rapport_plugin_instances_in_use"), "{metrics}");
}

both_backends!(
    a_flood_from_one_tenant_leaves_others_served,
    well_behaved_plugins,
    hostile_plugins_are_contained,
    fit_endpoint_shows_the_co_purchase_rules,
    score_as_of_a_date
);
