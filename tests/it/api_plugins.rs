//! Plugin API tests: effective state (manifest default vs admin override vs
//! removed plugin vs suspension), enable/disable/config/resume, failure
//! counting to suspension, key-value storage, manifest reload (a broken one
//! keeps the old), tenant isolation, roles and malformed input.

use crate::support;
use std::path::PathBuf;

use crate::support::{Backend, TestApp, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

use rapport::config::Config;
use rapport::manifest::sha256_file;
use rapport::store::{StoreError, TenantId};

/// A manifest directory with three artifacts (real components, since every
/// plugin is compiled at load: rfm is a copy of `tenant-probe`, churn of
/// `bench-scorer`, xsell of `test-cross-sell`); `acme` may use rfm, churn
/// and xsell, `globex` only rfm.
struct Plugins {
    dir: tempfile::TempDir,
}

/// The component each fixture artifact is a copy of.
fn component(name: &str) -> &'static str {
    match name {
        "xsell" => "test-cross-sell",
        "churn" => "bench-scorer",
        _ => "tenant-probe",
    }
}

impl Plugins {
    fn new() -> Plugins {
        let dir = tempfile::tempdir().unwrap();
        let p = Plugins { dir };
        for name in ["rfm", "churn", "xsell"] {
            p.restore(name);
        }
        p.write(&p.manifest(true));
        p
    }

