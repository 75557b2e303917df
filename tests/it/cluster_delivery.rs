//! Several nodes, one outbox: two real `rapport serve` processes on one
//! PostgreSQL database deliver 3,000 webhook messages through the
//! first-party `webhook` connector to a receiver in this test, which checks
//! every Standard Webhooks signature, counts deliveries by `webhook-id`, and
//! answers every seventh request with a 503 on purpose. Halfway through, one
//! node is killed with SIGKILL.
//!
//! What must hold: every message ends `delivered`; the receiver acknowledged
//! each message id at least once; every duplicate (dropped by the receiver
//! by `webhook-id`) is explained by the delivery log: a message the killed
//! node had in flight (sent, acknowledged, never recorded; bounded by its
//! claims, workers × claim batch) or a lease that ran out mid-delivery on a
//! live node (logged `lease_lost`).
//!
//! PostgreSQL only (SQLite is one node by design); skipped, saying so, when
//! `RAPPORT_TEST_POSTGRES_URL` is unset.

// The test reads the delivery log straight from the database: it checks
// the server, so it must not go through the server's own store.
#![allow(clippy::disallowed_methods)]

use crate::support;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Backend, TestDb};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use rapport::store::TenantId;
use rapport::store::tenants::Role;
use serde_json::json;
use sha2::Sha256;

const MESSAGES: usize = 3_000;
const WORKERS_PER_NODE: usize = 4;
/// `delivery.rs`'s CLAIM_BATCH: what one worker holds at a time.
const CLAIM_BATCH: usize = 4;
const SECRET_BYTES: &[u8] = b"cluster-test-secret-0123456789ab";

/// What the receiver saw.
#[derive(Default)]
struct Receiver {
    /// webhook-id → deliveries answered 2xx.
    acknowledged: Mutex<HashMap<String, u32>>,
    arrivals: AtomicU64,
    refused_on_purpose: AtomicU64,
    bad_signatures: AtomicU64,
}

/// Verifies the Standard Webhooks signature independently of the plugin
/// (HMAC-SHA256 over `id.timestamp.body`, base64, `v1,` prefix).
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_BYTES).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
        .then(|| id.to_owned())
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = r.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
    let Some(id) = signature_ok(&headers, &body) else {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    };
    if n % 7 == 0 {
        r.refused_on_purpose.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    *r.acknowledged
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id)
        .or_default() += 1;
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (SocketAddr, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_manifest(dir: &Path, receiver: SocketAddr) -> PathBuf {
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET_BYTES)
    );
    let entry = support::plugin_manifest_entry(
        "webhook",
        "rapport-plugin-webhook",
        "channel-connector",
        &["config", "log", "outbound-http"],
        "timeout_ms = 5000",
    )
    .replace(
        "[plugin.limits]",
        &format!(
            "channels = [\"webhook\"]\nallowed_hosts = [\"127.0.0.1:{}\"]\n[plugin.limits]",
            receiver.port()
        ),
    );
    let text = format!(
        "{entry}[plugin.delivery]\nmax_attempts = 50\nmax_age_s = 600\nbackoff_initial_ms = 20\nbackoff_max_ms = 500\n\n\
         [[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"webhook\"\n\
         config = {{ url = \"http://{receiver}/hook\", secret = \"{secret}\" }}\n"
    );
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Node {
    child: Child,
    url: String,
}

