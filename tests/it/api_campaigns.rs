//! Campaigns to segments (`/v1/campaigns`): a campaign messages every
//! customer of a stored segment through the outbox exactly once, however
//! often it is retried or resumed, skips unsubscribed customers, holds out a
//! control group drawn by a hash of campaign and customer (checked here
//! against an independent computation of that hash), and reports delivered,
//! failed and opened messages and the purchases of recipients against the
//! control group.

use std::collections::{BTreeMap, BTreeSet};

use rapport::store::TenantId;
use rapport::store::campaigns::NewCampaign;
use rapport::store::messages::{AttemptOutcome, AttemptReport, Next};
use rapport::store::scores::NewScore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{Backend, TestApp, TestTenant, assert_error};

/// The documented draw, computed independently: the first 8 bytes of
/// sha256("<campaign>:<customer>") as a fraction of 2^64 below the share.
fn held_out(campaign: &str, customer: &str, share: f64) -> bool {
    let d = Sha256::digest(format!("{campaign}:{customer}").as_bytes());
    let x = u64::from_be_bytes(d[..8].try_into().unwrap());
    (x as f64) / 2f64.powi(64) < share
}

/// `n` customers `c00..`, all with an email except those in `no_email`,
/// scored by plugin `rfm` into `segment`. Returns their ids by external id.
async fn segment_customers(
    app: &TestApp,
    t: &TestTenant,
    n: usize,
    no_email: &[usize],
    segment: &str,
) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    let mut scores = Vec::new();
    for i in 0..n {
        let ext = format!("{segment}-{i:02}");
        let email = (!no_email.contains(&i)).then(|| format!("c{i}@example.com"));
        let (s, c) = app
            .post(
                "/v1/customers",
                &t.write,
                json!({ "external_id": ext, "name": format!("Customer {i}"), "email": email }),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        scores.push(NewScore {
            customer_id: id.clone(),
            plugin_id: "rfm".into(),
            value: i as f64,
            label: Some(segment.into()),
            segment: Some(segment.into()),
            explanation: "test".into(),
            components: Vec::new(),
            computed_at: 1,
            job_id: None,
            as_of: None,
            plugin_version: None,
        });
        ids.insert(ext, id);
    }
    let tenant = TenantId::for_tests(t.id.clone());
    app.server.state.store.save_scores(&tenant, &scores).await.unwrap();
    ids
}

async fn recipients(app: &TestApp, t: &TestTenant, campaign: &str) -> Vec<Value> {
    let (s, b) = app
        .get(&format!("/v1/campaigns/{campaign}/recipients?limit=500"), &t.read)
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["next_cursor"].is_null());
    b["items"].as_array().unwrap().clone()
}

async fn all_messages(app: &TestApp, t: &TestTenant) -> Vec<Value> {
    let (s, b) = app.get("/v1/messages?limit=500", &t.read).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["next_cursor"].is_null());
    b["items"].as_array().unwrap().clone()
}

fn campaign_body(key: &str, share: f64) -> Value {
    json!({
        "name": "Win back",
        "channel": "email",
        "template": "winback",
        "data": { "offer": "10% off" },
        "audience": { "score_plugin": "rfm", "segment": "At Risk" },
        "control_share": share,
        "idempotency_key": key,
    })
}

