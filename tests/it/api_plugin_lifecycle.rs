//! Changing a plugin safely (issue #14, items 1, 5, 6): config schemas
//! (validation with JSON pointers, defaults, the schema in `GET
//! /v1/plugins/{id}`, located manifest errors), secrets as references that
//! never show anywhere, a config the plugin refuses shown as its status, the
//! run history (bounded), and the audit log (every admin action, scoped,
//! filtered, paged, append-only).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, Backend, TestApp, TestTenant, assert_error};
use rapport::config::Config;
use rapport::store::TenantId;
use rapport::store::plugin_runs::{NewRun, RUNS_KEEP};

/// The config schema of the `scorer` plugin (test-scorer: its value is the
/// purchases plus config `bonus`): `bonus` defaults to 2, unknown keys are
/// refused, and `token` is a secret (test-scorer ignores it).
const SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "bonus": { "type": "number", "minimum": 0, "default": 2 },
    "note": { "type": "string" },
    "token": { "type": "string", "x-secret": true, "minLength": 8 }
  }
}"#;

/// A manifest with `scorer` (test-scorer with [`SCHEMA`]) and `loose` (the
/// same component without a schema), both for `acme` and `globex`, and a
/// secrets file; `tenant_config` is acme's `scorer` config (TOML inline).
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(tenant_config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scorer.schema.json"), SCHEMA).unwrap();
        std::fs::write(
            dir.path().join("secrets.toml"),
            "scorer-token = \"tok-5ecret-VALUE-h7\"\n",
        )
        .unwrap();
        let setup = Setup { dir };
        setup.write(tenant_config);
        setup
    }

    fn manifest_path(&self) -> std::path::PathBuf {
        self.dir.path().join("plugins.toml")
    }

    fn write(&self, tenant_config: &str) {
        let scorer = support::plugin_manifest_entry("scorer", "test-scorer", "scoring-rule", &["config", "log"], "")
            .replacen(
                "[plugin.limits]",
                "config_schema_file = \"scorer.schema.json\"\n[plugin.limits]\nfuel = 100000000",
                1,
            );
        let loose = support::plugin_manifest_entry("loose", "test-scorer", "scoring-rule", &["config", "log"], "");
        let text = format!(
            "{scorer}{loose}\
             [[tenant]]\nid = \"acme\"\n\
             [[tenant.plugin]]\nid = \"scorer\"\nconfig = {tenant_config}\n\
             [[tenant.plugin]]\nid = \"loose\"\nenabled = false\n\
             [[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"scorer\"\n"
        );
        std::fs::write(self.manifest_path(), text).unwrap();
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        config.plugins.manifest = Some(self.manifest_path());
        config.plugins.secrets_file = Some(self.dir.path().join("secrets.toml"));
        // No delivery worker: the replayed message must stay as replayed.
        config.delivery.enabled = false;
        config
    }
}

