//! The outbound outbox end to end: `POST /v1/messages` stores a message,
//! delivery workers send it through the real `test-connector` component
//! (built from `plugins/testing/`) to an HTTP receiver on loopback, and the
//! delivery log, retries, dead letters, replay, templates and idempotency
//! are checked through the API, on SQLite and PostgreSQL.
//!
//! The receiver answers per path from a script (e.g. 503, 503, then 200),
//! so every outcome is what a real HTTP endpoint caused.

use crate::support;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use rapport::store::messages::{AttemptOutcome, AttemptReport, MessageStatus, Next};
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    idempotency_key: Option<String>,
    body: Value,
}

/// An HTTP endpoint on 127.0.0.1:port that records every request and
/// answers the next scripted status for its path (200 when the script is
/// empty), with an `x-provider-id` header on success.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<HashMap<String, VecDeque<u16>>>>,
    /// Paths that answer this status forever (until removed).
    fixed: Arc<Mutex<HashMap<String, u16>>>,
    /// Paths that take this long to answer.
    slow: Arc<Mutex<HashMap<String, Duration>>>,
}

impl Receiver {
    async fn start() -> (Receiver, u16) {
        let receiver = Receiver::default();
        let state = receiver.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let delay = state.slow.lock().unwrap().get(uri.path()).copied();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                state.answer(uri, headers, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (receiver, port)
    }

    fn answer(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> axum::response::Response {
        let path = uri.path().to_string();
        let mut received = self.received.lock().unwrap();
        received.push(Received {
            path: path.clone(),
            idempotency_key: headers.get("idempotency-key").map(|v| v.to_str().unwrap().to_string()),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let n = received.len();
        drop(received);
        let status = self
            .fixed
            .lock()
            .unwrap()
            .get(&path)
            .copied()
            .or_else(|| self.script.lock().unwrap().get_mut(&path).and_then(VecDeque::pop_front))
            .unwrap_or(200);
        let status = StatusCode::from_u16(status).unwrap();
        if status.is_success() {
            (status, [("x-provider-id", format!("prov-{n}"))], "ok").into_response()
        } else {
            (status, "no").into_response()
        }
    }

    fn script(&self, path: &str, statuses: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .insert(path.to_string(), statuses.iter().copied().collect());
    }

    fn fix(&self, path: &str, status: Option<u16>) {
        let mut fixed = self.fixed.lock().unwrap();
        match status {
            Some(s) => fixed.insert(path.to_string(), s),
            None => fixed.remove(path),
        };
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// acme and globex may both use the test connector for `webhook`; acme has
/// it enabled. Small backoff so retries happen within the test.
fn manifest(dir: &Path, port: u16) -> PathBuf {
    let entry = support::plugin_manifest_entry(
        "hook",
        "test-connector",
        "channel-connector",
        &["outbound-http"],
        "timeout_ms = 5000",
    );
    let entry = entry.replace(
        "[plugin.limits]",
        &format!("allowed_hosts = [\"127.0.0.1:{port}\"]\nchannels = [\"webhook\"]\n[plugin.limits]"),
    );
    // Not a channel component at all: it never loads, so it is unavailable
    // (which, unlike a trap or a timeout, never counts towards suspension).
    let broken = support::plugin_manifest_entry(
        "broken",
        "hostile-panic",
        "channel-connector",
        &[],
        "max_consecutive_failures = 2",
    )
    .replace("[plugin.limits]", "channels = [\"push\"]\n[plugin.limits]");
    let text = format!(
        "{entry}[plugin.delivery]\nmax_attempts = 3\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n\
         rate_per_second = 1000\n\n\
         {broken}[plugin.delivery]\nmax_attempts = 5\nbackoff_initial_ms = 10\nbackoff_max_ms = 20\n\n\
         [[tenant]]\nid = \"acme\"\nmessage_rate_per_second = 1000\n[[tenant.plugin]]\nid = \"hook\"\n\
         [[tenant.plugin]]\nid = \"broken\"\n\n\
         [[tenant]]\nid = \"globex\"\n[[tenant.plugin]]\nid = \"hook\"\nenabled = false\n\n\
         [[tenant]]\nid = \"slowco\"\nmessage_rate_per_second = 1\n[[tenant.plugin]]\nid = \"hook\"\n"
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(dir: &Path, port: u16) -> rapport::config::Config {
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir, port));
    config.plugins.cache_dir = Some(dir.join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    config.delivery.poll_ms = 20;
    config
}

struct Setup {
    app: TestApp,
    acme: TestTenant,
    globex: TestTenant,
    receiver: Receiver,
    port: u16,
    _dir: tempfile::TempDir,
}

async fn start(backend: Backend, delivery: bool) -> Setup {
    let (receiver, port) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), port);
    config.delivery.enabled = delivery;
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    Setup {
        app,
        acme,
        globex,
        receiver,
        port,
        _dir: dir,
    }
}

async fn customer(app: &TestApp, t: &TestTenant, body: Value) -> String {
    let (s, c) = app.post("/v1/customers", &t.write, body).await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}

/// Polls a message until `done` holds for it (or fails after 30 s).
async fn wait_for(app: &TestApp, t: &TestTenant, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, m) = app.get(&format!("/v1/messages/{id}"), &t.read).await;
        assert_eq!(s, 200, "{m}");
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "message never reached the expected state: {m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["status"] == want
}

fn outcomes(m: &Value) -> Vec<String> {
    m["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

fn errors(m: &Value) -> Vec<Value> {
    m["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].clone())
        .collect()
}

/// Messages through stored, delivered, retried, dead, replayed and listed, as
/// named steps on one app: each relies on what the previous ones sent (the
/// list checks their order), so they run in this order.
async fn delivery_lifecycle(backend: Backend) {
    let Setup {
        app,
        acme,
        receiver,
        port,
        ..
    } = start(backend, true).await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1", "name": "Ada" })).await;
    let c = Delivery {
        app: &app,
        acme: &acme,
        receiver: &receiver,
        port,
        cid,
    };
    let (request, id) = delivered_with_the_exact_body(&c).await;
    let by_header = idempotency_by_body_or_header_key(&c, &request, &id).await;
    let flaky = retry_then_success(&c).await;
    let down = dead_letter_then_replay(&c, &id).await;
    let bad = not_retryable_is_dead_at_once(&c).await;
    list_newest_first_filtered_and_paged(&c, &by_header, &flaky, &down, &bad).await;
    metrics_are_exported(&c).await;

    app.server.stop().await.unwrap();
}

/// What the steps of [`delivery_lifecycle`] share: the app, the tenant, the
/// receiving end and the customer messaged.
struct Delivery<'a> {
    app: &'a TestApp,
    acme: &'a TestTenant,
    receiver: &'a Receiver,
    port: u16,
    cid: String,
}

/// Happy path: stored (202), then delivered with the exact JSON body.
/// Returns the request and the message id.
async fn delivered_with_the_exact_body(c: &Delivery<'_>) -> (Value, String) {
    let app = c.app;
    let acme = c.acme;
    let receiver = c.receiver;
    let cid = c.cid.as_str();
    let port = c.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let request = json!({
        "customer_id": cid, "channel": "webhook", "to": url("/ok"),
        "subject": "Hello", "body": "hello Ada", "metadata": { "campaign": "spring" },
        "idempotency_key": "k-ok",
    });
    let (s, m) = app.post("/v1/messages", &acme.write, request.clone()).await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    assert_eq!(m["to"], url("/ok"));
    assert_eq!(m["idempotency_key"], "k-ok");
    let m = wait_for(app, acme, &id, status_is("delivered")).await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["connector"], "hook");
    assert_eq!(m["provider_id"], "prov-1");
    assert!(m["delivered_at"].is_string(), "{m}");
    assert_eq!(outcomes(&m), ["delivered"]);
    assert_eq!(m["attempts_log"][0]["connector"], "hook");
    assert_eq!(m["attempts_log"][0]["attempt"], 1);
    let got = receiver.at("/ok");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key.as_deref(), Some(id.as_str()));
    assert_eq!(
        got[0].body,
        json!({
            "attempt": 1, "body": "hello Ada", "channel": "webhook", "customer_id": cid, "id": id,
            "metadata": { "campaign": "spring" }, "subject": "Hello", "to": url("/ok"),
        })
    );
    (request, id)
}

/// Idempotency: the same request replays (200, same message); another
/// request with the key is a conflict; the key may come as a header. A read
/// key may not send. Returns the message sent with the header key.
async fn idempotency_by_body_or_header_key(c: &Delivery<'_>, request: &Value, id: &str) -> Value {
    let app = c.app;
    let acme = c.acme;
    // request with the key is a conflict; the key may come as a header.
    let (s, again) = app.post("/v1/messages", &acme.write, request.clone()).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], id);
    let mut other = request.clone();
    other["body"] = json!("something else");
    let (s, b) = app.post("/v1/messages", &acme.write, other).await;
    assert_error(s, &b, 409, "idempotency_conflict");
    let mut keyless = request.clone();
    keyless.as_object_mut().unwrap().remove("idempotency_key");
    let (s, b) = app.post("/v1/messages", &acme.write, keyless.clone()).await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "idempotency_key");
    let resp = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&acme.write)
        .header("Idempotency-Key", "k-header")
        .json(&keyless)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let by_header: Value = resp.json().await.unwrap();
    assert_eq!(by_header["idempotency_key"], "k-header");
    wait_for(app, acme, by_header["id"].as_str().unwrap(), status_is("delivered")).await;
    let resp = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&acme.write)
        .header("Idempotency-Key", "k-other")
        .json(request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422, "body key and header key differ");
    // A read key may not send.
    let (s, b) = app.post("/v1/messages", &acme.read, request.clone()).await;
    assert_error(s, &b, 403, "forbidden");
    by_header
}

