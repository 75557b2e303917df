//! `POST /v1/channels/{connector}/inbound` end to end, on both backends,
//! with the real `test-connector` component (its `parse-inbound` accepts a
//! body whose SHA-256 is in `x-test-signature`, and yields one event).
//!
//! What must hold: a signed request becomes an interaction exactly once
//! (provider retries replay); a bad signature is a 401 that stores nothing
//! and never suspends the connector; the tenant comes from the key or the
//! `tenant` parameter and nothing else, and another tenant gets 404.

use crate::support;
use std::path::{Path, PathBuf};

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// acme enables the connector (suspended after 3 failures in a row, so the
/// test can show that refused signatures do not count); globex does not
/// have it; initech has it but disabled.
fn manifest(dir: &Path) -> PathBuf {
    // test-connector imports outbound-http (for `deliver`, unused here), so
    // the capability must be granted, with some allowed host.
    let mut text = support::plugin_manifest_entry(
        "hook",
        "test-connector",
        "channel-connector",
        &["log", "outbound-http"],
        "timeout_ms = 2000\nmax_consecutive_failures = 3",
    )
    .replace(
        "[plugin.limits]",
        "channels = [\"hook\"]\nallowed_hosts = [\"127.0.0.1:9\"]\n[plugin.limits]",
    );
    text += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"hook\"\n\n";
    text += "[[tenant]]\nid = \"initech\"\n[[tenant.plugin]]\nid = \"hook\"\nenabled = false\n\n";
    let path = dir.join("plugins.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Setup {
    app: TestApp,
    acme: TestTenant,
    globex: TestTenant,
    initech: TestTenant,
    _dir: tempfile::TempDir,
}

async fn start(backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rapport::config::Config::default();
    config.plugins.manifest = Some(manifest(dir.path()));
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    config.plugins.rescore_interval_ms = Some(0);
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    let initech = app.tenant_with_id("initech").await;
    Setup {
        app,
        acme,
        globex,
        initech,
        _dir: dir,
    }
}

fn event_body(customer: &str, event: &str, id: &str) -> Vec<u8> {
    json!({ "customer": customer, "event": event, "at": 1_700_000_000_000i64, "id": id, "campaign": "spring" })
        .to_string()
        .into_bytes()
}

fn signature(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Posts `body` to the inbound endpoint; `key` as bearer when given.
async fn post_inbound(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: Vec<u8>,
    signature: &str,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("x-test-signature", signature)
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn customer_id(app: &TestApp, t: &TestTenant, external_id: &str) -> Option<String> {
    let (status, body) = app
        .get(&format!("/v1/customers/by-external-id/{external_id}"), &t.read)
        .await;
    match status.as_u16() {
        200 => body["id"].as_str().map(str::to_owned),
        404 => None,
        _ => panic!("unexpected {status}: {body}"),
    }
}

async fn timeline(app: &TestApp, t: &TestTenant, customer: &str) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/v1/customers/{customer}/interactions"), &t.read)
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn signed_event_becomes_one_interaction(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let body = event_body("cust-1", "message_opened", "evt-1");
    let sig = signature(&body);

    let (status, first) = post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.write), body.clone(), &sig).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["connector"], "hook");
    let events = first["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(events[0]["status"], "created", "{first}");
    assert_eq!(events[0]["kind"], "message_opened");
    assert_eq!(events[0]["customer_external_id"], "cust-1");
    let interaction_id = events[0]["interaction_id"].as_str().unwrap().to_owned();

    // The provider retries (same request): a replay, not a second row.
    let (status, again) = post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.write), body, &sig).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["events"][0]["status"], "replayed", "{again}");
    assert_eq!(again["events"][0]["interaction_id"], interaction_id.as_str());

    // The customer was created from the external id; the interaction is
    // stored as the connector described it.
    let customer = customer_id(&app, &acme, "cust-1").await.expect("customer created");
    let items = timeline(&app, &acme, &customer).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let stored = &items[0];
    assert_eq!(stored["id"], interaction_id.as_str());
    assert_eq!(stored["kind"], "message_opened");
    assert_eq!(stored["channel"], "hook");
    assert_eq!(stored["occurred_at"], "2023-11-14T22:13:20Z");
    assert_eq!(stored["payload"]["campaign"], "spring");
    assert_eq!(stored["payload"]["id"], "evt-1");
}