/// A retried campaign sends nothing twice, a resumed one completes without
/// duplicates, suppressed customers get nothing, and the control group is
/// held out, recorded and stable.
async fn a_campaign_sends_once_skips_suppressed_and_holds_out_control(backend: Backend) {
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false; // messages stay in the outbox to be counted
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant("Acme").await;
    let customers = segment_customers(&app, &acme, 40, &[39], "At Risk").await;
    // Not in the segment: never messaged.
    let others = segment_customers(&app, &acme, 5, &[], "Champions").await;
    let (s, b) = app
        .put(
            "/v1/message-templates/winback",
            &acme.admin,
            json!({ "channel": "email", "subject": "We miss you", "body": "Hi {{ customer.name }}: {{ data.offer }}" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let suppressed: BTreeSet<String> = ["At Risk-01", "At Risk-02"]
        .iter()
        .map(|e| customers[*e].clone())
        .collect();
    for id in &suppressed {
        let (s, b) = app
            .post(
                &format!("/v1/customers/{id}/suppressions"),
                &acme.write,
                json!({ "channel": "email" }),
            )
            .await;
        assert!(s.is_success(), "{b}");
    }

    let (s, first) = app
        .post("/v1/campaigns", &acme.write, campaign_body("winback-1", 0.25))
        .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["status"], "sent");
    let id = first["id"].as_str().unwrap().to_string();

    // Who should have been messaged, held out, set aside: computed here.
    let no_email = &customers["At Risk-39"];
    let mut expect_control = BTreeSet::new();
    let mut expect_queued = BTreeSet::new();
    for cid in customers.values() {
        if suppressed.contains(cid) {
            continue;
        }
        if held_out(&id, cid, 0.25) {
            expect_control.insert(cid.clone());
        } else if cid != no_email {
            expect_queued.insert(cid.clone());
        }
    }
    assert!(
        !expect_control.is_empty() && expect_control.len() < 20,
        "{expect_control:?}"
    );
    let counts = &first["counts"];
    assert_eq!(counts["audience"], 40, "{first}");
    assert_eq!(counts["suppressed"], 2, "{first}");
    assert_eq!(counts["held_out"], expect_control.len(), "{first}");
    assert_eq!(counts["queued"], expect_queued.len(), "{first}");
    let skipped = usize::from(!expect_control.contains(no_email));
    assert_eq!(counts["skipped"], skipped, "{first}");
    assert_eq!(counts["pending"], expect_queued.len(), "{first}");

    let recorded = recipients(&app, &acme, &id).await;
    assert_eq!(recorded.len(), 40);
    for r in &recorded {
        let cid = r["customer_id"].as_str().unwrap();
        let want = if suppressed.contains(cid) {
            ("treatment", "suppressed")
        } else if expect_control.contains(cid) {
            ("control", "held_out")
        } else if cid == no_email {
            ("treatment", "skipped")
        } else {
            ("treatment", "queued")
        };
        assert_eq!(
            (r["arm"].as_str().unwrap(), r["outcome"].as_str().unwrap()),
            want,
            "{r}"
        );
        assert_eq!(r["message_id"].is_string(), want.1 == "queued", "{r}");
    }

    // Exactly one message per messaged customer, rendered, none to anyone else.
    let messages = all_messages(&app, &acme).await;
    let messaged: Vec<String> = messages
        .iter()
        .map(|m| m["customer_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(messaged.len(), expect_queued.len());
    assert_eq!(messaged.iter().cloned().collect::<BTreeSet<_>>(), expect_queued);
    for m in &messages {
        assert_eq!(m["metadata"]["campaign_id"], id.as_str());
        assert!(m["body"].as_str().unwrap().ends_with(": 10% off"), "{m}");
        assert!(!others.values().any(|o| o == m["customer_id"].as_str().unwrap()));
    }

    // The same request again: the same campaign, nothing sent twice, the
    // same arms.
    let (s, again) = app
        .post("/v1/campaigns", &acme.write, campaign_body("winback-1", 0.25))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["counts"], first["counts"]);
    assert_eq!(all_messages(&app, &acme).await.len(), expect_queued.len());
    assert_eq!(recipients(&app, &acme, &id).await, recorded);
    // The key with another campaign: refused.
    let (s, b) = app
        .post("/v1/campaigns", &acme.write, campaign_body("winback-1", 0.5))
        .await;
    assert_error(s, &b, 409, "idempotency_conflict");

    // A campaign interrupted after its first batch of 7 (a crash), then
    // retried: it completes, and nobody gets a second message.
    let store = &app.server.state.store;
    let tenant = TenantId::for_tests(acme.id.clone());
    let body: NewCampaign = serde_json::from_value(campaign_body("winback-2", 0.5)).unwrap();
    let (second, created) = store.create_campaign(&tenant, body).await.unwrap();
    assert!(created);
    assert!(!store.run_campaign_batch(&tenant, &second.id, 7).await.unwrap());
    let partial = recipients(&app, &acme, &second.id).await;
    assert_eq!(partial.len(), 7);
    let (s, resumed) = app
        .post("/v1/campaigns", &acme.write, campaign_body("winback-2", 0.5))
        .await;
    assert_eq!(s, 200, "{resumed}");
    assert_eq!(resumed["status"], "sent");
    let all = recipients(&app, &acme, &second.id).await;
    assert_eq!(all.len(), 40);
    assert_eq!(&all[..7], &partial[..], "a resumed campaign rewrote a committed batch");
    let mut per_customer: BTreeMap<String, usize> = BTreeMap::new();
    for m in all_messages(&app, &acme).await {
        if m["metadata"]["campaign_id"] == second.id.as_str() {
            *per_customer
                .entry(m["customer_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(per_customer.values().all(|n| *n == 1), "{per_customer:?}");
    let queued: BTreeSet<String> = all
        .iter()
        .filter(|r| r["outcome"] == "queued")
        .map(|r| r["customer_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(per_customer.keys().cloned().collect::<BTreeSet<_>>(), queued);
    for r in &all {
        let cid = r["customer_id"].as_str().unwrap();
        let control = !suppressed.contains(cid) && held_out(&second.id, cid, 0.5);
        assert_eq!(r["arm"] == "control", control, "{r}");
    }

    // Listed newest first.
    let (s, list) = app.get("/v1/campaigns", &acme.read).await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.id.as_str(), id.as_str()]);
    assert_eq!(list["items"][1]["counts"], first["counts"]);
}

/// Delivered, failed and opened counts, and the recipients' purchases
/// against the control group's.
async fn a_campaign_reports_delivery_opens_and_uplift(backend: Backend) {
    let mut config = rapport::config::Config::default();
    config.delivery.enabled = false;
    let app = TestApp::start_with(backend, config).await;
    let acme = app.tenant("Acme").await;
    let customers = segment_customers(&app, &acme, 30, &[], "At Risk").await;
    let (s, b) = app
        .put(
            "/v1/message-templates/winback",
            &acme.admin,
            json!({ "channel": "email", "body": "Hi {{ customer.name }} {{ data.offer }}" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, c) = app
        .post("/v1/campaigns", &acme.write, campaign_body("uplift", 0.5))
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["id"].as_str().unwrap();
    let rows = recipients(&app, &acme, id).await;
    let treated: Vec<&Value> = rows.iter().filter(|r| r["outcome"] == "queued").collect();
    let control: Vec<&Value> = rows.iter().filter(|r| r["outcome"] == "held_out").collect();
    assert_eq!(treated.len() + control.len(), customers.len());
    assert!(treated.len() >= 3 && control.len() >= 2, "{rows:?}");

    // The connector's outcomes, recorded as the delivery worker records
    // them: claimed with a lease, then each attempt's result (the second
    // with the provider's own id for the message).
    let store = &app.server.state.store;
    let claims = store.claim_messages("test-node", 60_000, 500).await.unwrap();
    assert_eq!(claims.len(), treated.len());
    let outcomes = [
        (
            treated[0],
            AttemptOutcome::Delivered,
            Next::Delivered { provider_id: None },
        ),
        (
            treated[1],
            AttemptOutcome::Delivered,
            Next::Delivered {
                provider_id: Some("prov-77".into()),
            },
        ),
        (treated[2], AttemptOutcome::Failed, Next::Dead),
    ];
    for (r, outcome, next) in outcomes {
        let claim = claims
            .iter()
            .find(|c| c.message.id == r["message_id"].as_str().unwrap())
            .unwrap();
        let report = AttemptReport {
            connector: Some("hook".into()),
            started_at: rapport::store::now_ms(),
            latency_ms: 3,
            outcome,
            error: None,
            next,
        };
        assert!(store.record_attempt(claim, &report).await.unwrap());
    }
    // Two opens of the first message (counted once), one of the second by
    // the provider's id, one event naming no message, one naming another
    // customer's message.
    let event = |customer: &Value, message: Option<&Value>, key: &str| {
        let payload = message.map_or(json!({}), |m| json!({ "message_id": m }));
        json!({ "customer_id": customer, "kind": "message_opened", "payload": payload, "idempotency_key": key })
    };
    for (i, e) in [
        event(&treated[0]["customer_id"], Some(&treated[0]["message_id"]), "o1"),
        event(&treated[0]["customer_id"], Some(&treated[0]["message_id"]), "o2"),
        event(&treated[1]["customer_id"], Some(&json!("prov-77")), "o5"),
        event(&treated[1]["customer_id"], None, "o3"),
        event(&treated[2]["customer_id"], Some(&treated[0]["message_id"]), "o4"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, b) = app.post("/v1/interactions", &acme.write, e).await;
        assert_eq!(s, 201, "event {i}: {b}");
    }
    // Purchases after the start: two recipients (one buys twice), one
    // control customer.
    let buy = |customer: &Value, amount: &str, key: &str| json!({ "customer_id": customer, "kind": "purchase", "amount": amount, "currency": "USD", "idempotency_key": key });
    for (i, p) in [
        buy(&treated[0]["customer_id"], "30.00", "p1"),
        buy(&treated[0]["customer_id"], "10.00", "p2"),
        buy(&treated[1]["customer_id"], "20.00", "p3"),
        buy(&control[0]["customer_id"], "15.00", "p4"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, b) = app.post("/v1/interactions", &acme.write, p).await;
        assert_eq!(s, 201, "purchase {i}: {b}");
    }

    let (s, report) = app.get(&format!("/v1/campaigns/{id}"), &acme.read).await;
    assert_eq!(s, 200, "{report}");
    let counts = &report["counts"];
    assert_eq!(counts["delivered"], 2, "{report}");
    assert_eq!(counts["failed"], 1, "{report}");
    assert_eq!(counts["pending"], treated.len() - 3, "{report}");
    assert_eq!(counts["opened"], 2, "{report}");
    let results = &report["results"];
    let (nt, nc) = (treated.len() as f64, control.len() as f64);
    assert_eq!(results["recipients"]["customers"], treated.len());
    assert_eq!(results["recipients"]["converted"], 2);
    assert_eq!(results["recipients"]["purchases"], 3);
    assert_eq!(results["control"]["customers"], control.len());
    assert_eq!(results["control"]["converted"], 1);
    let rate_t = results["recipients"]["conversion_rate"].as_f64().unwrap();
    let rate_c = results["control"]["conversion_rate"].as_f64().unwrap();
    assert!(
        (rate_t - 2.0 / nt).abs() < 1e-12 && (rate_c - 1.0 / nc).abs() < 1e-12,
        "{results}"
    );
    let uplift = results["conversion_uplift"].as_f64().unwrap();
    assert!((uplift - (2.0 / nt - 1.0 / nc)).abs() < 1e-12, "{results}");
    let relative = results["relative_uplift"].as_f64().unwrap();
    assert!(
        (relative - (2.0 / nt - 1.0 / nc) / (1.0 / nc)).abs() < 1e-12,
        "{results}"
    );
    let revenue = &results["recipients"]["revenue"][0];
    assert_eq!(revenue["total"]["amount"], "60.00");
    assert_eq!(revenue["per_customer"]["amount_minor"], 6000 / treated.len() as i64);
    assert_eq!(results["control"]["revenue"][0]["total"]["amount"], "15.00");

    // Another tenant sees none of it.
    let globex = app.tenant("Globex").await;
    let (s, b) = app.get(&format!("/v1/campaigns/{id}"), &globex.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get(&format!("/v1/campaigns/{id}/recipients"), &globex.admin).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.get("/v1/campaigns", &globex.admin).await;
    assert_eq!(s, 200);
    assert_eq!(b["items"], json!([]));
    // Nor can it target this tenant's segment: its campaign finds no one.
    let (s, b) = app
        .put(
            "/v1/message-templates/winback",
            &globex.admin,
            json!({ "channel": "email", "body": "x" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post("/v1/campaigns", &globex.write, campaign_body("uplift", 0.5))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["counts"]["audience"], 0, "{b}");
    // A read key cannot start one.
    let (s, b) = app.post("/v1/campaigns", &acme.read, campaign_body("r", 0.5)).await;
    assert_error(s, &b, 403, "forbidden");
}

both_backends!(
    a_campaign_sends_once_skips_suppressed_and_holds_out_control,
    a_campaign_reports_delivery_opens_and_uplift
);