fn start_node(dir: &Path, name: &str, database: &str, manifest: &Path) -> Node {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = {database:?}\n\
             [plugins]\nmanifest = {manifest:?}\ncache_dir = {cache:?}\nrescore_interval_ms = 0\n\
             [delivery]\nworkers = {WORKERS_PER_NODE}\nlease_ms = 8000\npoll_ms = 20\n",
            manifest = manifest.display().to_string(),
            cache = dir.join("cache").display().to_string(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rapport serve");
    Node {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(client: &reqwest::Client, node: &Node, dir: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/readyz", node.url)).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    panic!("node {name} did not become ready; its log:\n{log}");
}

async fn count_by_status(store: &rapport::store::Store) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status")
        .fetch_all(store.db().pool())
        .await
        .unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_deliver_every_message_through_a_node_kill() {
    if support::postgres_url().is_none() {
        eprintln!(
            "SKIPPED two_nodes_deliver_every_message_through_a_node_kill: {} is not set",
            support::POSTGRES_ENV
        );
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();

    // Schema, tenant and key, written directly as an operator would with
    // `rapport migrate`, `rapport tenant create`, `rapport key create`.
    let store = rapport::store::Store::new(rapport::db::Db::open(&db.url).await.unwrap());
    store.db().migrate().await.unwrap();
    store.create_tenant("acme", Some("acme")).await.unwrap();
    let key = store
        .create_key(Some(&TenantId::for_tests("acme")), Role::TenantWrite, "cluster test")
        .await
        .unwrap()
        .token;

    let (receiver_addr, receiver) = start_receiver().await;
    let manifest = write_manifest(dir.path(), receiver_addr);
    let mut a = start_node(dir.path(), "a", &db.url, &manifest);
    let b = start_node(dir.path(), "b", &db.url, &manifest);
    let client = reqwest::Client::new();
    wait_ready(&client, &a, dir.path(), "a").await;
    wait_ready(&client, &b, dir.path(), "b").await;

    // A few customers; messages alternate between the nodes' APIs.
    let mut customers = Vec::new();
    for n in 0..20 {
        let response = client
            .post(format!("{}/v1/customers", a.url))
            .bearer_auth(&key)
            .json(&json!({ "external_id": format!("c-{n}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        customers.push(body["id"].as_str().unwrap().to_owned());
    }
    let urls = [a.url.clone(), b.url.clone()];
    let accepted = futures_util::stream::iter(0..MESSAGES)
        .map(|n| {
            let client = client.clone();
            let url = format!("{}/v1/messages", urls[n % 2]);
            let key = key.clone();
            let customer = customers[n % customers.len()].clone();
            async move {
                let response = client
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "customer_id": customer, "channel": "webhook",
                        "subject": "hello", "body": format!("message {n}"),
                        "idempotency_key": format!("cluster-{n}") }))
                    .send()
                    .await
                    .expect("enqueue");
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                assert_eq!(status, 202, "{body}");
                body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<String>>()
        .await;
    assert_eq!(accepted.len(), MESSAGES);

    // Kill node a once deliveries are well under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let acknowledged = receiver.acknowledged.lock().unwrap().len();
        if acknowledged >= MESSAGES / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not start: {acknowledged} acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.child.kill().expect("kill node a");
    a.child.wait().expect("reap node a");
    let acknowledged_at_kill = receiver.acknowledged.lock().unwrap().len();
    assert!(
        acknowledged_at_kill < MESSAGES,
        "everything was delivered before the kill"
    );

    // Node b alone finishes the job, including what a held when it died.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let counts = count_by_status(&store).await;
        if counts.get("delivered").copied().unwrap_or(0) == MESSAGES as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all delivered: {counts:?}; receiver acknowledged {}",
            receiver.acknowledged.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let acknowledged = receiver.acknowledged.lock().unwrap().clone();
    let mut missing: Vec<&String> = accepted.iter().filter(|id| !acknowledged.contains_key(*id)).collect();
    missing.truncate(5);
    assert!(
        missing.is_empty(),
        "delivered in the database but never acknowledged: {missing:?}"
    );
    assert_eq!(
        acknowledged.len(),
        MESSAGES,
        "the receiver saw ids that were never sent"
    );
    let duplicates: u32 = acknowledged.values().map(|n| n - 1).sum();
    // Every duplicate must be explained by the delivery log: either an
    // attempt that was never recorded (node a died between sending and
    // recording: the message's claim count exceeds its logged attempts), at
    // most node a's claims at the kill; or a lease that ran out mid-delivery
    // on a live node (logged `lease_lost`), which a loaded machine can cause.
    let mut unrecorded = 0;
    for (id, _) in acknowledged.iter().filter(|(_, n)| **n > 1) {
        let (claims, logged, lost): (i64, i64, i64) = sqlx::query_as(
            "SELECT m.attempts, \
                    (SELECT COUNT(*) FROM message_attempts a WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id), \
                    (SELECT COUNT(*) FROM message_attempts a WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id \
                       AND a.outcome = 'lease_lost') \
             FROM messages m WHERE m.id = $1",
        )
        .bind(id)
        .fetch_one(store.db().pool())
        .await
        .unwrap();
        assert!(
            claims > logged || lost > 0,
            "message {id} was delivered twice without a killed attempt or a lost lease to explain it"
        );
        if claims > logged {
            unrecorded += 1;
        }
    }
    assert!(
        unrecorded <= WORKERS_PER_NODE * CLAIM_BATCH,
        "{unrecorded} duplicates from unrecorded attempts: more than node a could have had in flight"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let refused = receiver.refused_on_purpose.load(Ordering::SeqCst);
    assert!(refused > 0, "the receiver never failed, so no retry was exercised");

    // The delivery log shows the retries the 503s caused and both nodes at
    // work.
    let (retried, nodes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM message_attempts WHERE outcome = 'retryable'), \
                (SELECT COUNT(DISTINCT node) FROM message_attempts)",
    )
    .fetch_one(store.db().pool())
    .await
    .unwrap();
    // Every 503 is logged as a retryable attempt, except those node a got
    // and died before recording.
    let in_flight = (WORKERS_PER_NODE * CLAIM_BATCH) as i64;
    assert!(
        retried + in_flight >= refused as i64,
        "{retried} retryable attempts logged for {refused} 503s"
    );
    assert_eq!(nodes, 2, "both nodes delivered");
    eprintln!(
        "cluster delivery: {MESSAGES} messages, {} arrivals, {refused} refused on purpose, {duplicates} duplicates \
         (dropped by webhook-id), {acknowledged_at_kill} acknowledged when node a was killed",
        receiver.arrivals.load(Ordering::SeqCst)
    );
    drop(b);
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
