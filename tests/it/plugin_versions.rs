//! Plugin versions, uploads and simulations through the HTTP API (issue 14
//! items 2-4), on both backends: an uploaded version staged on a share of
//! the customers serves exactly that share on two nodes sharing one
//! database, promote and rollback apply at once on both, stored scores
//! record their version; an upload importing an undeclared capability is
//! refused naming the import; a simulation leaves every table unchanged;
//! another tenant sees none of it.
//!
//! The manifest declares `score` = test-scorer 0.1.0; the upload is
//! bench-scorer as `score` 2.0.0, so the two versions answer differently
//! (test-scorer's explanation counts purchases, bench-scorer's is fixed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{self, Backend, TestApp, TestTenant, assert_error};

const PLUGIN: &str = "score";
const CUSTOMERS: usize = 40;
const STAGED_PERCENT: i64 = 30;

fn manifest(dir: &Path) -> PathBuf {
    let mut text = support::plugin_manifest_entry(
        "score",
        "test-scorer",
        "scoring-rule",
        &["log", "config"],
        "timeout_ms = 5000",
    );
    text += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"score\"\nenabled = true\n\n";
    text += "[[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"score\"\nenabled = true\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(dir: &Path) -> rapport::config::Config {
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir));
    config.plugins.cache_dir = Some(dir.join("cache"));
    // Only the calls the tests make: no background rescoring, no delivery.
    config.plugins.rescore_interval_ms = Some(0);
    config.delivery.enabled = false;
    config
}

async fn start(backend: Backend) -> (TestApp, TestTenant, TestTenant, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start_with(backend, config(dir.path())).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    app.wait_ready().await;
    (app, acme, globex, dir)
}

/// A second node: another server on the same database and manifest.
async fn second_node(app: &TestApp, dir: &Path) -> rapport::server::RunningServer {
    let mut config = config(dir);
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = app.db.url.clone();
    rapport::server::start(&config).await.expect("second node")
}

async fn upload(app: &TestApp, crate_name: &str, version: &str, caps: &str, tenants: &str) -> (u16, Value) {
    let wasm = std::fs::read(support::plugin_wasm(crate_name)).unwrap();
    let path = format!(
        "/v1/admin/plugins?id={PLUGIN}&kind=scoring-rule&version={version}&capabilities={caps}&tenants={tenants}"
    );
    let (s, b) = app
        .raw(Method::POST, &path, &app.platform, "application/wasm", wasm)
        .await;
    (s.as_u16(), b)
}