    /// (Re)writes artifact `name` as the manifest expects it.
    fn restore(&self, name: &str) {
        std::fs::copy(
            support::plugin_wasm(component(name)),
            self.dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("plugins.toml")
    }

    /// The digest the manifest pins for `name` (its component's, whatever
    /// the file holds now).
    fn sha(&self, name: &str) -> String {
        sha256_file(&support::plugin_wasm(component(name))).unwrap()
    }

    fn plugin(&self, id: &str, kind: &str, extra: &str) -> String {
        let capabilities = if id == "xsell" {
            "\"catalog\", \"kv\""
        } else {
            "\"customers\", \"kv\""
        };
        format!(
            "[[plugin]]\nid = \"{id}\"\nkind = \"{kind}\"\nversion = \"0.1.0\"\ncontract = \"rapport:crm@0.1.0\"\n\
             artifact = \"{id}.wasm\"\nsha256 = \"{}\"\ncapabilities = [{capabilities}]\n{extra}\n",
            self.sha(id)
        )
    }

    /// The manifest, with or without the `xsell` plugin.
    fn manifest(&self, with_xsell: bool) -> String {
        let mut text = self.plugin(
            "rfm",
            "scoring-rule",
            "[plugin.limits]\nmax_consecutive_failures = 3\nkv_max_bytes = 64",
        );
        text += &self.plugin("churn", "scoring-rule", "");
        if with_xsell {
            text += &self.plugin("xsell", "cross-sell", "");
        }
        text += "[[tenant]]\nid = \"acme\"\n\
                 [[tenant.plugin]]\nid = \"rfm\"\nconfig = { window_days = 365 }\n\
                 [[tenant.plugin]]\nid = \"churn\"\nenabled = false\n";
        if with_xsell {
            text += "[[tenant.plugin]]\nid = \"xsell\"\n";
        }
        text += "[[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"rfm\"\nconfig = { window_days = 90 }\n";
        text
    }

    fn write(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        config.plugins.manifest = Some(self.path());
        config
    }
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect()
}

async fn effective_state_and_overrides(backend: Backend) {
    let plugins = Plugins::new();
    let app = TestApp::start_with(backend, plugins.config()).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;

    // Manifest defaults.
    let (s, list) = app.get("/v1/plugins", &acme.read).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(ids(&list), ["rfm", "churn", "xsell"]);
    let rfm = &list[0];
    assert_eq!(rfm["kind"], "scoring-rule");
    assert_eq!(rfm["version"], "0.1.0");
    assert_eq!(rfm["capabilities"], json!(["customers", "kv"]));
    assert_eq!(
        (rfm["enabled"].clone(), rfm["source"].clone()),
        (json!(true), json!("manifest"))
    );
    assert_eq!(
        (rfm["config"].clone(), rfm["config_source"].clone()),
        (json!({ "window_days": 365 }), json!("manifest"))
    );
    assert_eq!(rfm["status"], "active");
    assert_eq!(rfm["consecutive_failures"], 0);
    assert_eq!(rfm["suspended_at"], Value::Null);
    assert_eq!(
        (list[1]["enabled"].clone(), list[1]["status"].clone()),
        (json!(false), json!("disabled"))
    );
    assert_eq!(
        (list[2]["enabled"].clone(), list[2]["config"].clone()),
        (json!(true), json!({}))
    );

    // Admin overrides win over the manifest.
    let (s, b) = app.post("/v1/plugins/churn/enable", &acme.admin, json!(null)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone(), b["status"].clone()),
        (json!(true), json!("admin"), json!("active"))
    );
    let (s, b) = app.post("/v1/plugins/rfm/disable", &acme.admin, json!(null)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone(), b["status"].clone()),
        (json!(false), json!("admin"), json!("disabled"))
    );
    let (s, b) = app
        .put(
            "/v1/plugins/rfm/config",
            &acme.admin,
            json!({ "window_days": 30, "tiers": ["a", "b"] }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["config"], json!({ "window_days": 30, "tiers": ["a", "b"] }));
    assert_eq!(b["config_source"], "admin");
    // Config replaces wholesale; the enabled override is untouched.
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone()),
        (json!(false), json!("admin"))
    );

    let (s, d) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["config"], json!({ "window_days": 30, "tiers": ["a", "b"] }));
    assert_eq!(d["limits"]["max_consecutive_failures"], 3);
    assert_eq!(d["limits"]["kv_max_bytes"], 64);
    assert_eq!(d["limits"]["timeout_ms"], 200);
    assert_eq!(d["recent_failures"], json!([]));

    // Clearing an override falls back to the manifest.
    let (s, b) = app.delete("/v1/plugins/rfm/config", &acme.admin).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["config"].clone(), b["config_source"].clone()),
        (json!({ "window_days": 365 }), json!("manifest"))
    );
    let (s, b) = app.delete("/v1/plugins/rfm/enabled", &acme.admin).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone(), b["status"].clone()),
        (json!(true), json!("manifest"), json!("active"))
    );

    // Globex sees only its own plugins and none of acme's overrides.
    let (s, list) = app.get("/v1/plugins", &globex.read).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&list), ["rfm"]);
    assert_eq!(list[0]["config"], json!({ "window_days": 90 }));
    assert_eq!(list[0]["source"], "manifest");
    let (_, b) = app.get("/v1/plugins/churn", &acme.read).await;
    assert_eq!(b["source"], "admin");
    // Globex's keys on the acme-only plugin: 404 on every route.
    for (method, path) in [
        (Method::GET, "/v1/plugins/xsell"),
        (Method::POST, "/v1/plugins/xsell/enable"),
        (Method::POST, "/v1/plugins/xsell/disable"),
        (Method::DELETE, "/v1/plugins/xsell/enabled"),
        (Method::PUT, "/v1/plugins/xsell/config"),
        (Method::DELETE, "/v1/plugins/xsell/config"),
        (Method::POST, "/v1/plugins/xsell/resume"),
        (Method::GET, "/v1/plugins/nope"),
    ] {
        let body = (method == Method::PUT).then(|| json!({ "a": 1 }));
        let (s, b) = app.call(method.clone(), path, &globex.admin, body).await;
        assert_error(s, &b, 404, "not_found");
    }
    // ...and globex's change to a shared plugin does not touch acme's state.
    let (s, _) = app.post("/v1/plugins/rfm/disable", &globex.admin, json!(null)).await;
    assert_eq!(s, 200);
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone()),
        (json!(true), json!("manifest"))
    );

    // Roles: reads for any tenant key, changes for tenant admins only.
    for token in [&acme.read, &acme.write] {
        for (method, path) in [
            (Method::POST, "/v1/plugins/rfm/enable"),
            (Method::POST, "/v1/plugins/rfm/disable"),
            (Method::DELETE, "/v1/plugins/rfm/enabled"),
            (Method::PUT, "/v1/plugins/rfm/config"),
            (Method::DELETE, "/v1/plugins/rfm/config"),
            (Method::POST, "/v1/plugins/rfm/resume"),
        ] {
            let body = (method == Method::PUT).then(|| json!({ "a": 1 }));
            let (s, b) = app.call(method.clone(), path, token, body).await;
            assert_error(s, &b, 403, "forbidden");
        }
    }
    assert_eq!(app.get("/v1/plugins", &acme.write).await.0, 200);
    let (s, b) = app.get("/v1/plugins", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/plugins", "rpk_nope").await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.get("/v1/admin/manifest", &acme.admin).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.post("/v1/admin/manifest/reload", &acme.admin, json!(null)).await;
    assert_error(s, &b, 403, "forbidden");
}

