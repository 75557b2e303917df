//! Shared test harness: starts the real `rapport` app on port 0 against a
//! fresh database of either backend, and talks to it over HTTP.
//!
//! PostgreSQL tests read the server URL from `RAPPORT_TEST_POSTGRES_URL`
//! (`.ci/run` sets it) and create a database of their own per test, so runs
//! never collide; when it is unset they print that they were skipped.

pub mod runtime;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use rapport::config::Config;
use rapport::server::RunningServer;
use rapport::store::TenantId;
use rapport::store::tenants::Role;

pub const POSTGRES_ENV: &str = "RAPPORT_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Expands `async fn NAME(backend: Backend)` into one `#[tokio::test]` per
/// backend, `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if $crate::support::postgres_url().is_none() {
                    eprintln!("SKIPPED {}::postgres: {} is not set", stringify!($name), $crate::support::POSTGRES_ENV);
                    return;
                }
                super::$name($crate::support::Backend::Postgres).await;
            }
        }
    )*};
}

pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty())
}

/// A fresh, empty database for one test; dropped (PostgreSQL) or deleted
/// (SQLite, with its temp dir) at the end of the test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("rapport.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_url().expect("postgres url");
                let name = format!("rapport_t_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("connect to postgres");
                sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create database");
                let url = match admin.rfind('/') {
                    Some(slash) if admin[..slash].contains("://") && slash > admin.find("://").unwrap() + 2 => {
                        let query = admin[slash..].find('?').map(|q| &admin[slash + q..]).unwrap_or("");
                        format!("{}/{}{}", &admin[..slash], name, query)
                    }
                    _ => format!("{}/{}", admin.trim_end_matches('/'), name),
                };
                TestDb {
                    url,
                    _dir: None,
                    pg_name: Some((admin, name)),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_name.take() {
            // Drop runs outside async context: use a short-lived runtime on a
            // plain thread. Best effort: a leftover database is harmless.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.ok()?;
                    sqlx::Executor::execute(
                        &mut conn,
                        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                    )
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

/// A tenant with one key of each tenant role.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub admin: String,
    pub write: String,
    pub read: String,
}

pub struct TestApp {
    pub server: RunningServer,
    pub client: reqwest::Client,
    pub platform: String,
    pub db: TestDb,
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        let db = TestDb::new(backend).await;
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.database.url = db.url.clone();
        let server = rapport::server::start(&config).await.expect("start server");
        let platform = server
            .state
            .store
            .create_key(None, Role::PlatformAdmin, "tests")
            .await
            .expect("platform key")
            .token;
        TestApp {
            server,
            client: reqwest::Client::new(),
            platform,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    /// Creates a tenant through the API, plus admin, write and read keys.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tenants",
                &self.platform,
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        let store = &self.server.state.store;
        let tenant = TenantId::for_tests(id.clone());
        let key = |role| {
            let tenant = tenant.clone();
            async move { store.create_key(Some(&tenant), role, "test").await.unwrap().token }
        };
        TestTenant {
            admin: key(Role::TenantAdmin).await,
            write: key(Role::TenantWrite).await,
            read: key(Role::TenantRead).await,
            id,
        }
    }

    /// Sends a JSON request and returns the status and parsed body
    /// (`Value::Null` for an empty body).
    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, token, Some(body)).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Sends raw bytes (for malformed-input tests).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Asserts the documented error shape and code.
pub fn assert_error(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "unexpected status; body: {body}");
    assert_eq!(body["error"]["code"], code, "unexpected error code; body: {body}");
    assert!(body["error"]["message"].is_string(), "error without message: {body}");
    assert!(body["error"]["details"].is_object(), "error without details: {body}");
}

impl TestApp {
    /// Like [`TestApp::start`], with a config of the test's own (e.g. a
    /// `[plugins] manifest`); the listen address and database are filled in.
    pub async fn start_with(backend: Backend, mut config: Config) -> TestApp {
        let db = TestDb::new(backend).await;
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.database.url = db.url.clone();
        let server = rapport::server::start(&config).await.expect("start server");
        let platform = server
            .state
            .store
            .create_key(None, Role::PlatformAdmin, "tests")
            .await
            .expect("platform key")
            .token;
        TestApp {
            server,
            client: reqwest::Client::new(),
            platform,
            db,
        }
    }

    /// Creates a tenant with a chosen id (so a manifest can name it), plus
    /// admin, write and read keys.
    pub async fn tenant_with_id(&self, id: &str) -> TestTenant {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/tenants",
                &self.platform,
                Some(json!({ "name": id, "id": id })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let store = &self.server.state.store;
        let t = TenantId::for_tests(id.to_string());
        TestTenant {
            admin: store
                .create_key(Some(&t), Role::TenantAdmin, "test")
                .await
                .unwrap()
                .token,
            write: store
                .create_key(Some(&t), Role::TenantWrite, "test")
                .await
                .unwrap()
                .token,
            read: store
                .create_key(Some(&t), Role::TenantRead, "test")
                .await
                .unwrap()
                .token,
            id: id.to_string(),
        }
    }
}

/// `<target>/wasm32-wasip2/release/<crate>.wasm`, built by
/// `scripts/build-plugins` (`$CARGO_TARGET_DIR` or the workspace's `target/`).
pub fn plugin_wasm(crate_name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "test plugin {} is missing: run `scripts/build-plugins` (with the same CARGO_TARGET_DIR) first",
        path.display()
    );
    path
}

/// One `[[plugin]]` manifest entry for a component built from `plugins/`,
/// with its real sha256. `limits` is the body of `[plugin.limits]`.
pub fn plugin_manifest_entry(id: &str, crate_name: &str, kind: &str, capabilities: &[&str], limits: &str) -> String {
    use sha2::Digest;
    let path = plugin_wasm(crate_name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins first",
        path.display()
    );
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
    let caps: Vec<String> = capabilities.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[[plugin]]\nid = {id:?}\nkind = {kind:?}\nversion = \"0.1.0\"\ncontract = \"rapport:crm@0.1.0\"\n\
         artifact = {path:?}\nsha256 = {digest:?}\ncapabilities = [{}]\n[plugin.limits]\n{limits}\n\n",
        caps.join(", "),
        path = path.display().to_string(),
    )
}

impl TestApp {
    /// Waits until `/readyz` answers 200: every plugin of the manifest is
    /// compiled or marked unavailable (they load in the background).
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/readyz", "").await;
            if status == StatusCode::OK {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never ready: {status} {body}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
