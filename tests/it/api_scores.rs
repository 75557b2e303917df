//! Stored scores through the HTTP API, with real plugin components built
//! from `plugins/` (by `scripts/build-plugins`): batch jobs (fit, rescore
//! everyone, progress), the stored current score and its history, queued
//! rescoring after a new interaction, segment sizes, the customer-list
//! filters on scores, roles, bad input and tenant isolation; the rescore
//! queue's leases (concurrent claimers, expired leases, re-enqueued
//! customers), driven directly with the server's own worker turned off;
//! scores as of a date surviving the worker, the worker paused and resumed
//! per tenant, per-plugin job outcomes, and the bulk read and export of a
//! plugin's scores.
//!
//! `test-scorer` is deterministic: value = purchases + the tenant's config
//! `bonus`, label = purchases, segment `buyer` (>= 1 purchase) or
//! `prospect`, so every stored value is asserted exactly.

use crate::support;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Backend, TestApp, TestTenant, assert_error, plugin_wasm};
use rapport::store::TenantId;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A scoring-rule manifest entry.
fn plugin_entry(id: &str, crate_name: &str, capabilities: &[&str], limits: &str) -> String {
    support::plugin_manifest_entry(id, crate_name, "scoring-rule", capabilities, limits)
}

/// acme: `scorer` with bonus 0.5, `panic` available but disabled. globex:
/// `scorer` without bonus.
fn manifest(dir: &Path) -> PathBuf {
    let mut text = String::new();
    text += &plugin_entry("scorer", "test-scorer", &["log", "config"], "timeout_ms = 5000");
    text += &plugin_entry(
        "panic",
        "hostile-panic",
        &[],
        "timeout_ms = 5000\nmax_consecutive_failures = 2",
    );
    text += "[[tenant]]\nid = \"acme\"\n\
             [[tenant.plugin]]\nid = \"scorer\"\nenabled = true\nconfig = { bonus = 0.5 }\n\
             [[tenant.plugin]]\nid = \"panic\"\nenabled = false\n\n\
             [[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_with_manifest(
    backend: Backend,
    manifest_text: impl FnOnce(&Path) -> PathBuf,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest_text(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    (TestApp::start_with(backend, config).await, dir)
}

async fn customer(app: &TestApp, t: &TestTenant, external_id: &str) -> String {
    let (s, c) = app
        .post("/v1/customers", &t.write, json!({ "external_id": external_id }))
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn purchase(app: &TestApp, t: &TestTenant, customer_id: &str, price: &str) {
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": customer_id, "kind": "purchase", "currency": "USD",
                    "items": [{ "sku": "SKU", "quantity": 1, "unit_price": price }] }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

/// Polls `path` until `done(body)` holds; fails after `timeout`.
async fn poll(app: &TestApp, path: &str, token: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (s, body) = app.get(path, token).await;
        assert_eq!(s, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "{path}: condition not reached in {timeout:?}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_job(app: &TestApp, t: &TestTenant, body: Value) -> Value {
    let (s, job) = app.post("/v1/scoring/jobs", &t.admin, body).await;
    assert_eq!(s, 202, "{job}");
    assert!(
        matches!(job["status"].as_str(), Some("queued" | "running" | "succeeded")),
        "{job}"
    );
    let id = job["id"].as_str().unwrap().to_string();
    poll(
        app,
        &format!("/v1/scoring/jobs/{id}"),
        &t.read,
        Duration::from_secs(60),
        |j| matches!(j["status"].as_str(), Some("succeeded" | "partially_failed" | "failed")),
    )
    .await
}

fn current<'a>(body: &'a Value, plugin: &str) -> &'a Value {
    body["scores"]
        .as_array()
        .unwrap_or_else(|| panic!("no scores: {body}"))
        .iter()
        .find(|s| s["plugin"] == plugin)
        .unwrap_or_else(|| panic!("no {plugin} score: {body}"))
}

async fn ids(app: &TestApp, t: &TestTenant, query: &str) -> Vec<String> {
    let (s, page) = app.get(&format!("/v1/customers?{query}"), &t.read).await;
    assert_eq!(s, 200, "{query}: {page}");
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<&String>) -> Vec<String> {
    v.sort();
    v.into_iter().cloned().collect()
}

/// The bulk history reads that feed scoring agree with the timeline the API
/// serves (the same interactions, items, amounts, payloads, oldest first).
async fn check_bulk_histories(app: &TestApp, ids: &[&String]) {
    let store = &app.server.state.store;
    let tenant = rapport::store::TenantId::for_tests("acme");
    let mut wanted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    wanted.push("not-a-customer".into());
    let histories = store.scoring_histories(&tenant, &wanted, 2_000).await.unwrap();
    assert_eq!(histories.len(), ids.len());
    let paged = store.scoring_histories_page(&tenant, None, 500, 2_000).await.unwrap();
    assert_eq!(paged, histories);
    for h in &histories {
        let (s, page) = app
            .get(
                &format!("/v1/customers/{}/interactions", h.customer.id),
                &app_read_key(app).await,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        let mut expected = page["items"].as_array().unwrap().clone();
        expected.reverse();
        assert_eq!(h.interactions.len(), expected.len());
        assert!(!h.truncated);
        for (got, want) in h.interactions.iter().zip(&expected) {
            assert_eq!(got.id, want["id"].as_str().unwrap());
            assert_eq!(got.kind, want["kind"].as_str().unwrap());
            assert_eq!(got.channel.as_deref(), want["channel"].as_str());
            assert_eq!(got.amount_minor, want["amount"]["amount_minor"].as_i64());
            assert_eq!(got.currency.as_deref(), want["amount"]["currency"].as_str());
            let payload: Value = serde_json::from_str(&got.payload).unwrap();
            assert_eq!(payload, want["payload"]);
            let items: Vec<(String, i64, i64)> = got
                .items
                .iter()
                .map(|i| (i.sku.clone(), i.quantity, i.unit_price_minor))
                .collect();
            let want_items: Vec<(String, i64, i64)> = want["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["sku"].as_str().unwrap().to_string(),
                        i["quantity"].as_i64().unwrap(),
                        i["unit_price"]["amount_minor"].as_i64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(items, want_items);
        }
    }
    // The cap keeps the most recent interactions.
    let capped = store
        .scoring_histories(&tenant, &[ids[0].to_string()], 1)
        .await
        .unwrap();
    assert!(capped[0].truncated);
    assert_eq!(capped[0].interactions.len(), 1);
    let first = histories.iter().find(|h| h.customer.id == *ids[0]).unwrap();
    assert_eq!(&capped[0].interactions[0], first.interactions.last().unwrap());
}

async fn app_read_key(app: &TestApp) -> String {
    let tenant = rapport::store::TenantId::for_tests("acme");
    app.server
        .state
        .store
        .create_key(Some(&tenant), rapport::store::tenants::Role::TenantRead, "bulk")
        .await
        .unwrap()
        .token
}

/// Two tenants' customers scored by jobs and the worker, as named steps on
/// one app: each relies on what the previous ones stored (scores, history,
/// jobs), so they run in this order.
async fn job_stores_scores_with_history_segments_and_filters(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let alice = customer(&app, &acme, "alice").await;
    let bob = customer(&app, &acme, "bob").await;
    let carol = customer(&app, &acme, "carol").await;
    let dave = customer(&app, &globex, "dave").await;
    let c = Scored {
        app: &app,
        acme: &acme,
        globex: &globex,
        alice,
        bob,
        carol,
        dave,
    };
    no_scores_until_a_job_and_bulk_histories(&c).await;
    let job_id = admins_run_a_job_that_scores_everyone(&c).await;
    stored_values_are_exact(&c, &job_id).await;
    segment_sizes_are_per_tenant(&c).await;
    customer_list_filters_on_the_stored_score(&c).await;
    a_second_job_appends_to_the_history(&c, &job_id).await;
    tenants_are_isolated(&c, &job_id).await;
    each_tenant_job_uses_its_own_config(&c).await;
    one_job_per_tenant_at_a_time(&c).await;
    scored_customer_can_be_deleted(&c).await;
}

/// What the steps of [`job_stores_scores_with_history_segments_and_filters`]
/// share: two tenants and their customers.
struct Scored<'a> {
    app: &'a TestApp,
    acme: &'a TestTenant,
    globex: &'a TestTenant,
    alice: String,
    bob: String,
    carol: String,
    dave: String,
}

/// No scores before a job; the purchases and an email open read back through
/// the bulk histories.
async fn no_scores_until_a_job_and_bulk_histories(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let alice = &c.alice;
    let bob = &c.bob;
    let carol = &c.carol;
    let dave = &c.dave;
    let (s, body) = app.get(&format!("/v1/customers/{alice}/scores"), &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({ "customer_id": alice, "scores": [] }));

    purchase(app, acme, alice, "10.00").await;
    purchase(app, acme, alice, "5.25").await;
    purchase(app, acme, carol, "1.00").await;
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": carol, "kind": "email_open", "channel": "email",
                    "payload": { "subject": "a\u{1e}b\u{1f}c", "n": 1 } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    check_bulk_histories(app, &[alice, bob, carol]).await;
    purchase(app, globex, dave, "3.00").await;
}

/// Starting a job is for tenant admins, with checked input; the job scores
/// all three customers. Returns its id.
async fn admins_run_a_job_that_scores_everyone(c: &Scored<'_>) -> String {
    let app = c.app;
    let acme = c.acme;
    for key in [&acme.read, &acme.write] {
        let (s, b) = app.post("/v1/scoring/jobs", key, json!({})).await;
        assert_error(s, &b, 403, "forbidden");
    }
    let (s, b) = app.post("/v1/scoring/jobs", "not-a-key", json!({})).await;
    assert_error(s, &b, 401, "unauthorized");
    // Bad input: unknown field, unknown plugin, disabled plugin.
    let (s, b) = app
        .post("/v1/scoring/jobs", &acme.admin, json!({ "plugins": "scorer" }))
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .post("/v1/scoring/jobs", &acme.admin, json!({ "plugin": "nope" }))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post("/v1/scoring/jobs", &acme.admin, json!({ "plugin": "panic" }))
        .await;
    assert_error(s, &b, 409, "plugin_not_active");

    let job = run_job(app, acme, json!({})).await;
    let job_id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["total"].as_i64(), job["done"].as_i64()),
        (Some(3), Some(3)),
        "{job}"
    );
    assert_eq!(job["percent"], 100.0, "{job}");
    assert_eq!(job["failed_customers"], 0, "{job}");
    assert_eq!(job["fit_summary"], json!({ "scorer": {} }), "{job}");
    assert_eq!(job["plugin"], Value::Null);
    assert!(
        job["error"].is_null() && job["started_at"].is_string() && job["finished_at"].is_string(),
        "{job}"
    );
    job_id.to_string()
}