async fn customers(app: &TestApp, t: &TestTenant, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (s, c) = app
            .post("/v1/customers", &t.write, json!({ "external_id": format!("c{i:03}") }))
            .await;
        assert_eq!(s, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let (s, b) = app
            .post(
                "/v1/interactions",
                &t.write,
                json!({ "customer_id": id, "kind": "purchase", "currency": "USD",
                        "items": [{ "sku": "SKU-1", "quantity": 1, "unit_price": "10.00" }] }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        ids.push(id);
    }
    ids
}

/// The version that scored `customer` on the node at `base`, checked
/// against what that version answers.
async fn served(app: &TestApp, base: &str, t: &TestTenant, customer: &str) -> String {
    let resp = app
        .client
        .post(format!("{base}/v1/customers/{customer}/score?plugin={PLUGIN}"))
        .bearer_auth(&t.write)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let result = &body["results"][0];
    assert_eq!(result["status"], "ok", "{body}");
    let version = result["version"].as_str().unwrap().to_string();
    let explanation = result["score"]["explanation"].as_str().unwrap();
    // test-scorer counts purchases; bench-scorer's explanation does not.
    assert_eq!(
        explanation.starts_with("1 purchase(s)"),
        version == "0.1.0",
        "version {version} answered {explanation:?}"
    );
    version
}

/// The bucket rule of `plugins::versions`, restated: sha256 of tenant,
/// plugin and customer (each followed by a NUL), first 8 bytes big-endian,
/// modulo 100.
fn bucket(tenant: &str, customer: &str) -> i64 {
    let mut h = sha2::Sha256::new();
    for part in [tenant, PLUGIN, customer] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    (u64::from_be_bytes(d[..8].try_into().unwrap()) % 100) as i64
}

async fn poll(app: &TestApp, path: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (s, b) = app.get(path, key).await;
        assert_eq!(s, 200, "{path}: {b}");
        if done(&b) {
            return b;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: never finished: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn staged_versions_serve_their_share_on_every_node(backend: Backend) {
    let (app, acme, globex, dir) = start(backend).await;
    let node_b = second_node(&app, dir.path()).await;
    let (a, b) = (app.server.url(), node_b.url());
    let ids = customers(&app, &acme, CUSTOMERS).await;

    let (s, art) = upload(&app, "bench-scorer", "2.0.0", "", "acme").await;
    assert_eq!(s, 201, "{art}");
    assert_eq!(art["version"], "2.0.0");
    // The same bytes again: the stored artifact, not a duplicate.
    let (s, again) = upload(&app, "bench-scorer", "2.0.0", "", "acme").await;
    assert_eq!((s, &again["digest"]), (201, &art["digest"]), "{again}");
    // Another component under a taken version is refused.
    let (s, taken) = upload(&app, "tenant-probe", "2.0.0", "customers", "acme").await;
    assert_eq!(s, 409, "{taken}");
    assert_eq!(taken["error"]["code"], "version_exists");

    let (s, v) = app.get("/v1/plugins/score/versions", &acme.read).await;
    assert_eq!(s, 200, "{v}");
    let listed: Vec<&str> = v["available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["0.1.0", "2.0.0"], "{v}");
    assert_eq!(v["active_version"], "0.1.0");

    let (s, st) = app
        .post(
            "/v1/plugins/score/stage",
            &acme.admin,
            json!({ "version": "2.0.0", "percent": STAGED_PERCENT }),
        )
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (st["staged_version"].as_str(), st["staged_percent"].as_i64()),
        (Some("2.0.0"), Some(STAGED_PERCENT))
    );

    // Each customer gets the version its bucket says, on both nodes, every time.
    let mut staged = 0;
    for id in &ids {
        let expected = if bucket("acme", id) < STAGED_PERCENT {
            "2.0.0"
        } else {
            "0.1.0"
        };
        staged += usize::from(expected == "2.0.0");
        for base in [&a, &b, &a] {
            assert_eq!(served(&app, base, &acme, id).await, expected, "customer {id} on {base}");
        }
    }
    assert!(
        staged > 0 && staged < CUSTOMERS,
        "the share split nobody: {staged}/{CUSTOMERS}"
    );

    // Promote on node A: node B serves 2.0.0 to everyone on its next call.
    let (s, p) = app.post("/v1/plugins/score/promote", &acme.admin, json!({})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(
        (p["active_version"].as_str(), p["previous_version"].as_str()),
        (Some("2.0.0"), Some("0.1.0"))
    );
    assert!(p["staged_version"].is_null(), "{p}");
    for id in &ids {
        assert_eq!(served(&app, &b, &acme, id).await, "2.0.0");
    }
    // Stored scores record the version that computed them.
    let (s, job) = app
        .post("/v1/scoring/jobs", &acme.admin, json!({ "plugin": PLUGIN }))
        .await;
    assert_eq!(s, 202, "{job}");
    let job_path = format!("/v1/scoring/jobs/{}", job["id"].as_str().unwrap());
    let job = poll(&app, &job_path, &acme.read, |j| {
        j["status"] != "queued" && j["status"] != "running"
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (s, scores) = app.get(&format!("/v1/customers/{}/scores", ids[0]), &acme.read).await;
    assert_eq!(s, 200, "{scores}");
    assert_eq!(scores["scores"][0]["plugin_version"], "2.0.0", "{scores}");

    // Roll back on node B: node A serves 0.1.0 at once.
    let resp = app
        .client
        .post(format!("{b}/v1/plugins/score/rollback"))
        .bearer_auth(&acme.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(
        (r["action"].as_str(), r["active_version"].as_str()),
        (Some("reverted"), Some("0.1.0")),
        "{r}"
    );
    for id in &ids {
        assert_eq!(served(&app, &a, &acme, id).await, "0.1.0");
    }
    let (s, none) = app.post("/v1/plugins/score/rollback", &acme.admin, json!({})).await;
    assert_error(s, &none, 409, "nothing_to_roll_back");
    let (s, none) = app.post("/v1/plugins/score/promote", &acme.admin, json!({})).await;
    assert_error(s, &none, 409, "nothing_staged");

    // A staged candidate withdrawn by a rollback.
    let (s, _) = app
        .post(
            "/v1/plugins/score/stage",
            &acme.admin,
            json!({ "version": "2.0.0", "percent": 100 }),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(served(&app, &b, &acme, &ids[0]).await, "2.0.0");
    let (s, r) = app.post("/v1/plugins/score/rollback", &acme.admin, json!({})).await;
    assert_eq!((s.as_u16(), r["action"].as_str()), (200, Some("unstaged")), "{r}");
    assert_eq!(served(&app, &b, &acme, &ids[0]).await, "0.1.0");

    // Globex was not allowed the upload: it neither sees nor stages it.
    let (s, v) = app.get("/v1/plugins/score/versions", &globex.read).await;
    assert_eq!(s, 200);
    assert_eq!(v["available"].as_array().unwrap().len(), 1, "{v}");
    let (s, e) = app
        .post(
            "/v1/plugins/score/stage",
            &globex.admin,
            json!({ "version": "2.0.0", "percent": 50 }),
        )
        .await;
    assert_error(s, &e, 422, "unknown_version");
    // Tenant keys cannot upload or list uploads; a write key cannot stage.
    let wasm = std::fs::read(support::plugin_wasm("bench-scorer")).unwrap();
    let (s, e) = app
        .raw(
            Method::POST,
            "/v1/admin/plugins?id=score&kind=scoring-rule&version=3&tenants=acme",
            &acme.admin,
            "application/wasm",
            wasm,
        )
        .await;
    assert_error(s, &e, 403, "forbidden");
    let (s, e) = app.get("/v1/admin/plugins", &acme.admin).await;
    assert_error(s, &e, 403, "forbidden");
    let (s, e) = app
        .post(
            "/v1/plugins/score/stage",
            &acme.write,
            json!({ "version": "2.0.0", "percent": 50 }),
        )
        .await;
    assert_error(s, &e, 403, "forbidden");

    // Every change is in the audit log, with the state before and after:
    // the tenant's version changes for its admin, the upload for the
    // platform admin (refused attempts leave nothing).
    let (s, log) = app.get("/v1/audit?action=plugin.stage&limit=100", &acme.admin).await;
    assert_eq!(s, 200, "{log}");
    assert_eq!(log["items"].as_array().unwrap().len(), 2, "{log}");
    assert_eq!(log["items"][1]["after"]["staged_percent"], STAGED_PERCENT, "{log}");
    for (action, n) in [("plugin.promote", 1), ("plugin.rollback", 2)] {
        let (s, log) = app
            .get(&format!("/v1/audit?action={action}&limit=100"), &acme.admin)
            .await;
        assert_eq!(s, 200, "{log}");
        let items = log["items"].as_array().unwrap();
        assert_eq!(items.len(), n, "{action}: {log}");
        assert_eq!(items[0]["target"], "plugin:score", "{log}");
        assert!(items[0]["before"].is_object() && items[0]["after"].is_object(), "{log}");
    }
    let (s, log) = app.get("/v1/audit?action=plugin.upload&limit=100", &app.platform).await;
    assert_eq!(s, 200, "{log}");
    let uploads: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(uploads, ["plugin:score@2.0.0", "plugin:score@2.0.0"], "{log}");
    let (_, theirs) = app.get("/v1/audit?action=plugin.stage", &globex.admin).await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    node_b.stop().await.unwrap();
}

async fn an_undeclared_import_is_refused_by_name(backend: Backend) {
    let (app, _acme, _globex, _dir) = start(backend).await;
    // hostile-ungranted imports the kv interface; only `log` is declared.
    let (s, e) = upload(&app, "hostile-ungranted", "9.0.0", "log", "acme").await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["error"]["code"], "component_rejected", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("rapport:crm/kv@0.1.0"), "{message}");
    // Nothing was stored.
    let (s, all) = app.get("/v1/admin/plugins", &app.platform).await;
    assert_eq!((s.as_u16(), all.as_array().map(Vec::len)), (200, Some(0)), "{all}");
    // Unknown capability, plugin id or tenant, and the manifest's own version.
    for (path, code) in [
        (
            "/v1/admin/plugins?id=score&kind=scoring-rule&version=2&capabilities=telepathy&tenants=acme",
            "validation_failed",
        ),
        (
            "/v1/admin/plugins?id=nope&kind=scoring-rule&version=2&tenants=acme",
            "unknown_plugin",
        ),
        (
            "/v1/admin/plugins?id=score&kind=scoring-rule&version=2&tenants=initech",
            "validation_failed",
        ),
        (
            "/v1/admin/plugins?id=score&kind=scoring-rule&version=0.1.0&tenants=acme",
            "version_in_manifest",
        ),
    ] {
        let wasm = std::fs::read(support::plugin_wasm("bench-scorer")).unwrap();
        let (s, e) = app
            .raw(Method::POST, path, &app.platform, "application/wasm", wasm)
            .await;
        assert_eq!(e["error"]["code"], code, "{path}: {s} {e}");
    }
}

/// Every table's row count and a checksum of its rows (as text, sorted).
/// Reads the database directly (the API shows no table): SQL in a test.
#[allow(clippy::disallowed_methods)]
async fn table_digests(app: &TestApp, backend: Backend) -> Vec<(String, i64, String)> {
    use sqlx::Row;
    let pool = app.server.state.store.db().pool();
    let names_sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        }
    };
    let names: Vec<String> = sqlx::query(names_sql)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("name"))
        .collect();
    let mut out = Vec::new();
    for name in names {
        // The simulation's own job row is the one write it makes.
        if name == "plugin_simulations" {
            continue;
        }
        let row_sql = match backend {
            Backend::Sqlite => {
                let cols: Vec<String> = sqlx::query(&format!("SELECT name FROM pragma_table_info('{name}')"))
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| format!("quote(\"{}\")", r.get::<String, _>("name")))
                    .collect();
                format!("SELECT {} AS line FROM \"{name}\"", cols.join(" || ',' || "))
            }
            Backend::Postgres => format!("SELECT t::text AS line FROM \"{name}\" t"),
        };
        let mut lines: Vec<String> = sqlx::query(&row_sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("line"))
            .collect();
        lines.sort();
        let digest = hex::encode(sha2::Sha256::digest(lines.join("\n").as_bytes()));
        out.push((name, lines.len() as i64, digest));
    }
    out
}

async fn a_simulation_writes_nothing(backend: Backend) {
    let (app, acme, globex, _dir) = start(backend).await;
    let ids = customers(&app, &acme, 12).await;
    let (s, art) = upload(&app, "bench-scorer", "2.0.0", "", "acme").await;
    assert_eq!(s, 201, "{art}");
    // Some stored state a write would disturb: a score of the active version.
    let (s, _) = app
        .post(
            &format!("/v1/customers/{}/score?plugin={PLUGIN}", ids[0]),
            &acme.write,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let before = table_digests(&app, backend).await;
    assert!(
        before.iter().any(|(name, n, _)| name == "interactions" && *n == 12),
        "{before:?}"
    );

    let (s, sim) = app
        .post("/v1/plugins/score/simulate", &acme.admin, json!({ "version": "2.0.0" }))
        .await;
    assert_eq!(s, 202, "{sim}");
    let path = format!("/v1/simulations/{}", sim["id"].as_str().unwrap());
    let done = poll(&app, &path, &acme.read, |b| b["status"] != "running").await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["version"].as_str(), done["baseline"].as_str()),
        (Some("2.0.0"), Some("0.1.0"))
    );
    assert_eq!(
        (done["done"].as_i64(), done["total"].as_i64()),
        (Some(12), Some(12)),
        "{done}"
    );
    let report = &done["report"];
    assert_eq!(report["customers"], 12, "{report}");
    // test-scorer puts every one-purchase customer in `buyer`; bench-scorer
    // gives no segment: every customer would change segment.
    assert_eq!(report["active"]["segments"], json!({ "buyer": 12 }), "{report}");
    assert_eq!(report["candidate"]["segments"], json!({ "(none)": 12 }), "{report}");
    assert_eq!(report["segment_changes"], 12, "{report}");
    assert_eq!(report["transitions"], json!({ "buyer -> (none)": 12 }), "{report}");
    // A sample runs only that many customers.
    let (s, sim2) = app
        .post(
            "/v1/plugins/score/simulate",
            &acme.admin,
            json!({ "version": "2.0.0", "sample": 5 }),
        )
        .await;
    assert_eq!(s, 202, "{sim2}");
    let path2 = format!("/v1/simulations/{}", sim2["id"].as_str().unwrap());
    let done2 = poll(&app, &path2, &acme.read, |b| b["status"] != "running").await;
    assert_eq!(done2["report"]["customers"], 5, "{done2}");

    let after = table_digests(&app, backend).await;
    assert_eq!(before, after, "a simulation changed a table");

    // Another tenant's simulation reads as unknown; a version it may not run is refused.
    let (s, e) = app.get(&path, &globex.read).await;
    assert_error(s, &e, 404, "not_found");
    let (s, e) = app.get(&path, &globex.admin).await;
    assert_error(s, &e, 404, "not_found");
    let (s, e) = app
        .post(
            "/v1/plugins/score/simulate",
            &globex.admin,
            json!({ "version": "2.0.0" }),
        )
        .await;
    assert_error(s, &e, 422, "unknown_version");
    let (s, e) = app
        .post("/v1/plugins/nope/simulate", &acme.admin, json!({ "version": "2.0.0" }))
        .await;
    assert_error(s, &e, 404, "not_found");
    let (s, e) = app
        .post("/v1/plugins/score/simulate", &acme.write, json!({ "version": "2.0.0" }))
        .await;
    assert_error(s, &e, 403, "forbidden");
}

crate::both_backends!(
    staged_versions_serve_their_share_on_every_node,
    an_undeclared_import_is_refused_by_name,
    a_simulation_writes_nothing,
);
