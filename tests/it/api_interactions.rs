//! API tests: interactions — ingest validation and exact money, idempotency
//! (replays, conflicts, concurrent retries), batches with mixed items,
//! timelines, tenant kinds, tenant isolation, roles and malformed input.

use std::collections::HashSet;
use std::time::Instant;

use crate::support::{Backend, TestApp, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn new_customer(app: &TestApp, token: &str, external_id: &str) -> String {
    let (s, b) = app
        .post("/v1/customers", token, json!({ "external_id": external_id }))
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

/// Every interaction of a customer, walking the timeline.
async fn timeline_ids(app: &TestApp, token: &str, customer: &str) -> Vec<String> {
    let (s, b) = app
        .get(&format!("/v1/customers/{customer}/interactions?limit=500"), token)
        .await;
    assert_eq!(s, 200, "{b}");
    b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

async fn ingest_and_money(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let cid = new_customer(&app, &acme.write, "c1").await;

    // Items without amount: the sum, exactly ("0.1" + "0.2" is 30 cents).
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": cid, "kind": "purchase", "currency": "usd", "channel": "web",
                    "occurred_at": "2024-05-01T12:30:00.250Z",
                    "items": [ { "sku": "A-1", "quantity": 1, "unit_price": "0.1" },
                               { "sku": "B-2", "quantity": 1, "unit_price": 0.2 } ],
                    "payload": { "order": "o-1" } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        b["amount"],
        json!({ "currency": "USD", "amount": "0.30", "amount_minor": 30 })
    );
    assert_eq!(
        b["items"],
        json!([ { "sku": "A-1", "quantity": 1, "unit_price": { "currency": "USD", "amount": "0.10", "amount_minor": 10 } },
                { "sku": "B-2", "quantity": 1, "unit_price": { "currency": "USD", "amount": "0.20", "amount_minor": 20 } } ])
    );
    assert_eq!(b["occurred_at"], "2024-05-01T12:30:00.25Z");
    assert_eq!(b["customer_id"], cid.as_str());
    assert_eq!(b["channel"], "web");
    assert_eq!(b["payload"], json!({ "order": "o-1" }));
    assert_eq!(b["idempotency_key"], Value::Null);
    let id = b["id"].as_str().unwrap().to_string();
    let (s, read) = app.get(&format!("/v1/interactions/{id}"), &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(read, b, "what is read back is what ingest returned");

    // Quantities multiply; an explicit amount wins over the items' sum.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": cid, "kind": "purchase", "currency": "EUR", "amount": "25",
                    "items": [ { "sku": "C", "quantity": 3, "unit_price": "9.99" } ] }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["amount"]["amount_minor"], 2500);
    assert_eq!(b["items"][0]["unit_price"]["amount_minor"], 999);

    // JSON numbers by their shortest form; JPY has no decimals; BHD three.
    for (amount, currency, text, minor) in [
        (json!(29.33), "USD", "29.33", 2933),
        (json!(1500), "JPY", "1500", 1500),
        (json!("1.234"), "BHD", "1.234", 1234),
        (json!("10.50"), "USD", "10.50", 1050),
        (json!("1.500"), "USD", "1.50", 150),
    ] {
        let (s, b) = app
            .post(
                "/v1/interactions",
                &acme.write,
                json!({ "customer_id": cid, "kind": "purchase", "amount": amount, "currency": currency }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(
            b["amount"],
            json!({ "currency": currency, "amount": text, "amount_minor": minor })
        );
    }

    // Validation failures name the field.
    let base = json!({ "customer_id": cid, "kind": "purchase" });
    let with = |extra: Value| {
        let mut body = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, field) in [
        (with(json!({ "amount": "1.005", "currency": "USD" })), "amount"),
        (with(json!({ "amount": 1.005, "currency": "USD" })), "amount"),
        (with(json!({ "amount": "1.5", "currency": "JPY" })), "amount"),
        (with(json!({ "amount": "12,50", "currency": "USD" })), "amount"),
        (with(json!({ "amount": "1", "currency": "XYZ" })), "currency"),
        (with(json!({ "amount": "1", "currency": "XAU" })), "currency"),
        (with(json!({ "amount": "-5", "currency": "USD" })), "amount"),
        (with(json!({ "amount": "5" })), "currency"),
        (with(json!({})), "amount"),
        (
            with(json!({ "currency": "USD", "items": [ { "sku": "A", "quantity": 0, "unit_price": "1" } ] })),
            "items[0].quantity",
        ),
        (
            with(json!({ "currency": "USD", "items": [ { "sku": "A", "quantity": 1, "unit_price": "-1" } ] })),
            "items[0].unit_price",
        ),
        (
            with(json!({ "currency": "USD", "items": [ { "sku": "A", "quantity": 1, "unit_price": "0.001" } ] })),
            "items[0].unit_price",
        ),
        (
            with(json!({ "currency": "USD", "items": [ { "sku": "", "quantity": 1, "unit_price": "1" } ] })),
            "items[0].sku",
        ),
        (
            with(json!({ "amount": "92233720368547758.08", "currency": "USD" })),
            "amount",
        ),
        (with(json!({ "kind": "teleport" })), "kind"),
        (with(json!({ "kind": "Bad Kind" })), "kind"),
        (with(json!({ "customer_external_id": "c1" })), "customer_id"),
        (json!({ "kind": "visit" }), "customer_id"),
        (
            json!({ "customer_id": cid, "kind": "visit", "payload": [1, 2] }),
            "payload",
        ),
        (
            json!({ "customer_id": cid, "kind": "visit", "payload": { "x": "y".repeat(64 * 1024) } }),
            "payload",
        ),
        (
            json!({ "customer_id": cid, "kind": "visit", "currency": "USD" }),
            "currency",
        ),
        (
            json!({ "customer_id": cid, "kind": "visit", "idempotency_key": "" }),
            "idempotency_key",
        ),
    ] {
        let (s, b) = app.post("/v1/interactions", &acme.write, body.clone()).await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{body} -> {b}");
    }
    // Too many significant digits for a JSON number: send a string instead.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            with(json!({ "amount": 1234567890.1234567, "currency": "USD" })),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    // Non-purchase kinds may carry a negative amount (a refund, say).
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": cid, "kind": "complaint", "amount": "-5", "currency": "USD" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["amount"]["amount"], "-5.00");

    // Unknown customer id: 404. An unknown external id creates the customer.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": "nobody", "kind": "visit" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_external_id": "walk-in", "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, c) = app.get("/v1/customers/by-external-id/walk-in", &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(c["id"], b["customer_id"]);
    let (s, b2) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_external_id": "walk-in", "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(b2["customer_id"], b["customer_id"], "the existing customer is reused");
    let (s, b) = app.get("/v1/interactions/nope", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
}

async fn idempotent_ingest(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let cid = new_customer(&app, &acme.write, "c1").await;
    let body = json!({ "customer_id": cid, "kind": "purchase", "amount": "29.33", "currency": "USD",
                       "occurred_at": "2024-01-01T00:00:00Z", "idempotency_key": "order-1", "payload": { "a": 1, "b": 2 } });

    let first = app
        .client
        .post(app.url("/v1/interactions"))
        .bearer_auth(&acme.write)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // Same key, same request (amount as a number, keys reordered): 200, same result.
    let same = json!({ "idempotency_key": "order-1", "payload": { "b": 2, "a": 1 }, "customer_id": cid, "kind": "purchase",
                       "amount": 29.33, "currency": "USD", "occurred_at": "2024-01-01T00:00:00Z" });
    let again = app
        .client
        .post(app.url("/v1/interactions"))
        .bearer_auth(&acme.write)
        .json(&same)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);
    assert_eq!(
        timeline_ids(&app, &acme.read, &cid).await,
        vec![first["id"].as_str().unwrap().to_string()]
    );

    // Same key, different request: 409.
    let mut different = body.clone();
    different["amount"] = json!("29.34");
    let (s, b) = app.post("/v1/interactions", &acme.write, different).await;
    assert_error(s, &b, 409, "idempotency_conflict");
    let mut no_time = body.clone();
    no_time.as_object_mut().unwrap().remove("occurred_at");
    let (s, b) = app.post("/v1/interactions", &acme.write, no_time).await;
    assert_error(s, &b, 409, "idempotency_conflict");

    // A retry without occurred_at is still the same request.
    let lazy = json!({ "customer_external_id": "new-c", "kind": "visit", "idempotency_key": "visit-1" });
    let (s, a) = app.post("/v1/interactions", &acme.write, lazy.clone()).await;
    assert_eq!(s, 201, "{a}");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (s, b) = app.post("/v1/interactions", &acme.write, lazy).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(a, b);

    // 20 concurrent identical requests store exactly one row.
    let racer = json!({ "customer_external_id": "racer", "kind": "purchase", "amount": "5", "currency": "USD",
                        "idempotency_key": "race-1" });
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let req = app
            .client
            .post(app.url("/v1/interactions"))
            .bearer_auth(&acme.write)
            .json(&racer);
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }));
    }
    let mut statuses = Vec::new();
    let mut ids = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        statuses.push(status);
        ids.insert(
            body["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{status} {body}"))
                .to_string(),
        );
    }
    statuses.sort();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19, "{statuses:?}");
    assert_eq!(ids.len(), 1);
    let (_, racer_customer) = app.get("/v1/customers/by-external-id/racer", &acme.read).await;
    let racer_id = racer_customer["id"].as_str().unwrap();
    assert_eq!(timeline_ids(&app, &acme.read, racer_id).await.len(), 1);
    let (_, all) = app.get("/v1/customers?external_id=racer", &acme.read).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "one customer too");
}

