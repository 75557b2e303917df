//! API tests: GDPR export (everything held on a customer) and erasure
//! (personal data gone, history and totals intact, idempotent), tenant
//! isolation and roles.

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use serde_json::json;

/// A customer with personal data, two interactions (one purchase with line
/// items), loyalty points, a redemption and a tier. Returns the customer id.
async fn rich_customer(app: &TestApp, t: &TestTenant) -> String {
    let (s, c) = app
        .post(
            "/v1/customers",
            &t.write,
            json!({
                "external_id": "crm-42",
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+44 20 7946 0000",
                "attributes": { "birthday": "1815-12-10", "newsletter": true }
            }),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let cid = c["id"].as_str().unwrap().to_string();
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({
                "customer_id": cid, "kind": "purchase", "channel": "web",
                "occurred_at": "2024-03-01T10:00:00Z", "currency": "EUR",
                "items": [{ "sku": "CD-1", "quantity": 2, "unit_price": "9.99" }, { "sku": "CD-2", "quantity": 1, "unit_price": "5.00" }],
                "payload": { "shipping_address": "12 St James's Square", "note": "gift" }
            }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": cid, "kind": "visit", "channel": "store", "occurred_at": "2024-03-02T09:00:00Z",
                    "payload": { "device": "Ada's phone" } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.write,
            json!({ "kind": "earn", "points": 300, "reason": "purchase" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, reward) = app
        .post(
            "/v1/loyalty/rewards",
            &t.admin,
            json!({ "name": "Mug", "cost_points": 120 }),
        )
        .await;
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/redeem"),
            &t.write,
            json!({ "reward_id": reward["id"] }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, tier) = app
        .post("/v1/loyalty/tiers", &t.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    let (s, b) = app
        .put(
            &format!("/v1/customers/{cid}/loyalty/tier"),
            &t.admin,
            json!({ "tier_id": tier["id"], "reason": "vip" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    cid
}

async fn export_then_erase(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = rich_customer(&app, &t).await;

    let (s, export) = app.get(&format!("/v1/customers/{cid}/export"), &t.admin).await;
    assert_eq!(s, 200, "{export}");
    assert_eq!(export["format_version"], 1);
    assert!(export["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(export["tenant_id"], t.id.as_str());
    let c = &export["customer"];
    assert_eq!(
        (&c["id"], &c["external_id"], &c["name"], &c["email"], &c["phone"]),
        (
            &json!(cid),
            &json!("crm-42"),
            &json!("Ada Lovelace"),
            &json!("ada@example.com"),
            &json!("+44 20 7946 0000")
        )
    );
    assert_eq!(c["attributes"], json!({ "birthday": "1815-12-10", "newsletter": true }));
    assert!(c["erased_at"].is_null());
    let interactions = export["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 2);
    let purchase = &interactions[0];
    assert_eq!(
        (purchase["kind"].as_str(), purchase["channel"].as_str()),
        (Some("purchase"), Some("web"))
    );
    assert_eq!(
        (purchase["amount_minor"].as_i64(), purchase["currency"].as_str()),
        (Some(2498), Some("EUR"))
    );
    assert_eq!(purchase["occurred_at"], "2024-03-01T10:00:00Z");
    assert_eq!(
        purchase["payload"],
        json!({ "shipping_address": "12 St James's Square", "note": "gift" })
    );
    assert_eq!(
        purchase["items"],
        json!([
            { "line_no": 1, "sku": "CD-1", "quantity": 2, "unit_price_minor": 999 },
            { "line_no": 2, "sku": "CD-2", "quantity": 1, "unit_price_minor": 500 }
        ])
    );
    assert_eq!(interactions[1]["payload"], json!({ "device": "Ada's phone" }));
    assert_eq!(interactions[1]["items"], json!([]));
    let loyalty = &export["loyalty"];
    assert_eq!(
        (
            loyalty["account"]["balance"].as_i64(),
            loyalty["account"]["lifetime_earned"].as_i64()
        ),
        (Some(180), Some(300))
    );
    let ledger = loyalty["ledger"].as_array().unwrap();
    let lines: Vec<(i64, &str, i64)> = ledger
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap(),
                e["points"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, vec![(1, "earn", 300), (2, "redeem", -120)]);
    assert_eq!(
        loyalty["allocations"],
        json!([{ "debit_id": ledger[1]["id"], "credit_id": ledger[0]["id"], "points": 120 }])
    );
    let changes = loyalty["tier_changes"].as_array().unwrap();
    assert_eq!((changes.len(), changes[0]["reason"].as_str()), (1, Some("vip")));
    assert_eq!(loyalty["account"]["tier_id"], changes[0]["to_tier_id"]);

    // Erase: 200, and a second call gives the same result.
    let (s, first) = app
        .post(&format!("/v1/customers/{cid}/erase"), &t.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        (first["customer_id"].as_str(), first["interactions_scrubbed"].as_i64()),
        (Some(cid.as_str()), Some(2))
    );
    let (s, second) = app
        .post(&format!("/v1/customers/{cid}/erase"), &t.admin, json!({}))
        .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second, first);

    let (s, after) = app.get(&format!("/v1/customers/{cid}/export"), &t.admin).await;
    assert_eq!(s, 200, "{after}");
    let c = &after["customer"];
    assert_eq!(c["external_id"], format!("erased:{cid}"));
    assert_eq!(
        (c["name"].is_null(), c["email"].is_null(), c["phone"].is_null()),
        (true, true, true)
    );
    assert_eq!(c["attributes"], json!({}));
    assert_eq!(c["erased_at"], first["erased_at"]);
    // No trace of the personal values anywhere in the document.
    let text = after.to_string();
    for secret in ["Ada", "ada@example.com", "7946", "1815", "crm-42", "St James"] {
        assert!(!text.contains(secret), "{secret:?} survived erasure: {text}");
    }
    // History is intact: kinds, channels, times, amounts, items, ledger, balance.
    let scrubbed = after["interactions"].as_array().unwrap();
    assert_eq!(scrubbed.len(), 2);
    for (before, now) in interactions.iter().zip(scrubbed) {
        assert_eq!(now["payload"], json!({}));
        for field in [
            "id",
            "kind",
            "channel",
            "occurred_at",
            "amount_minor",
            "currency",
            "items",
            "created_at",
        ] {
            assert_eq!(now[field], before[field], "{field}");
        }
    }
    assert_eq!(after["loyalty"]["ledger"], loyalty["ledger"]);
    assert_eq!(after["loyalty"]["allocations"], loyalty["allocations"]);
    assert_eq!(after["loyalty"]["account"]["balance"], 180);
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(account["balance"], 180);

    // The old identifiers no longer find anyone; the external id is free again.
    let (s, list) = app.get("/v1/customers?external_id=crm-42", &t.read).await;
    assert_eq!((s.as_u16(), list["items"].clone()), (200, json!([])), "{list}");
    let (s, list) = app.get("/v1/customers?email=ada@example.com", &t.read).await;
    assert_eq!((s.as_u16(), list["items"].clone()), (200, json!([])), "{list}");
    let (s, b) = app.get("/v1/customers/by-external-id/crm-42", &t.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, fresh) = app
        .post("/v1/customers", &t.write, json!({ "external_id": "crm-42" }))
        .await;
    assert_eq!(s, 201, "{fresh}");
    assert_ne!(fresh["id"], json!(cid));
}

async fn isolation_and_roles(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Other").await;
    let cid = rich_customer(&app, &a).await;
    let export = format!("/v1/customers/{cid}/export");
    let erase = format!("/v1/customers/{cid}/erase");

    // Another tenant's admin: 404 for both, nothing erased.
    let (s, body) = app.get(&export, &b.admin).await;
    assert_error(s, &body, 404, "not_found");
    let (s, body) = app.post(&erase, &b.admin, json!({})).await;
    assert_error(s, &body, 404, "not_found");
    // Write and read keys of the same tenant: 403; platform keys too.
    for key in [&a.write, &a.read, &app.platform] {
        let (s, body) = app.get(&export, key).await;
        assert_error(s, &body, 403, "forbidden");
        let (s, body) = app.post(&erase, key, json!({})).await;
        assert_error(s, &body, 403, "forbidden");
    }
    // Unknown customer.
    let (s, body) = app.get("/v1/customers/nobody/export", &a.admin).await;
    assert_error(s, &body, 404, "not_found");
    let (s, body) = app.post("/v1/customers/nobody/erase", &a.admin, json!({})).await;
    assert_error(s, &body, 404, "not_found");

    let (s, doc) = app.get(&export, &a.admin).await;
    assert_eq!(s, 200);
    assert_eq!(
        (doc["customer"]["name"].as_str(), doc["customer"]["erased_at"].is_null()),
        (Some("Ada Lovelace"), true)
    );
    assert_eq!(doc["interactions"][0]["payload"]["note"], "gift");
}

both_backends!(export_then_erase, isolation_and_roles);