/// Exact stored values (bonus 0.5 from acme's config).
async fn stored_values_are_exact(c: &Scored<'_>, job_id: &str) {
    let app = c.app;
    let acme = c.acme;
    let alice = &c.alice;
    let bob = &c.bob;
    let (s, body) = app.get(&format!("/v1/customers/{alice}/scores"), &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["scores"].as_array().unwrap().len(), 1, "{body}");
    let score = current(&body, "scorer");
    assert_eq!(score["value"], 2.5);
    assert_eq!(score["label"], "2");
    assert_eq!(score["segment"], "buyer");
    assert_eq!(score["explanation"], "2 purchase(s), spend 1525 minor units, bonus 0.5");
    assert_eq!(score["components"], json!({ "purchases": 2.0, "spend_minor": 1525.0 }));
    assert!(body.get("history").is_none(), "{body}");
    let (_, body) = app.get(&format!("/v1/customers/{bob}/scores"), &acme.read).await;
    let score = current(&body, "scorer");
    assert_eq!(
        (score["value"].as_f64(), score["segment"].as_str()),
        (Some(0.5), Some("prospect")),
        "{body}"
    );
    // Bob has no interactions: only the job scored him.
    assert_eq!(score["job_id"], job_id, "{body}");
}

/// Segment sizes, largest first; another tenant's are its own.
async fn segment_sizes_are_per_tenant(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let (s, body) = app.get("/v1/segments?plugin=scorer", &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["segments"],
        json!([{ "plugin": "scorer", "segment": "buyer", "customers": 2 },
               { "plugin": "scorer", "segment": "prospect", "customers": 1 }])
    );
    // globex ran no job: its only score is the worker's of dave (after his
    // purchase, within about a second), never one of acme's customers.
    let body = poll(app, "/v1/segments", &globex.read, Duration::from_secs(10), |b| {
        b["segments"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    assert_eq!(
        body["segments"],
        json!([{ "plugin": "scorer", "segment": "buyer", "customers": 1 }]),
        "{body}"
    );
    let (_, body) = app.get("/v1/segments?plugin=nope", &acme.read).await;
    assert_eq!(body["segments"], json!([]));
    let (s, b) = app.get("/v1/segments?plugins=scorer", &acme.read).await;
    assert_error(s, &b, 400, "invalid_query");
}

/// Customer list filters on the stored score.
async fn customer_list_filters_on_the_stored_score(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let alice = &c.alice;
    let bob = &c.bob;
    let carol = &c.carol;
    let dave = &c.dave;
    assert_eq!(
        ids(app, acme, "score_plugin=scorer&segment=buyer").await,
        sorted(vec![alice, carol])
    );
    assert_eq!(
        ids(app, acme, "score_plugin=scorer&min_score=1.6").await,
        vec![alice.clone()]
    );
    assert_eq!(
        ids(app, acme, "score_plugin=scorer&min_score=1.5&max_score=1.5").await,
        vec![carol.clone()]
    );
    assert_eq!(
        ids(app, acme, "score_plugin=scorer&max_score=1").await,
        vec![bob.clone()]
    );
    assert_eq!(
        ids(app, acme, "score_plugin=scorer").await,
        sorted(vec![alice, bob, carol])
    );
    assert_eq!(
        ids(app, acme, "score_plugin=scorer&segment=prospect&external_id=bob").await,
        vec![bob.clone()]
    );
    assert!(ids(app, acme, "score_plugin=other").await.is_empty());
    assert_eq!(
        ids(app, globex, "score_plugin=scorer").await,
        vec![dave.clone()],
        "another tenant's scores leaked"
    );
    let (s, b) = app.get("/v1/customers?segment=buyer", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "segment");
    let (s, b) = app
        .get("/v1/customers?score_plugin=scorer&min_score=NaN", &acme.read)
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .get("/v1/customers?score_plugin=scorer&min_score=high", &acme.read)
        .await;
    assert_error(s, &b, 400, "invalid_query");
}

/// A second job appends to the history; the current score stays one row.
async fn a_second_job_appends_to_the_history(c: &Scored<'_>, job_id: &str) {
    let app = c.app;
    let acme = c.acme;
    let alice = &c.alice;
    let bob = &c.bob;
    let job2 = run_job(app, acme, json!({ "plugin": "scorer" })).await;
    assert_eq!(job2["status"], "succeeded", "{job2}");
    assert_eq!(job2["plugin"], "scorer");
    let job2_id = job2["id"].as_str().unwrap();
    let (s, body) = app
        .get(
            &format!("/v1/customers/{alice}/scores?history=true&plugin=scorer"),
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["scores"].as_array().unwrap().len(), 1, "{body}");
    let history = body["history"].as_array().unwrap();
    // The queued rescoring after alice's purchases adds entries without a
    // job; each job added exactly one, the newer first.
    let by_job = |id: &str| history.iter().filter(|h| h["job_id"] == id).collect::<Vec<_>>();
    assert_eq!(by_job(job_id).len(), 1, "{body}");
    assert_eq!(by_job(job2_id).len(), 1, "{body}");
    for entry in history {
        assert_eq!(entry["plugin"], "scorer");
    }
    let position = |id: &str| history.iter().position(|h| h["job_id"] == id).unwrap();
    assert!(
        position(job2_id) < position(job_id),
        "history is not newest first: {body}"
    );
    assert_eq!(by_job(job2_id)[0]["value"], 2.5);
    // Compared as times: RFC 3339 text drops trailing zeros of the
    // fraction (".5Z" is after ".52Z" as text, before it in time).
    let times: Vec<time::OffsetDateTime> = history
        .iter()
        .map(|h| {
            time::OffsetDateTime::parse(
                h["computed_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "{body}");
    let (_, body) = app
        .get(&format!("/v1/customers/{bob}/scores?history=true&limit=1"), &acme.read)
        .await;
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{body}");
    assert_eq!(history[0]["job_id"], job2_id);
    let (s, b) = app
        .get(&format!("/v1/customers/{bob}/scores?history=true&limit=0"), &acme.read)
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .get(&format!("/v1/customers/{bob}/scores?history=maybe"), &acme.read)
        .await;
    assert_error(s, &b, 400, "invalid_query");
}

/// Isolation: globex's keys see none of acme's customers, jobs or scores.
async fn tenants_are_isolated(c: &Scored<'_>, job_id: &str) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let alice = &c.alice;
    let (s, b) = app.get(&format!("/v1/customers/{alice}/scores"), &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get(&format!("/v1/scoring/jobs/{job_id}"), &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/scoring/jobs/no-such-job", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get(&format!("/v1/customers/{alice}/scores"), "not-a-key").await;
    assert_error(s, &b, 401, "unauthorized");
}

/// globex's own job scores only globex, with globex's config (no bonus).
async fn each_tenant_job_uses_its_own_config(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let dave = &c.dave;
    let job = run_job(app, globex, json!({})).await;
    assert_eq!(
        (job["status"].as_str(), job["total"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{job}"
    );
    let (_, body) = app.get(&format!("/v1/customers/{dave}/scores"), &globex.read).await;
    assert_eq!(current(&body, "scorer")["value"], 1.0, "{body}");
    let (_, body) = app.get("/v1/segments", &globex.read).await;
    assert_eq!(
        body["segments"],
        json!([{ "plugin": "scorer", "segment": "buyer", "customers": 1 }])
    );
    let (_, body) = app.get("/v1/segments?plugin=scorer", &acme.read).await;
    assert_eq!(body["segments"][0]["customers"], 2, "acme's segments changed: {body}");
}

/// One job per tenant at a time: a queued one blocks the next, not another
/// tenant's.
async fn one_job_per_tenant_at_a_time(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let globex = c.globex;
    let tenant = rapport::store::TenantId::for_tests("globex");
    let queued = app.server.state.store.create_scoring_job(&tenant, None).await.unwrap();
    let (s, b) = app.post("/v1/scoring/jobs", &globex.admin, json!({})).await;
    assert_error(s, &b, 409, "scoring_job_active");
    assert!(b["error"]["message"].as_str().unwrap().contains(&queued.id), "{b}");
    // ...but not another tenant's.
    let job = run_job(app, acme, json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

/// A customer without history can still be deleted once scored.
async fn scored_customer_can_be_deleted(c: &Scored<'_>) {
    let app = c.app;
    let acme = c.acme;
    let bob = &c.bob;
    let (s, b) = app.delete(&format!("/v1/customers/{bob}"), &acme.write).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = app.get(&format!("/v1/customers/{bob}/scores"), &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (_, body) = app.get("/v1/segments?plugin=scorer", &acme.read).await;
    assert_eq!(
        body["segments"],
        json!([{ "plugin": "scorer", "segment": "buyer", "customers": 2 }])
    );
}

async fn new_interaction_rescores_the_stored_score(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let erin = customer(&app, &acme, "erin").await;
    let frank = customer(&app, &globex, "frank").await;
    let job = run_job(&app, &acme, json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, body) = app.get(&format!("/v1/customers/{erin}/scores"), &acme.read).await;
    assert_eq!(current(&body, "scorer")["value"], 0.5, "{body}");

    // A purchase makes the stored score stale; the worker rescores it
    // within about a second (queued, not inline).
    let started = Instant::now();
    purchase(&app, &acme, &erin, "7.00").await;
    let path = format!("/v1/customers/{erin}/scores?history=true");
    let body = poll(&app, &path, &acme.read, Duration::from_secs(10), |b| {
        b["scores"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["plugin"] == "scorer" && s["value"] == 1.5))
    })
    .await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "rescoring took {waited:?}");
    let score = current(&body, "scorer");
    assert_eq!(score["explanation"], "1 purchase(s), spend 700 minor units, bonus 0.5");
    assert_eq!(score["segment"], "buyer");
    assert_eq!(
        score["job_id"],
        Value::Null,
        "rescored by the worker, not a job: {body}"
    );
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{body}");
    assert_eq!(
        (history[0]["value"].as_f64(), history[1]["value"].as_f64()),
        (Some(1.5), Some(0.5))
    );
    assert_eq!(history[1]["job_id"], job["id"]);

    // Without any job, a new customer's first purchase gets a score too;
    // globex's scores use globex's config and stay invisible to acme.
    purchase(&app, &globex, &frank, "2.00").await;
    poll(
        &app,
        &format!("/v1/customers/{frank}/scores"),
        &globex.read,
        Duration::from_secs(10),
        |b| {
            b["scores"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["value"] == 1.0))
        },
    )
    .await;
    let (s, b) = app.get(&format!("/v1/customers/{frank}/scores"), &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (_, body) = app.get("/v1/segments", &acme.read).await;
    assert_eq!(
        body["segments"],
        json!([{ "plugin": "scorer", "segment": "buyer", "customers": 1 }])
    );
}

/// The first-party RFM plugin on the CDNOW sample: every customer gets a
/// segment, so the segment sizes add up to the customer count.
async fn rfm_job_on_cdnow_sample(backend: Backend) {
    if !plugin_wasm("rapport-plugin-rfm").is_file() {
        eprintln!(
            "SKIPPED rfm_job_on_cdnow_sample: {} is not built",
            plugin_wasm("rapport-plugin-rfm").display()
        );
        return;
    }
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cdnow/CDNOW_sample.txt");
    if !sample.is_file() {
        eprintln!(
            "SKIPPED rfm_job_on_cdnow_sample: CDNOW data not found at {} (see README: ../shared/data/cdnow/)",
            sample.display()
        );
        return;
    }
    let (app, _dir) = start_with_manifest(backend, |dir| {
        let mut text = plugin_entry("rfm", "rapport-plugin-rfm", &["config", "kv"], "timeout_ms = 30000");
        // The data is from 1997-98: a window reaching back that far.
        text += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"rfm\"\nenabled = true\nconfig = { window_days = 36500 }\n";
        let path = dir.join("plugins.toml");
        std::fs::write(&path, text).unwrap();
        path
    })
    .await;
    let acme = app.tenant_with_id("acme").await;
    let store = &app.server.state.store;
    let tenant = rapport::store::TenantId::for_tests("acme");
    let summary = rapport::import::import_cdnow(store, &tenant, &sample, "USD", &rapport::import::Progress::hidden())
        .await
        .unwrap();
    assert_eq!(summary.rejected_rows(), 0);
    let customers = store.count_customers(&tenant).await.unwrap();
    assert_eq!(customers, 2_357);

    let job = run_job(&app, &acme, json!({ "plugin": "rfm" })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (job["total"].as_i64(), job["done"].as_i64()),
        (Some(customers), Some(customers)),
        "{job}"
    );
    assert_eq!(job["failed_customers"], 0, "{job}");
    assert!(job["fit_summary"]["rfm"].is_object(), "{job}");

    let (s, body) = app.get("/v1/segments?plugin=rfm", &acme.read).await;
    assert_eq!(s, 200, "{body}");
    let segments = body["segments"].as_array().unwrap();
    let total: i64 = segments.iter().map(|s| s["customers"].as_i64().unwrap()).sum();
    assert_eq!(total, customers, "{body}");
    assert!(
        segments.iter().all(|s| s["segment"].is_string()),
        "every RFM score has a segment: {body}"
    );
    assert!(segments.iter().any(|s| s["segment"] == "Champions"), "{body}");
    // The list filter agrees with the segment sizes.
    let champions = segments.iter().find(|s| s["segment"] == "Champions").unwrap()["customers"]
        .as_i64()
        .unwrap();
    let mut listed = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/customers?score_plugin=rfm&segment=Champions&limit=500".to_string();
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let (s, page) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{page}");
        listed += page["items"].as_array().unwrap().len() as i64;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, champions);
}

/// A job `as_of` a past time scores customers as they were then: later
/// interactions are left out of their histories (and of the fit's
/// population), not just given an earlier clock.
async fn as_of_job_ignores_later_interactions(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let ada = customer(&app, &acme, "ada").await;
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
    let job = run_job(
        &app,
        &acme,
        json!({ "plugin": "scorer", "as_of": "2021-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (s, body) = app.get(&format!("/v1/customers/{ada}/scores"), &acme.read).await;
    assert_eq!(s, 200, "{body}");
    let score = current(&body, "scorer");
    assert_eq!(score["label"], "1", "{score}");
    assert_eq!(score["explanation"], "1 purchase(s), spend 1000 minor units, bonus 0.5");

    let job = run_job(&app, &acme, json!({ "plugin": "scorer" })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, body) = app.get(&format!("/v1/customers/{ada}/scores"), &acme.read).await;
    assert_eq!(current(&body, "scorer")["label"], "2");
}

/// The app with its rescore worker off (`rescore_interval_ms = 0`), so a
/// test drives the queue itself and nothing claims behind its back.
async fn start_without_worker(backend: Backend) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    (TestApp::start_with(backend, config).await, dir)
}

/// `n` customers of `t`, each queued for rescoring; their ids, sorted.
async fn queued_customers(app: &TestApp, t: &TestTenant, n: usize) -> Vec<String> {
    let store = &app.server.state.store;
    let tenant = TenantId::for_tests(t.id.clone());
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = customer(app, t, &format!("{}-{i}", t.id)).await;
        store.enqueue_rescore(&tenant, &id).await.unwrap();
        ids.push(id);
    }
    ids.sort();
    ids
}

/// (a) Claimers running at once (four "nodes" in small batches) split the
/// queue between them: every queued customer is claimed exactly once, and
/// never another tenant's. Two workers draining at once rescore each
/// customer once between them.
async fn concurrent_rescore_claims_never_share_a_customer(backend: Backend) {
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let store = app.server.state.store.clone();
    let tenant = TenantId::for_tests(acme.id.clone());
    let queued = queued_customers(&app, &acme, 40).await;
    queued_customers(&app, &globex, 1).await;

    let mut tasks = Vec::new();
    for n in 0..4 {
        let (store, tenant) = (store.clone(), tenant.clone());
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{n}");
            let mut got = Vec::new();
            loop {
                let claim = store.claim_rescores(&tenant, &node, 30_000, 3).await.unwrap();
                if claim.entries.is_empty() {
                    return got;
                }
                assert!(claim.entries.len() <= 3, "{claim:?}");
                assert_eq!(claim.node, node);
                got.extend(claim.entries.into_iter().map(|e| (e.customer_id, node.clone())));
            }
        }));
    }
    let mut claimed: Vec<(String, String)> = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    let mut ids: Vec<String> = claimed.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(ids, queued, "each customer claimed exactly once: {claimed:?}");
    // Everything of acme is leased now; globex's entry is untouched.
    assert_eq!(
        store.tenants_with_queued_rescores().await.unwrap(),
        vec![TenantId::for_tests(globex.id.clone())]
    );

    // Two workers on a fresh queue: together they rescore each customer once.
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let queued = queued_customers(&app, &acme, 30).await;
    let plugins = app.server.state.plugins.clone();
    let (a, b) = tokio::join!(
        plugins.drain_rescore_queue("node-a"),
        plugins.drain_rescore_queue("node-b")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.customers + b.customers, 30, "{a:?} {b:?}");
    assert_eq!(a.scores_stored + b.scores_stored, 30, "{a:?} {b:?}");
    for id in &queued {
        let (s, body) = app
            .get(&format!("/v1/customers/{id}/scores?history=true"), &acme.read)
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["history"].as_array().map(Vec::len), Some(1), "scored once: {body}");
        assert_eq!(current(&body, "scorer")["value"], 0.5, "{body}");
    }
    assert!(
        app.server
            .state
            .store
            .tenants_with_queued_rescores()
            .await
            .unwrap()
            .is_empty()
    );
}

/// (b) A claim whose lease expired (its node died or stalled) is taken over
/// by another node; the stale claim's ack then removes nothing, the new
/// one's removes everything. A released claim is claimable at once.
async fn expired_rescore_lease_is_taken_over(backend: Backend) {
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let store = app.server.state.store.clone();
    let tenant = TenantId::for_tests(acme.id.clone());
    let queued = queued_customers(&app, &acme, 2).await;

    // A 1.5 s lease: node-b's claim below must fall inside it even on a
    // loaded machine (50 ms was once not enough).
    let stale = store.claim_rescores(&tenant, "node-a", 1_500, 10).await.unwrap();
    let ids = |c: &rapport::store::scores::RescoreClaim| -> Vec<String> {
        c.entries.iter().map(|e| e.customer_id.clone()).collect()
    };
    assert_eq!(ids(&stale), queued);
    assert!(stale.entries.iter().all(|e| e.generation == 1), "{stale:?}");
    // Leased: another node gets nothing, and the tenant is not even listed.
    assert!(
        store
            .claim_rescores(&tenant, "node-b", 30_000, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(store.tenants_with_queued_rescores().await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(
        store.tenants_with_queued_rescores().await.unwrap(),
        vec![tenant.clone()]
    );
    let taken = store.claim_rescores(&tenant, "node-b", 30_000, 10).await.unwrap();
    assert_eq!(ids(&taken), queued);
    // node-a wakes up: its ack is fenced off and leaves node-b's lease alone.
    assert_eq!(store.ack_rescores(&tenant, &stale).await.unwrap(), 0);
    store.release_rescores(&tenant, &stale).await.unwrap();
    assert!(
        store
            .claim_rescores(&tenant, "node-c", 30_000, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    // A release hands the entries back without waiting for the lease.
    store.release_rescores(&tenant, &taken).await.unwrap();
    let again = store.claim_rescores(&tenant, "node-c", 30_000, 10).await.unwrap();
    assert_eq!(ids(&again), queued);
    assert_eq!(store.ack_rescores(&tenant, &taken).await.unwrap(), 0);
    assert_eq!(store.ack_rescores(&tenant, &again).await.unwrap(), 2);
    assert!(
        store
            .claim_rescores(&tenant, "node-a", 30_000, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(store.tenants_with_queued_rescores().await.unwrap().is_empty());
}

/// (c) A customer enqueued again while its claim is being rescored (a new
/// interaction) survives that claim's ack, unleased, so the next claim of
/// any node rescores it again; the others are acknowledged.
async fn reenqueued_customer_survives_the_older_ack(backend: Backend) {
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let store = app.server.state.store.clone();
    let tenant = TenantId::for_tests(acme.id.clone());
    let queued = queued_customers(&app, &acme, 3).await;

    let claim = store.claim_rescores(&tenant, "node-a", 30_000, 10).await.unwrap();
    assert_eq!(claim.entries.len(), 3);
    // A purchase lands meanwhile: ingest enqueues the customer again.
    purchase(&app, &acme, &queued[1], "7.00").await;
    assert_eq!(store.ack_rescores(&tenant, &claim).await.unwrap(), 2);

    // Not leased any more: another node gets it at once, one generation on.
    let next = store.claim_rescores(&tenant, "node-b", 30_000, 10).await.unwrap();
    assert_eq!(next.entries.len(), 1, "{next:?}");
    assert_eq!(next.entries[0].customer_id, queued[1]);
    assert_eq!(next.entries[0].generation, 2);
    assert_eq!(store.ack_rescores(&tenant, &next).await.unwrap(), 1);
    assert!(store.tenants_with_queued_rescores().await.unwrap().is_empty());

    // The same through the worker: the purchase is scored (value 1.5).
    purchase(&app, &acme, &queued[0], "3.00").await;
    let plugins = app.server.state.plugins.clone();
    let outcome = plugins.drain_rescore_queue("node-a").await.unwrap();
    assert_eq!((outcome.customers, outcome.scores_stored), (1, 1));
    let (_, body) = app
        .get(&format!("/v1/customers/{}/scores", queued[0]), &acme.read)
        .await;
    assert_eq!(current(&body, "scorer")["value"], 1.5, "{body}");
}

/// A purchase at a given time (RFC 3339).
async fn purchase_at(app: &TestApp, t: &TestTenant, customer_id: &str, at: &str, price: &str) {
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": customer_id, "kind": "purchase", "currency": "USD", "occurred_at": at,
                    "items": [{ "sku": "SKU", "quantity": 1, "unit_price": price }] }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

/// Scores computed as of a date survive the rescore worker: the job stores
/// its as-of date with every score and clears the queue entries of the
/// customers it scored (the "import" backlog), so the worker has nothing
/// left to undo; an interaction stored after the job still gets its
/// customer rescored, as of now. Driven with the worker off, then checked
/// again with a live worker running.
async fn as_of_scores_survive_a_running_worker(backend: Backend) {
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let plugins = app.server.state.plugins.clone();
    let store = app.server.state.store.clone();
    let tenant = TenantId::for_tests("acme");
    let ada = customer(&app, &acme, "ada").await;
    let bo = customer(&app, &acme, "bo").await;
    for id in [&ada, &bo] {
        purchase_at(&app, &acme, id, "2020-01-01T00:00:00Z", "10.00").await;
        purchase_at(&app, &acme, id, "2022-01-01T00:00:00Z", "25.00").await;
    }
    // The import left both customers queued.
    assert_eq!(store.rescore_worker_state(&tenant).await.unwrap().queued, 2);

    let job = run_job(&app, &acme, json!({ "as_of": "2021-01-01T00:00:00Z" })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["as_of"], "2021-01-01T00:00:00Z", "{job}");
    assert_eq!(
        job["plugins"],
        json!([{ "plugin": "scorer", "status": "succeeded" }]),
        "{job}"
    );
    // The job covered the backlog: nothing left for the worker.
    assert_eq!(store.rescore_worker_state(&tenant).await.unwrap().queued, 0);
    let outcome = plugins.drain_rescore_queue("node-a").await.unwrap();
    assert_eq!(outcome.customers, 0, "{outcome:?}");
    for id in [&ada, &bo] {
        let (s, body) = app.get(&format!("/v1/customers/{id}/scores"), &acme.read).await;
        assert_eq!(s, 200, "{body}");
        let score = current(&body, "scorer");
        assert_eq!(score["label"], "1", "as of 2021, one purchase: {body}");
        assert_eq!(score["as_of"], "2021-01-01T00:00:00Z", "{body}");
        assert_eq!(score["job_id"], job["id"], "{body}");
    }

    // A purchase after the job: queued, and rescored as of now.
    purchase(&app, &acme, &ada, "1.00").await;
    let outcome = plugins.drain_rescore_queue("node-a").await.unwrap();
    assert_eq!((outcome.customers, outcome.scores_stored), (1, 1), "{outcome:?}");
    let (_, body) = app
        .get(&format!("/v1/customers/{ada}/scores?history=true"), &acme.read)
        .await;
    let score = current(&body, "scorer");
    assert_eq!(score["label"], "3", "{body}");
    assert_eq!(
        (score["as_of"].clone(), score["job_id"].clone()),
        (Value::Null, Value::Null),
        "{body}"
    );
    let history = body["history"].as_array().unwrap();
    assert_eq!(
        history[1]["as_of"], "2021-01-01T00:00:00Z",
        "history keeps the as-of score: {body}"
    );
    let (_, body) = app.get(&format!("/v1/customers/{bo}/scores"), &acme.read).await;
    assert_eq!(current(&body, "scorer")["as_of"], "2021-01-01T00:00:00Z", "{body}");

    // The same with the server's own worker running (every second): the
    // imported customers' as-of scores are still there seconds later.
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = customer(&app, &acme, &format!("c{n}")).await;
        purchase_at(&app, &acme, &id, "2020-01-01T00:00:00Z", "10.00").await;
        purchase_at(&app, &acme, &id, "2022-01-01T00:00:00Z", "25.00").await;
        ids.push(id);
    }
    let job = run_job(&app, &acme, json!({ "as_of": "2021-01-01T00:00:00Z" })).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in &ids {
        let (_, body) = app.get(&format!("/v1/customers/{id}/scores"), &acme.read).await;
        let score = current(&body, "scorer");
        assert_eq!(
            (score["label"].as_str(), score["as_of"].as_str()),
            (Some("1"), Some("2021-01-01T00:00:00Z")),
            "the worker replaced an as-of score: {body}"
        );
    }
    let tenant = TenantId::for_tests("acme");
    assert_eq!(
        app.server
            .state
            .store
            .rescore_worker_state(&tenant)
            .await
            .unwrap()
            .queued,
        0
    );
}

/// The tenant pauses and resumes the background worker: paused, new
/// interactions stay queued (visible in the state) and stored scores stay;
/// another tenant's worker goes on; resumed, the queue is drained. A
/// running job also keeps the worker away from its tenant. Admin only to
/// change; reading needs a tenant key.
async fn rescore_worker_paused_and_resumed(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let ada = customer(&app, &acme, "ada").await;
    let dave = customer(&app, &globex, "dave").await;

    let (s, body) = app.get("/v1/scoring/worker", &acme.read).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        json!({ "paused": false, "paused_at": null, "queued": 0, "running_job": null })
    );
    for key in [&acme.read, &acme.write] {
        let (s, b) = app.put("/v1/scoring/worker", key, json!({ "paused": true })).await;
        assert_error(s, &b, 403, "forbidden");
    }
    let (s, b) = app.get("/v1/scoring/worker", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .put("/v1/scoring/worker", &app.platform, json!({ "paused": true }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .put("/v1/scoring/worker", &acme.admin, json!({ "pause": true }))
        .await;
    assert_error(s, &b, 422, "validation_failed");

    let (s, body) = app
        .put("/v1/scoring/worker", &acme.admin, json!({ "paused": true }))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["paused"], true, "{body}");
    assert!(body["paused_at"].is_string(), "{body}");
    // Idempotent.
    let (s, again) = app
        .put("/v1/scoring/worker", &acme.admin, json!({ "paused": true }))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["paused_at"], body["paused_at"]);
    // Per tenant: globex's worker is not paused.
    let (_, body) = app.get("/v1/scoring/worker", &globex.read).await;
    assert_eq!(body["paused"], false, "{body}");

    purchase(&app, &acme, &ada, "7.00").await;
    purchase(&app, &globex, &dave, "2.00").await;
    // globex is rescored as usual...
    poll(
        &app,
        &format!("/v1/customers/{dave}/scores"),
        &globex.read,
        Duration::from_secs(10),
        |b| b["scores"].as_array().is_some_and(|s| !s.is_empty()),
    )
    .await;
    // ...acme's customer waits in the queue (well past a few worker passes).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, body) = app.get(&format!("/v1/customers/{ada}/scores"), &acme.read).await;
    assert_eq!(body["scores"], json!([]), "rescored while paused: {body}");
    let (_, body) = app.get("/v1/scoring/worker", &acme.read).await;
    assert_eq!(
        (body["paused"].as_bool(), body["queued"].as_i64()),
        (Some(true), Some(1)),
        "{body}"
    );
    let store = &app.server.state.store;
    let tenant = TenantId::for_tests("acme");
    assert!(
        !store.tenants_with_queued_rescores().await.unwrap().contains(&tenant),
        "a paused tenant is offered to the worker"
    );
    assert!(
        store
            .claim_rescores(&tenant, "node-x", 30_000, 10)
            .await
            .unwrap()
            .entries
            .is_empty(),
        "a paused tenant's queue can be claimed"
    );

    let (s, body) = app
        .put("/v1/scoring/worker", &acme.admin, json!({ "paused": false }))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["paused"].as_bool(), body["paused_at"].clone()),
        (Some(false), Value::Null)
    );
    let body = poll(
        &app,
        &format!("/v1/customers/{ada}/scores"),
        &acme.read,
        Duration::from_secs(10),
        |b| b["scores"].as_array().is_some_and(|s| !s.is_empty()),
    )
    .await;
    assert_eq!(current(&body, "scorer")["value"], 1.5, "{body}");
    let (_, body) = app.get("/v1/scoring/worker", &acme.read).await;
    assert_eq!(body["queued"], 0, "{body}");

    // A running job keeps the worker away from its tenant until it ends.
    let job = store.create_scoring_job(&tenant, None).await.unwrap();
    store.start_scoring_job(&tenant, &job.id, 1).await.unwrap();
    store.enqueue_rescore(&tenant, &ada).await.unwrap();
    let (_, body) = app.get("/v1/scoring/worker", &acme.read).await;
    assert_eq!(body["running_job"], job.id.as_str(), "{body}");
    assert!(!store.tenants_with_queued_rescores().await.unwrap().contains(&tenant));
    assert!(
        store
            .claim_rescores(&tenant, "node-x", 30_000, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    store
        .finish_scoring_job(
            &tenant,
            &job.id,
            rapport::store::scores::JobStatus::Succeeded,
            None,
            &[],
        )
        .await
        .unwrap();
    poll(&app, "/v1/scoring/worker", &acme.read, Duration::from_secs(10), |b| {
        b["queued"] == 0 && b["running_job"].is_null()
    })
    .await;
}

/// acme with `scorer` and the `panic` plugin (whose fit traps) enabled, and
/// the first-party BG/NBD plugin available as `churn` (disabled).
fn manifest_with_failing_fit(dir: &Path) -> PathBuf {
    let mut text = String::new();
    text += &plugin_entry("scorer", "test-scorer", &["log", "config"], "timeout_ms = 5000");
    text += &plugin_entry(
        "panic",
        "hostile-panic",
        &[],
        "timeout_ms = 5000\nmax_consecutive_failures = 10",
    );
    text += &plugin_entry(
        "churn",
        "rapport-plugin-churn-bgnbd",
        &["config", "kv"],
        "timeout_ms = 30000",
    );
    text += "[[tenant]]\nid = \"acme\"\n\
             [[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n\
             [[tenant.plugin]]\nid = \"panic\"\nenabled = true\n\
             [[tenant.plugin]]\nid = \"churn\"\nenabled = false\n\n\
             [[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A job in which one plugin's fit fails is `partially_failed`, not
/// `succeeded`: each plugin's outcome says which failed, where and why, the
/// other plugin's scores are stored, and both fits are readable through
/// `GET /v1/plugins/{id}/fit`. A job whose only plugin fails is `failed`.
/// Then the issue's own case: churn-bgnbd on a tenant without repeat
/// purchases.
async fn job_with_a_failing_fit_is_not_succeeded(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest_with_failing_fit).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let ada = customer(&app, &acme, "ada").await;
    purchase(&app, &acme, &ada, "3.00").await;

    let job = run_job(&app, &acme, json!({})).await;
    assert_eq!(job["status"], "partially_failed", "{job}");
    let outcomes = job["plugins"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2, "{job}");
    assert_eq!(
        outcomes[0],
        json!({ "plugin": "scorer", "status": "succeeded" }),
        "{job}"
    );
    assert_eq!(outcomes[1]["plugin"], "panic", "{job}");
    assert_eq!(outcomes[1]["status"], "failed", "{job}");
    assert_eq!(outcomes[1]["stage"], "fit", "{job}");
    assert_eq!(outcomes[1]["error"]["code"], "plugin_trap", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("panic") && error.contains("plugin_trap"), "{job}");
    assert_eq!(
        (job["done"].as_i64(), job["total"].as_i64()),
        (Some(1), Some(1)),
        "{job}"
    );
    assert_eq!(job["fit_summary"]["panic"]["error"]["code"], "plugin_trap", "{job}");
    let (_, body) = app.get(&format!("/v1/customers/{ada}/scores"), &acme.read).await;
    assert_eq!(body["scores"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(current(&body, "scorer")["value"], 1.0, "{body}");

    // Both fits are recorded, with the job that ran them.
    let (s, fit) = app.get("/v1/plugins/panic/fit", &acme.read).await;
    assert_eq!(s, 200, "{fit}");
    assert_eq!(fit["fit"]["status"], "failed", "{fit}");
    assert_eq!(fit["fit"]["error"]["code"], "plugin_trap", "{fit}");
    assert_eq!(fit["fit"]["summary"], Value::Null, "{fit}");
    assert_eq!(fit["fit"]["job_id"], job["id"], "{fit}");
    let (_, fit) = app.get("/v1/plugins/scorer/fit", &acme.read).await;
    assert_eq!(fit["fit"]["status"], "succeeded", "{fit}");
    assert_eq!(fit["fit"]["summary"], json!({}), "{fit}");
    assert_eq!(fit["kv"], json!({ "items": [], "next_cursor": null }), "{fit}");
    // globex never fitted its scorer; it has no `panic` at all.
    let (s, fit) = app.get("/v1/plugins/scorer/fit", &globex.read).await;
    assert_eq!(s, 200, "{fit}");
    assert_eq!(fit["fit"], Value::Null, "another tenant's fit leaked: {fit}");
    let (s, b) = app.get("/v1/plugins/panic/fit", &globex.read).await;
    assert_error(s, &b, 404, "not_found");

    // Only the failing plugin: nothing scored, `failed`.
    let job = run_job(&app, &acme, json!({ "plugin": "panic" })).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["plugins"][0]["status"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().starts_with("every plugin failed to fit"),
        "{job}"
    );

    // The real case: BG/NBD on a tenant without repeat purchases (a basket
    // at most per customer) cannot be fitted; the job says so instead of
    // `succeeded` with the reason buried in its fit summary.
    let (s, b) = app.post("/v1/plugins/churn/enable", &acme.admin, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.post("/v1/plugins/panic/disable", &acme.admin, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let job = run_job(&app, &acme, json!({})).await;
    assert_eq!(job["status"], "partially_failed", "{job}");
    let churn = job["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["plugin"] == "churn")
        .unwrap();
    assert_eq!(
        (churn["status"].as_str(), churn["stage"].as_str()),
        (Some("failed"), Some("fit")),
        "{job}"
    );
    assert!(
        churn["error"]["message"].as_str().unwrap().contains("not identifiable"),
        "{job}"
    );
    let (_, fit) = app.get("/v1/plugins/churn/fit", &acme.read).await;
    assert_eq!(fit["fit"]["status"], "failed", "{fit}");
    assert_eq!(fit["fit"]["error"], churn["error"], "{fit}");

    // Repeat buyers, but all buying every Monday and none stopping: one
    // rate, no drop-out, so the BG/NBD likelihood has no interior maximum.
    // The fit says which parameters run off (issue #18: it used to search
    // until its deadline), as of the last Monday.
    let mondays = [
        "2021-01-04",
        "2021-01-11",
        "2021-01-18",
        "2021-01-25",
        "2021-02-01",
        "2021-02-08",
        "2021-02-15",
        "2021-02-22",
        "2021-03-01",
    ];
    for i in 0..6 {
        let steady = customer(&app, &acme, &format!("steady-{i}")).await;
        for day in &mondays[i..] {
            purchase_at(&app, &acme, &steady, &format!("{day}T10:00:00Z"), "5.00").await;
        }
    }
    let job = run_job(
        &app,
        &acme,
        json!({ "plugin": "churn", "as_of": "2021-03-01T12:00:00Z" }),
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    let message = job["plugins"][0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("no interior maximum"), "{job}");
    assert!(message.contains("without bound"), "{job}");
}

/// A plugin's stored scores read in bulk: pages that together hold exactly
/// the stored scores (each as `GET /v1/customers/{id}/scores` shows it),
/// and the same scores streamed as NDJSON and CSV; the customer list
/// filtered by score carries the values. Tenant-scoped (another tenant's
/// scores never appear; a plugin it does not have is 404) and for tenant
/// keys only.
async fn bulk_scores_page_and_export(backend: Backend) {
    let (app, _dir) = start_with_manifest(backend, manifest).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let id = customer(&app, &acme, &format!("c{n}")).await;
        for _ in 0..(n % 3) {
            purchase(&app, &acme, &id, "2.50").await;
        }
        ids.push(id);
    }
    let dave = customer(&app, &globex, "dave").await;
    purchase(&app, &globex, &dave, "1.00").await;
    let job = run_job(&app, &acme, json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let job = run_job(&app, &globex, json!({})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Let the worker settle any rescoring queued by the purchases.
    for t in [&acme, &globex] {
        poll(&app, "/v1/scoring/worker", &t.read, Duration::from_secs(10), |b| {
            b["queued"] == 0
        })
        .await;
    }

    // What each customer's own endpoint shows.
    let mut expected = Vec::new();
    ids.sort();
    for id in &ids {
        let (_, body) = app.get(&format!("/v1/customers/{id}/scores"), &acme.read).await;
        let mut score = current(&body, "scorer").clone();
        let (_, c) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
        let object = score.as_object_mut().unwrap();
        object.insert("customer_id".into(), json!(id));
        object.insert("external_id".into(), c["external_id"].clone());
        expected.push(score);
    }

    // Paged: 3 + 3 + 1.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/plugins/scorer/scores?limit=3".to_string();
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let (s, page) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, expected);

    // Streamed NDJSON, by parameter and by default.
    let export = |query: &'static str, accept: Option<&'static str>| {
        let app = &app;
        let key = acme.read.clone();
        async move {
            let mut req = app
                .client
                .get(app.url(&format!("/v1/plugins/scorer/scores/export{query}")))
                .bearer_auth(key);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
            (content_type, resp.text().await.unwrap())
        }
    };
    for (query, accept) in [("?format=ndjson", Some("text/csv")), ("", None)] {
        let (content_type, text) = export(query, accept).await;
        assert_eq!(content_type, "application/x-ndjson");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines, expected, "{text}");
    }
    // CSV, by Accept and by parameter.
    for (query, accept) in [("", Some("text/csv")), ("?format=csv", None)] {
        let (content_type, text) = export(query, accept).await;
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
        assert_eq!(
            header,
            [
                "customer_id",
                "external_id",
                "plugin",
                "value",
                "label",
                "segment",
                "explanation",
                "components",
                "computed_at",
                "job_id",
                "as_of"
            ]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), expected.len(), "{text}");
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(&row[0], want["customer_id"].as_str().unwrap());
            assert_eq!(&row[1], want["external_id"].as_str().unwrap());
            assert_eq!(&row[2], "scorer");
            assert_eq!(row[3].parse::<f64>().unwrap(), want["value"].as_f64().unwrap());
            assert_eq!(&row[4], want["label"].as_str().unwrap_or(""));
            assert_eq!(&row[5], want["segment"].as_str().unwrap_or(""));
            assert_eq!(&row[6], want["explanation"].as_str().unwrap());
            assert_eq!(serde_json::from_str::<Value>(&row[7]).unwrap(), want["components"]);
            assert_eq!(&row[8], want["computed_at"].as_str().unwrap());
            assert_eq!(&row[9], want["job_id"].as_str().unwrap_or(""));
            assert_eq!(&row[10], "");
        }
    }
    let (s, b) = app.get("/v1/plugins/scorer/scores/export?format=xml", &acme.read).await;
    assert_error(s, &b, 400, "invalid_query");
    let (s, b) = app.get("/v1/plugins/scorer/scores?limit=0", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.get("/v1/plugins/scorer/scores?limit=1001", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");

    // Tenant-scoped: globex sees its one score only; `panic` is acme's only.
    let (s, page) = app.get("/v1/plugins/scorer/scores", &globex.read).await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["customer_id"], dave.as_str());
    let text = app
        .client
        .get(app.url("/v1/plugins/scorer/scores/export"))
        .bearer_auth(&globex.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, items.clone(), "{text}");
    for path in [
        "/v1/plugins/panic/scores",
        "/v1/plugins/panic/scores/export",
        "/v1/plugins/nope/scores",
    ] {
        let (s, b) = app.get(path, &globex.read).await;
        assert_error(s, &b, 404, "not_found");
    }
    // A plugin of acme's with no scores yet: an empty page, an empty export.
    let (s, page) = app.get("/v1/plugins/panic/scores", &acme.read).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page, json!({ "items": [], "next_cursor": null }));
    // Platform keys act on no tenant's data.
    for path in ["/v1/plugins/scorer/scores", "/v1/plugins/scorer/scores/export"] {
        let (s, b) = app.get(path, &app.platform).await;
        assert_error(s, &b, 403, "forbidden");
    }

    // The customer list filtered by score returns the values it filtered on.
    let (s, page) = app
        .get("/v1/customers?score_plugin=scorer&min_score=1&limit=500", &acme.read)
        .await;
    assert_eq!(s, 200, "{page}");
    let listed = page["items"].as_array().unwrap();
    let wanted: Vec<&Value> = expected
        .iter()
        .filter(|e| e["value"].as_f64().unwrap() >= 1.0)
        .collect();
    assert_eq!(listed.len(), wanted.len(), "{page}");
    for (item, want) in listed.iter().zip(wanted) {
        assert_eq!(item["id"], want["customer_id"]);
        let mut score = want.clone();
        let object = score.as_object_mut().unwrap();
        object.remove("customer_id");
        object.remove("external_id");
        assert_eq!(item["score"], score, "{page}");
    }
    // Without a score filter, no `score`.
    let (_, page) = app.get("/v1/customers", &acme.read).await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("score").is_none()),
        "{page}"
    );
}

/// What a job clears: the queue entries of a page as read before its
/// histories. An entry enqueued again after that read (a newer generation)
/// stays, whoever holds its lease; the others go, leased or not.
async fn job_clears_only_the_queue_entries_it_read(backend: Backend) {
    let (app, _dir) = start_without_worker(backend).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let store = app.server.state.store.clone();
    let tenant = TenantId::for_tests(acme.id.clone());
    let queued = queued_customers(&app, &acme, 3).await;
    let unqueued = customer(&app, &acme, "not-queued").await;
    queued_customers(&app, &globex, 1).await;

    let (histories, read) = store
        .scoring_histories_page_with_queue(&tenant, None, 500, 100)
        .await
        .unwrap();
    assert_eq!(histories.len(), 4);
    let mut seen: Vec<(String, i64)> = read.iter().map(|e| (e.customer_id.clone(), e.generation)).collect();
    seen.sort();
    assert_eq!(seen, queued.iter().map(|id| (id.clone(), 1)).collect::<Vec<_>>());
    assert!(!seen.iter().any(|(id, _)| *id == unqueued));
    // A worker leases the oldest entry; another customer gets a new
    // interaction after the read.
    let lease = store.claim_rescores(&tenant, "node-a", 30_000, 1).await.unwrap();
    assert_eq!(lease.entries.len(), 1);
    assert_eq!(lease.entries[0].customer_id, queued[0]);
    store.enqueue_rescore(&tenant, &queued[1]).await.unwrap();

    // Cleared: the leased one and the untouched one, not the re-enqueued one.
    assert_eq!(store.clear_rescores(&tenant, &read).await.unwrap(), 2);
    let state = store.rescore_worker_state(&tenant).await.unwrap();
    assert_eq!(state.queued, 1, "{state:?}");
    let left = store.claim_rescores(&tenant, "node-b", 30_000, 10).await.unwrap();
    assert_eq!(left.entries.len(), 1, "{left:?}");
    assert_eq!(
        (left.entries[0].customer_id.as_str(), left.entries[0].generation),
        (queued[1].as_str(), 2)
    );
    // node-a's ack of the cleared entry removes nothing.
    assert_eq!(store.ack_rescores(&tenant, &lease).await.unwrap(), 0);
    // globex's queue is untouched.
    let globex_tenant = TenantId::for_tests(globex.id.clone());
    assert_eq!(store.rescore_worker_state(&globex_tenant).await.unwrap().queued, 1);
}

both_backends!(
    as_of_job_ignores_later_interactions,
    job_clears_only_the_queue_entries_it_read,
    as_of_scores_survive_a_running_worker,
    bulk_scores_page_and_export,
    job_with_a_failing_fit_is_not_succeeded,
    rescore_worker_paused_and_resumed,
    concurrent_rescore_claims_never_share_a_customer,
    expired_rescore_lease_is_taken_over,
    job_stores_scores_with_history_segments_and_filters,
    new_interaction_rescores_the_stored_score,
    reenqueued_customer_survives_the_older_ack,
    rfm_job_on_cdnow_sample,
);
