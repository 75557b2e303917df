//! API tests: products — create, read, upsert, delete, list by category with
//! pagination, exact prices, tenant isolation, roles and malformed input.

use crate::support::{Backend, TestApp, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn products_crud(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;

    let (s, p) = app
        .post(
            "/v1/products",
            &acme.write,
            json!({ "sku": "CD-001", "name": "Kind of Blue", "category": "jazz",
                    "price": { "currency": "USD", "amount": "9.99" }, "attributes": { "label": "Columbia" } }),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["sku"], "CD-001");
    assert_eq!(
        p["price"],
        json!({ "currency": "USD", "amount": "9.99", "amount_minor": 999 })
    );
    assert_eq!(p["attributes"], json!({ "label": "Columbia" }));
    let (s, b) = app.get("/v1/products/CD-001", &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(b, p);

    let (s, b) = app
        .post(
            "/v1/products",
            &acme.write,
            json!({ "sku": "CD-001", "name": "Dup", "price": { "currency": "USD", "amount": 1 } }),
        )
        .await;
    assert_error(s, &b, 409, "product_exists");

    // PUT creates (201), then replaces (200) keeping created_at; a GET body
    // (with amount_minor) can be sent back as is.
    let (s, b) = app
        .put(
            "/v1/products/CD-002",
            &acme.write,
            json!({ "name": "A Love Supreme", "price": { "currency": "JPY", "amount": 1500 } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["price"],
        json!({ "currency": "JPY", "amount": "1500", "amount_minor": 1500 })
    );
    assert_eq!(b["category"], Value::Null);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (s, b2) = app
        .put(
            "/v1/products/CD-002",
            &acme.write,
            json!({ "name": "A Love Supreme (remaster)", "category": "jazz",
                    "price": { "currency": "JPY", "amount": "1800", "amount_minor": 1800 } }),
        )
        .await;
    assert_eq!(s, 200, "{b2}");
    assert_eq!(b2["name"], "A Love Supreme (remaster)");
    assert_eq!(b2["created_at"], b["created_at"]);
    assert_ne!(b2["updated_at"], b["updated_at"]);
    assert_eq!(b2["price"]["amount_minor"], 1800);

    // Prices: exact or refused.
    for (price, field) in [
        (json!({ "currency": "USD", "amount": "9.999" }), "price.amount"),
        (json!({ "currency": "USD", "amount": "-1" }), "price.amount"),
        (json!({ "currency": "JPY", "amount": "1.5" }), "price.amount"),
        (json!({ "currency": "ZZZ", "amount": "1" }), "price.currency"),
        (
            json!({ "currency": "USD", "amount": "1", "amount_minor": 2 }),
            "price.amount_minor",
        ),
    ] {
        let (s, b) = app
            .put("/v1/products/BAD", &acme.write, json!({ "name": "x", "price": price }))
            .await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    for (body, field) in [
        (
            json!({ "sku": "", "name": "x", "price": { "currency": "USD", "amount": "1" } }),
            "sku",
        ),
        (
            json!({ "sku": "has space", "name": "x", "price": { "currency": "USD", "amount": "1" } }),
            "sku",
        ),
        (
            json!({ "sku": "ok", "name": " ", "price": { "currency": "USD", "amount": "1" } }),
            "name",
        ),
    ] {
        let (s, b) = app.post("/v1/products", &acme.write, body).await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    assert_eq!(
        app.get("/v1/products/BAD", &acme.read).await.0,
        404,
        "failed PUTs store nothing"
    );

    // Delete.
    let (s, _) = app.delete("/v1/products/CD-001", &acme.write).await;
    assert_eq!(s, 204);
    let (s, b) = app.get("/v1/products/CD-001", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete("/v1/products/CD-001", &acme.write).await;
    assert_error(s, &b, 404, "not_found");
}

async fn products_list(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    for i in 0..25 {
        let category = if i % 5 == 0 { "rock" } else { "jazz" };
        let (s, b) = app
            .put(
                &format!("/v1/products/SKU-{i:02}"),
                &acme.write,
                json!({ "name": format!("P{i}"), "category": category, "price": { "currency": "EUR", "amount": format!("{i}.50") } }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/products?limit=10&cursor={c}"),
            None => "/v1/products?limit=10".to_string(),
        };
        let (s, b) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{b}");
        let items = b["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|p| p["sku"].as_str().unwrap().to_string()));
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, vec![10, 10, 5]);
    assert_eq!(seen, (0..25).map(|i| format!("SKU-{i:02}")).collect::<Vec<_>>());

    let (_, b) = app.get("/v1/products?category=rock", &acme.read).await;
    let skus: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    assert_eq!(skus, vec!["SKU-00", "SKU-05", "SKU-10", "SKU-15", "SKU-20"]);
    assert_eq!(
        b["items"][1]["price"],
        json!({ "currency": "EUR", "amount": "5.50", "amount_minor": 550 })
    );

    let (s, b) = app.get("/v1/products?cursor=bm9wZQ", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.get("/v1/products?limit=0", &acme.read).await;
    assert_error(s, &b, 422, "validation_failed");
    for bad in ["limit=ten", "category=a&sort=name"] {
        let (s, b) = app.get(&format!("/v1/products?{bad}"), &acme.read).await;
        assert_error(s, &b, 400, "invalid_query");
    }
}

async fn products_tenant_isolation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let other = app.tenant("Other").await;
    let (s, _) = app
        .put(
            "/v1/products/SECRET",
            &acme.write,
            json!({ "name": "Secret", "category": "c", "price": { "currency": "USD", "amount": "1" } }),
        )
        .await;
    assert_eq!(s, 201);

    let (s, b) = app.get("/v1/products/SECRET", &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.delete("/v1/products/SECRET", &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    for path in ["/v1/products", "/v1/products?category=c"] {
        let (_, b) = app.get(path, &other.read).await;
        assert_eq!(b["items"], json!([]));
    }
    // The same SKU in another tenant is its own product: creating it does not
    // touch Acme's.
    let (s, b) = app
        .post(
            "/v1/products",
            &other.write,
            json!({ "sku": "SECRET", "name": "Mine", "price": { "currency": "EUR", "amount": "2" } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .put(
            "/v1/products/SECRET",
            &other.write,
            json!({ "name": "Mine v2", "price": { "currency": "EUR", "amount": "3" } }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = app.get("/v1/products/SECRET", &acme.read).await;
    assert_eq!(b["name"], "Secret");
    assert_eq!(b["price"]["amount_minor"], 100);
}

async fn products_roles_and_malformed_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let body = json!({ "sku": "A", "name": "A", "price": { "currency": "USD", "amount": "1" } });
    let (s, b) = app.post("/v1/products", &acme.read, body.clone()).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .put(
            "/v1/products/A",
            &acme.read,
            json!({ "name": "A", "price": { "currency": "USD", "amount": "1" } }),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.delete("/v1/products/A", &acme.read).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/products", "").await;
    assert_error(s, &b, 401, "unauthorized");

    let big = {
        let mut v = b"{\"name\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', rapport::api::MAX_BODY_BYTES + 1));
        v.extend(b"\"}");
        v
    };
    for (method, path) in [(Method::POST, "/v1/products"), (Method::PUT, "/v1/products/A")] {
        let (s, b) = app
            .raw(
                method.clone(),
                path,
                &acme.write,
                "application/json",
                b"{\"name\"".to_vec(),
            )
            .await;
        assert_error(s, &b, 400, "invalid_json");
        let (s, b) = app
            .raw(method.clone(), path, &acme.write, "application/json", big.clone())
            .await;
        assert_error(s, &b, 413, "payload_too_large");
        let (s, b) = app
            .call(
                method.clone(),
                path,
                &acme.write,
                Some(json!({ "sku": "A", "name": 1, "price": 1 })),
            )
            .await;
        assert_error(s, &b, 422, "validation_failed");
    }
    let (s, b) = app
        .post(
            "/v1/products",
            &acme.write,
            json!({ "sku": "A", "name": "A", "price": { "currency": "USD", "amount": "1" }, "x": 1 }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .put(
            "/v1/products/A",
            &acme.write,
            json!({ "sku": "A", "name": "A", "price": { "currency": "USD", "amount": "1" } }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .put(
            "/v1/products/A",
            &acme.write,
            json!({ "name": "A", "price": { "currency": "USD", "amount": "1", "cents": 100 } }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
}

both_backends!(
    products_crud,
    products_list,
    products_tenant_isolation,
    products_roles_and_malformed_input
);
