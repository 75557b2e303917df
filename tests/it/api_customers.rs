//! API tests: customers — CRUD with merge-patch, statistics, list filters,
//! cursor pagination, tenant isolation, roles and malformed input.

use std::collections::HashSet;

use crate::support::{Backend, TestApp, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, b) = app.post("/v1/customers", token, body).await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn customers_crud(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;

    let c = create(
        &app,
        &acme.write,
        json!({ "external_id": "c-1", "name": " Ada Lovelace ", "email": "ada@example.com", "phone": "+44 1",
                "attributes": { "tier": "gold", "prefs": { "news": true, "sms": false } } }),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["external_id"], "c-1");
    assert_eq!(c["name"], "Ada Lovelace", "names are trimmed");
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(
        c["attributes"],
        json!({ "tier": "gold", "prefs": { "news": true, "sms": false } })
    );
    assert_eq!(c["erased_at"], Value::Null);
    assert_eq!(c["created_at"], c["updated_at"]);

    // Duplicate external id: 409.
    let (s, b) = app
        .post("/v1/customers", &acme.write, json!({ "external_id": "c-1" }))
        .await;
    assert_error(s, &b, 409, "customer_exists");

    // Read: with zeroed stats.
    let (s, b) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["name"], "Ada Lovelace");
    assert_eq!(
        b["stats"],
        json!({ "interaction_count": 0, "purchase_count": 0, "total_spend": [], "first_purchase_at": null,
                "last_purchase_at": null, "last_interaction_at": null })
    );
    let (s, b) = app.get("/v1/customers/by-external-id/c-1", &acme.read).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["id"], id.as_str());
    let (s, b) = app.get("/v1/customers/by-external-id/nope", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/customers/no-such-id", &acme.read).await;
    assert_error(s, &b, 404, "not_found");

    // Merge-patch: set, clear with null, merge attributes (null deletes a key).
    let (s, b) = app
        .patch(
            &format!("/v1/customers/{id}"),
            &acme.write,
            json!({ "name": "Ada King", "phone": null, "attributes": { "tier": null, "prefs": { "sms": true }, "vip": 1 } }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "Ada King");
    assert_eq!(b["phone"], Value::Null);
    assert_eq!(b["email"], "ada@example.com", "absent fields are left alone");
    assert_eq!(b["external_id"], "c-1");
    assert_eq!(
        b["attributes"],
        json!({ "prefs": { "news": true, "sms": true }, "vip": 1 })
    );
    let time_of = |v: &Value| {
        time::OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(time_of(&b["updated_at"]) >= time_of(&c["updated_at"]));
    let (_, b) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_eq!(
        b["attributes"],
        json!({ "prefs": { "news": true, "sms": true }, "vip": 1 }),
        "patch persisted"
    );

    // The merge-patch media type is accepted too.
    let (s, b) = app
        .raw(
            Method::PATCH,
            &format!("/v1/customers/{id}"),
            &acme.write,
            "application/merge-patch+json",
            br#"{"attributes": null, "external_id": "c-1b"}"#.to_vec(),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["attributes"], json!({}));
    assert_eq!(b["external_id"], "c-1b");

    // external_id: unique, cannot be removed.
    create(&app, &acme.write, json!({ "external_id": "c-2" })).await;
    let (s, b) = app
        .patch(
            &format!("/v1/customers/{id}"),
            &acme.write,
            json!({ "external_id": "c-2" }),
        )
        .await;
    assert_error(s, &b, 409, "customer_exists");
    let (s, b) = app
        .patch(
            &format!("/v1/customers/{id}"),
            &acme.write,
            json!({ "external_id": null }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "external_id");
    let (s, b) = app
        .patch("/v1/customers/nope", &acme.write, json!({ "name": "x" }))
        .await;
    assert_error(s, &b, 404, "not_found");

    // Validation.
    for (body, field) in [
        (json!({ "external_id": "" }), "external_id"),
        (json!({ "external_id": "x".repeat(201) }), "external_id"),
        (json!({ "external_id": "ok", "email": "not-an-email" }), "email"),
        (
            json!({ "external_id": "ok", "email": format!("{}@example.com", "a".repeat(250)) }),
            "email",
        ),
        (
            json!({ "external_id": "ok", "attributes": { "blob": "x".repeat(16 * 1024) } }),
            "attributes",
        ),
    ] {
        let (s, b) = app.post("/v1/customers", &acme.write, body).await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    let (s, b) = app
        .patch(
            &format!("/v1/customers/{id}"),
            &acme.write,
            json!({ "attributes": [1] }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    // 200 characters is the maximum, not beyond it.
    create(&app, &acme.write, json!({ "external_id": "é".repeat(200) })).await;

    // Delete: a customer without history goes; one with history does not.
    let plain = create(&app, &acme.write, json!({ "external_id": "to-delete" })).await;
    let plain_id = plain["id"].as_str().unwrap();
    let (s, b) = app.delete(&format!("/v1/customers/{plain_id}"), &acme.write).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = app.get(&format!("/v1/customers/{plain_id}"), &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete(&format!("/v1/customers/{plain_id}"), &acme.write).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": id, "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app.delete(&format!("/v1/customers/{id}"), &acme.write).await;
    assert_error(s, &b, 409, "customer_has_history");
    assert_eq!(app.get(&format!("/v1/customers/{id}"), &acme.read).await.0, 200);
}

async fn customer_stats(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let c = create(&app, &acme.write, json!({ "external_id": "buyer" })).await;
    let id = c["id"].as_str().unwrap();
    for (kind, at, amount, currency) in [
        ("purchase", "2024-01-05T10:00:00Z", Some(json!("0.1")), Some("USD")),
        ("purchase", "2024-03-01T10:00:00Z", Some(json!(0.2)), Some("USD")),
        ("purchase", "2024-02-01T10:00:00Z", Some(json!("1500")), Some("JPY")),
        ("purchase", "2024-02-02T10:00:00Z", Some(json!("19.99")), Some("EUR")),
        ("visit", "2024-04-01T09:00:00Z", None, None),
        ("complaint", "2023-12-01T09:00:00Z", Some(json!("5.00")), Some("USD")),
    ] {
        let mut body = json!({ "customer_external_id": "buyer", "kind": kind, "occurred_at": at });
        if let (Some(a), Some(cur)) = (amount, currency) {
            body["amount"] = a;
            body["currency"] = json!(cur);
        }
        let (s, b) = app.post("/v1/interactions", &acme.write, body).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["stats"],
        json!({
            "interaction_count": 6,
            "purchase_count": 4,
            "total_spend": [
                { "currency": "EUR", "amount": "19.99", "amount_minor": 1999 },
                { "currency": "JPY", "amount": "1500", "amount_minor": 1500 },
                { "currency": "USD", "amount": "0.30", "amount_minor": 30 },
            ],
            "first_purchase_at": "2024-01-05T10:00:00Z",
            "last_purchase_at": "2024-03-01T10:00:00Z",
            "last_interaction_at": "2024-04-01T09:00:00Z",
        })
    );
}

async fn customers_list_filters_and_pagination(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let mut all = Vec::new();
    for i in 0..120 {
        let name = if i % 10 == 0 {
            format!("Grace {i} Hopper")
        } else {
            format!("Customer {i}")
        };
        let email = if i % 3 == 0 {
            json!(format!("user{i}@Example.COM"))
        } else {
            Value::Null
        };
        all.push(
            create(
                &app,
                &acme.write,
                json!({ "external_id": format!("ext-{i:03}"), "name": name, "email": email }),
            )
            .await,
        );
    }
    let mut expected_ids: Vec<String> = all.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
    expected_ids.sort();

    // Walk every page: each customer exactly once, in id order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers?limit=50&cursor={c}"),
            None => "/v1/customers?limit=50".to_string(),
        };
        let (s, b) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{b}");
        let items = b["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|c| c["id"].as_str().unwrap().to_string()));
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, vec![50, 50, 20]);
    assert_eq!(seen, expected_ids);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 120);

    // Default limit is 50.
    let (_, b) = app.get("/v1/customers", &acme.read).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 50);
    assert!(b["next_cursor"].is_string());
    let (_, b) = app.get("/v1/customers?limit=500", &acme.read).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 120);
    assert_eq!(b["next_cursor"], Value::Null);

    // Filters.
    let (_, b) = app.get("/v1/customers?external_id=ext-042", &acme.read).await;
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "Customer 42");
    let (_, b) = app.get("/v1/customers?email=USER42@example.com", &acme.read).await;
    assert_eq!(
        b["items"].as_array().unwrap().len(),
        1,
        "email match is case-insensitive: {b}"
    );
    let (_, b) = app.get("/v1/customers?q=hOpPeR", &acme.read).await;
    let names: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(names.iter().all(|n| n.contains("Hopper")));
    let (_, b) = app.get("/v1/customers?q=example.com&limit=500", &acme.read).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 40, "q matches emails too");
    let (_, b) = app.get("/v1/customers?q=%25", &acme.read).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 0, "LIKE wildcards are literal");
    let (_, b) = app
        .get("/v1/customers?q=grace&email=user30@example.com", &acme.read)
        .await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1, "filters combine with AND");

    // Time filters, checked against the created_at values the API returned.
    let pivot = all[60]["created_at"].as_str().unwrap().to_string();
    let pivot_t = time::OffsetDateTime::parse(&pivot, &time::format_description::well_known::Rfc3339).unwrap();
    let created = |c: &Value| {
        time::OffsetDateTime::parse(
            c["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let after_count = all.iter().filter(|c| created(c) > pivot_t).count();
    let before_count = all.iter().filter(|c| created(c) < pivot_t).count();
    let (s, b) = app
        .get(&format!("/v1/customers?limit=500&created_after={pivot}"), &acme.read)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"].as_array().unwrap().len(), after_count);
    let (_, b) = app
        .get(&format!("/v1/customers?limit=500&created_before={pivot}"), &acme.read)
        .await;
    assert_eq!(b["items"].as_array().unwrap().len(), before_count);
    assert!(before_count > 0);

    // updated_after: only the patched one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let updated = |c: &Value| {
        time::OffsetDateTime::parse(
            c["updated_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    // Compared as times: RFC 3339 strings with trimmed fractions do not sort as text.
    let last_update = all
        .iter()
        .map(updated)
        .max()
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let target = all[7]["id"].as_str().unwrap();
    let (s, _) = app
        .patch(
            &format!("/v1/customers/{target}"),
            &acme.write,
            json!({ "name": "Renamed" }),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = app
        .get(&format!("/v1/customers?updated_after={last_update}"), &acme.read)
        .await;
    let items = b["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{b}");
    assert_eq!(items[0]["id"], target);

    // Bad parameters: limits 422, syntax 400, cursor 422.
    for bad in ["limit=0", "limit=501"] {
        let (s, b) = app.get(&format!("/v1/customers?{bad}"), &acme.read).await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], "limit");
    }
    for bad in ["limit=abc", "limit=-1", "created_after=yesterday", "colour=red"] {
        let (s, b) = app.get(&format!("/v1/customers?{bad}"), &acme.read).await;
        assert_error(s, &b, 400, "invalid_query");
    }
    let (s, b) = app.get("/v1/customers?cursor=not-a-cursor!", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "cursor");
}

async fn customers_tenant_isolation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let other = app.tenant("Other").await;
    let c = create(
        &app,
        &acme.write,
        json!({ "external_id": "shared-ext", "name": "Secret" }),
    )
    .await;
    let id = c["id"].as_str().unwrap();

    let (s, b) = app.get(&format!("/v1/customers/{id}"), &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/customers/by-external-id/shared-ext", &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .patch(&format!("/v1/customers/{id}"), &other.admin, json!({ "name": "Pwned" }))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete(&format!("/v1/customers/{id}"), &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    for path in [
        "/v1/customers",
        "/v1/customers?q=secret",
        "/v1/customers?external_id=shared-ext",
    ] {
        let (s, b) = app.get(path, &other.read).await;
        assert_eq!(s, 200);
        assert_eq!(b["items"], json!([]), "{path}");
    }
    // A cursor made from Acme's data leaks nothing either.
    let (_, b) = app.get("/v1/customers?limit=1", &acme.read).await;
    assert_eq!(b["next_cursor"], Value::Null);
    // The same external id is free in another tenant.
    let mine = create(&app, &other.write, json!({ "external_id": "shared-ext" })).await;
    assert_ne!(mine["id"], c["id"]);
    // Acme's customer is untouched.
    let (_, b) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_eq!(b["name"], "Secret");
}

async fn customers_roles_and_malformed_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let c = create(&app, &acme.write, json!({ "external_id": "x" })).await;
    let id = c["id"].as_str().unwrap();

    // A read key cannot write; a platform key sees no tenant data; no key is 401.
    let (s, b) = app
        .post("/v1/customers", &acme.read, json!({ "external_id": "y" }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .patch(&format!("/v1/customers/{id}"), &acme.read, json!({ "name": "n" }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.delete(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/customers", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get(&format!("/v1/customers/{id}"), "").await;
    assert_error(s, &b, 401, "unauthorized");

    let big = {
        let mut v = b"{\"external_id\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', rapport::api::MAX_BODY_BYTES + 1));
        v.extend(b"\"}");
        v
    };
    for (method, path) in [
        (Method::POST, "/v1/customers".to_string()),
        (Method::PATCH, format!("/v1/customers/{id}")),
    ] {
        let (s, b) = app
            .raw(
                method.clone(),
                &path,
                &acme.write,
                "application/json",
                b"{\"external_id\":".to_vec(),
            )
            .await;
        assert_error(s, &b, 400, "invalid_json");
        let (s, b) = app
            .raw(method.clone(), &path, &acme.write, "text/plain", b"{}".to_vec())
            .await;
        assert_error(s, &b, 415, "unsupported_media_type");
        let (s, b) = app
            .call(method.clone(), &path, &acme.write, Some(json!({ "external_id": 5 })))
            .await;
        assert_error(s, &b, 422, "validation_failed");
        let (s, b) = app
            .call(
                method.clone(),
                &path,
                &acme.write,
                Some(json!({ "external_id": "z", "colour": "red" })),
            )
            .await;
        assert_error(s, &b, 422, "validation_failed");
        let (s, b) = app
            .raw(method.clone(), &path, &acme.write, "application/json", big.clone())
            .await;
        assert_error(s, &b, 413, "payload_too_large");
    }
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/v1/customers/{id}"),
            &acme.write,
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 405, "method_not_allowed");
}

/// A body must be a JSON object: serde would read `["id", "Name"]` as a
/// `NewCustomer` (its sequence form), and `[]` as an empty merge patch.
async fn bodies_must_be_json_objects(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let c = create(&app, &acme.write, json!({ "external_id": "x", "name": "Ada" })).await;
    let id = c["id"].as_str().unwrap();

    let (s, b) = app
        .post("/v1/customers", &acme.write, json!(["array-customer", "Array Name"]))
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "body");
    let (s, b) = app.get("/v1/customers/by-external-id/array-customer", &acme.read).await;
    assert_error(s, &b, 404, "not_found");

    for not_an_object in [json!([]), json!(["y"]), json!("name"), json!(1), json!(null)] {
        let (s, b) = app
            .patch(&format!("/v1/customers/{id}"), &acme.write, not_an_object.clone())
            .await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], "body", "{not_an_object}");
    }
    let (s, after) = app.get(&format!("/v1/customers/{id}"), &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(after["name"], "Ada");
    assert_eq!(
        after["updated_at"], c["updated_at"],
        "a refused patch changed the customer"
    );
    // An empty object is still a valid (empty) merge patch.
    let (s, b) = app.patch(&format!("/v1/customers/{id}"), &acme.write, json!({})).await;
    assert_eq!(s, 200, "{b}");
}

both_backends!(
    bodies_must_be_json_objects,
    customers_crud,
    customer_stats,
    customers_list_filters_and_pagination,
    customers_tenant_isolation,
    customers_roles_and_malformed_input
);