async fn customer(app: &TestApp, t: &TestTenant, external_id: &str) -> String {
    let (s, b) = app
        .post(
            "/v1/customers",
            &t.write,
            json!({ "external_id": external_id, "name": "Ada", "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

/// Scores `customer` with `plugin` and returns its result.
async fn score(app: &TestApp, t: &TestTenant, customer: &str, plugin: &str) -> Value {
    let (s, b) = app
        .post(
            &format!("/v1/customers/{customer}/score?plugin={plugin}"),
            &t.write,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["results"][0].clone()
}

async fn plugin(app: &TestApp, t: &TestTenant, id: &str) -> Value {
    let (s, b) = app.get(&format!("/v1/plugins/{id}"), &t.read).await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Polls the run history until it holds at least `n` runs (it is written in
/// the background, after the call answered).
async fn runs(app: &TestApp, t: &TestTenant, plugin: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = app.get(&format!("/v1/plugins/{plugin}/runs?limit=100"), &t.read).await;
        assert_eq!(s, 200, "{b}");
        let items = b["items"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "only {} runs of {plugin} after 30 s: {b}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn config_schema_validates_and_fills_defaults(backend: Backend) {
    let setup = Setup::new("{ note = \"from the manifest\" }");
    let app = TestApp::start_with(backend, setup.config()).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let cid = customer(&app, &acme, "c-1").await;

    // The schema is served to draw a form; the default is filled in.
    let b = plugin(&app, &acme, "scorer").await;
    assert_eq!(b["config_schema"], serde_json::from_str::<Value>(SCHEMA).unwrap());
    assert_eq!(b["config"], json!({ "note": "from the manifest", "bonus": 2 }));
    assert!(plugin(&app, &acme, "loose").await["config_schema"].is_null());
    // ...and it is what the plugin receives: no purchases + bonus 2.
    assert_eq!(score(&app, &acme, &cid, "scorer").await["score"]["value"], 2.0);

    // A misspelt key and a value out of range: 422 with the pointer.
    let put = |body: Value| {
        let app = &app;
        let key = acme.admin.clone();
        async move { app.put("/v1/plugins/scorer/config", &key, body).await }
    };
    let (s, b) = put(json!({ "window_day": 30 })).await;
    assert_error(s, &b, 422, "config_invalid");
    assert_eq!(b["error"]["details"]["field"], "");
    assert!(b["error"]["message"].as_str().unwrap().contains("window_day"), "{b}");
    let (s, b) = put(json!({ "bonus": -1 })).await;
    assert_error(s, &b, 422, "config_invalid");
    assert_eq!(b["error"]["details"]["field"], "/bonus");
    let (s, b) = put(json!({ "bonus": "three" })).await;
    assert_error(s, &b, 422, "config_invalid");
    assert_eq!(b["error"]["details"]["field"], "/bonus");
    // Nothing was stored by the refusals.
    assert_eq!(plugin(&app, &acme, "scorer").await["config_source"], "manifest");

    // A valid one: stored as sent, served and passed on with the defaults.
    let (s, b) = put(json!({ "note": "admin" })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["config"], json!({ "note": "admin", "bonus": 2 }));
    assert_eq!(b["config_source"], "admin");
    let (s, b) = put(json!({ "bonus": 5 })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(score(&app, &acme, &cid, "scorer").await["score"]["value"], 5.0);
}

async fn a_config_the_plugin_refuses_shows_as_its_status(backend: Backend) {
    let setup = Setup::new("{}");
    let app = TestApp::start_with(backend, setup.config()).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let cid = customer(&app, &acme, "c-1").await;
    let (s, b) = app.post("/v1/plugins/loose/enable", &acme.admin, json!(null)).await;
    assert_eq!(s, 200, "{b}");
    // No schema: accepted, but test-scorer refuses a non-numeric bonus.
    let (s, b) = app
        .put("/v1/plugins/loose/config", &acme.admin, json!({ "bonus": "three" }))
        .await;
    assert_eq!(s, 200, "{b}");
    let r = score(&app, &acme, &cid, "loose").await;
    assert_eq!(r["error"]["code"], "plugin_invalid_config", "{r}");
    for p in [plugin(&app, &acme, "loose").await, {
        let (_, list) = app.get("/v1/plugins", &acme.read).await;
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "loose")
            .unwrap()
            .clone()
    }] {
        assert_eq!(p["status"], "misconfigured", "{p}");
        assert!(p["last_error"].as_str().unwrap().contains("bonus"), "{p}");
        // The admin's config, not the plugin's fault: never counted.
        assert_eq!(p["consecutive_failures"], 0, "{p}");
    }
    // Still called (so a fix shows at once); a new config clears it.
    let (s, b) = app
        .put("/v1/plugins/loose/config", &acme.admin, json!({ "bonus": 1 }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "active", "{b}");
    assert_eq!(score(&app, &acme, &cid, "loose").await["score"]["value"], 1.0);
    assert_eq!(plugin(&app, &acme, "loose").await["status"], "active");
}

/// The manifest's tenant configs are checked against the schema too, each
/// violation located as `file:line:column`.
#[test]
fn manifest_tenant_configs_are_validated_with_locations() {
    let setup = Setup::new("{ bonus = -4, colour = \"red\" }");
    let text = std::fs::read_to_string(setup.manifest_path()).unwrap();
    let err = rapport::manifest::Manifest::load(&setup.manifest_path()).unwrap_err();
    let issues = err.issues();
    assert_eq!(issues.len(), 2, "{err}");
    let line = text.lines().position(|l| l.contains("colour")).map(|i| i + 1).unwrap();
    for issue in issues {
        assert_eq!(issue.line, line, "{issue}");
        assert_eq!(issue.field, "tenant[0].plugin[0].config", "{issue}");
    }
    let all = err.to_string();
    assert!(all.contains("/bonus: "), "{all}");
    assert!(all.contains("colour"), "{all}");
    assert!(
        all.starts_with(&format!("{}:{line}:", setup.manifest_path().display())),
        "{all}"
    );

    // A schema that is not a JSON Schema is refused where it is declared.
    std::fs::write(
        setup.dir.path().join("scorer.schema.json"),
        r#"{"type": "no-such-type"}"#,
    )
    .unwrap();
    setup.write("{}");
    let err = rapport::manifest::Manifest::load(&setup.manifest_path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("plugin[0].config_schema_file: not a valid JSON Schema"),
        "{err}"
    );
}

/// The example manifest's schemas (every first-party plugin's
/// `config.schema.json`) compile, and its tenant configs match them (its
/// artifacts are placeholders: those issues are the only ones).
#[test]
fn the_example_manifest_and_first_party_schemas_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (manifest, _artifact_issues) =
        rapport::manifest::Manifest::load_serving(&root.join("examples/plugins.toml")).unwrap();
    for id in ["rfm", "webhook", "email"] {
        assert!(manifest.plugin(id).unwrap().config_schema.is_some(), "{id}");
    }
    for entry in std::fs::read_dir(root.join("plugins")).unwrap() {
        let schema = entry.unwrap().path().join("config.schema.json");
        if !schema.is_file() {
            continue;
        }
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&schema).unwrap()).unwrap();
        rapport::manifest::config_schema::check_schema(&schema).unwrap();
        // The defaults alone are a valid config where nothing is required.
        if schema.get("required").is_none() {
            let defaults = rapport::manifest::config_schema::with_defaults(&schema, &json!({}));
            rapport::manifest::config_schema::validate(&schema, &defaults).unwrap();
        }
    }
}

/// Everything the server logs, for the life of this test's process.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn install() -> CapturedLogs {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        // Each test is a process of its own under nextest; under plain
        // `cargo test` another test may have installed one first, and then
        // this test checks what it could capture (nothing).
        // Everything at debug, but the compiler's own chatter (cranelift's
        // per-function traces make a test minutes long).
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,wasmtime=info,wasmtime_cranelift=info,wasmtime_internal_cranelift=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn secrets_are_references_and_never_shown(backend: Backend) {
    const SECRET: &str = "tok-5ecret-VALUE-h7";
    let logs = CapturedLogs::install();
    let setup = Setup::new("{ token = { secret = \"file:scorer-token\" } }");
    let app = TestApp::start_with(backend, setup.config()).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let cid = customer(&app, &acme, "c-1").await;
    let mut seen = Vec::new();

    // The reference is what GET shows; the call resolves it and succeeds.
    let b = plugin(&app, &acme, "scorer").await;
    assert_eq!(b["config"]["token"], json!({ "secret": "file:scorer-token" }));
    seen.push(b);
    let r = score(&app, &acme, &cid, "scorer").await;
    assert_eq!(r["status"], "ok", "{r}");
    seen.push(r);

    // A secret in clear is refused without being echoed; so is a reference
    // to the server's own environment.
    let (s, b) = app
        .put("/v1/plugins/scorer/config", &acme.admin, json!({ "token": SECRET }))
        .await;
    assert_error(s, &b, 422, "config_invalid");
    assert_eq!(b["error"]["details"]["field"], "/token");
    seen.push(b);
    let (s, b) = app
        .put(
            "/v1/plugins/scorer/config",
            &acme.admin,
            json!({ "token": { "secret": "env:DATABASE_URL" } }),
        )
        .await;
    assert_error(s, &b, 422, "config_invalid");

    // A reference that does not resolve: misconfigured, naming the
    // reference; the call fails before the plugin runs.
    let (s, b) = app
        .put(
            "/v1/plugins/scorer/config",
            &acme.admin,
            json!({ "token": { "secret": "file:missing" }, "bonus": 1 }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    seen.push(b);
    let r = score(&app, &acme, &cid, "scorer").await;
    assert_eq!(r["error"]["code"], "plugin_invalid_config", "{r}");
    let b = plugin(&app, &acme, "scorer").await;
    assert_eq!(b["status"], "misconfigured", "{b}");
    assert!(b["last_error"].as_str().unwrap().contains("file:missing"), "{b}");
    seen.push(b);
    let (s, b) = app
        .put(
            "/v1/plugins/scorer/config",
            &acme.admin,
            json!({ "token": { "secret": "file:scorer-token" } }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let r = score(&app, &acme, &cid, "scorer").await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(plugin(&app, &acme, "scorer").await["status"], "active");

    // Every place a config or a call shows up.
    for path in [
        "/v1/plugins".to_string(),
        "/v1/plugins/scorer/runs?limit=100".to_string(),
        "/v1/audit".to_string(),
        format!("/v1/customers/{cid}/export"),
    ] {
        let (s, b) = app.get(&path, &acme.admin).await;
        assert_eq!(s, 200, "{path}: {b}");
        seen.push(b);
    }
    for path in ["/v1/admin/manifest", "/v1/audit"] {
        let (s, b) = app.get(path, &app.platform).await;
        assert_eq!(s, 200, "{path}: {b}");
        seen.push(b);
    }
    // The unresolved reference's call is in the history too.
    let history = runs(&app, &acme, "scorer", 3).await;
    assert!(
        history.iter().any(|r| r["error_code"] == "plugin_invalid_config"),
        "{history:?}"
    );
    seen.extend(history);
    for b in &seen {
        assert!(!b.to_string().contains(SECRET), "the secret in a response: {b}");
    }
    let text = logs.text();
    assert!(!text.contains(SECRET), "the secret in the log");
    // The capture works (the refused call was logged), so the check above
    // looked at real log lines.
    assert!(text.contains("file:missing"), "nothing captured:\n{text}");
}

async fn runs_are_recorded_and_bounded(backend: Backend) {
    let setup = Setup::new("{}");
    let app = TestApp::start_with(backend, setup.config()).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let cid = customer(&app, &acme, "c-1").await;

    // A call and a fit (which logs one line) through the real paths.
    score(&app, &acme, &cid, "scorer").await;
    let (s, b) = app
        .post("/v1/scoring/jobs", &acme.admin, json!({ "plugin": "scorer" }))
        .await;
    assert_eq!(s, 202, "{b}");
    let items = runs(&app, &acme, "scorer", 2).await;
    let scored = items.iter().find(|r| r["logs"].as_array().unwrap().is_empty()).unwrap();
    assert_eq!(scored["outcome"], "ok");
    assert_eq!(scored["version"], "0.1.0");
    assert!(scored["duration_us"].as_i64().unwrap() > 0, "{scored}");
    assert!(scored["fuel_used"].as_i64().unwrap() > 0, "fuel is metered: {scored}");
    assert!(scored["started_at"].is_string());
    let deadline = Instant::now() + Duration::from_secs(30);
    let fitted = loop {
        let items = runs(&app, &acme, "scorer", 1).await;
        if let Some(r) = items.iter().find(|r| !r["logs"].as_array().unwrap().is_empty()) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no run with the fit's log line: {items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(fitted["logs"][0]["level"], "info", "{fitted}");
    assert!(
        fitted["logs"][0]["message"].as_str().unwrap().starts_with("fit over "),
        "{fitted}"
    );

    // A failed call records its error.
    let (s, b) = app.post("/v1/plugins/loose/enable", &acme.admin, json!(null)).await;
    assert_eq!(s, 200, "{b}");
    app.put("/v1/plugins/loose/config", &acme.admin, json!({ "bonus": "x" }))
        .await;
    score(&app, &acme, &cid, "loose").await;
    let failed = runs(&app, &acme, "loose", 1).await;
    assert_eq!(failed[0]["outcome"], "error");
    assert_eq!(failed[0]["error_code"], "plugin_invalid_config");

    // Another tenant sees none of them; a plugin not available is 404.
    let (s, b) = app.get("/v1/plugins/scorer/runs", &globex.read).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"], json!([]));
    let (s, b) = app.get("/v1/plugins/loose/runs", &globex.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/plugins/scorer/runs?limit=0", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");

    // Bounded: the newest RUNS_KEEP per (tenant, plugin), whatever is written.
    let store = &app.server.state.store;
    let t = TenantId::for_tests("acme");
    let run = |i: i64| NewRun {
        tenant: t.clone(),
        plugin_id: "scorer".into(),
        version: "0.1.0".into(),
        started_at_ms: i,
        duration_us: i,
        fuel_used: None,
        outcome: "ok",
        error_code: None,
        error: None,
        logs: Vec::new(),
        logs_dropped: 0,
    };
    for chunk in (0..(RUNS_KEEP + 30)).collect::<Vec<_>>().chunks(40) {
        let batch: Vec<NewRun> = chunk.iter().map(|&i| run(i)).collect();
        store.record_plugin_runs(&batch).await.unwrap();
    }
    let kept = store.plugin_runs(&t, "scorer", 1000).await.unwrap();
    assert_eq!(kept.len() as i64, RUNS_KEEP);
    assert_eq!(kept[0].duration_us, RUNS_KEEP + 29, "newest first");
    assert_eq!(kept.last().unwrap().duration_us, 30, "the oldest were pruned");
    // Other pairs are untouched by the pruning.
    assert_eq!(store.plugin_runs(&t, "loose", 1000).await.unwrap().len(), 1);
}

/// `GET /v1/audit` as `key`, all pages, oldest first.
async fn audit(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit?limit=3{query}");
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let (s, b) = app.get(&path, key).await;
        assert_eq!(s, 200, "{path}: {b}");
        items.extend(b["items"].as_array().unwrap().iter().cloned());
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    items.reverse();
    items
}

fn actions(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["action"].as_str().unwrap()).collect()
}

async fn audit_log_records_every_admin_action(backend: Backend) {
    let setup = Setup::new("{}");
    let app = TestApp::start_with(backend, setup.config()).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let store = &app.server.state.store;
    let admin_key_id = store.authenticate(&acme.admin).await.unwrap().unwrap().key_id;
    let cid = customer(&app, &acme, "c-1").await;

    // Plugins.
    let ok = |s: reqwest::StatusCode, b: &Value| assert!(s.is_success(), "{s} {b}");
    let (s, b) = app.post("/v1/plugins/scorer/disable", &acme.admin, json!(null)).await;
    ok(s, &b);
    let (s, b) = app.post("/v1/plugins/scorer/enable", &acme.admin, json!(null)).await;
    ok(s, &b);
    let (s, b) = app.delete("/v1/plugins/scorer/enabled", &acme.admin).await;
    ok(s, &b);
    let (s, b) = app
        .put(
            "/v1/plugins/scorer/config",
            &acme.admin,
            json!({ "bonus": 3, "token": { "secret": "file:scorer-token" } }),
        )
        .await;
    ok(s, &b);
    let (s, b) = app.delete("/v1/plugins/scorer/config", &acme.admin).await;
    ok(s, &b);
    let (s, b) = app.post("/v1/plugins/scorer/resume", &acme.admin, json!(null)).await;
    ok(s, &b);
    // Keys, through both routes.
    let (s, key) = app
        .post("/v1/keys", &acme.admin, json!({ "role": "tenant_read", "name": "k1" }))
        .await;
    ok(s, &key);
    let (s, b) = app
        .delete(&format!("/v1/keys/{}", key["id"].as_str().unwrap()), &acme.admin)
        .await;
    ok(s, &b);
    let (s, key2) = app
        .post(
            "/v1/tenants/acme/keys",
            &app.platform,
            json!({ "role": "tenant_write" }),
        )
        .await;
    ok(s, &key2);
    let (s, b) = app
        .delete(
            &format!("/v1/tenants/acme/keys/{}", key2["id"].as_str().unwrap()),
            &app.platform,
        )
        .await;
    ok(s, &b);
    // Tiers and rewards.
    let (s, tier) = app
        .post("/v1/loyalty/tiers", &acme.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    ok(s, &tier);
    let tier_id = tier["id"].as_str().unwrap();
    let (s, b) = app
        .patch(
            &format!("/v1/loyalty/tiers/{tier_id}"),
            &acme.admin,
            json!({ "name": "Golden" }),
        )
        .await;
    ok(s, &b);
    let (s, b) = app
        .put(
            &format!("/v1/customers/{cid}/loyalty/tier"),
            &acme.admin,
            json!({ "tier_id": tier_id, "reason": "vip" }),
        )
        .await;
    ok(s, &b);
    let (s, reward) = app
        .post(
            "/v1/loyalty/rewards",
            &acme.admin,
            json!({ "name": "Mug", "cost_points": 10 }),
        )
        .await;
    ok(s, &reward);
    let reward_id = reward["id"].as_str().unwrap();
    let (s, b) = app
        .patch(
            &format!("/v1/loyalty/rewards/{reward_id}"),
            &acme.admin,
            json!({ "name": "Big mug" }),
        )
        .await;
    ok(s, &b);
    let (s, b) = app
        .delete(&format!("/v1/loyalty/rewards/{reward_id}"), &acme.admin)
        .await;
    ok(s, &b);
    // A dead message replayed.
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "email", "body": "hi", "idempotency_key": "m1" }),
        )
        .await;
    ok(s, &m);
    let claims = store.claim_messages("test-node", 60_000, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert!(store.kill_claim(&claims[0], "gave up").await.unwrap());
    let (s, b) = app
        .post(
            &format!("/v1/messages/{}/replay", m["id"].as_str().unwrap()),
            &acme.write,
            json!(null),
        )
        .await;
    ok(s, &b);
    // GDPR.
    let (s, b) = app.get(&format!("/v1/customers/{cid}/export"), &acme.admin).await;
    ok(s, &b);
    let (s, b) = app
        .post(&format!("/v1/customers/{cid}/erase"), &acme.admin, json!(null))
        .await;
    ok(s, &b);
    let (s, spare) = app
        .post("/v1/loyalty/tiers", &acme.admin, json!({ "name": "Spare", "rank": 5 }))
        .await;
    ok(s, &spare);
    let (s, b) = app
        .delete(
            &format!("/v1/loyalty/tiers/{}", spare["id"].as_str().unwrap()),
            &acme.admin,
        )
        .await;
    ok(s, &b);
    // A refused action records nothing: Gold is held by the customer.
    let (s, b) = app.delete(&format!("/v1/loyalty/tiers/{tier_id}"), &acme.admin).await;
    assert_error(s, &b, 409, "tier_in_use");
    // The manifest reloaded (platform).
    let (s, b) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    ok(s, &b);

    let records = audit(&app, &acme.admin, "").await;
    let expected = vec![
        "plugin.disable",
        "plugin.enable",
        "plugin.enabled_reset",
        "plugin.config",
        "plugin.config_reset",
        "plugin.resume",
        "key.create",
        "key.revoke",
        "key.create",
        "key.revoke",
        "tier.create",
        "tier.update",
        "customer.tier_set",
        "reward.create",
        "reward.update",
        "reward.delete",
        "message.replay",
        "gdpr.export",
        "gdpr.erase",
        "tier.create",
        "tier.delete",
    ];
    assert_eq!(actions(&records), expected);
    for r in &records {
        assert_eq!(r["tenant_id"], "acme", "{r}");
        assert!(r["at"].is_string(), "{r}");
    }
    // The acting key, and a before/after diff.
    let config = records.iter().find(|r| r["action"] == "plugin.config").unwrap();
    assert_eq!(config["actor_key_id"], admin_key_id.as_str());
    assert_eq!(config["target"], "plugin:scorer");
    assert_eq!(config["after"]["config"]["bonus"], 3);
    assert!(
        config["changes"].as_array().unwrap().contains(&json!("/config")),
        "{config}"
    );
    let tier_update = records.iter().find(|r| r["action"] == "tier.update").unwrap();
    assert_eq!(tier_update["before"]["name"], "Gold");
    assert_eq!(tier_update["after"]["name"], "Golden");
    assert!(tier_update["changes"].as_array().unwrap().contains(&json!("/name")));
    let platform_key = records.iter().filter(|r| r["action"] == "key.create").nth(1).unwrap();
    assert_ne!(
        platform_key["actor_key_id"],
        admin_key_id.as_str(),
        "the platform admin acted"
    );
    // Never a token, never the exported or erased data.
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(key["token"].as_str().unwrap()));
    assert!(!text.contains("ada@example.com"), "personal data in the audit log");

    // The platform admin sees platform actions, with the manifest's digests.
    let platform = audit(&app, &app.platform, "").await;
    assert_eq!(
        actions(&platform),
        ["tenant.create", "tenant.create", "manifest.reload"]
    );
    let reload = &platform[2];
    assert_eq!(reload["tenant_id"], Value::Null);
    assert_eq!(reload["after"]["plugins"]["scorer"]["version"], "0.1.0");
    assert_eq!(
        reload["after"]["plugins"]["scorer"]["sha256"].as_str().unwrap().len(),
        64
    );

    // Filters: action, actor, time.
    let only = audit(&app, &acme.admin, "&action=key.revoke").await;
    assert_eq!(actions(&only), ["key.revoke", "key.revoke"]);
    let mine = audit(&app, &acme.admin, &format!("&actor={admin_key_id}")).await;
    // All but the platform admin's two key actions and the write key's replay.
    assert_eq!(mine.len(), records.len() - 3);
    let replay = records.iter().find(|r| r["action"] == "message.replay").unwrap();
    let write_key_id = store.authenticate(&acme.write).await.unwrap().unwrap().key_id;
    assert_eq!(replay["actor_key_id"], write_key_id.as_str());
    // `from` is inclusive, `to` exclusive: the same time splits the log in two.
    let at = records[records.len() / 2]["at"].as_str().unwrap();
    let from = audit(&app, &acme.admin, &format!("&from={}", urlencode(at))).await;
    let to = audit(&app, &acme.admin, &format!("&to={}", urlencode(at))).await;
    assert!(!from.is_empty() && !to.is_empty(), "{} {}", from.len(), to.len());
    assert_eq!([to, from].concat(), records);
    let (s, b) = app.get("/v1/audit?from=yesterday", &acme.admin).await;
    assert_error(s, &b, 422, "validation_failed");

    // Scoped: another tenant sees none of it; read and write keys nothing.
    assert!(audit(&app, &globex.admin, "").await.is_empty());
    for key in [&acme.read, &acme.write] {
        let (s, b) = app.get("/v1/audit", key).await;
        assert_error(s, &b, 403, "forbidden");
    }

    // Append-only: no route changes it, and the database refuses to.
    let id = records[0]["id"].as_str().unwrap();
    for (method, path) in [
        (Method::DELETE, "/v1/audit".to_string()),
        (Method::PUT, "/v1/audit".to_string()),
        (Method::PATCH, "/v1/audit".to_string()),
        (Method::POST, "/v1/audit".to_string()),
        (Method::DELETE, format!("/v1/audit/{id}")),
        (Method::PUT, format!("/v1/audit/{id}")),
    ] {
        let (s, _) = app.call(method.clone(), &path, &acme.admin, Some(json!({}))).await;
        assert!(s == 404 || s == 405, "{method} {path}: {s}");
    }
    #[allow(clippy::disallowed_methods)]
    {
        let pool = store.db().pool();
        let update = sqlx::query("UPDATE audit_log SET action = 'forged' WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await;
        assert!(update.is_err(), "an UPDATE of the audit log went through");
        let delete = sqlx::query("DELETE FROM audit_log WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await;
        assert!(delete.is_err(), "a DELETE from the audit log went through");
    }
    assert_eq!(audit(&app, &acme.admin, "").await, records);
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

both_backends!(
    config_schema_validates_and_fills_defaults,
    a_config_the_plugin_refuses_shows_as_its_status,
    secrets_are_references_and_never_shown,
    runs_are_recorded_and_bounded,
    audit_log_records_every_admin_action,
);