async fn batch_ingest(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let cid = new_customer(&app, &acme.write, "c1").await;
    let items = json!([
        { "customer_id": cid, "kind": "purchase", "amount": "10", "currency": "USD", "idempotency_key": "k1" },
        { "customer_id": cid, "kind": "teleport" },
        { "customer_id": cid, "kind": "visit", "amount": true },
        { "customer_id": "ghost", "kind": "visit" },
        { "customer_external_id": "batch-new", "kind": "visit", "idempotency_key": "k2" },
        { "customer_id": cid, "kind": "purchase", "amount": "10", "currency": "USD", "idempotency_key": "k1" },
        { "customer_id": cid, "kind": "purchase", "amount": "11", "currency": "USD", "idempotency_key": "k1" },
        { "customer_id": cid, "kind": "purchase", "amount": "1.001", "currency": "USD" },
        "not an object",
        { "customer_external_id": "batch-fail", "kind": "purchase" },
    ]);
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": items }))
        .await;
    assert_eq!(s, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    let statuses: Vec<&str> = results.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        vec![
            "created", "error", "error", "error", "created", "replayed", "error", "error", "error", "error"
        ]
    );
    assert_eq!(
        (b["created"].as_u64(), b["replayed"].as_u64(), b["failed"].as_u64()),
        (Some(2), Some(1), Some(7))
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    let code = |i: usize| results[i]["error"]["code"].as_str().unwrap().to_string();
    assert_eq!(code(1), "validation_failed");
    assert_eq!(results[1]["error"]["details"]["field"], "kind");
    assert_eq!(code(2), "validation_failed");
    assert_eq!(code(3), "not_found");
    assert_eq!(code(6), "idempotency_conflict");
    assert_eq!(code(7), "validation_failed");
    assert_eq!(code(8), "validation_failed");
    assert_eq!(results[5]["interaction"], results[0]["interaction"]);

    // Good items are stored; failed ones left nothing behind.
    let (s, stored) = app
        .get(
            &format!("/v1/interactions/{}", results[0]["interaction"]["id"].as_str().unwrap()),
            &acme.read,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(stored, results[0]["interaction"]);
    assert_eq!(timeline_ids(&app, &acme.read, &cid).await.len(), 1);
    let (s, _) = app.get("/v1/customers/by-external-id/batch-new", &acme.read).await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/v1/customers/by-external-id/batch-fail", &acme.read).await;
    assert_eq!(s, 404, "a failed item creates no customer");

    // Limits: empty is fine; more than MAX_BATCH items is refused whole.
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": [] }))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b, json!({ "results": [], "created": 0, "replayed": 0, "failed": 0 }));
    let too_many: Vec<Value> = (0..=rapport::api::interactions::MAX_BATCH).map(|_| json!({})).collect();
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": too_many }))
        .await;
    assert_error(s, &b, 422, "batch_too_large");
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": {} }))
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .post(
            "/v1/interactions/batch",
            &acme.write,
            json!({ "items": [], "extra": 1 }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
}

/// 1,000 purchases in one batch (the importer's unit of work), then the same
/// batch again (all replays). Prints the timings.
async fn batch_of_max_size(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let max = rapport::api::interactions::MAX_BATCH;
    let items: Vec<Value> = (0..max)
        .map(|i| {
            json!({ "customer_external_id": format!("cust-{}", i % 250), "kind": "purchase",
                    "occurred_at": format!("2024-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                    "amount": format!("{}.{:02}", i % 100, i % 97), "currency": "USD",
                    "items": [ { "sku": format!("sku-{}", i % 7), "quantity": 1 + (i % 3) as i64, "unit_price": "1.25" } ],
                    "idempotency_key": format!("cdnow-{i}") })
        })
        .collect();
    let expected_minor: i64 = (0..max).map(|i| (i % 100) as i64 * 100 + (i % 97) as i64).sum();

    let started = Instant::now();
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": items }))
        .await;
    let first = started.elapsed();
    assert_eq!(s, 200);
    assert_eq!(
        (b["created"].as_u64(), b["failed"].as_u64()),
        (Some(max as u64), Some(0)),
        "{}",
        b["results"][0]
    );
    let started = Instant::now();
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": items }))
        .await;
    let replay = started.elapsed();
    assert_eq!(s, 200);
    assert_eq!(b["replayed"].as_u64(), Some(max as u64));
    eprintln!("{backend:?}: batch of {max}: {first:?} to ingest, {replay:?} to replay");

    // Total spend over all customers matches the input to the cent.
    let (_, page) = app.get("/v1/customers?limit=500", &acme.read).await;
    let customers = page["items"].as_array().unwrap();
    assert_eq!(customers.len(), 250);
    let mut total = 0;
    let mut purchases = 0;
    for c in customers {
        let (_, full) = app
            .get(&format!("/v1/customers/{}", c["id"].as_str().unwrap()), &acme.read)
            .await;
        total += full["stats"]["total_spend"][0]["amount_minor"].as_i64().unwrap();
        purchases += full["stats"]["purchase_count"].as_i64().unwrap();
    }
    assert_eq!(purchases, max as i64);
    assert_eq!(total, expected_minor);
}

async fn timeline_order_and_pagination(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let cid = new_customer(&app, &acme.write, "c1").await;
    let other = new_customer(&app, &acme.write, "c2").await;
    let times = [
        ("visit", "2024-01-03T00:00:00Z"),
        ("purchase", "2024-01-01T00:00:00Z"),
        ("visit", "2024-01-05T00:00:00Z"),
        ("email_open", "2024-01-02T00:00:00Z"),
        ("visit", "2024-01-02T00:00:00Z"),
        ("email_open", "2024-01-02T00:00:00Z"),
        ("purchase", "2024-01-04T00:00:00Z"),
    ];
    let mut created = Vec::new();
    for (kind, at) in times {
        let mut body = json!({ "customer_id": cid, "kind": kind, "occurred_at": at });
        if kind == "purchase" {
            body["amount"] = json!("1");
            body["currency"] = json!("USD");
        }
        let (s, b) = app.post("/v1/interactions", &acme.write, body).await;
        assert_eq!(s, 201, "{b}");
        created.push((at.to_string(), b["id"].as_str().unwrap().to_string()));
    }
    let (s, _) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": other, "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201);
    // Newest first; equal times by id, descending.
    created.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = created.iter().map(|(_, id)| id.clone()).collect();

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers/{cid}/interactions?limit=3&cursor={c}"),
            None => format!("/v1/customers/{cid}/interactions?limit=3"),
        };
        let (s, b) = app.get(&path, &acme.read).await;
        assert_eq!(s, 200, "{b}");
        let items = b["items"].as_array().unwrap();
        pages.push(items.len());
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 1]);
    assert_eq!(seen, expected);

    // Filters.
    let (_, b) = app
        .get(&format!("/v1/customers/{cid}/interactions?kind=visit"), &acme.read)
        .await;
    let kinds: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["visit", "visit", "visit"]);
    let (_, b) = app
        .get(
            &format!("/v1/customers/{cid}/interactions?after=2024-01-02T00:00:00Z&before=2024-01-05T00:00:00Z"),
            &acme.read,
        )
        .await;
    let at: Vec<&str> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["occurred_at"].as_str().unwrap())
        .collect();
    assert_eq!(at, vec!["2024-01-04T00:00:00Z", "2024-01-03T00:00:00Z"]);
    let (_, b) = app
        .get(&format!("/v1/customers/{cid}/interactions?kind=purchase"), &acme.read)
        .await;
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["amount"]["amount_minor"] == 100)
    );

    // Bad input.
    let (s, b) = app
        .get(&format!("/v1/customers/{cid}/interactions?cursor=bad"), &acme.read)
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .get(&format!("/v1/customers/{cid}/interactions?limit=501"), &acme.read)
        .await;
    assert_error(s, &b, 422, "validation_failed");
    for bad in ["limit=x", "after=soon", "sort=asc"] {
        let (s, b) = app
            .get(&format!("/v1/customers/{cid}/interactions?{bad}"), &acme.read)
            .await;
        assert_error(s, &b, 400, "invalid_query");
    }
    let (s, b) = app.get("/v1/customers/nobody/interactions", &acme.read).await;
    assert_error(s, &b, 404, "not_found");
}