async fn tenant_from_query_when_no_key(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    let body = event_body("cust-2", "message_clicked", "evt-2");
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound?tenant=acme", None, body, &sig).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["events"][0]["status"], "created", "{response}");
    let customer = customer_id(&app, &acme, "cust-2").await.expect("customer created");
    assert_eq!(timeline(&app, &acme, &customer).await.len(), 1);

    // Neither a key nor a tenant: nobody to deliver to.
    let body = event_body("cust-2", "message_clicked", "evt-3");
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound", None, body, &sig).await;
    assert_error(status, &response, 401, "unauthorized");
    // A bad key is refused even with a tenant parameter.
    let body = event_body("cust-2", "message_clicked", "evt-4");
    let sig = signature(&body);
    let (status, response) = post_inbound(
        &app,
        "/v1/channels/hook/inbound?tenant=acme",
        Some("not-a-key"),
        body,
        &sig,
    )
    .await;
    assert_error(status, &response, 401, "unauthorized");
}

async fn bad_signature_stores_nothing_and_never_suspends(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    // Five refused signatures in a row: more than the connector's
    // max_consecutive_failures (3).
    for n in 0..5 {
        let body = event_body("cust-3", "message_opened", &format!("forged-{n}"));
        let (status, response) = post_inbound(
            &app,
            "/v1/channels/hook/inbound?tenant=acme",
            None,
            body,
            &"0".repeat(64),
        )
        .await;
        assert_error(status, &response, 401, "signature_rejected");
    }
    assert_eq!(
        customer_id(&app, &acme, "cust-3").await,
        None,
        "a forged event was stored"
    );
    let (status, plugins) = app.get("/v1/plugins", &acme.admin).await;
    assert_eq!(status, 200, "{plugins}");
    let hook = plugins
        .as_array()
        .and_then(|items| items.iter().find(|p| p["id"] == "hook"))
        .cloned()
        .unwrap_or_else(|| panic!("hook missing: {plugins}"));
    assert_eq!(hook["status"], "active", "{hook}");
    assert_eq!(hook["consecutive_failures"], 0, "{hook}");

    // Still accepting genuine events.
    let body = event_body("cust-3", "message_opened", "genuine");
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound?tenant=acme", None, body, &sig).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["events"][0]["status"], "created");
}

async fn malformed_and_unknown_kinds_are_reported(backend: Backend) {
    let Setup { app, acme, .. } = start(backend).await;
    // Correctly signed, but not the JSON the connector understands: 400.
    let body = b"this is not json".to_vec();
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.write), body, &sig).await;
    assert_error(status, &response, 400, "inbound_malformed");

    // A well-formed event of a kind the tenant does not have: the event
    // fails on its own (a retry would not help, so still 200).
    let body = event_body("cust-4", "teleported", "evt-k");
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.write), body, &sig).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["events"][0]["status"], "failed", "{response}");
    assert_eq!(
        response["events"][0]["error"]["code"], "validation_failed",
        "{response}"
    );
    assert!(response["events"][0].get("interaction_id").is_none());
}