async fn failures_suspend_until_resumed(backend: Backend) {
    let plugins = Plugins::new();
    let app = TestApp::start_with(backend, plugins.config()).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let store = &app.server.state.store;
    let t = TenantId::for_tests("acme");
    let threshold = app
        .server
        .state
        .manifest
        .current()
        .plugin("rfm")
        .unwrap()
        .limits
        .max_consecutive_failures;
    assert_eq!(threshold, 3);

    // Two failures, then a success resets the counter.
    assert!(
        !store
            .record_plugin_failure(&t, "rfm", "trap", "unreachable", threshold)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_plugin_failure(&t, "rfm", "timeout", "took 250 ms", threshold)
            .await
            .unwrap()
    );
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(
        (b["consecutive_failures"].clone(), b["status"].clone()),
        (json!(2), json!("active"))
    );
    assert_eq!(b["last_error"], "took 250 ms");
    store.record_plugin_success(&t, "rfm").await.unwrap();
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(
        (b["consecutive_failures"].clone(), b["status"].clone()),
        (json!(0), json!("active"))
    );

    // Three in a row suspend it; suspension overrides enabled.
    assert!(
        !store
            .record_plugin_failure(&t, "rfm", "trap", "boom 1", threshold)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_plugin_failure(&t, "rfm", "trap", "boom 2", threshold)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_plugin_failure(&t, "rfm", "fuel", "boom 3", threshold)
            .await
            .unwrap()
    );
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(
        (b["enabled"].clone(), b["status"].clone()),
        (json!(true), json!("suspended"))
    );
    assert_eq!(b["consecutive_failures"], 3);
    assert_eq!(b["last_error"], "boom 3");
    assert!(b["suspended_at"].is_string(), "{b}");
    assert!(b["last_failure_at"].is_string(), "{b}");
    let causes: Vec<&str> = b["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["fuel", "trap", "trap", "timeout", "trap"]);
    assert_eq!(b["recent_failures"][0]["message"], "boom 3");
    // Further failures keep it suspended; enabling does not lift it.
    assert!(
        store
            .record_plugin_failure(&t, "rfm", "trap", "boom 4", threshold)
            .await
            .unwrap()
    );
    let (_, b) = app.post("/v1/plugins/rfm/enable", &acme.admin, json!(null)).await;
    assert_eq!(
        (b["status"].clone(), b["consecutive_failures"].clone()),
        (json!("suspended"), json!(4))
    );
    // A disabled plugin reports disabled even while suspended.
    let (_, b) = app.post("/v1/plugins/rfm/disable", &acme.admin, json!(null)).await;
    assert_eq!(b["status"], "disabled");
    app.post("/v1/plugins/rfm/enable", &acme.admin, json!(null)).await;

    // Globex's copy of the same plugin is unaffected.
    let (_, b) = app.get("/v1/plugins/rfm", &globex.read).await;
    assert_eq!(
        (
            b["status"].clone(),
            b["consecutive_failures"].clone(),
            b["last_error"].clone()
        ),
        (json!("active"), json!(0), Value::Null)
    );
    assert_eq!(b["recent_failures"], json!([]));

    // Resume clears the suspension and the counter, keeps the last error.
    let (s, b) = app.post("/v1/plugins/rfm/resume", &acme.admin, json!(null)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["status"].clone(), b["consecutive_failures"].clone()),
        (json!("active"), json!(0))
    );
    assert_eq!(b["suspended_at"], Value::Null);
    assert_eq!(b["last_error"], "boom 4");
    // Counting starts again from zero.
    assert!(
        !store
            .record_plugin_failure(&t, "rfm", "trap", "again", threshold)
            .await
            .unwrap()
    );

    // Concurrent failures are all counted (atomic increment).
    let t2 = TenantId::for_tests("globex");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let t2 = t2.clone();
        tasks.push(tokio::spawn(async move {
            store
                .record_plugin_failure(&t2, "rfm", "trap", &format!("f{i}"), 100)
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let state = store.plugin_state(&t2, "rfm").await.unwrap().unwrap();
    assert_eq!((state.consecutive_failures, state.suspended_at), (8, None));
}

async fn kv_is_scoped_and_capped(backend: Backend) {
    let plugins = Plugins::new();
    let app = TestApp::start_with(backend, plugins.config()).await;
    app.tenant_with_id("acme").await;
    app.tenant_with_id("globex").await;
    let store = &app.server.state.store;
    let (a, g) = (TenantId::for_tests("acme"), TenantId::for_tests("globex"));
    let cap = app
        .server
        .state
        .manifest
        .current()
        .plugin("rfm")
        .unwrap()
        .limits
        .kv_max_bytes;
    assert_eq!(cap, 64);

    let bytes = vec![0u8, 255, 1, 254, 0];
    store.kv_set(&a, "rfm", "seg:1", &bytes, cap).await.unwrap();
    store.kv_set(&a, "rfm", "seg:2", b"two", cap).await.unwrap();
    store.kv_set(&a, "rfm", "other", b"x", cap).await.unwrap();
    assert_eq!(store.kv_get(&a, "rfm", "seg:1").await.unwrap(), Some(bytes.clone()));
    // Another tenant, or another plugin of the same tenant, sees nothing.
    assert_eq!(store.kv_get(&g, "rfm", "seg:1").await.unwrap(), None);
    assert_eq!(store.kv_get(&a, "churn", "seg:1").await.unwrap(), None);
    assert!(store.kv_list(&g, "rfm", "", None, 100).await.unwrap().is_empty());
    assert!(!store.kv_delete(&g, "rfm", "seg:1").await.unwrap());

    assert_eq!(
        store.kv_list(&a, "rfm", "seg:", None, 100).await.unwrap(),
        ["seg:1", "seg:2"]
    );
    assert_eq!(
        store.kv_list(&a, "rfm", "seg:", Some("seg:1"), 100).await.unwrap(),
        ["seg:2"]
    );
    assert_eq!(store.kv_list(&a, "rfm", "", None, 2).await.unwrap(), ["other", "seg:1"]);
    // '%' and '_' are not wildcards; case matters.
    assert!(store.kv_list(&a, "rfm", "seg%", None, 100).await.unwrap().is_empty());
    assert!(store.kv_list(&a, "rfm", "SEG:", None, 100).await.unwrap().is_empty());

    // Usage = key chars + value bytes: 5+5 + 5+3 + 5+1 = 24.
    assert_eq!(store.kv_usage(&a, "rfm").await.unwrap(), 24);
    // 24 + 4 + 36 = 64 fits exactly; one more byte does not.
    store.kv_set(&a, "rfm", "big!", &[7u8; 36], cap).await.unwrap();
    let err = store.kv_set(&a, "rfm", "more", b"", cap).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "kv_quota_exceeded",
                ..
            }
        ),
        "{err:?}"
    );
    // Overwriting a key counts its new size only.
    store.kv_set(&a, "rfm", "big!", &[8u8; 36], cap).await.unwrap();
    let err = store.kv_set(&a, "rfm", "big!", &[8u8; 37], cap).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "kv_quota_exceeded",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.kv_get(&a, "rfm", "big!").await.unwrap(), Some(vec![8u8; 36]));
    // The other tenant has its own quota.
    store.kv_set(&g, "rfm", "big!", &[1u8; 60], cap).await.unwrap();

    // Concurrent writers cannot squeeze past the quota together: ten
    // 10-byte entries against a 64-byte cap, exactly six fit.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (store, g) = (store.clone(), g.clone());
        tasks.push(tokio::spawn(async move {
            store.kv_set(&g, "churn", &format!("k{i}"), &[i as u8; 8], 64).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict {
                code: "kv_quota_exceeded",
                ..
            }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 6);
    assert_eq!(store.kv_usage(&g, "churn").await.unwrap(), 60);

    assert!(store.kv_delete(&a, "rfm", "big!").await.unwrap());
    assert_eq!(store.kv_usage(&a, "rfm").await.unwrap(), 24);
    let err = store.kv_set(&a, "rfm", "", b"x", cap).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
}

async fn reload_keeps_old_manifest_on_error(backend: Backend) {
    let plugins = Plugins::new();
    let app = TestApp::start_with(backend, plugins.config()).await;
    let acme = app.tenant_with_id("acme").await;

    let (s, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["path"], plugins.path().display().to_string());
    assert_eq!(ids(&m["plugins"]), ["rfm", "churn", "xsell"]);
    assert_eq!(m["plugins"][0]["sha256"], plugins.sha("rfm"));
    assert_eq!(
        m["tenants"][0],
        json!({ "id": "acme", "plugins": [
        { "id": "rfm", "enabled": true }, { "id": "churn", "enabled": false }, { "id": "xsell", "enabled": true }] })
    );
    assert_eq!(m["last_reload_error"], Value::Null);

    // An admin override on xsell, then xsell is removed from the manifest.
    app.post("/v1/plugins/xsell/disable", &acme.admin, json!(null)).await;
    plugins.write(&plugins.manifest(false));
    let (s, m) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(ids(&m["plugins"]), ["rfm", "churn"]);
    let (_, list) = app.get("/v1/plugins", &acme.read).await;
    assert_eq!(ids(&list), ["rfm", "churn"]);
    let (s, b) = app.get("/v1/plugins/xsell", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.post("/v1/plugins/xsell/enable", &acme.admin, json!(null)).await;
    assert_error(s, &b, 404, "not_found");

    // A broken manifest: 409 with file:line:column: field, the old one stays.
    let broken = plugins.manifest(true).replacen(
        "capabilities = [\"customers\", \"kv\"]",
        "capabilities = [\"customers\", \"network\"]",
        1,
    );
    plugins.write(&broken);
    let (s, b) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_error(s, &b, 409, "manifest_invalid");
    let file = plugins.path().display().to_string();
    let issue = b["error"]["details"]["issues"][0].as_str().unwrap();
    assert!(
        issue.starts_with(&format!(
            "{file}:8:30: plugin[0].capabilities[1]: unknown capability \"network\""
        )),
        "{issue}"
    );
    assert_eq!(b["error"]["details"]["issues"].as_array().unwrap().len(), 1);
    let (_, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(ids(&m["plugins"]), ["rfm", "churn"]);
    let failure = &m["last_reload_error"];
    assert_eq!(failure["issues"][0]["line"], 8);
    assert_eq!(failure["issues"][0]["column"], 30);
    assert_eq!(failure["issues"][0]["field"], "plugin[0].capabilities[1]");
    assert!(failure["at"].is_string());
    let (_, list) = app.get("/v1/plugins", &acme.read).await;
    assert_eq!(ids(&list), ["rfm", "churn"]);

    // Fixed: xsell is back, and the stored override applies again.
    plugins.write(&plugins.manifest(true));
    let (s, _) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_eq!(s, 200);
    let (_, b) = app.get("/v1/plugins/xsell", &acme.read).await;
    assert_eq!(
        (b["enabled"].clone(), b["source"].clone()),
        (json!(false), json!("admin"))
    );
    let (_, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(m["last_reload_error"], Value::Null);

    // A changed artifact costs that plugin only: the reload succeeds, and
    // churn is unavailable (digest pinned) until a reload finds it fixed.
    std::fs::write(plugins.dir.path().join("churn.wasm"), b"tampered").unwrap();
    let (s, m) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["last_reload_error"], Value::Null);
    app.wait_ready().await;
    app.post("/v1/plugins/churn/enable", &acme.admin, json!(null)).await;
    let (_, b) = app.get("/v1/plugins/churn", &acme.read).await;
    assert_eq!(b["status"], "unavailable", "{b}");
    assert!(b["last_error"].as_str().unwrap().contains("sha256 mismatch"), "{b}");
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(b["status"], "active", "{b}");
    plugins.restore("churn");
    let (s, _) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_eq!(s, 200);
    app.wait_ready().await;
    let (_, b) = app.get("/v1/plugins/churn", &acme.read).await;
    assert_eq!(b["status"], "active", "{b}");
    let (_, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(m["plugins"][1]["status"], "ready", "{m}");
}

/// A customer of `t` whose `probe_customer_id` attribute names itself, so
/// that `tenant-probe` (rfm) scores it 1.0.
async fn probed_customer(app: &TestApp, t: &support::TestTenant) -> String {
    let (s, c) = app
        .post("/v1/customers", &t.write, json!({ "external_id": "probed" }))
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let (s, c) = app
        .patch(
            &format!("/v1/customers/{id}"),
            &t.write,
            json!({ "attributes": { "probe_customer_id": id } }),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    id
}

fn metric_line<'m>(metrics: &'m str, name: &str, plugin: &str) -> Option<&'m str> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("plugin=\"{plugin}\"")))
}

/// One changed and one missing artifact at start-up: the server starts and
/// serves; those two plugins are unavailable with the reason (tenants'
/// list, the admin manifest, a metric) and never count towards suspension;
/// another plugin scores; a reload that finds the files fixed makes them
/// available again.
async fn broken_artifacts_at_start_up_leave_the_rest_serving(backend: Backend) {
    let plugins = Plugins::new();
    std::fs::write(plugins.dir.path().join("rfm.wasm"), b"tampered").unwrap();
    std::fs::remove_file(plugins.dir.path().join("xsell.wasm")).unwrap();
    let app = TestApp::start_with(backend, plugins.config()).await;
    let acme = app.tenant_with_id("acme").await;
    app.wait_ready().await;

    let (s, list) = app.get("/v1/plugins", &acme.read).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(ids(&list), ["rfm", "churn", "xsell"]);
    assert_eq!(list[0]["status"], "unavailable", "{list}");
    let reason = list[0]["last_error"].as_str().unwrap();
    assert!(
        reason.contains("sha256 mismatch") && reason.contains(&plugins.sha("rfm")),
        "{reason}"
    );
    assert_eq!(list[2]["status"], "unavailable", "{list}");
    assert!(
        list[2]["last_error"].as_str().unwrap().contains("cannot be read"),
        "{list}"
    );
    // No server path in what tenants read.
    let dir = plugins.dir.path().display().to_string();
    assert!(!list.to_string().contains(&dir), "{list}");

    let (s, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(s, 200, "{m}");
    let status: Vec<&str> = m["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["unavailable", "ready", "unavailable"], "{m}");
    assert!(
        m["plugins"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch"),
        "{m}"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for plugin in ["rfm", "xsell"] {
        assert!(
            metric_line(&metrics, "rapport_plugin_unavailable", plugin).is_some(),
            "{plugin}: {metrics}"
        );
    }
    assert!(metrics.contains("# HELP rapport_plugin_unavailable "), "{metrics}");

    // The other plugin scores; the broken one is refused, not counted.
    app.post("/v1/plugins/churn/enable", &acme.admin, json!(null)).await;
    let alice = probed_customer(&app, &acme).await;
    let (s, body) = app
        .post(&format!("/v1/customers/{alice}/score"), &acme.write, json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "only churn runs: {body}");
    assert_eq!(results[0]["plugin"], "churn", "{body}");
    assert_eq!(results[0]["status"], "ok", "{body}");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{alice}/score?plugin=rfm"),
            &acme.write,
            json!({}),
        )
        .await;
    assert_error(s, &b, 409, "plugin_not_active");
    let (_, p) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(p["consecutive_failures"], 0, "{p}");
    assert_eq!(p["recent_failures"], json!([]), "{p}");

    // Fixed on disk, then reloaded: available again.
    plugins.restore("rfm");
    plugins.restore("xsell");
    let (s, m) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_eq!(s, 200, "{m}");
    app.wait_ready().await;
    let (_, list) = app.get("/v1/plugins", &acme.read).await;
    let status: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["active", "active", "active"], "{list}");
    let (s, body) = app
        .post(
            &format!("/v1/customers/{alice}/score?plugin=rfm"),
            &acme.write,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["score"]["value"], 1.0, "{body}");
}

/// `/readyz` is 503 (naming what is pending) while a plugin compiles, and a
/// call arriving meanwhile waits for that compilation instead of failing;
/// then 200. The compilation is held deterministically: the plugin's
/// compiled-code cache file is a FIFO that the loader's read blocks on until
/// the test writes to it.
async fn readyz_waits_for_plugins_to_load(backend: Backend) {
    let plugins = Plugins::new();
    let mut config = plugins.config();
    let cache = plugins.dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    config.plugins.cache_dir = Some(cache);
    let runtime = rapport::runtime::Runtime::new(rapport::server::runtime_config(&config)).unwrap();
    let fifo = runtime.cache_path(&plugins.sha("rfm")).unwrap();
    drop(runtime);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let alice = probed_customer(&app, &acme).await;
    let (ready_status, ready_body) = app.get("/readyz", "").await;
    let app = std::sync::Arc::new(app);
    let call = {
        let (app, token, alice) = (app.clone(), acme.write.clone(), alice.clone());
        tokio::spawn(async move {
            app.post(&format!("/v1/customers/{alice}/score?plugin=rfm"), &token, json!({}))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let call_finished_early = call.is_finished();
    // Let the loader go (the unusable "cache" makes it compile the
    // component), before asserting anything, so a failure cannot leave a
    // blocked thread behind.
    {
        use std::io::Write;
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        writer.write_all(b"not a compiled component").unwrap();
    }

    assert_error(ready_status, &ready_body, 503, "unavailable");
    let pending: Vec<&str> = ready_body["error"]["details"]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(pending.contains(&"rfm"), "{ready_body}");
    assert!(
        !call_finished_early,
        "the call did not wait for its plugin's compilation"
    );
    let (s, body) = call.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "ok", "{body}");
    assert_eq!(body["results"][0]["score"]["value"], 1.0, "{body}");
    app.wait_ready().await;
    let (s, b) = app.get("/readyz", "").await;
    assert_eq!((s.as_u16(), b), (200, json!({ "status": "ready" })));
}

async fn without_manifest_and_broken_at_start(backend: Backend) {
    // No manifest configured: no plugins, and reload says so.
    let app = TestApp::start(backend).await;
    let t = app.tenant("Solo").await;
    let (s, b) = app.get("/v1/plugins", &t.read).await;
    assert_eq!((s.as_u16(), b), (200, json!([])));
    let (s, b) = app.post("/v1/admin/manifest/reload", &app.platform, json!(null)).await;
    assert_error(s, &b, 409, "no_manifest");
    let (s, m) = app.get("/v1/admin/manifest", &app.platform).await;
    assert_eq!(s, 200);
    assert_eq!((m["path"].clone(), m["plugins"].clone()), (Value::Null, json!([])));

    // A broken manifest at start-up stops the server from starting.
    let plugins = Plugins::new();
    plugins.write("[[plugin]]\nid = \"x\"\n");
    let db = support::TestDb::new(backend).await;
    let mut config = plugins.config();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = db.url.clone();
    let err = rapport::server::start(&config).await.err().expect("must not start");
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!(
            "{}:1:1: plugin[0]: missing field `kind`",
            plugins.path().display()
        )),
        "{text}"
    );
}

async fn malformed_plugin_input(backend: Backend) {
    let plugins = Plugins::new();
    let app = TestApp::start_with(backend, plugins.config()).await;
    let acme = app.tenant_with_id("acme").await;

    let (s, b) = app.put("/v1/plugins/rfm/config", &acme.admin, json!([1, 2])).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.put("/v1/plugins/rfm/config", &acme.admin, json!("text")).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .raw(
            Method::PUT,
            "/v1/plugins/rfm/config",
            &acme.admin,
            "application/json",
            b"{\"a\":".to_vec(),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = app
        .raw(
            Method::PUT,
            "/v1/plugins/rfm/config",
            &acme.admin,
            "text/plain",
            b"{}".to_vec(),
        )
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let big = json!({ "blob": "x".repeat(64 * 1024) });
    let (s, b) = app.put("/v1/plugins/rfm/config", &acme.admin, big).await;
    assert_error(s, &b, 413, "payload_too_large");
    assert_eq!(b["error"]["details"]["limit_bytes"], 65536);
    // Just under the limit is accepted.
    let fits = json!({ "blob": "x".repeat(64 * 1024 - 20) });
    let (s, b) = app.put("/v1/plugins/rfm/config", &acme.admin, fits).await;
    assert_eq!(s, 200, "{b}");
    // Nothing above changed the stored config except the accepted one.
    let (_, b) = app.get("/v1/plugins/rfm", &acme.read).await;
    assert_eq!(b["config"]["blob"].as_str().unwrap().len(), 64 * 1024 - 20);

    // The routes are in the generated OpenAPI document.
    let (_, doc) = app.get("/v1/openapi.json", "").await;
    for path in [
        "/v1/plugins",
        "/v1/plugins/{id}",
        "/v1/plugins/{id}/config",
        "/v1/plugins/{id}/resume",
        "/v1/admin/manifest/reload",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from OpenAPI");
    }
    assert!(doc["components"]["schemas"]["EffectivePlugin"].is_object());

    let (s, b) = app.get("/v1/plugins/..%2Fetc", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.call(Method::GET, "/v1/plugins/rfm/enable", &acme.admin, None).await;
    assert_error(s, &b, 405, "method_not_allowed");
}

both_backends!(
    broken_artifacts_at_start_up_leave_the_rest_serving,
    readyz_waits_for_plugins_to_load,
    effective_state_and_overrides,
    failures_suspend_until_resumed,
    kv_is_scoped_and_capped,
    reload_keeps_old_manifest_on_error,
    without_manifest_and_broken_at_start,
    malformed_plugin_input,
);
