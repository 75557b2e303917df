//! Message triggers end to end on both backends: a tier change, a reward
//! becoming affordable and a score crossing a threshold each put exactly one
//! rendered message in the outbox, in the same transaction as the event;
//! conditions that do not match put none; the trigger API is tenant-scoped.
//!
//! Delivery is switched off (`[delivery] enabled = false`) so the messages
//! stay `pending` where the test can read them: what is delivered, and how,
//! is `api_messages`'s business.

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use rapport::store::TenantId;
use rapport::store::scores::NewScore;
use serde_json::{Value, json};

async fn start(backend: Backend) -> (TestApp, TestTenant, TestTenant) {
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false;
    config.plugins.rescore_interval_ms = Some(0);
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant_with_id("acme").await;
    let globex = app.tenant_with_id("globex").await;
    (app, acme, globex)
}

async fn customer(app: &TestApp, t: &TestTenant, external_id: &str) -> String {
    let (s, c) = app
        .post(
            "/v1/customers",
            &t.write,
            json!({ "external_id": external_id, "name": "Ada", "email": format!("{external_id}@example.com") }),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

async fn template(app: &TestApp, t: &TestTenant, name: &str, body: &str) {
    let (s, b) = app
        .put(
            &format!("/v1/message-templates/{name}"),
            &t.admin,
            json!({ "channel": "email", "subject": "News for {{ customer.name }}", "body": body }),
        )
        .await;
    assert!(s == 201 || s == 200, "{s}: {b}");
}

async fn trigger(app: &TestApp, t: &TestTenant, name: &str, when: Value, template: &str) -> Value {
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &t.admin,
            json!({ "name": name, "when": when, "channel": "email", "template": template }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn messages(app: &TestApp, t: &TestTenant, customer: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/v1/messages?customer_id={customer}"), &t.read).await;
    assert_eq!(s, 200, "{b}");
    b["items"].as_array().cloned().unwrap_or_default()
}

async fn tier(app: &TestApp, t: &TestTenant, name: &str, rank: i64) -> String {
    let (s, b) = app
        .post("/v1/loyalty/tiers", &t.admin, json!({ "name": name, "rank": rank }))
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

async fn set_tier(app: &TestApp, t: &TestTenant, customer: &str, tier: Option<&str>) {
    let (s, b) = app
        .put(
            &format!("/v1/customers/{customer}/loyalty/tier"),
            &t.admin,
            json!({ "tier_id": tier, "reason": "test" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn tier_upgrades_message_once(backend: Backend) {
    let (app, acme, _) = start(backend).await;
    let silver = tier(&app, &acme, "Silver", 1).await;
    let gold = tier(&app, &acme, "Gold", 2).await;
    template(
        &app,
        &acme,
        "upgrade",
        "{{ customer.name }}, welcome to {{ data.to_tier_name }} ({{ data.to_tier }}, {{ data.direction }})",
    )
    .await;
    trigger(
        &app,
        &acme,
        "upgrades",
        json!({ "event": "tier_changed", "direction": "up" }),
        "upgrade",
    )
    .await;
    let ada = customer(&app, &acme, "ada").await;

    set_tier(&app, &acme, &ada, Some(&silver)).await;
    let sent = messages(&app, &acme, &ada).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["channel"], "email");
    assert_eq!(sent[0]["to"], "ada@example.com");
    assert_eq!(sent[0]["subject"], "News for Ada");
    assert_eq!(sent[0]["body"], format!("Ada, welcome to Silver ({silver}, up)"));
    assert_eq!(sent[0]["status"], "pending");

    // The same tier again is no change; a downgrade is not an upgrade.
    set_tier(&app, &acme, &ada, Some(&silver)).await;
    set_tier(&app, &acme, &ada, Some(&gold)).await;
    set_tier(&app, &acme, &ada, Some(&silver)).await;
    let sent = messages(&app, &acme, &ada).await;
    assert_eq!(sent.len(), 2, "one for silver, one for gold: {sent:?}");
    assert!(
        sent.iter()
            .any(|m| m["body"] == format!("Ada, welcome to Gold ({gold}, up)"))
    );

    // A disabled trigger stays quiet.
    let (_, list) = app.get("/v1/message-triggers", &acme.read).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(&format!("/v1/message-triggers/{id}/disable"), &acme.admin, json!({}))
        .await;
    assert_eq!((s.as_u16(), b["enabled"].clone()), (200, json!(false)), "{b}");
    set_tier(&app, &acme, &ada, Some(&gold)).await;
    assert_eq!(messages(&app, &acme, &ada).await.len(), 2);
}

async fn reward_becoming_affordable_messages_once(backend: Backend) {
    let (app, acme, _) = start(backend).await;
    let (s, reward) = app
        .post(
            "/v1/loyalty/rewards",
            &acme.admin,
            json!({ "name": "Free coffee", "cost_points": 100, "active": true }),
        )
        .await;
    assert_eq!(s, 201, "{reward}");
    template(
        &app,
        &acme,
        "treat",
        "You can now redeem {{ data.reward.name }} ({{ data.balance }} points)",
    )
    .await;
    trigger(
        &app,
        &acme,
        "affordable",
        json!({ "event": "reward_redeemable" }),
        "treat",
    )
    .await;
    let ada = customer(&app, &acme, "ada").await;
    let earn = |points: i64| {
        let app = &app;
        let acme = &acme;
        let ada = &ada;
        async move {
            let (s, b) = app
                .post(
                    &format!("/v1/customers/{ada}/loyalty/ledger"),
                    &acme.write,
                    json!({ "kind": "earn", "points": points, "reason": "test" }),
                )
                .await;
            assert_eq!(s, 201, "{b}");
        }
    };
    earn(60).await;
    assert!(messages(&app, &acme, &ada).await.is_empty(), "60 < 100");
    earn(50).await;
    let sent = messages(&app, &acme, &ada).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["body"], "You can now redeem Free coffee (110 points)");
    earn(10).await;
    assert_eq!(messages(&app, &acme, &ada).await.len(), 1, "already affordable before");
}

async fn score_crossing_messages_on_the_crossing_only(backend: Backend) {
    let (app, acme, _) = start(backend).await;
    template(
        &app,
        &acme,
        "winback",
        "Score {{ data.score }} after {{ data.previous }}",
    )
    .await;
    trigger(
        &app,
        &acme,
        "at-risk",
        json!({ "event": "score_crossed", "plugin": "churn", "threshold": 0.5, "direction": "below" }),
        "winback",
    )
    .await;
    let ada = customer(&app, &acme, "ada").await;
    let store = &app.server.state.store;
    let tenant = TenantId::for_tests("acme");
    let score = |value: f64, at: i64, plugin: &str| NewScore {
        customer_id: ada.clone(),
        plugin_id: plugin.to_owned(),
        value,
        label: None,
        segment: None,
        explanation: "test".into(),
        components: Vec::new(),
        computed_at: at,
        job_id: None,
        as_of: None,
        plugin_version: None,
    };
    // First score: not a crossing (include_first_score is off).
    store.save_scores(&tenant, &[score(0.3, 1_000, "churn")]).await.unwrap();
    assert!(messages(&app, &acme, &ada).await.is_empty());
    // Up, then down across 0.5: one message; another plugin's score: none.
    store.save_scores(&tenant, &[score(0.8, 2_000, "churn")]).await.unwrap();
    store.save_scores(&tenant, &[score(0.4, 3_000, "churn")]).await.unwrap();
    store.save_scores(&tenant, &[score(0.1, 4_000, "rfm")]).await.unwrap();
    // An older score than the stored one is not stored, so fires nothing.
    store.save_scores(&tenant, &[score(0.9, 2_500, "churn")]).await.unwrap();
    store.save_scores(&tenant, &[score(0.2, 5_000, "churn")]).await.unwrap();
    let sent = messages(&app, &acme, &ada).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["body"], "Score 0.4 after 0.8");
}

async fn trigger_api_validates_and_is_tenant_scoped(backend: Backend) {
    let (app, acme, globex) = start(backend).await;
    template(&app, &acme, "hello", "hello").await;
    let created = trigger(&app, &acme, "t1", json!({ "event": "reward_redeemable" }), "hello").await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["when"], json!({ "event": "reward_redeemable" }));
    assert_eq!(created["enabled"], true);

    // Validation.
    let bad =
        |when: Value, template: &str| json!({ "name": "t2", "when": when, "channel": "email", "template": template });
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &acme.admin,
            bad(json!({ "event": "reward_redeemable" }), "nope"),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &acme.admin,
            bad(json!({ "event": "birthday" }), "hello"),
        )
        .await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &acme.admin,
            json!({ "name": "t1", "when": { "event": "reward_redeemable" }, "channel": "email", "template": "hello" }),
        )
        .await;
    assert_error(s, &b, 409, "trigger_exists");
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &acme.write,
            bad(json!({ "event": "reward_redeemable" }), "hello"),
        )
        .await;
    assert_error(s, &b, 403, "forbidden");
    // A template in use cannot be deleted.
    let (s, b) = app.delete("/v1/message-templates/hello", &acme.admin).await;
    assert_error(s, &b, 409, "template_in_use");

    // Another tenant sees and touches nothing; globex cannot use acme's template.
    let (s, list) = app.get("/v1/message-triggers", &globex.read).await;
    assert_eq!((s.as_u16(), list["items"].clone()), (200, json!([])));
    let (s, b) = app.get(&format!("/v1/message-triggers/{id}"), &globex.read).await;
    assert_error(s, &b, 404, "not_found");
    for action in ["enable", "disable"] {
        let (s, b) = app
            .post(&format!("/v1/message-triggers/{id}/{action}"), &globex.admin, json!({}))
            .await;
        assert_error(s, &b, 404, "not_found");
    }
    let (s, b) = app.delete(&format!("/v1/message-triggers/{id}"), &globex.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &globex.admin,
            bad(json!({ "event": "reward_redeemable" }), "hello"),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");

    // Still there for acme; then deleted, and the template is free again.
    let (s, _) = app.get(&format!("/v1/message-triggers/{id}"), &acme.read).await;
    assert_eq!(s, 200);
    let (s, _) = app.delete(&format!("/v1/message-triggers/{id}"), &acme.admin).await;
    assert_eq!(s, 204);
    let (s, _) = app.delete("/v1/message-templates/hello", &acme.admin).await;
    assert_eq!(s, 204);
}

/// Ids inside a trigger's conditions are resolved in the caller's tenant:
/// another tenant's tier or reward is refused like one that does not exist
/// (422 naming the field), the tenant's own is accepted.
async fn trigger_references_resolve_in_the_callers_tenant(backend: Backend) {
    let (app, acme, globex) = start(backend).await;
    template(&app, &acme, "news", "Hello").await;
    let tier = |t: &TestTenant| {
        let (app, key) = (&app, t.admin.clone());
        async move {
            let (s, b) = app
                .post("/v1/loyalty/tiers", &key, json!({ "name": "Gold", "rank": 1 }))
                .await;
            assert_eq!(s, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        }
    };
    let reward = |t: &TestTenant| {
        let (app, key) = (&app, t.admin.clone());
        async move {
            let (s, b) = app
                .post("/v1/loyalty/rewards", &key, json!({ "name": "Mug", "cost_points": 10 }))
                .await;
            assert_eq!(s, 201, "{b}");
            b["id"].as_str().unwrap().to_owned()
        }
    };
    let (their_tier, their_reward) = (tier(&globex).await, reward(&globex).await);
    let (our_tier, our_reward) = (tier(&acme).await, reward(&acme).await);
    for (when, field) in [
        (
            json!({ "event": "tier_changed", "to_tier": their_tier }),
            "when.to_tier",
        ),
        (
            json!({ "event": "reward_redeemable", "reward_id": their_reward }),
            "when.reward_id",
        ),
        (
            json!({ "event": "tier_changed", "to_tier": "no-such-tier" }),
            "when.to_tier",
        ),
    ] {
        let (s, b) = app
            .post(
                "/v1/message-triggers",
                &acme.admin,
                json!({ "name": "x", "when": when, "channel": "email", "template": "news" }),
            )
            .await;
        assert_error(s, &b, 422, "validation_failed");
        assert_eq!(b["error"]["details"]["field"], field, "{b}");
    }
    let (s, list) = app.get("/v1/message-triggers", &acme.read).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    trigger(
        &app,
        &acme,
        "up",
        json!({ "event": "tier_changed", "to_tier": our_tier }),
        "news",
    )
    .await;
    trigger(
        &app,
        &acme,
        "mug",
        json!({ "event": "reward_redeemable", "reward_id": our_reward }),
        "news",
    )
    .await;
}

both_backends!(
    trigger_references_resolve_in_the_callers_tenant,
    tier_upgrades_message_once,
    reward_becoming_affordable_messages_once,
    score_crossing_messages_on_the_crossing_only,
    trigger_api_validates_and_is_tenant_scoped,
);
