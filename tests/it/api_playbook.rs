//! The CRM playbook's host flows end to end on both backends: referrals
//! (credited exactly once under concurrent first purchases; self-referral,
//! cycles and second referrers refused; the tree), complaint cases (opened
//! by a complaint, alerted and escalated through triggers, moved through
//! their statuses, goodwill credited once), satisfaction answers (validated;
//! NPS over time on a hand-computed tenant) and the playbook settings.
//! Other tenants' ids are covered by `api_contract`'s sweep, plus the
//! explicit checks at the end.
//!
//! Delivery is off so that trigger messages stay `pending` where the test
//! reads them.

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use serde_json::{Value, json};

async fn start(backend: Backend) -> (TestApp, TestTenant) {
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false;
    config.plugins.rescore_interval_ms = Some(0);
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant("Acme").await;
    (app, acme)
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

async fn settings(app: &TestApp, t: &TestTenant, hours: i64, goodwill: i64, referral: i64) {
    let (s, b) = app
        .put(
            "/v1/playbook/settings",
            &t.admin,
            json!({ "complaint_response_hours": hours, "goodwill_points": goodwill, "referral_points": referral }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn refer(app: &TestApp, t: &TestTenant, referrer: &str, payload: Value) -> (reqwest::StatusCode, Value) {
    app.post(
        "/v1/interactions",
        &t.write,
        json!({ "customer_id": referrer, "kind": "referral", "payload": payload }),
    )
    .await
}

async fn balance(app: &TestApp, t: &TestTenant, customer: &str) -> i64 {
    let (s, b) = app.get(&format!("/v1/customers/{customer}/loyalty"), &t.read).await;
    assert_eq!(s, 200, "{b}");
    b["balance"].as_i64().unwrap()
}

async fn ledger(app: &TestApp, t: &TestTenant, customer: &str) -> Vec<Value> {
    let (s, b) = app
        .get(&format!("/v1/customers/{customer}/loyalty/ledger"), &t.read)
        .await;
    assert_eq!(s, 200, "{b}");
    b["items"].as_array().cloned().unwrap_or_default()
}

async fn messages(app: &TestApp, t: &TestTenant, customer: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/v1/messages?customer_id={customer}"), &t.read).await;
    assert_eq!(s, 200, "{b}");
    b["items"].as_array().cloned().unwrap_or_default()
}

fn purchase(customer: &str, key: &str) -> Value {
    json!({ "customer_id": customer, "kind": "purchase", "amount": "20.00", "currency": "USD", "idempotency_key": key })
}

/// Eight first purchases of a referred customer at once: all are stored,
/// the referrer is credited once.
async fn referral_credit_is_exactly_once_under_concurrent_first_purchases(backend: Backend) {
    let (app, acme) = start(backend).await;
    settings(&app, &acme, 48, 0, 50).await;
    let ann = customer(&app, &acme, "ann").await;
    let (s, b) = refer(&app, &acme, &ann, json!({ "referred_external_id": "bob" })).await;
    assert_eq!(s, 201, "{b}");
    let (s, tree) = app.get(&format!("/v1/customers/{ann}/referrals"), &acme.read).await;
    assert_eq!(s, 200, "{tree}");
    let bob = tree["referrals"][0]["customer_id"].as_str().unwrap().to_owned();
    assert!(tree["referrals"][0]["credited_at"].is_null());
    assert_eq!(balance(&app, &acme, &ann).await, 0, "no credit before a purchase");

    let calls = (0..8).map(|i| {
        let (app, acme, bob) = (&app, &acme, &bob);
        async move {
            app.post("/v1/interactions", &acme.write, purchase(bob, &format!("p{i}")))
                .await
        }
    });
    for (s, b) in futures_util::future::join_all(calls).await {
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(balance(&app, &acme, &ann).await, 50);
    let entries = ledger(&app, &acme, &ann).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["idempotency_key"], format!("referral:{bob}"));
    let (_, tree) = app.get(&format!("/v1/customers/{ann}/referrals"), &acme.read).await;
    assert_eq!(tree["referrals"][0]["credited_points"], 50);
    assert!(tree["referrals"][0]["credited_at"].is_string());
    // Later purchases change nothing; the referred customer sees its referrer.
    let (s, _) = app.post("/v1/interactions", &acme.write, purchase(&bob, "later")).await;
    assert_eq!(s, 201);
    assert_eq!(balance(&app, &acme, &ann).await, 50);
    let (_, up) = app.get(&format!("/v1/customers/{bob}/referrals"), &acme.read).await;
    assert_eq!(up["referred_by"], ann.as_str());
}

/// Self-referral and cycles are 422 with their own codes, a second
/// referrer 409, a customer who already bought 422; refused referrals store
/// nothing; the tree nests.
async fn self_referral_and_cycles_are_refused(backend: Backend) {
    let (app, acme) = start(backend).await;
    let a = customer(&app, &acme, "a").await;
    let b = customer(&app, &acme, "b").await;
    let c = customer(&app, &acme, "c").await;
    let d = customer(&app, &acme, "d").await;

    let (s, e) = refer(&app, &acme, &a, json!({ "referred_customer_id": a })).await;
    assert_error(s, &e, 422, "self_referral");
    for (from, to) in [(&a, &b), (&b, &c)] {
        let (s, e) = refer(&app, &acme, from, json!({ "referred_customer_id": to })).await;
        assert_eq!(s, 201, "{e}");
    }
    // c -> a closes a -> b -> c; b -> a closes a -> b.
    let (s, e) = refer(&app, &acme, &c, json!({ "referred_customer_id": a })).await;
    assert_error(s, &e, 422, "referral_cycle");
    let (s, e) = refer(&app, &acme, &b, json!({ "referred_customer_id": a })).await;
    assert_error(s, &e, 422, "referral_cycle");
    let (s, e) = refer(&app, &acme, &d, json!({ "referred_customer_id": b })).await;
    assert_error(s, &e, 409, "already_referred");
    // The same referrer again is accepted and changes nothing.
    let (s, e) = refer(&app, &acme, &a, json!({ "referred_customer_id": b })).await;
    assert_eq!(s, 201, "{e}");
    // Someone who already bought is not a new customer.
    let (s, _) = app.post("/v1/interactions", &acme.write, purchase(&d, "d1")).await;
    assert_eq!(s, 201);
    let (s, e) = refer(&app, &acme, &c, json!({ "referred_customer_id": d })).await;
    assert_error(s, &e, 422, "not_a_new_customer");
    let (s, e) = refer(&app, &acme, &c, json!({})).await;
    assert_error(s, &e, 422, "validation_failed");
    let (s, e) = refer(&app, &acme, &c, json!({ "referred_customer_id": "no-such-customer" })).await;
    assert_error(s, &e, 422, "validation_failed");
    // Refused referrals left no interaction behind: c made only refused
    // ones, a two accepted ones (the second changed nothing).
    for (who, n) in [(&c, 0), (&b, 1), (&a, 2)] {
        let (_, timeline) = app
            .get(&format!("/v1/customers/{who}/interactions?kind=referral"), &acme.read)
            .await;
        assert_eq!(timeline["items"].as_array().unwrap().len(), n, "{timeline}");
    }

    let (s, tree) = app.get(&format!("/v1/customers/{a}/referrals"), &acme.read).await;
    assert_eq!(s, 200, "{tree}");
    assert!(tree["referred_by"].is_null());
    assert_eq!(tree["referrals"].as_array().unwrap().len(), 1, "{tree}");
    assert_eq!(tree["referrals"][0]["customer_id"], b.as_str());
    assert_eq!(tree["referrals"][0]["referrals"][0]["customer_id"], c.as_str());
    assert_eq!(tree["referrals"][0]["referrals"][0]["referrals"], json!([]));
    assert_eq!(tree["truncated"], false);
}

/// A complaint opens a case and alerts; an overdue case escalates once;
/// statuses move forward only; resolving credits goodwill once, even when
/// two resolutions race.
async fn complaint_lifecycle_with_escalation_and_goodwill(backend: Backend) {
    let (app, acme) = start(backend).await;
    settings(&app, &acme, 24, 30, 0).await;
    let ann = customer(&app, &acme, "ann").await;
    let (s, b) = app
        .put(
            "/v1/message-templates/complaint-alert",
            &acme.admin,
            json!({ "channel": "email", "subject": "Complaint", "body": "{{ data.event }}: {{ data.complaint.subject }}" }),
        )
        .await;
    assert!(s.is_success(), "{b}");
    for (name, event, audience) in [
        ("opened", "complaint_opened", Value::Null),
        ("escalated", "complaint_escalated", Value::Null),
        // Limited to a relationship level nobody has: never fires.
        (
            "partners-only",
            "complaint_opened",
            json!({ "plugin": "relationship-levels", "segments": ["partnership"] }),
        ),
    ] {
        let (s, b) = app
            .post(
                "/v1/message-triggers",
                &acme.admin,
                json!({ "name": name, "when": { "event": event }, "channel": "email", "template": "complaint-alert",
                        "audience": audience }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }

    // Made two days ago with a 24 h response time: overdue at once.
    let made = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let made = made.format(&time::format_description::well_known::Rfc3339).unwrap();
    let (s, old) = app
        .post(
            "/v1/complaints",
            &acme.write,
            json!({ "customer_id": ann, "subject": "Late parcel", "occurred_at": made, "idempotency_key": "c1" }),
        )
        .await;
    assert_eq!(s, 201, "{old}");
    assert_eq!(old["status"], "open");
    assert_eq!(old["subject"], "Late parcel");
    assert_eq!(old["overdue"], true);
    assert_eq!(old["escalated"], false);
    let id = old["id"].as_str().unwrap().to_owned();
    let (s, again) = app
        .post(
            "/v1/complaints",
            &acme.write,
            json!({ "customer_id": ann, "subject": "Late parcel", "occurred_at": made, "idempotency_key": "c1" }),
        )
        .await;
    assert_eq!(s, 200, "a replay returns the same case");
    assert_eq!(again["id"], id.as_str());
    // A complaint through the interactions API opens a case too.
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": ann, "kind": "complaint", "payload": { "subject": "Rude agent" } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, fresh) = app.get(&format!("/v1/customers/{ann}/complaints"), &acme.read).await;
    assert_eq!(s, 200, "{fresh}");
    let cases = fresh["items"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    let fresh_id = cases.iter().find(|c| c["id"] != id.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened = messages(&app, &acme, &ann).await;
    assert_eq!(
        opened.len(),
        2,
        "one alert per case, none for the partners-only trigger: {opened:?}"
    );
    assert!(
        opened
            .iter()
            .all(|m| m["body"].as_str().unwrap().starts_with("complaint_opened: "))
    );

    let (s, esc) = app.post("/v1/complaints/escalate", &acme.write, json!({})).await;
    assert_eq!(s, 200, "{esc}");
    let escalated = esc["items"].as_array().unwrap();
    assert_eq!(escalated.len(), 1, "only the overdue case: {esc}");
    assert_eq!(escalated[0]["id"], id.as_str());
    assert_eq!(escalated[0]["escalated"], true);
    let (_, esc) = app.post("/v1/complaints/escalate", &acme.write, json!({})).await;
    assert_eq!(esc["items"], json!([]), "a case escalates once");
    let all = messages(&app, &acme, &ann).await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter()
            .filter(|m| m["body"] == "complaint_escalated: Late parcel")
            .count(),
        1
    );
    let (_, list) = app.get("/v1/complaints?escalated=true", &acme.read).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Forward only: open -> answered -> resolved.
    let path = format!("/v1/complaints/{id}");
    let (s, b) = app.patch(&path, &acme.write, json!({ "status": "answered" })).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["answered_at"].is_string());
    assert_eq!(b["overdue"], false);
    let (s, e) = app.patch(&path, &acme.write, json!({ "status": "answered" })).await;
    assert_error(s, &e, 409, "invalid_transition");
    let (s, e) = app.patch(&path, &acme.write, json!({ "status": "open" })).await;
    assert_error(s, &e, 422, "validation_failed");
    let resolve = || app.patch(&path, &acme.write, json!({ "status": "resolved" }));
    let (first, second) = tokio::join!(resolve(), resolve());
    let mut statuses = [first.0.as_u16(), second.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
    let (_, case) = app.get(&path, &acme.read).await;
    assert_eq!(case["status"], "resolved");
    assert_eq!(case["escalated"], true, "escalation stays on the record");
    assert_eq!(case["goodwill_points"], 30);
    assert_eq!(balance(&app, &acme, &ann).await, 30);
    // The other case, resolved with its own goodwill amount.
    let (s, b) = app
        .patch(
            &format!("/v1/complaints/{fresh_id}"),
            &acme.write,
            json!({ "status": "resolved", "goodwill_points": 5 }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(balance(&app, &acme, &ann).await, 35);
    let entries = ledger(&app, &acme, &ann).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (_, list) = app.get("/v1/complaints?status=resolved", &acme.read).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (s, e) = app
        .post(
            "/v1/complaints",
            &acme.write,
            json!({ "customer_id": ann, "subject": " " }),
        )
        .await;
    assert_error(s, &e, 422, "validation_failed");
}

/// NPS per month on a small tenant whose figures are worked out by hand.
async fn nps_over_time_on_a_hand_computed_tenant(backend: Backend) {
    let (app, acme) = start(backend).await;
    let ann = customer(&app, &acme, "ann").await;
    let bob = customer(&app, &acme, "bob").await;
    // January: 10, 9 (promoters), 7 (passive), 3 (detractor) -> (2 - 1) / 4 = 25.0
    // February: 6, 0 (detractors), 8 (passive)             -> (0 - 2) / 3 = -66.7
    // March: none                                            -> null
    // Whole quarter: 7 answers, 2 promoters, 3 detractors    -> -1 / 7 = -14.3
    let answers = [
        (&ann, "2026-01-03T10:00:00Z", "nps", 10),
        (&bob, "2026-01-10T10:00:00Z", "nps", 9),
        (&ann, "2026-01-20T10:00:00Z", "nps", 7),
        (&bob, "2026-01-31T23:59:59Z", "nps", 3),
        (&ann, "2026-02-01T00:00:00Z", "nps", 6),
        (&bob, "2026-02-14T10:00:00Z", "nps", 0),
        (&ann, "2026-02-28T10:00:00Z", "nps", 8),
        // Outside NPS: a CSAT answer, and an NPS answer after the range.
        (&ann, "2026-01-05T10:00:00Z", "csat", 2),
        (&bob, "2026-04-01T00:00:00Z", "nps", 0),
    ];
    for (who, at, survey, score) in answers {
        let (s, b) = app
            .post(
                "/v1/interactions",
                &acme.write,
                json!({ "customer_id": who, "kind": "satisfaction", "occurred_at": at, "channel": "email",
                        "payload": { "survey": survey, "score": score, "comment": "thanks" } }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    for bad in [
        json!({ "survey": "nps", "score": 11 }),
        json!({ "survey": "csat", "score": 0 }),
        json!({ "survey": "ces", "score": 3 }),
        json!({ "score": 3 }),
    ] {
        let (s, e) = app
            .post(
                "/v1/interactions",
                &acme.write,
                json!({ "customer_id": ann, "kind": "satisfaction", "payload": bad }),
            )
            .await;
        assert_error(s, &e, 422, "validation_failed");
    }
    let (s, r) = app
        .get(
            "/v1/satisfaction/nps?from=2026-01-01T00:00:00Z&to=2026-04-01T00:00:00Z&interval=month",
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let periods = r["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 3, "{r}");
    let row = |p: &Value| {
        (
            p["start"].as_str().unwrap().to_owned(),
            p["responses"].as_i64().unwrap(),
            p["promoters"].as_i64().unwrap(),
            p["passives"].as_i64().unwrap(),
            p["detractors"].as_i64().unwrap(),
            p["nps"].as_f64(),
        )
    };
    assert_eq!(
        row(&periods[0]),
        ("2026-01-01T00:00:00Z".into(), 4, 2, 1, 1, Some(25.0))
    );
    assert_eq!(
        row(&periods[1]),
        ("2026-02-01T00:00:00Z".into(), 3, 0, 1, 2, Some(-66.7))
    );
    assert_eq!(row(&periods[2]), ("2026-03-01T00:00:00Z".into(), 0, 0, 0, 0, None));
    assert_eq!(
        row(&r["total"]),
        ("2026-01-01T00:00:00Z".into(), 7, 2, 2, 3, Some(-14.3))
    );
    let (s, e) = app
        .get(
            "/v1/satisfaction/nps?from=2026-01-01T00:00:00Z&to=2020-01-01T00:00:00Z",
            &acme.read,
        )
        .await;
    assert_error(s, &e, 422, "validation_failed");
    let (s, e) = app
        .get(
            "/v1/satisfaction/nps?from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=day",
            &acme.read,
        )
        .await;
    assert_error(s, &e, 422, "validation_failed");

    let (s, h) = app.get(&format!("/v1/customers/{ann}/satisfaction"), &acme.read).await;
    assert_eq!(s, 200, "{h}");
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{h}");
    assert_eq!(items[0]["score"], 8, "newest first");
    assert_eq!(items[0]["comment"], "thanks");
    assert_eq!(items[0]["channel"], "email");
    assert_eq!(items.last().unwrap()["survey"], "nps");
}

/// Settings are per tenant, validated, and another tenant's cases, trees
/// and answers read as not found.
async fn settings_and_other_tenants(backend: Backend) {
    let (app, acme) = start(backend).await;
    let globex = app.tenant("Globex").await;
    let (s, b) = app.get("/v1/playbook/settings", &globex.read).await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({ "complaint_response_hours": 48, "goodwill_points": 0, "referral_points": 0 })
    );
    settings(&app, &acme, 12, 1, 2).await;
    let (_, b) = app.get("/v1/playbook/settings", &globex.read).await;
    assert_eq!(b["complaint_response_hours"], 48, "settings are per tenant");
    let (s, e) = app
        .put(
            "/v1/playbook/settings",
            &acme.admin,
            json!({ "complaint_response_hours": 0, "goodwill_points": 0, "referral_points": 0 }),
        )
        .await;
    assert_error(s, &e, 422, "validation_failed");
    let (s, e) = app
        .put(
            "/v1/playbook/settings",
            &acme.write,
            json!({ "complaint_response_hours": 1, "goodwill_points": 0, "referral_points": 0 }),
        )
        .await;
    assert_error(s, &e, 403, "forbidden");

    let theirs = customer(&app, &globex, "g").await;
    let (s, case) = app
        .post(
            "/v1/complaints",
            &globex.write,
            json!({ "customer_id": theirs, "subject": "x" }),
        )
        .await;
    assert_eq!(s, 201, "{case}");
    let id = case["id"].as_str().unwrap();
    for path in [
        format!("/v1/complaints/{id}"),
        format!("/v1/customers/{theirs}/complaints"),
        format!("/v1/customers/{theirs}/referrals"),
        format!("/v1/customers/{theirs}/satisfaction"),
    ] {
        let (s, e) = app.get(&path, &acme.admin).await;
        assert_error(s, &e, 404, "not_found");
    }
    let (s, e) = app
        .patch(
            &format!("/v1/complaints/{id}"),
            &acme.admin,
            json!({ "status": "resolved" }),
        )
        .await;
    assert_error(s, &e, 404, "not_found");
    let (_, list) = app.get("/v1/complaints", &acme.read).await;
    assert_eq!(list["items"], json!([]));
    let mine = customer(&app, &acme, "mine").await;
    let (s, e) = refer(&app, &acme, &mine, json!({ "referred_customer_id": theirs })).await;
    assert_error(s, &e, 422, "validation_failed");
    let (_, case) = app.get(&format!("/v1/complaints/{id}"), &globex.read).await;
    assert_eq!(case["status"], "open", "unchanged by the other tenant");
}

/// The `relationship-levels` plugin (CDNOW's published parameters as a
/// fixed model, margin 50 %, levels from 5 / 20 / 60 / 150 USD) on
/// hand-made histories: a one-off buyer of a year ago is `basic`, a weekly
/// big spender `partnership`, each with its reason; a trigger whose
/// audience is the partnership level alerts for the second only, and a
/// reward for that level is theirs alone.
async fn relationship_levels_on_hand_made_histories(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = crate::support::plugin_manifest_entry(
        "relationship-levels",
        "rapport-plugin-relationship-levels",
        "scoring-rule",
        &["kv", "config"],
        "timeout_ms = 60000",
    );
    manifest += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"relationship-levels\"\nenabled = true\n\
        config = { currency = \"USD\", margin_rate = 0.5, \
        levels = { reactive = 5.0, accountable = 20.0, proactive = 60.0, partnership = 150.0 }, \
        model = { bgnbd = { r = 0.2426, alpha = 4.4135, a = 0.7929, b = 2.4258 }, \
                  gamma_gamma = { p = 6.25, q = 3.74, v = 15.45 } } }\n";
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, manifest).unwrap();
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false;
    config.plugins.rescore_interval_ms = Some(0);
    config.plugins.manifest = Some(path);
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    let app = TestApp::start_with(backend, config).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;

    let now = time::OffsetDateTime::now_utc();
    let day = |ago: i64| {
        (now - time::Duration::days(ago))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let gone = customer(&app, &acme, "gone").await;
    let (s, b) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": gone, "kind": "purchase", "amount": "20.00", "currency": "USD",
                    "occurred_at": day(365) }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let star = customer(&app, &acme, "star").await;
    let items: Vec<Value> = (0..40)
        .map(|w| {
            json!({ "customer_id": star, "kind": "purchase", "amount": "300.00", "currency": "USD",
                    "occurred_at": day(1 + 7 * w) })
        })
        .collect();
    let (s, b) = app
        .post("/v1/interactions/batch", &acme.write, json!({ "items": items }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["created"], 40, "{b}");

    let (s, job) = app.post("/v1/scoring/jobs", &acme.admin, json!({})).await;
    assert_eq!(s, 202, "{job}");
    let job_path = format!("/v1/scoring/jobs/{}", job["id"].as_str().unwrap());
    let job = loop {
        let (_, j) = app.get(&job_path, &acme.read).await;
        if matches!(j["status"].as_str(), Some("succeeded" | "partially_failed" | "failed")) {
            break j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");

    let level = |body: &Value| -> Value {
        body["scores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["plugin"] == "relationship-levels")
            .cloned()
            .unwrap_or_else(|| panic!("no level: {body}"))
    };
    let (_, b) = app.get(&format!("/v1/customers/{gone}/scores"), &acme.read).await;
    let basic = level(&b);
    assert_eq!(basic["segment"], "basic", "{basic}");
    assert_eq!(basic["label"], "basic");
    assert_eq!(basic["components"]["level_rank"], 0.0);
    assert!(
        basic["explanation"]
            .as_str()
            .unwrap()
            .starts_with("basic: lifetime margin "),
        "{basic}"
    );
    assert!(basic["value"].as_f64().unwrap() < 5.0, "{basic}");
    let (_, b) = app.get(&format!("/v1/customers/{star}/scores"), &acme.read).await;
    let top = level(&b);
    assert_eq!(top["segment"], "partnership", "{top}");
    assert_eq!(top["components"]["level_rank"], 4.0);
    let clv = top["components"]["clv"].as_f64().unwrap();
    assert!((top["value"].as_f64().unwrap() - clv * 0.5).abs() < 1e-9, "{top}");
    assert!(
        top["explanation"]
            .as_str()
            .unwrap()
            .contains("x margin 50% is at least the partnership threshold 150.00 USD"),
        "{top}"
    );
    let (_, seg) = app
        .get(
            "/v1/customers?score_plugin=relationship-levels&segment=partnership",
            &acme.read,
        )
        .await;
    let ids: Vec<&str> = seg["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![star.as_str()]);

    // Per-level treatment: complaints of partnership customers alert.
    let (s, b) = app
        .put(
            "/v1/message-templates/vip-complaint",
            &acme.admin,
            json!({ "channel": "email", "subject": "VIP", "body": "VIP complaint: {{ data.complaint.subject }}" }),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let (s, b) = app
        .post(
            "/v1/message-triggers",
            &acme.admin,
            json!({ "name": "vip", "when": { "event": "complaint_opened" }, "channel": "email",
                    "template": "vip-complaint",
                    "audience": { "plugin": "relationship-levels", "segments": ["partnership"] } }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["audience"]["segments"], json!(["partnership"]));
    for who in [&gone, &star] {
        let (s, b) = app
            .post(
                "/v1/complaints",
                &acme.write,
                json!({ "customer_id": who, "subject": "Broken" }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(messages(&app, &acme, &gone).await.len(), 0);
    let vip = messages(&app, &acme, &star).await;
    assert_eq!(vip.len(), 1, "{vip:?}");
    assert_eq!(vip[0]["body"], "VIP complaint: Broken");

    // Per-level rewards: a reward for the partnership level is redeemable
    // by its customers only, until the audience is lifted.
    let (s, reward) = app
        .post(
            "/v1/loyalty/rewards",
            &acme.admin,
            json!({ "name": "Studio visit", "cost_points": 10,
                    "audience": { "plugin": "relationship-levels", "segments": ["partnership"] } }),
        )
        .await;
    assert_eq!(s, 201, "{reward}");
    assert_eq!(reward["audience"]["segments"], json!(["partnership"]));
    let rid = reward["id"].as_str().unwrap().to_owned();
    for who in [&gone, &star] {
        let (s, b) = app
            .post(
                &format!("/v1/customers/{who}/loyalty/ledger"),
                &acme.write,
                json!({ "kind": "earn", "points": 50, "reason": "test" }),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let redeem = |who: String| {
        let app = &app;
        let key = acme.write.clone();
        let rid = rid.clone();
        async move {
            app.post(
                &format!("/v1/customers/{who}/loyalty/redeem"),
                &key,
                json!({ "reward_id": rid }),
            )
            .await
        }
    };
    let (s, b) = redeem(gone.clone()).await;
    assert_error(s, &b, 409, "not_in_audience");
    assert_eq!(balance(&app, &acme, &gone).await, 50, "nothing taken");
    let (s, b) = redeem(star.clone()).await;
    assert_eq!(s, 201, "{b}");
    let (s, bad) = app
        .patch(
            &format!("/v1/loyalty/rewards/{rid}"),
            &acme.admin,
            json!({ "audience": { "plugin": "relationship-levels", "segments": [] } }),
        )
        .await;
    assert_error(s, &bad, 422, "validation_failed");
    let (s, open) = app
        .patch(
            &format!("/v1/loyalty/rewards/{rid}"),
            &acme.admin,
            json!({ "audience": null }),
        )
        .await;
    assert_eq!(s, 200, "{open}");
    assert!(open.get("audience").is_none(), "{open}");
    let (s, b) = redeem(gone.clone()).await;
    assert_eq!(s, 201, "{b}");
}

/// Satisfaction answers reported by a channel connector's inbound events
/// (the `test-connector` turns a signed body into one event of the body's
/// `event` kind, with the body as payload) go through the same checks.
async fn satisfaction_from_inbound_channel_events(backend: Backend) {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = crate::support::plugin_manifest_entry(
        "hook",
        "test-connector",
        "channel-connector",
        &["log", "outbound-http"],
        "timeout_ms = 2000",
    )
    .replace(
        "[plugin.limits]",
        "channels = [\"hook\"]\nallowed_hosts = [\"127.0.0.1:9\"]\n[plugin.limits]",
    );
    manifest += "[[tenant]]\nid = \"acme\"\n[[tenant.plugin]]\nid = \"hook\"\n";
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, manifest).unwrap();
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false;
    config.plugins.rescore_interval_ms = Some(0);
    config.plugins.manifest = Some(path);
    config.plugins.cache_dir = Some(dir.path().join("cache"));
    let app = TestApp::start_with(backend, config).await;
    app.wait_ready().await;
    let acme = app.tenant_with_id("acme").await;
    let send = |body: Value| {
        let body = body.to_string().into_bytes();
        let signature = hex::encode(sha2::Sha256::digest(&body));
        let request = app
            .client
            .post(app.url("/v1/channels/hook/inbound"))
            .bearer_auth(&acme.write)
            .header("content-type", "application/json")
            .header("x-test-signature", signature)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ok = send(
        json!({ "customer": "sms-1", "event": "satisfaction", "id": "e1", "survey": "nps", "score": 9,
                          "at": 1_772_359_200_000i64 }),
    )
    .await;
    assert_eq!(ok["events"][0]["status"], "created", "{ok}");
    let bad = send(
        json!({ "customer": "sms-1", "event": "satisfaction", "id": "e2", "survey": "nps", "score": 12,
                           "at": 1_772_359_200_000i64 }),
    )
    .await;
    assert_eq!(bad["events"][0]["status"], "failed", "{bad}");
    assert_eq!(bad["events"][0]["error"]["details"]["field"], "payload.score", "{bad}");
    let (_, c) = app.get("/v1/customers/by-external-id/sms-1", &acme.read).await;
    let (_, h) = app
        .get(
            &format!("/v1/customers/{}/satisfaction", c["id"].as_str().unwrap()),
            &acme.read,
        )
        .await;
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{h}");
    assert_eq!(
        (items[0]["survey"].as_str(), items[0]["score"].as_i64()),
        (Some("nps"), Some(9))
    );
    assert_eq!(items[0]["channel"], "hook");
    let (_, r) = app
        .get(
            "/v1/satisfaction/nps?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00Z",
            &acme.read,
        )
        .await;
    assert_eq!(r["total"]["nps"].as_f64(), Some(100.0), "{r}");
}

/// An import is a way in like any other: a referred customer's first
/// purchase in a CSV credits the referrer (once, even when the file holds
/// several), and a satisfaction row without its answer (the CSV has no
/// payload column) is refused with the playbook's reason and not stored.
async fn imported_interactions_go_through_the_playbook(backend: Backend) {
    use rapport::import::{self, Progress};
    let (app, acme) = start(backend).await;
    settings(&app, &acme, 48, 0, 30).await;
    let ann = customer(&app, &acme, "ann").await;
    let (s, b) = refer(&app, &acme, &ann, json!({ "referred_external_id": "bob" })).await;
    assert_eq!(s, 201, "{b}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interactions.csv");
    std::fs::write(
        &file,
        "customer_external_id,kind,occurred_at,amount,currency,channel,idempotency_key,sku,quantity,unit_price\n\
         bob,purchase,2026-05-01T10:00:00Z,20.00,USD,web,imp-1,,,\n\
         bob,purchase,2026-05-02T10:00:00Z,30.00,USD,web,imp-2,,,\n\
         ann,satisfaction,2026-05-03T10:00:00Z,,,email,imp-3,,,\n",
    )
    .unwrap();
    let store = &app.server.state.store;
    let tenant = rapport::store::TenantId::for_tests(acme.id.clone());
    let summary = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(summary.interactions_created, 2, "{summary:?}");
    let reasons: Vec<&String> = summary.rejected.keys().collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("survey"), "{reasons:?}");
    assert_eq!(balance(&app, &acme, &ann).await, 30);
    assert_eq!(ledger(&app, &acme, &ann).await.len(), 1);
    let (_, h) = app.get(&format!("/v1/customers/{ann}/satisfaction"), &acme.read).await;
    assert_eq!(h["items"], json!([]), "{h}");
    // A re-run replays every row and credits nothing more.
    let again = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(again.interactions_created, 0, "{again:?}");
    assert_eq!(balance(&app, &acme, &ann).await, 30);
}

both_backends!(
    imported_interactions_go_through_the_playbook,
    satisfaction_from_inbound_channel_events,
    relationship_levels_on_hand_made_histories,
    referral_credit_is_exactly_once_under_concurrent_first_purchases,
    self_referral_and_cycles_are_refused,
    complaint_lifecycle_with_escalation_and_goodwill,
    nps_over_time_on_a_hand_computed_tenant,
    settings_and_other_tenants,
);