async fn other_tenants_get_nothing(backend: Backend) {
    let Setup {
        app,
        acme,
        globex,
        initech,
        ..
    } = start(backend).await;
    let body = event_body("cust-5", "message_delivered", "evt-5");
    let sig = signature(&body);
    let (status, response) =
        post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.write), body.clone(), &sig).await;
    assert_eq!(status, 200, "{response}");

    // globex has no such connector, initech has it disabled, nobody is
    // called "ghost": all the same 404, by key or by parameter.
    for (path, key) in [
        ("/v1/channels/hook/inbound", Some(globex.write.as_str())),
        ("/v1/channels/hook/inbound?tenant=globex", None),
        ("/v1/channels/hook/inbound", Some(initech.write.as_str())),
        ("/v1/channels/hook/inbound?tenant=initech", None),
        ("/v1/channels/hook/inbound?tenant=ghost", None),
        ("/v1/channels/nope/inbound", Some(acme.write.as_str())),
    ] {
        let (status, response) = post_inbound(&app, path, key, body.clone(), &sig).await;
        assert_error(status, &response, 404, "not_found");
    }
    // A read key may not ingest.
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound", Some(&acme.read), body, &sig).await;
    assert_error(status, &response, 403, "forbidden");

    // acme's event is invisible to globex.
    assert!(customer_id(&app, &acme, "cust-5").await.is_some());
    assert_eq!(customer_id(&app, &globex, "cust-5").await, None);
}

/// An unsubscribe event stops messages on the connector's channels until
/// an admin lifts it; other channels and other tenants are unaffected.
async fn unsubscribe_suppresses_the_connectors_channels(backend: Backend) {
    let Setup { app, acme, globex, .. } = start(backend).await;
    let body = event_body("cust-u", "message_unsubscribed", "evt-u");
    let sig = signature(&body);
    let (status, response) = post_inbound(&app, "/v1/channels/hook/inbound?tenant=acme", None, body, &sig).await;
    assert_eq!(status, 200, "{response}");
    let customer = customer_id(&app, &acme, "cust-u").await.expect("customer created");

    let (status, list) = app
        .get(&format!("/v1/customers/{customer}/suppressions"), &acme.read)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["channel"], "hook");
    assert_eq!(list[0]["source"], "inbound:hook");

    let send = |channel: &str, key: &str| json!({ "customer_id": customer, "channel": channel, "body": "hi", "idempotency_key": key });
    let (status, refused) = app.post("/v1/messages", &acme.write, send("hook", "m-1")).await;
    assert_error(status, &refused, 409, "customer_unsubscribed");
    let (status, other) = app.post("/v1/messages", &acme.write, send("webhook", "m-2")).await;
    assert_eq!(status, 202, "another channel is not suppressed: {other}");

    // Another tenant sees and lifts nothing.
    let (status, b) = app
        .get(&format!("/v1/customers/{customer}/suppressions"), &globex.read)
        .await;
    assert_error(status, &b, 404, "not_found");
    let (status, b) = app
        .delete(&format!("/v1/customers/{customer}/suppressions/hook"), &globex.admin)
        .await;
    assert_error(status, &b, 404, "not_found");
    let (status, b) = app
        .post(
            &format!("/v1/customers/{customer}/suppressions"),
            &globex.write,
            json!({ "channel": "hook" }),
        )
        .await;
    assert_error(status, &b, 404, "not_found");

    // Lifted by acme's admin: messages go through again.
    let (status, _) = app
        .delete(&format!("/v1/customers/{customer}/suppressions/hook"), &acme.admin)
        .await;
    assert_eq!(status, 204);
    let (status, sent) = app.post("/v1/messages", &acme.write, send("hook", "m-3")).await;
    assert_eq!(status, 202, "{sent}");

    // Recorded by hand (an opt-out told to a shop assistant).
    let (status, added) = app
        .post(
            &format!("/v1/customers/{customer}/suppressions"),
            &acme.write,
            json!({ "channel": "hook", "reason": "asked in store" }),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (added["source"].clone(), added["reason"].clone()),
        (json!("api"), json!("asked in store"))
    );
    let (status, refused) = app.post("/v1/messages", &acme.write, send("hook", "m-4")).await;
    assert_error(status, &refused, 409, "customer_unsubscribed");
}

both_backends!(
    unsubscribe_suppresses_the_connectors_channels,
    signed_event_becomes_one_interaction,
    tenant_from_query_when_no_key,
    bad_signature_stores_nothing_and_never_suspends,
    malformed_and_unknown_kinds_are_reported,
    other_tenants_get_nothing,
);