async fn interaction_kinds(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let other = app.tenant("Other").await;

    let (s, b) = app
        .post(
            "/v1/interaction-kinds",
            &acme.admin,
            json!({ "name": "store.return", "description": "Returned goods" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["name"], "store.return");
    assert_eq!(b["built_in"], false);
    let (s, b) = app
        .post("/v1/interaction-kinds", &acme.admin, json!({ "name": "store.return" }))
        .await;
    assert_error(s, &b, 409, "kind_exists");
    let (s, b) = app
        .post("/v1/interaction-kinds", &acme.write, json!({ "name": "webinar" }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    for bad in ["purchase", "Upper", "1abc", "", "has space", &"a".repeat(65)] {
        let (s, b) = app
            .post("/v1/interaction-kinds", &acme.admin, json!({ "name": bad }))
            .await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], "name");
    }
    let (s, b) = app
        .post(
            "/v1/interaction-kinds",
            &acme.admin,
            json!({ "name": "x", "colour": 1 }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");

    let (s, b) = app.get("/v1/interaction-kinds", &acme.read).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "purchase",
            "visit",
            "email_open",
            "email_click",
            "support_ticket",
            "complaint",
            "referral",
            "satisfaction",
            "message_delivered",
            "message_opened",
            "message_clicked",
            "message_replied",
            "message_bounced",
            "message_unsubscribed",
            "store.return"
        ]
    );
    let (_, b) = app.get("/v1/interaction-kinds", &other.read).await;
    assert_eq!(b.as_array().unwrap().len(), 14, "another tenant's kinds are not listed");

    // The custom kind can be ingested here, not in the other tenant.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_external_id": "c", "kind": "store.return" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post(
            "/v1/interactions",
            &other.write,
            json!({ "customer_external_id": "c", "kind": "store.return" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "kind");
}

async fn interactions_tenant_isolation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let other = app.tenant("Other").await;
    let cid = new_customer(&app, &acme.write, "c1").await;
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": cid, "kind": "visit", "idempotency_key": "shared-key" }),
        )
        .await;
    assert_eq!(s, 201);
    let iid = b["id"].as_str().unwrap().to_string();

    let (s, b) = app.get(&format!("/v1/interactions/{iid}"), &other.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .get(&format!("/v1/customers/{cid}/interactions"), &other.admin)
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/interactions",
            &other.write,
            json!({ "customer_id": cid, "kind": "visit" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/interactions/batch",
            &other.write,
            json!({ "items": [ { "customer_id": cid, "kind": "visit" } ] }),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["error"]["code"], "not_found");
    // Kind names are per tenant too: Other may define one Acme has.
    let (s, b) = app
        .post("/v1/interaction-kinds", &acme.admin, json!({ "name": "webinar" }))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post("/v1/interaction-kinds", &other.admin, json!({ "name": "webinar" }))
        .await;
    assert_eq!(s, 201, "{b}");
    // An idempotency key is per tenant: the same key elsewhere is a new interaction...
    let (s, b) = app
        .post(
            "/v1/interactions",
            &other.write,
            json!({ "customer_external_id": "c1", "kind": "visit", "idempotency_key": "shared-key" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_ne!(b["id"], iid.as_str());
    // ...that lands on Other's own customer, not Acme's.
    assert_ne!(b["customer_id"], cid.as_str());
    assert_eq!(timeline_ids(&app, &acme.read, &cid).await, vec![iid]);
}

async fn interactions_roles_and_malformed_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.read,
            json!({ "customer_external_id": "c", "kind": "visit" }),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.read, json!({ "items": [] }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app
        .post("/v1/interaction-kinds", &acme.read, json!({ "name": "x" }))
        .await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/interaction-kinds", &app.platform).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = app.get("/v1/interactions/x", "").await;
    assert_error(s, &b, 401, "unauthorized");

    let big = {
        let mut v = b"{\"kind\":\"visit\",\"payload\":{\"x\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', rapport::api::MAX_BODY_BYTES + 1));
        v.extend(b"\"}}");
        v
    };
    for path in ["/v1/interactions", "/v1/interactions/batch", "/v1/interaction-kinds"] {
        let (s, b) = app
            .raw(Method::POST, path, &acme.admin, "application/json", b"{,".to_vec())
            .await;
        assert_error(s, &b, 400, "invalid_json");
        let (s, b) = app
            .raw(Method::POST, path, &acme.admin, "application/json", big.clone())
            .await;
        assert_error(s, &b, 413, "payload_too_large");
        let (s, b) = app
            .raw(Method::POST, path, &acme.admin, "text/plain", b"{}".to_vec())
            .await;
        assert_error(s, &b, 415, "unsupported_media_type");
    }
    for body in [
        json!({ "customer_external_id": "c", "kind": 7 }),
        json!({ "customer_external_id": "c", "kind": "visit", "colour": "red" }),
        json!({ "customer_external_id": "c", "kind": "visit", "occurred_at": "yesterday" }),
        json!({ "customer_external_id": "c", "kind": "purchase", "currency": "USD", "items": [ { "sku": "a", "quantity": 1.5, "unit_price": "1" } ] }),
        json!({ "customer_external_id": "c", "kind": "purchase", "currency": "USD", "items": [ { "sku": "a", "quantity": 1, "unit_price": "1", "x": 1 } ] }),
    ] {
        let (s, b) = app.post("/v1/interactions", &acme.write, body).await;
        assert_error(s, &b, 422, "validation_failed");
    }
}

/// The OpenAPI document describes every endpoint of this slice.
async fn openapi_lists_the_endpoints(backend: Backend) {
    let app = TestApp::start(backend).await;
    let (s, doc) = app.get("/v1/openapi.json", "").await;
    assert_eq!(s, 200);
    for (path, methods) in [
        ("/v1/customers", &["get", "post"][..]),
        ("/v1/customers/{id}", &["get", "patch", "delete"][..]),
        ("/v1/customers/by-external-id/{external_id}", &["get"][..]),
        ("/v1/customers/{id}/interactions", &["get"][..]),
        ("/v1/interactions", &["post"][..]),
        ("/v1/interactions/batch", &["post"][..]),
        ("/v1/interactions/{id}", &["get"][..]),
        ("/v1/interaction-kinds", &["get", "post"][..]),
        ("/v1/products", &["get", "post"][..]),
        ("/v1/products/{sku}", &["get", "put", "delete"][..]),
    ] {
        for m in methods {
            assert!(
                doc["paths"][path][m].is_object(),
                "{m} {path} missing from the OpenAPI document"
            );
        }
    }
    for schema in [
        "NewInteraction",
        "Interaction",
        "Money",
        "NewCustomer",
        "Customer",
        "CustomerPatch",
        "Product",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

/// Two batches creating the same new customers in opposite orders, at the
/// same time: on PostgreSQL they can deadlock; the store retries the losing
/// transaction, so both succeed and every customer exists once.
async fn concurrent_batches_creating_the_same_customers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let item = |n: usize, tag: &str| json!({ "customer_external_id": format!("c{n}"), "kind": "visit", "idempotency_key": format!("{tag}-{n}") });
    let forward: Vec<_> = (0..60).map(|n| item(n, "f")).collect();
    let backward: Vec<_> = (0..60).rev().map(|n| item(n, "b")).collect();
    for _round in 0..3 {
        let (a, b) = tokio::join!(
            app.post("/v1/interactions/batch", &t.write, json!({ "items": forward.clone() })),
            app.post("/v1/interactions/batch", &t.write, json!({ "items": backward.clone() })),
        );
        for (s, body) in [a, b] {
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["failed"], 0, "{body}");
        }
    }
    let (s, body) = app.get("/v1/customers?limit=500", &t.read).await;
    assert_eq!(s, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 60, "{body}");
}

/// Amounts have a documented ceiling (422 above it, in the interaction's
/// currency), and a customer's statistics are summed without overflow even
/// over amounts no request can send any more (stored before the ceiling
/// existed): the total is capped, the customer stays readable.
// Writes rows past the API's ceilings straight into the database, which no
// request can: the sums must still not overflow.
#[allow(clippy::disallowed_methods)]
async fn money_ceiling_and_overflow_safe_sums(backend: Backend) {
    use rapport::store::money::MAX_AMOUNT_MINOR;
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let cid = new_customer(&app, &acme.write, "rich").await;
    let purchase =
        |amount: Value| json!({ "customer_id": cid, "kind": "purchase", "currency": "USD", "amount": amount });

    for too_large in [
        json!("92233720368547758.07"),
        json!("10000000000000.01"),
        json!("-10000000000000.01"),
        json!(1e16),
    ] {
        let (s, b) = app
            .post("/v1/interactions", &acme.write, purchase(too_large.clone()))
            .await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], "amount", "{too_large}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("10000000000000.00 USD"),
            "{b}"
        );
    }
    // Items whose total passes the ceiling, and a catalogue price above it.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": cid, "kind": "purchase", "currency": "JPY",
                    "items": [{ "sku": "A", "quantity": 3, "unit_price": MAX_AMOUNT_MINOR / 2 }] }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "items");
    let (s, b) = app
        .post(
            "/v1/products",
            &acme.write,
            json!({ "sku": "X", "name": "x", "price": { "currency": "USD", "amount": "92233720368547758.07" } }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "price.amount");

    // At the ceiling: accepted, and summed exactly.
    for _ in 0..3 {
        let (s, b) = app
            .post("/v1/interactions", &acme.write, purchase(json!("10000000000000.00")))
            .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["amount"]["amount_minor"], MAX_AMOUNT_MINOR);
    }
    let (s, b) = app.get(&format!("/v1/customers/{cid}"), &acme.read).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["stats"]["total_spend"][0]["amount_minor"],
        3 * MAX_AMOUNT_MINOR,
        "{b}"
    );
    assert_eq!(b["stats"]["total_spend"][0]["amount"], "30000000000000.00");

    // Two stored amounts of i64::MAX cents (as written before the ceiling):
    // their sum overflowed SQLite's SUM and PostgreSQL's BIGINT cast.
    let pool = app.server.state.store.db().pool();
    for n in 0..2 {
        sqlx::query(
            "INSERT INTO interactions (tenant_id, id, customer_id, kind, channel, occurred_at, amount_minor, currency, \
             payload, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, 'purchase', NULL, $4, $5, 'EUR', '{}', NULL, NULL, $4)",
        )
        .bind(&acme.id)
        .bind(rapport::store::new_id())
        .bind(&cid)
        .bind(rapport::store::now_ms() + n)
        .bind(i64::MAX)
        .execute(pool)
        .await
        .unwrap();
    }
    for _ in 0..2 {
        let (s, b) = app.get(&format!("/v1/customers/{cid}"), &acme.read).await;
        assert_eq!(s, 200, "{b}");
        let eur = b["stats"]["total_spend"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["currency"] == "EUR")
            .cloned()
            .unwrap_or_else(|| panic!("{b}"));
        assert_eq!(eur["amount_minor"], i64::MAX, "the total is capped: {b}");
        assert_eq!(b["stats"]["purchase_count"], 5, "{b}");
    }
}

/// The PostgreSQL deadlock of concurrent batches: 6 batches at a time of 40
/// items over the same 8 customers, every other batch in reverse order, two
/// rounds. Every batch answers 200 with all its items created, and every
/// item is stored exactly once.
async fn concurrent_reversed_batches_over_the_same_customers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let mut customers = Vec::new();
    for n in 0..8 {
        customers.push(new_customer(&app, &t.write, &format!("c{n}")).await);
    }
    let batch = |round: usize, b: usize| {
        let mut items: Vec<Value> = (0..40)
            .map(|i| {
                json!({ "customer_id": customers[i % 8], "kind": "purchase", "currency": "USD",
                        "amount": format!("{}.00", i + 1), "idempotency_key": format!("r{round}-b{b}-i{i}") })
            })
            .collect();
        if b % 2 == 1 {
            items.reverse();
        }
        json!({ "items": items })
    };
    for round in 0..2 {
        let requests = (0..6).map(|b| {
            let body = batch(round, b);
            let (app, key) = (&app, &t.write);
            async move { app.post("/v1/interactions/batch", key, body).await }
        });
        for (s, body) in futures_util::future::join_all(requests).await {
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["created"], 40, "{body}");
            assert_eq!(body["failed"], 0, "{body}");
        }
    }
    let mut keys = HashSet::new();
    for c in &customers {
        let (s, page) = app
            .get(&format!("/v1/customers/{c}/interactions?limit=500"), &t.read)
            .await;
        assert_eq!(s, 200);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2 * 6 * 40 / 8, "{c}");
        for i in items {
            assert!(
                keys.insert(i["idempotency_key"].as_str().unwrap().to_string()),
                "stored twice: {i}"
            );
        }
    }
    assert_eq!(keys.len(), 2 * 6 * 40);
}

both_backends!(
    money_ceiling_and_overflow_safe_sums,
    concurrent_reversed_batches_over_the_same_customers,
    concurrent_batches_creating_the_same_customers,
    openapi_lists_the_endpoints,
    ingest_and_money,
    idempotent_ingest,
    batch_ingest,
    batch_of_max_size,
    timeline_order_and_pagination,
    interaction_kinds,
    interactions_tenant_isolation,
    interactions_roles_and_malformed_input
);
