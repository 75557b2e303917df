//! API tests: tenants, keys, authentication, health, OpenAPI, error shapes.

use crate::support::{Backend, TestApp, assert_error};
use reqwest::Method;
use serde_json::json;

async fn keys_and_roles(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let other = app.tenant("Other").await;

    // No key, a made-up key, a revoked key: 401.
    let (s, b) = app.get("/v1/keys", "").await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = app.get("/v1/keys", "rpk_not_a_key").await;
    assert_error(s, &b, 401, "unauthorized");

    // A tenant admin lists and creates its own keys; the token is shown once.
    let (s, b) = app
        .post("/v1/keys", &acme.admin, json!({ "role": "tenant_read", "name": "bi" }))
        .await;
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().unwrap().to_string();
    let key_id = b["id"].as_str().unwrap().to_string();
    let (s, b) = app.get("/v1/keys", &acme.admin).await;
    assert_eq!(s, 200);
    assert!(
        b.as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("token").is_none() && k["tenant_id"] == acme.id.as_str())
    );

    // Lower roles may not manage keys; platform keys may not touch tenant data.
    let (s, b) = app.get("/v1/keys", &acme.write).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/keys", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/tenants", &acme.admin).await;
    assert_error(s, &b, 403, "forbidden");

    // Another tenant's admin cannot revoke Acme's key: 404, and it still works.
    let (s, b) = app.delete(&format!("/v1/keys/{key_id}"), &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    assert_eq!(app.get("/v1/keys", &acme.admin).await.0, 200);

    // Revocation takes effect immediately.
    let (s, _) = app.delete(&format!("/v1/keys/{key_id}"), &acme.admin).await;
    assert_eq!(s, 200);
    let (s, b) = app.get("/v1/customers", &token).await;
    assert_error(s, &b, 401, "unauthorized");

    // Platform: list tenants; keys for an unknown tenant are 404.
    let (s, b) = app.get("/v1/tenants", &app.platform).await;
    assert_eq!(s, 200);
    assert_eq!(b.as_array().unwrap().len(), 2);
    let (s, b) = app
        .post(
            "/v1/tenants/nope/keys",
            &app.platform,
            json!({ "role": "tenant_admin" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/tenants/nope/keys", &app.platform).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete("/v1/tenants/nope/keys/key-1", &app.platform).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            &format!("/v1/tenants/{}/keys", acme.id),
            &app.platform,
            json!({ "role": "platform_admin" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
}

async fn malformed_admin_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (s, b) = app
        .raw(
            Method::POST,
            "/v1/tenants",
            &app.platform,
            "application/json",
            b"{\"name\":".to_vec(),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = app
        .raw(Method::POST, "/v1/tenants", &app.platform, "text/plain", b"{}".to_vec())
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = app.post("/v1/tenants", &app.platform, json!({ "name": 42 })).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .post("/v1/tenants", &app.platform, json!({ "name": "x", "colour": "red" }))
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.post("/v1/tenants", &app.platform, json!({ "name": "   " })).await;
    assert_error(s, &b, 422, "validation_failed");
    let big = vec![b' '; rapport::api::MAX_BODY_BYTES + 10];
    let (s, b) = app
        .raw(Method::POST, "/v1/tenants", &app.platform, "application/json", big)
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = app.get("/v1/no-such-route", &app.platform).await;
    assert_error(s, &b, 404, "not_found");
}

async fn health_metrics_openapi(backend: Backend) {
    let app = TestApp::start(backend).await;
    assert_eq!(app.get("/healthz", "").await.0, 200);
    assert_eq!(app.get("/readyz", "").await.0, 200);
    let (s, doc) = app.get("/v1/openapi.json", "").await;
    assert_eq!(s, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/v1/tenants"].is_object());
    let docs = app.client.get(app.url("/v1/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rapport_http_requests_total"), "{metrics}");
}

both_backends!(keys_and_roles, malformed_admin_input, health_metrics_openapi);