/// Retry then success: 503 twice, then 200. Returns the message id.
async fn retry_then_success(c: &Delivery<'_>) -> String {
    let app = c.app;
    let acme = c.acme;
    let receiver = c.receiver;
    let cid = c.cid.as_str();
    let port = c.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    receiver.script("/flaky", &[503, 503]);
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "to": url("/flaky"), "body": "b", "idempotency_key": "k-flaky" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let flaky = m["id"].as_str().unwrap().to_string();
    let m = wait_for(app, acme, &flaky, status_is("delivered")).await;
    assert_eq!(m["attempts"], 3);
    assert_eq!(outcomes(&m), ["retryable", "retryable", "delivered"]);
    assert_eq!(errors(&m), [json!("HTTP 503"), json!("HTTP 503"), Value::Null]);
    assert_eq!(m["last_error"], Value::Null);
    let attempts: Vec<i64> = receiver
        .at("/flaky")
        .iter()
        .map(|r| r.body["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    flaky
}

/// Dead letter after max_attempts (3), then replay once the endpoint heals;
/// only dead messages can be replayed. Returns the message id.
async fn dead_letter_then_replay(c: &Delivery<'_>, id: &str) -> String {
    let app = c.app;
    let acme = c.acme;
    let receiver = c.receiver;
    let cid = c.cid.as_str();
    let port = c.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    receiver.fix("/down", Some(503));
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "to": url("/down"), "body": "d", "idempotency_key": "k-down" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let down = m["id"].as_str().unwrap().to_string();
    let m = wait_for(app, acme, &down, status_is("dead")).await;
    assert_eq!(m["attempts"], 3);
    assert_eq!(outcomes(&m), ["retryable", "retryable", "retryable"]);
    assert_eq!(m["last_error"], "HTTP 503");
    assert_eq!(receiver.at("/down").len(), 3);
    let (s, page) = app.get("/v1/messages?status=dead", &acme.read).await;
    assert_eq!(s, 200, "{page}");
    let dead: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(dead, [down.as_str()]);
    // Only dead messages can be replayed.
    let (s, b) = app
        .post(&format!("/v1/messages/{id}/replay"), &acme.write, json!({}))
        .await;
    assert_error(s, &b, 409, "message_not_dead");
    receiver.fix("/down", None);
    let (s, m) = app
        .post(&format!("/v1/messages/{down}/replay"), &acme.write, json!({}))
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["status"], "pending");
    let m = wait_for(app, acme, &down, status_is("delivered")).await;
    assert_eq!(m["attempts"], 4);
    assert_eq!(outcomes(&m), ["retryable", "retryable", "retryable", "delivered"]);
    assert_eq!(receiver.at("/down").last().unwrap().body["attempt"], 4);
    down
}

/// Not retryable (400): dead at once. Returns the message id.
async fn not_retryable_is_dead_at_once(c: &Delivery<'_>) -> String {
    let app = c.app;
    let acme = c.acme;
    let receiver = c.receiver;
    let cid = c.cid.as_str();
    let port = c.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    receiver.fix("/bad", Some(400));
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "to": url("/bad"), "body": "x", "idempotency_key": "k-bad" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let bad = m["id"].as_str().unwrap().to_string();
    let m = wait_for(app, acme, &bad, status_is("dead")).await;
    assert_eq!(m["attempts"], 1);
    assert_eq!(outcomes(&m), ["failed"]);
    assert_eq!(m["last_error"], "HTTP 400");
    assert_eq!(receiver.at("/bad").len(), 1);
    bad
}

/// The list: newest first, filters, cursor paging.
async fn list_newest_first_filtered_and_paged(c: &Delivery<'_>, by_header: &Value, flaky: &str, down: &str, bad: &str) {
    let app = c.app;
    let acme = c.acme;
    let cid = c.cid.as_str();
    let (s, page) = app.get("/v1/messages?limit=2", &acme.read).await;
    assert_eq!(s, 200, "{page}");
    let first: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [bad, down]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = app
        .get(&format!("/v1/messages?limit=2&cursor={cursor}"), &acme.read)
        .await;
    let second: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [flaky, by_header["id"].as_str().unwrap()]);
    let (_, page) = app
        .get(
            &format!("/v1/messages?status=delivered&customer_id={cid}&channel=webhook"),
            &acme.read,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let (_, page) = app.get("/v1/messages?channel=sms", &acme.read).await;
    assert_eq!(page["items"], json!([]));
    let (s, b) = app.get("/v1/messages?status=sent", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
}

/// Metrics (process-wide, so only presence is checked).
async fn metrics_are_exported(c: &Delivery<'_>) {
    let app = c.app;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rapport_deliveries_total{outcome=\"delivered\",channel=\"webhook\"}",
        "rapport_deliveries_total{outcome=\"dead\",channel=\"webhook\"}",
        "rapport_delivery_attempt_duration_seconds_bucket{connector=\"hook\"",
        "rapport_outbox_depth ",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

async fn templates_and_addresses(backend: Backend) {
    let Setup {
        app,
        acme,
        receiver,
        port,
        ..
    } = start(backend, true).await;
    let cid = customer(
        &app,
        &acme,
        json!({ "external_id": "C1", "name": "Ada", "email": "ada@example.com", "phone": "+15550100" }),
    )
    .await;
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &acme.write,
            json!({ "kind": "earn", "points": 120, "reason": "welcome" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Template CRUD.
    let template = json!({
        "channel": "webhook",
        "subject": "Hi {{ customer.name }}",
        "body": "{{ customer.name }} has {{ loyalty.balance }} points; code {{ data.code }}",
    });
    let (s, t) = app
        .put("/v1/message-templates/welcome", &acme.admin, template.clone())
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["name"], "welcome");
    let (s, t) = app
        .put("/v1/message-templates/welcome", &acme.admin, template.clone())
        .await;
    assert_eq!(s, 200, "{t}");
    let (s, b) = app
        .put("/v1/message-templates/welcome", &acme.write, template.clone())
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .put(
            "/v1/message-templates/broken",
            &acme.admin,
            json!({ "body": "{% if %}" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "body");
    let (s, b) = app
        .put("/v1/message-templates/Bad Name", &acme.admin, json!({ "body": "x" }))
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, list) = app.get("/v1/message-templates", &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["body"], template["body"]);

    // Rendered at enqueue time with customer, loyalty and data.
    let to = format!("http://127.0.0.1:{port}/t");
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "template": "welcome", "data": { "code": "SPRING" },
                    "to": to, "idempotency_key": "k-t1" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["subject"], "Hi Ada");
    assert_eq!(m["body"], "Ada has 120 points; code SPRING");
    assert_eq!(m["template"], "welcome");
    wait_for(&app, &acme, m["id"].as_str().unwrap(), status_is("delivered")).await;
    let got = receiver.at("/t");
    assert_eq!(got[0].body["body"], "Ada has 120 points; code SPRING");
    assert_eq!(got[0].body["subject"], "Hi Ada");

    // Template errors are 422 before anything is stored.
    for (body, field) in [
        (json!({ "template": "welcome", "data": {} }), "template.body"),
        (json!({ "template": "nope" }), "template"),
        (json!({ "template": "welcome", "body": "x" }), "body"),
        (json!({}), "body"),
    ] {
        let mut request = json!({ "customer_id": cid, "channel": "webhook", "to": to, "idempotency_key": "k-err" });
        request
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (s, b) = app.post("/v1/messages", &acme.write, request).await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    // The template is for webhook only.
    let (s, b) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "email", "template": "welcome", "data": { "code": "X" },
                    "idempotency_key": "k-err2" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");

    // Unknown customer: 404.
    let (s, b) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": "nope", "channel": "webhook", "body": "x", "idempotency_key": "k-404" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");

    // Addresses: email from the customer; sms from the phone; a customer
    // without an email gets 422 no_address on the email channel.
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "email", "subject": "s", "body": "x", "idempotency_key": "k-mail" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["to"], "ada@example.com");
    let mail = m["id"].as_str().unwrap().to_string();
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "sms", "body": "x", "idempotency_key": "k-sms" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["to"], "+15550100");
    let bare = customer(&app, &acme, json!({ "external_id": "C2" })).await;
    let (s, b) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": bare, "channel": "email", "body": "x", "idempotency_key": "k-noaddr" }),
        )
        .await;
    assert_error(s, &b, 422, "no_address");
    assert_eq!(b["error"]["details"]["field"], "to");

    // No connector serves email: the message stays pending, says why, and
    // no attempt is counted.
    let m = wait_for(&app, &acme, &mail, |m| !m["last_error"].is_null()).await;
    assert_eq!(m["status"], "pending");
    assert_eq!(m["attempts"], 0);
    assert_eq!(outcomes(&m), Vec::<String>::new());
    assert!(
        m["last_error"]
            .as_str()
            .unwrap()
            .contains("no active channel-connector serves channel \"email\""),
        "{m}"
    );

    // Delete: 204, then 404; messages keep their text.
    let (s, _) = app.delete("/v1/message-templates/welcome", &acme.admin).await;
    assert_eq!(s, 204);
    let (s, b) = app.get("/v1/message-templates/welcome", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete("/v1/message-templates/welcome", &acme.admin).await;
    assert_error(s, &b, 404, "not_found");

    app.server.stop().await.unwrap();
}

async fn other_tenants_see_nothing(backend: Backend) {
    let Setup {
        app,
        acme,
        globex,
        port,
        ..
    } = start(backend, true).await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    let (s, _) = app
        .put("/v1/message-templates/welcome", &acme.admin, json!({ "body": "hi" }))
        .await;
    assert_eq!(s, 201);
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{port}/x"),
                    "body": "x", "idempotency_key": "shared-key" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    wait_for(&app, &acme, &id, status_is("delivered")).await;

    let (s, page) = app.get("/v1/messages", &globex.read).await;
    assert_eq!((s.as_u16(), page["items"].clone()), (200, json!([])));
    let (s, page) = app.get(&format!("/v1/messages?customer_id={cid}"), &globex.read).await;
    assert_eq!((s.as_u16(), page["items"].clone()), (200, json!([])));
    let (s, b) = app.get(&format!("/v1/messages/{id}"), &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(&format!("/v1/messages/{id}/replay"), &globex.write, json!({}))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, list) = app.get("/v1/message-templates", &globex.read).await;
    assert_eq!((s.as_u16(), list), (200, json!([])));
    let (s, b) = app.get("/v1/message-templates/welcome", &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete("/v1/message-templates/welcome", &globex.admin).await;
    assert_error(s, &b, 404, "not_found");
    // acme's customer does not exist for globex; the same idempotency key is
    // globex's own.
    let (s, b) = app
        .post(
            "/v1/messages",
            &globex.write,
            json!({ "customer_id": cid, "channel": "webhook", "body": "x", "idempotency_key": "shared-key" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/messages",
            &globex.write,
            json!({ "customer_id": cid, "channel": "webhook", "template": "welcome", "idempotency_key": "k2" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    // acme's template and message are untouched.
    let (s, _) = app.get("/v1/message-templates/welcome", &acme.read).await;
    assert_eq!(s, 200);
    let (_, m) = app.get(&format!("/v1/messages/{id}"), &acme.read).await;
    assert_eq!(m["status"], "delivered");

    app.server.stop().await.unwrap();
}

/// Accepted means stored: a node without workers acknowledges a message,
/// nothing is sent; a second node with workers on the same database then
/// delivers it.
async fn stored_before_delivery(backend: Backend) {
    let Setup {
        app,
        acme,
        receiver,
        port,
        _dir,
        ..
    } = start(backend, false).await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{port}/later"),
                    "body": "later", "idempotency_key": "k-later" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, m) = app.get(&format!("/v1/messages/{id}"), &acme.read).await;
    assert_eq!(
        (m["status"].clone(), m["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    assert!(receiver.at("/later").is_empty());

    let mut config = config(_dir.path(), port);
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = app.db.url.clone();
    let node = rapport::server::start(&config).await.unwrap();
    let m = wait_for(&app, &acme, &id, status_is("delivered")).await;
    assert_eq!(m["attempts_log"][0]["node"], node.node());
    assert_ne!(node.node(), app.server.node());
    let got = receiver.at("/later");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["body"], "later");
    node.stop().await.unwrap();
    app.server.stop().await.unwrap();
}

/// A connector that cannot even load is unavailable from start-up: its
/// channel has no connector, so the message waits (not dies), and none of
/// it counts towards the connector's suspension (the operator's artifact is
/// at fault, not the plugin).
async fn unloadable_connector_is_unavailable_not_suspended(backend: Backend) {
    let Setup { app, acme, .. } = start(backend, true).await;
    app.wait_ready().await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    let (s, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "push", "body": "x", "idempotency_key": "k-push" }),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let id = m["id"].as_str().unwrap().to_string();
    let m = wait_for(&app, &acme, &id, |m| {
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no active channel-connector"))
    })
    .await;
    assert_eq!(m["status"], "pending", "{m}");
    let (s, plugins) = app.get("/v1/plugins", &acme.read).await;
    assert_eq!(s, 200);
    let broken = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(broken["status"], "unavailable", "{broken}");
    assert!(broken["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{broken}");
    assert_eq!(broken["consecutive_failures"], 0, "{broken}");
    app.server.stop().await.unwrap();
}

fn report(outcome: AttemptOutcome, next: Next) -> AttemptReport {
    AttemptReport {
        connector: Some("hook".into()),
        started_at: rapport::store::now_ms(),
        latency_ms: 3,
        outcome,
        error: None,
        next,
    }
}

/// A worker that lost its lease (it stalled or its node died, and the lease
/// expired) cannot overwrite the result of the claim that took over, even on
/// the same node: results are fenced on (lease_owner, attempts).
async fn expired_leases_are_taken_over_and_fenced(backend: Backend) {
    let Setup { app, acme, .. } = start(backend, false).await;
    let store = app.server.state.store.clone();
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    let mut ids = Vec::new();
    for key in ["a", "b"] {
        let (s, m) = app
            .post(
                "/v1/messages",
                &acme.write,
                json!({ "customer_id": cid, "channel": "webhook", "body": key, "idempotency_key": key }),
            )
            .await;
        assert_eq!(s, 202, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }

    // A lease long enough that node-b's first claim below falls inside it
    // even on a loaded machine (50 ms was not, once, in CI).
    let stale = store.claim_messages("node-a", 1_500, 10).await.unwrap();
    assert_eq!(stale.len(), 2);
    assert!(stale.iter().all(|c| c.attempt == 1 && c.window_attempts == 1));
    // Leased: nobody else gets them.
    assert!(store.claim_messages("node-b", 30_000, 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    // Expired: node-b takes the first over... (one at a time: limit 1)
    let taken = store.claim_messages("node-b", 30_000, 1).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempt, 2);
    // ...and node-a itself re-claims the other one.
    let again = store.claim_messages("node-a", 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);

    for old in &stale {
        let held = store
            .record_attempt(old, &report(AttemptOutcome::Retryable, Next::Dead))
            .await
            .unwrap();
        assert!(!held, "a stale claim recorded a result");
        assert!(!store.release_claim(old, 0, None).await.unwrap());
        assert!(!store.kill_claim(old, "x").await.unwrap());
    }
    for new in taken.iter().chain(&again) {
        let held = store
            .record_attempt(
                new,
                &report(AttemptOutcome::Delivered, Next::Delivered { provider_id: None }),
            )
            .await
            .unwrap();
        assert!(held);
    }
    for (id, node) in [(&taken[0].message.id, "node-b"), (&again[0].message.id, "node-a")] {
        let (_, m) = app.get(&format!("/v1/messages/{id}"), &acme.read).await;
        assert_eq!(m["status"], "delivered", "{m}");
        assert_eq!(m["attempts"], 2);
        assert_eq!(outcomes(&m), ["lease_lost", "delivered"]);
        assert_eq!(m["attempts_log"][0]["node"], "node-a");
        assert_eq!(m["attempts_log"][1]["node"], node);
        assert!(
            m["attempts_log"][0]["error"]
                .as_str()
                .unwrap()
                .starts_with("lease lost"),
            "{m}"
        );
    }
    // A released claim goes back without counting an attempt.
    let (_, m) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "webhook", "body": "c", "idempotency_key": "c" }),
        )
        .await;
    let claim = store.claim_messages("node-a", 30_000, 10).await.unwrap().remove(0);
    assert_eq!(claim.message.id, m["id"].as_str().unwrap());
    assert!(store.release_claim(&claim, 0, Some("shutting down")).await.unwrap());
    let (_, m) = app.get(&format!("/v1/messages/{}", claim.message.id), &acme.read).await;
    assert_eq!(
        (m["status"].clone(), m["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    assert_eq!(m["last_error"], "shutting down");
    app.server.stop().await.unwrap();
}

/// Concurrent claimers (as on several nodes) never get the same message.
async fn concurrent_claims_never_overlap(backend: Backend) {
    let Setup { app, acme, .. } = start(backend, false).await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    let mut all = Vec::new();
    for i in 0..120 {
        let (s, m) = app
            .post(
                "/v1/messages",
                &acme.write,
                json!({ "customer_id": cid, "channel": "webhook", "body": "x", "idempotency_key": format!("k{i}") }),
            )
            .await;
        assert_eq!(s, 202, "{m}");
        all.push(m["id"].as_str().unwrap().to_string());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..6 {
        let store = app.server.state.store.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            loop {
                let claims = store.claim_messages(&format!("node-{n}"), 30_000, 4).await.unwrap();
                if claims.is_empty() {
                    return got;
                }
                got.extend(claims.into_iter().map(|c| c.message.id));
            }
        });
    }
    let mut claimed = Vec::new();
    while let Some(got) = tasks.join_next().await {
        claimed.extend(got.unwrap());
    }
    claimed.sort();
    all.sort();
    assert_eq!(claimed, all);
    app.server.stop().await.unwrap();
}

/// GDPR: the export lists the customer's messages; erasure blanks them and
/// stops those not yet delivered; nothing can be sent or replayed to the
/// erased customer afterwards.
async fn erasure_blanks_and_stops_messages(backend: Backend) {
    let Setup {
        app,
        acme,
        receiver,
        port,
        ..
    } = start(backend, true).await;
    let cid = customer(&app, &acme, json!({ "external_id": "C1", "email": "ada@example.com" })).await;
    let send = |key: &str, path: &str| {
        json!({ "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{port}{path}"),
                "body": "secret text", "idempotency_key": key })
    };
    let (_, sent) = app.post("/v1/messages", &acme.write, send("k1", "/ok")).await;
    let sent = sent["id"].as_str().unwrap().to_string();
    wait_for(&app, &acme, &sent, status_is("delivered")).await;
    // No connector serves email: still pending when the customer is erased.
    let (s, waiting) = app
        .post(
            "/v1/messages",
            &acme.write,
            json!({ "customer_id": cid, "channel": "email", "subject": "s", "body": "secret text",
                    "idempotency_key": "k2" }),
        )
        .await;
    assert_eq!(s, 202, "{waiting}");
    assert_eq!(waiting["to"], "ada@example.com");
    let waiting = waiting["id"].as_str().unwrap().to_string();

    let (s, export) = app.get(&format!("/v1/customers/{cid}/export"), &acme.admin).await;
    assert_eq!(s, 200, "{export}");
    let exported: Vec<&str> = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(exported, [sent.as_str(), waiting.as_str()]);
    assert_eq!(export["messages"][0]["body"], "secret text");

    let (s, b) = app
        .post(&format!("/v1/customers/{cid}/erase"), &acme.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    for id in [&sent, &waiting] {
        let (_, m) = app.get(&format!("/v1/messages/{id}"), &acme.read).await;
        assert_eq!(
            (m["to"].clone(), m["body"].clone(), m["subject"].clone()),
            (json!(""), json!(""), Value::Null)
        );
        assert_eq!(m["metadata"], json!({}));
        assert!(
            m["attempts_log"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["error"].is_null()),
            "{m}"
        );
    }
    let (_, m) = app.get(&format!("/v1/messages/{sent}"), &acme.read).await;
    assert_eq!(m["status"], "delivered");
    let (_, m) = app.get(&format!("/v1/messages/{waiting}"), &acme.read).await;
    assert_eq!(m["status"], "dead");
    assert_eq!(m["last_error"], "customer erased before delivery");
    let (s, b) = app
        .post(&format!("/v1/messages/{waiting}/replay"), &acme.write, json!({}))
        .await;
    assert_error(s, &b, 409, "customer_erased");
    let (s, b) = app.post("/v1/messages", &acme.write, send("k3", "/ok")).await;
    assert_error(s, &b, 409, "customer_erased");
    assert_eq!(receiver.at("/ok").len(), 1);
    app.server.stop().await.unwrap();
}

/// Stopping a node finishes the delivery in flight and hands back what its
/// workers had claimed but not started: nothing stays `delivering`, nothing
/// is counted as attempted that was not, and every delivered message was
/// received exactly once.
async fn graceful_stop_hands_back_claims(backend: Backend) {
    let Setup {
        app,
        acme,
        receiver,
        port,
        ..
    } = start(backend, true).await;
    receiver
        .slow
        .lock()
        .unwrap()
        .insert("/slow".into(), Duration::from_millis(150));
    let cid = customer(&app, &acme, json!({ "external_id": "C1" })).await;
    for i in 0..12 {
        let (s, m) = app
            .post(
                "/v1/messages",
                &acme.write,
                json!({ "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{port}/slow"),
                        "body": "x", "idempotency_key": format!("k{i}") }),
            )
            .await;
        assert_eq!(s, 202, "{m}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.at("/slow").is_empty() {
        assert!(Instant::now() < deadline, "nothing was delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let store = app.server.state.store.clone();
    app.server.stop().await.unwrap();

    let tenant = rapport::store::TenantId::for_tests(acme.id.clone());
    let filter = rapport::store::messages::MessageFilter {
        limit: Some(100),
        ..Default::default()
    };
    let messages = store.list_messages(&tenant, filter).await.unwrap().items;
    assert_eq!(messages.len(), 12);
    let mut delivered = 0;
    for m in &messages {
        match m.status {
            MessageStatus::Delivered => {
                assert_eq!(m.attempts, 1);
                delivered += 1;
            }
            MessageStatus::Pending => assert_eq!(m.attempts, 0, "{m:?}"),
            other => panic!("{other:?} after a graceful stop: {m:?}"),
        }
    }
    assert!(delivered >= 1);
    let received = receiver.at("/slow");
    assert_eq!(received.len(), delivered);
    let mut keys: Vec<_> = received.iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), delivered);
}

/// A tenant's `message_rate_per_second` spaces its deliveries: with a rate
/// of 1, consecutive attempts start at least about a second apart (a lower
/// bound the token bucket guarantees, not a speed measurement).
async fn tenant_rate_limit_spaces_deliveries(backend: Backend) {
    let Setup { app, port, .. } = start(backend, true).await;
    let slow = app.tenant_with_id("slowco").await;
    let cid = customer(&app, &slow, json!({ "external_id": "C1" })).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, m) = app
            .post(
                "/v1/messages",
                &slow.write,
                json!({ "customer_id": cid, "channel": "webhook", "to": format!("http://127.0.0.1:{port}/rl"),
                        "body": "x", "idempotency_key": format!("k{i}") }),
            )
            .await;
        assert_eq!(s, 202, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let mut starts = Vec::new();
    for id in &ids {
        let m = wait_for(&app, &slow, id, status_is("delivered")).await;
        let started = m["attempts_log"][0]["started_at"].as_str().unwrap().to_string();
        starts.push(time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339).unwrap());
    }
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= time::Duration::milliseconds(900),
            "deliveries {gap} apart: {starts:?}"
        );
    }
    app.server.stop().await.unwrap();
}

both_backends!(
    tenant_rate_limit_spaces_deliveries,
    graceful_stop_hands_back_claims,
    erasure_blanks_and_stops_messages,
    delivery_lifecycle,
    templates_and_addresses,
    other_tenants_see_nothing,
    stored_before_delivery,
    unloadable_connector_is_unavailable_not_suspended,
    expired_leases_are_taken_over_and_fenced,
    concurrent_claims_never_overlap
);
