//! API tests: loyalty accounts, the points ledger (FIFO lots, expiry,
//! idempotency), concurrent redemption, tiers and rewards, tenant isolation,
//! roles and malformed input.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Backend, TestApp, TestTenant, assert_error};
use rapport::store::loyalty::{LedgerKind, LedgerOp, apply_ledger_ops_tx};
use rapport::store::{StoreError, TenantId};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

async fn customer(app: &TestApp, t: &TestTenant, external_id: &str) -> String {
    let (s, b) = app
        .post(
            "/v1/customers",
            &t.write,
            json!({ "external_id": external_id, "name": "Ada" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

async fn reward(app: &TestApp, t: &TestTenant, body: Value) -> String {
    let (s, b) = app.post("/v1/loyalty/rewards", &t.admin, body).await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().unwrap().to_string()
}

async fn earn(app: &TestApp, t: &TestTenant, cid: &str, points: i64, expires_at: Option<String>) -> Value {
    let mut body = json!({ "kind": "earn", "points": points, "reason": "purchase" });
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let (s, b) = app
        .post(&format!("/v1/customers/{cid}/loyalty/ledger"), &t.write, body)
        .await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn balance(app: &TestApp, t: &TestTenant, cid: &str) -> i64 {
    let (s, b) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(s, 200, "{b}");
    b["balance"].as_i64().unwrap()
}

/// The whole ledger, oldest first.
async fn ledger(app: &TestApp, t: &TestTenant, cid: &str) -> Vec<Value> {
    let (s, b) = app
        .get(&format!("/v1/customers/{cid}/loyalty/ledger?limit=500"), &t.read)
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["next_cursor"].is_null());
    let mut items = b["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

fn rfc3339_in(ms: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::milliseconds(ms))
        .format(&Rfc3339)
        .unwrap()
}

async fn concurrent_redemptions(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    let rid = reward(&app, &t, json!({ "name": "Mug", "cost_points": 100 })).await;
    earn(&app, &t, &cid, 1000, None).await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/customers/{cid}/loyalty/redeem"));
        let token = t.write.clone();
        let rid = rid.clone();
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "reward_id": rid }))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        });
    }
    let mut ok = 0;
    let mut refused = 0;
    let mut balances_after = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        match status {
            201 => {
                ok += 1;
                assert_eq!(body["entry"]["points"], -100);
                assert_eq!(body["entry"]["kind"], "redeem");
                balances_after.push(body["balance"].as_i64().unwrap());
            }
            409 => {
                refused += 1;
                assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
                assert_eq!(body["error"]["details"], json!({ "balance": 0, "required": 100 }));
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (10, 40));
    balances_after.sort();
    assert_eq!(balances_after, vec![0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
    assert_eq!(balance(&app, &t, &cid).await, 0);

    let entries = ledger(&app, &t, &cid).await;
    assert_eq!(entries.len(), 11);
    assert_eq!(entries.iter().map(|e| e["points"].as_i64().unwrap()).sum::<i64>(), 0);
    assert_eq!(entries.iter().filter(|e| e["kind"] == "redeem").count(), 10);
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());

    // Every redemption drew 100 from the one earn lot.
    let (s, export) = app.get(&format!("/v1/customers/{cid}/export"), &t.admin).await;
    assert_eq!(s, 200, "{export}");
    let allocations = export["loyalty"]["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 10);
    assert!(
        allocations
            .iter()
            .all(|a| a["credit_id"] == entries[0]["id"] && a["points"] == 100)
    );
    assert_eq!(export["loyalty"]["account"]["balance"], 0);
    assert_eq!(export["loyalty"]["account"]["lifetime_earned"], 1000);

    // Concurrent requests sharing one idempotency key, for two customers:
    // exactly one is written, the same customer's others replay it (200),
    // the other customer's are refused as a different request (409).
    let other = customer(&app, &t, "c-2").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let client = app.client.clone();
        let who = if i % 2 == 0 { cid.clone() } else { other.clone() };
        let url = app.url(&format!("/v1/customers/{who}/loyalty/ledger"));
        let token = t.write.clone();
        tasks.spawn(async move {
            let body = json!({ "kind": "earn", "points": 7, "reason": "retry", "idempotency_key": "shared" });
            let resp = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            (who, resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        });
    }
    let mut outcomes: HashMap<(String, u16), usize> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (who, status, body) = done.unwrap();
        assert!(matches!(status, 200 | 201 | 409), "{status}: {body}");
        *outcomes.entry((who, status)).or_default() += 1;
    }
    let winner = outcomes.keys().find(|(_, s)| *s == 201).unwrap().0.clone();
    let loser = if winner == cid { other.clone() } else { cid.clone() };
    let expected: HashMap<(String, u16), usize> = HashMap::from([
        ((winner.clone(), 201), 1),
        ((winner.clone(), 200), 4),
        ((loser.clone(), 409), 5),
    ]);
    assert_eq!(outcomes, expected);
    assert_eq!(balance(&app, &t, &winner).await, 7);
    assert_eq!(balance(&app, &t, &loser).await, 0);
}

async fn fifo_lots_and_expiry(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    let lazy = customer(&app, &t, "c-2").await;
    let r40 = reward(&app, &t, json!({ "name": "Tote", "cost_points": 40 })).await;

    // Expiry must be in the future; adjustments never expire.
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.write,
            json!({ "kind": "earn", "points": 10, "reason": "x", "expires_at": rfc3339_in(-1000) }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "expires_at");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.admin,
            json!({ "kind": "adjust", "points": 10, "reason": "x", "expires_at": rfc3339_in(60_000) }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");

    // Lots A (expires in 3 s), B (never), C (in 10 days); c-2 gets a lot expiring with A.
    let expiry = OffsetDateTime::now_utc() + time::Duration::milliseconds(3000);
    let soon = expiry.format(&Rfc3339).unwrap();
    let a = earn(&app, &t, &cid, 100, Some(soon.clone())).await["entry"].clone();
    let b_lot = earn(&app, &t, &cid, 50, None).await["entry"].clone();
    let c = earn(&app, &t, &cid, 30, Some(rfc3339_in(10 * 24 * 3600 * 1000))).await["entry"].clone();
    earn(&app, &t, &lazy, 100, Some(soon)).await;
    earn(&app, &t, &lazy, 50, None).await;
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(account["balance"], 180);
    assert_eq!(account["lifetime_earned"], 180);
    assert_eq!(account["expiring_in_30_days"], 130);
    assert_eq!(account["last_seq"], 3);

    // The first redemption takes the oldest lot (A).
    let (s, first) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/redeem"),
            &t.write,
            json!({ "reward_id": r40 }),
        )
        .await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["balance"], 140);
    let left = expiry - OffsetDateTime::now_utc();
    assert!(
        left.is_positive(),
        "the machine is too slow for this test's 3 s expiry window"
    );
    tokio::time::sleep(Duration::from_millis(left.whole_milliseconds() as u64 + 300)).await;

    // Reads exclude the expired remainder of A (60) without writing anything.
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(account["balance"], 80);
    assert_eq!(account["expiring_in_30_days"], 30);
    assert_eq!(ledger(&app, &t, &cid).await.len(), 4);
    assert_eq!(balance(&app, &t, &lazy).await, 50);

    // A write on an account sweeps it first: c-2's expire entry precedes the earn.
    earn(&app, &t, &lazy, 10, None).await;
    let lazy_ledger = ledger(&app, &t, &lazy).await;
    let kinds: Vec<(&str, i64)> = lazy_ledger
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["points"].as_i64().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("earn", 100), ("earn", 50), ("expire", -100), ("earn", 10)]);
    assert_eq!(balance(&app, &t, &lazy).await, 60);

    // The tenant-wide sweep records c-1's expiry; a second sweep finds nothing.
    let (s, b) = app.post("/v1/loyalty/expire", &t.admin, json!({})).await;
    assert_eq!((s.as_u16(), b["expired_entries"].as_u64()), (200, Some(1)), "{b}");
    let (_, b) = app.post("/v1/loyalty/expire", &t.admin, json!({})).await;
    assert_eq!(b["expired_entries"], 0);
    let entries = ledger(&app, &t, &cid).await;
    assert_eq!(entries.len(), 5);
    assert_eq!(
        (entries[4]["kind"].as_str(), entries[4]["points"].as_i64()),
        (Some("expire"), Some(-60))
    );
    assert_eq!(balance(&app, &t, &cid).await, 80);

    // Next debits take B (older) before C.
    let (s, second) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/redeem"),
            &t.write,
            json!({ "reward_id": r40 }),
        )
        .await;
    assert_eq!((s.as_u16(), second["balance"].as_i64()), (201, Some(40)), "{second}");
    let (s, adjust) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.admin,
            json!({ "kind": "adjust", "points": -20, "reason": "goodwill reversal" }),
        )
        .await;
    assert_eq!((s.as_u16(), adjust["balance"].as_i64()), (201, Some(20)), "{adjust}");

    let (_, export) = app.get(&format!("/v1/customers/{cid}/export"), &t.admin).await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let expire_id = id(&entries[4]);
    let got: Vec<(String, String, i64)> = export["loyalty"]["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["debit_id"].as_str().unwrap().into(),
                x["credit_id"].as_str().unwrap().into(),
                x["points"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (id(&first["entry"]), id(&a), 40),
            (expire_id, id(&a), 60),
            (id(&second["entry"]), id(&b_lot), 40),
            (id(&adjust["entry"]), id(&b_lot), 10),
            (id(&adjust["entry"]), id(&c), 10),
        ]
    );
    let ledger_sum: i64 = export["loyalty"]["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["points"].as_i64().unwrap())
        .sum();
    assert_eq!(ledger_sum, 20);
    assert_eq!(export["loyalty"]["account"]["balance"], 20);
}

/// One customer's account walked through the ledger, rewards and tiers on one
/// app, as named steps: each relies on what the previous ones left (balances,
/// ledger seqs), so they run in this order.
async fn idempotency_stock_tiers(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    let path = format!("/v1/customers/{cid}/loyalty/ledger");
    let redeem = format!("/v1/customers/{cid}/loyalty/redeem");
    let c = Account {
        app: &app,
        t: &t,
        tier_path: format!("/v1/customers/{cid}/loyalty/tier"),
        cid,
        path,
        redeem,
    };
    account_without_entries_reads_zeros(&c).await;
    earn_is_idempotent_and_checked(&c).await;
    adjust_may_not_overdraw(&c).await;
    let limited = redemption_is_idempotent_and_bounded_by_stock(&c).await;
    inactive_unknown_and_redeemed_rewards(&c, &limited).await;
    let (silver_id, gold_id) = tiers_gate_rewards(&c).await;
    tier_crud(&c, &silver_id, &gold_id).await;
    ledger_pages_newest_first(&c).await;
    unknown_customer_is_not_found(&c).await;
}

/// What the steps of [`idempotency_stock_tiers`] share: one tenant's
/// customer and the paths of its account.
struct Account<'a> {
    app: &'a TestApp,
    t: &'a TestTenant,
    cid: String,
    path: String,
    redeem: String,
    tier_path: String,
}

/// Reading a customer without an account: zeros, and nothing written.
async fn account_without_entries_reads_zeros(c: &Account<'_>) {
    let app = c.app;
    let t = c.t;
    let cid = c.cid.as_str();
    let (s, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            account["balance"].as_i64(),
            account["last_seq"].as_i64(),
            account["tier"].is_null(),
            account["created_at"].is_null()
        ),
        (Some(0), Some(0), true, true)
    );
}

/// An earn retried with its key replays; invalid points and reasons are 422.
async fn earn_is_idempotent_and_checked(c: &Account<'_>) {
    let app = c.app;
    let t = c.t;
    let path = c.path.as_str();
    let body = json!({ "kind": "earn", "points": 500, "reason": "welcome", "idempotency_key": "k1" });
    let (s, first) = app.post(path, &t.write, body.clone()).await;
    assert_eq!((s.as_u16(), first["balance"].as_i64()), (201, Some(500)), "{first}");
    let (s, again) = app.post(path, &t.write, body).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["entry"], first["entry"]);
    assert_eq!(again["balance"], 500);
    let (s, b) = app
        .post(
            path,
            &t.write,
            json!({ "kind": "earn", "points": 501, "reason": "welcome", "idempotency_key": "k1" }),
        )
        .await;
    assert_error(s, &b, 409, "idempotency_conflict");

    // Invalid amounts.
    for points in [0, -5] {
        let (s, b) = app
            .post(
                path,
                &t.write,
                json!({ "kind": "earn", "points": points, "reason": "x" }),
            )
            .await;
        assert_error(s, &b, 422, "validation_failed");
    }
    let (s, b) = app
        .post(path, &t.write, json!({ "kind": "earn", "points": 5, "reason": "  " }))
        .await;
    assert_error(s, &b, 422, "validation_failed");
}

/// A negative adjust may not overdraw; a positive one credits.
async fn adjust_may_not_overdraw(c: &Account<'_>) {
    let app = c.app;
    let t = c.t;
    let path = c.path.as_str();
    let (s, b) = app
        .post(
            path,
            &t.admin,
            json!({ "kind": "adjust", "points": -501, "reason": "fix" }),
        )
        .await;
    assert_error(s, &b, 409, "insufficient_points");
    assert_eq!(b["error"]["details"], json!({ "balance": 500, "required": 501 }));
    let (s, b) = app
        .post(
            path,
            &t.admin,
            json!({ "kind": "adjust", "points": 25, "reason": "bonus" }),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["balance"].as_i64(), b["entry"]["kind"].as_str()),
        (201, Some(525), Some("adjust"))
    );
}

/// Redemption replays by key, stops at the stock, and resumes once restocked;
/// returns the reward redeemed.
async fn redemption_is_idempotent_and_bounded_by_stock(c: &Account<'_>) -> String {
    let app = c.app;
    let t = c.t;
    let cid = c.cid.as_str();
    let redeem = c.redeem.as_str();
    let limited = reward(app, t, json!({ "name": "Poster", "cost_points": 100, "stock": 1 })).await;
    let (s, r1) = app
        .post(
            redeem,
            &t.write,
            json!({ "reward_id": limited, "idempotency_key": "r1" }),
        )
        .await;
    assert_eq!((s.as_u16(), r1["balance"].as_i64()), (201, Some(425)), "{r1}");
    assert_eq!(r1["entry"]["reward_id"], limited.as_str());
    let (s, r1b) = app
        .post(
            redeem,
            &t.write,
            json!({ "reward_id": limited, "idempotency_key": "r1" }),
        )
        .await;
    assert_eq!(s, 200, "{r1b}");
    assert_eq!(
        (r1b["entry"]["id"].clone(), r1b["balance"].as_i64()),
        (r1["entry"]["id"].clone(), Some(425))
    );
    let (s, b) = app
        .post(
            redeem,
            &t.write,
            json!({ "reward_id": limited, "idempotency_key": "k1" }),
        )
        .await;
    assert_error(s, &b, 409, "idempotency_conflict");
    let (_, r) = app.get(&format!("/v1/loyalty/rewards/{limited}"), &t.read).await;
    assert_eq!(r["stock"], 0);
    let (s, b) = app.post(redeem, &t.write, json!({ "reward_id": limited })).await;
    assert_error(s, &b, 409, "out_of_stock");
    assert_eq!(balance(app, t, cid).await, 425);
    // Restock to unlimited (null), then it redeems again.
    let (s, r) = app
        .patch(
            &format!("/v1/loyalty/rewards/{limited}"),
            &t.admin,
            json!({ "stock": null }),
        )
        .await;
    assert_eq!(
        (s.as_u16(), r["stock"].is_null(), r["cost_points"].as_i64()),
        (200, true, Some(100)),
        "{r}"
    );
    let (s, _) = app.post(redeem, &t.write, json!({ "reward_id": limited })).await;
    assert_eq!(s, 201);
    assert_eq!(balance(app, t, cid).await, 325);
    limited
}

/// Inactive and unknown rewards are refused; a redeemed reward cannot be
/// deleted, an unused one can.
async fn inactive_unknown_and_redeemed_rewards(c: &Account<'_>, limited: &str) {
    let app = c.app;
    let t = c.t;
    let redeem = c.redeem.as_str();
    let inactive = reward(app, t, json!({ "name": "Old", "cost_points": 10, "active": false })).await;
    let (s, b) = app.post(redeem, &t.write, json!({ "reward_id": inactive })).await;
    assert_error(s, &b, 409, "reward_inactive");
    let (s, b) = app
        .post(redeem, &t.write, json!({ "reward_id": "no-such-reward" }))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (_, list) = app.get("/v1/loyalty/rewards?active=true", &t.read).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = app.get("/v1/loyalty/rewards", &t.read).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (s, b) = app
        .post(
            "/v1/loyalty/rewards",
            &t.admin,
            json!({ "name": "Free", "cost_points": 0 }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    // A redeemed reward cannot be deleted; an unused one can.
    let (s, b) = app.delete(&format!("/v1/loyalty/rewards/{limited}"), &t.admin).await;
    assert_error(s, &b, 409, "reward_in_use");
    assert_eq!(
        app.delete(&format!("/v1/loyalty/rewards/{inactive}"), &t.admin).await.0,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/loyalty/rewards/{inactive}"), &t.read).await.0,
        404
    );
}

/// Tiers gate rewards by rank; tier changes are recorded, newest first.
/// Returns the silver and gold tier ids.
async fn tiers_gate_rewards(c: &Account<'_>) -> (String, String) {
    let app = c.app;
    let t = c.t;
    let cid = c.cid.as_str();
    let redeem = c.redeem.as_str();
    let tier_path = c.tier_path.as_str();
    let (s, silver) = app
        .post(
            "/v1/loyalty/tiers",
            &t.admin,
            json!({ "name": "Silver", "rank": 1, "min_points": 100 }),
        )
        .await;
    assert_eq!(s, 201, "{silver}");
    assert_eq!(silver["perks"], json!({}));
    let (s, gold) = app
        .post(
            "/v1/loyalty/tiers",
            &t.admin,
            json!({ "name": "Gold", "rank": 2, "min_points": 1000, "perks": { "free_shipping": true } }),
        )
        .await;
    assert_eq!(s, 201, "{gold}");
    let (s, b) = app
        .post("/v1/loyalty/tiers", &t.admin, json!({ "name": "Other", "rank": 2 }))
        .await;
    assert_error(s, &b, 409, "tier_exists");
    let (s, b) = app
        .post(
            "/v1/loyalty/tiers",
            &t.admin,
            json!({ "name": "Bad", "rank": 3, "perks": [1] }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    let (silver_id, gold_id) = (silver["id"].as_str().unwrap(), gold["id"].as_str().unwrap());
    let vip = reward(
        app,
        t,
        json!({ "name": "Lounge", "cost_points": 50, "min_tier_rank": 2 }),
    )
    .await;
    let (s, b) = app.post(redeem, &t.write, json!({ "reward_id": vip })).await;
    assert_error(s, &b, 409, "tier_too_low");
    let (s, b) = app
        .put(tier_path, &t.admin, json!({ "tier_id": silver_id, "reason": "spend" }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["change"]["from_tier_id"].is_null(),
            b["change"]["to_tier_id"].as_str()
        ),
        (true, Some(silver_id))
    );
    assert_eq!(b["account"]["tier"]["name"], "Silver");
    let (s, b) = app.post(redeem, &t.write, json!({ "reward_id": vip })).await;
    assert_error(s, &b, 409, "tier_too_low");
    let (s, b) = app
        .put(
            tier_path,
            &t.admin,
            json!({ "tier_id": gold_id, "reason": "promotion" }),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["change"]["from_tier_id"].as_str()),
        (200, Some(silver_id)),
        "{b}"
    );
    let (s, b) = app
        .put(tier_path, &t.admin, json!({ "tier_id": gold_id, "reason": "again" }))
        .await;
    assert_eq!((s.as_u16(), b["change"].is_null()), (200, true), "{b}");
    let (s, b) = app
        .put(tier_path, &t.admin, json!({ "tier_id": "nope", "reason": "x" }))
        .await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app.post(redeem, &t.write, json!({ "reward_id": vip })).await;
    assert_eq!((s.as_u16(), b["balance"].as_i64()), (201, Some(275)), "{b}");
    let (_, changes) = app
        .get(&format!("/v1/customers/{cid}/loyalty/tier-changes"), &t.read)
        .await;
    let changes: Vec<(Value, Value, Value)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from_tier_id"].clone(), c["to_tier_id"].clone(), c["reason"].clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (json!(silver_id), json!(gold_id), json!("promotion")),
            (Value::Null, json!(silver_id), json!("spend"))
        ]
    );
    (silver_id.to_string(), gold_id.to_string())
}

/// Tier CRUD: list by rank, patch, in-use delete refused, unused delete.
async fn tier_crud(c: &Account<'_>, silver_id: &str, gold_id: &str) {
    let app = c.app;
    let t = c.t;
    let tier_path = c.tier_path.as_str();
    let (_, tiers) = app.get("/v1/loyalty/tiers", &t.read).await;
    assert_eq!(
        tiers
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].clone())
            .collect::<Vec<_>>(),
        vec![json!("Silver"), json!("Gold")]
    );
    let (s, b) = app
        .patch(
            &format!("/v1/loyalty/tiers/{silver_id}"),
            &t.admin,
            json!({ "min_points": 200 }),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["min_points"].as_i64(), b["name"].as_str()),
        (200, Some(200), Some("Silver"))
    );
    let (s, b) = app
        .patch(
            &format!("/v1/loyalty/tiers/{silver_id}"),
            &t.admin,
            json!({ "rank": 2 }),
        )
        .await;
    assert_error(s, &b, 409, "tier_exists");
    let (s, b) = app.delete(&format!("/v1/loyalty/tiers/{gold_id}"), &t.admin).await;
    assert_error(s, &b, 409, "tier_in_use");
    assert_eq!(
        app.delete(&format!("/v1/loyalty/tiers/{silver_id}"), &t.admin).await.0,
        204
    );
    assert_eq!(app.get(&format!("/v1/loyalty/tiers/{silver_id}"), &t.read).await.0, 404);
    let (s, b) = app
        .put(tier_path, &t.admin, json!({ "tier_id": null, "reason": "reset" }))
        .await;
    assert_eq!((s.as_u16(), b["account"]["tier"].is_null()), (200, true), "{b}");
}

/// The ledger pages newest first; bad limits and cursors are refused.
async fn ledger_pages_newest_first(c: &Account<'_>) {
    let app = c.app;
    let t = c.t;
    let path = c.path.as_str();
    let (s, page1) = app.get(&format!("{path}?limit=3"), &t.read).await;
    assert_eq!(s, 200);
    let seqs = |p: &Value| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&page1), vec![5, 4, 3]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.get(&format!("{path}?limit=3&cursor={cursor}"), &t.read).await;
    assert_eq!(seqs(&page2), vec![2, 1]);
    assert!(page2["next_cursor"].is_null());
    let (s, b) = app.get(&format!("{path}?limit=0"), &t.read).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.get(&format!("{path}?cursor=garbage!"), &t.read).await;
    assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.get(&format!("{path}?limit=abc"), &t.read).await;
    assert_error(s, &b, 400, "invalid_query");
}

/// An unknown customer is 404 on read and write.
async fn unknown_customer_is_not_found(c: &Account<'_>) {
    let app = c.app;
    let t = c.t;
    let (s, b) = app.get("/v1/customers/nobody/loyalty", &t.read).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = app
        .post(
            "/v1/customers/nobody/loyalty/ledger",
            &t.write,
            json!({ "kind": "earn", "points": 1, "reason": "x" }),
        )
        .await;
    assert_error(s, &b, 404, "not_found");
}

async fn tenant_isolation(backend: Backend) {
    let app = TestApp::start(backend).await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Other").await;
    let cid = customer(&app, &a, "c-1").await;
    let b_cid = customer(&app, &b, "c-1").await;
    let rid = reward(&app, &a, json!({ "name": "Mug", "cost_points": 10 })).await;
    let (_, tier) = app
        .post("/v1/loyalty/tiers", &a.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    let tid = tier["id"].as_str().unwrap().to_string();
    earn(&app, &a, &cid, 100, Some(rfc3339_in(3_600_000))).await;
    app.put(
        &format!("/v1/customers/{cid}/loyalty/tier"),
        &a.admin,
        json!({ "tier_id": tid, "reason": "x" }),
    )
    .await;

    let nf = |(s, body): (reqwest::StatusCode, Value)| assert_error(s, &body, 404, "not_found");
    nf(app.get(&format!("/v1/customers/{cid}/loyalty"), &b.admin).await);
    nf(app.get(&format!("/v1/customers/{cid}/loyalty/ledger"), &b.admin).await);
    nf(app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &b.admin,
            json!({ "kind": "earn", "points": 5, "reason": "x" }),
        )
        .await);
    nf(app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &b.admin,
            json!({ "kind": "adjust", "points": -5, "reason": "x" }),
        )
        .await);
    nf(app
        .post(
            &format!("/v1/customers/{cid}/loyalty/redeem"),
            &b.admin,
            json!({ "reward_id": rid }),
        )
        .await);
    nf(app
        .put(
            &format!("/v1/customers/{cid}/loyalty/tier"),
            &b.admin,
            json!({ "tier_id": null, "reason": "x" }),
        )
        .await);
    nf(app
        .get(&format!("/v1/customers/{cid}/loyalty/tier-changes"), &b.admin)
        .await);
    nf(app.get(&format!("/v1/loyalty/tiers/{tid}"), &b.admin).await);
    nf(app
        .patch(&format!("/v1/loyalty/tiers/{tid}"), &b.admin, json!({ "name": "Mine" }))
        .await);
    nf(app.delete(&format!("/v1/loyalty/tiers/{tid}"), &b.admin).await);
    nf(app.get(&format!("/v1/loyalty/rewards/{rid}"), &b.admin).await);
    nf(app
        .patch(
            &format!("/v1/loyalty/rewards/{rid}"),
            &b.admin,
            json!({ "active": false }),
        )
        .await);
    nf(app.delete(&format!("/v1/loyalty/rewards/{rid}"), &b.admin).await);
    // B's own customer cannot use A's reward or tier either.
    earn(&app, &b, &b_cid, 100, None).await;
    nf(app
        .post(
            &format!("/v1/customers/{b_cid}/loyalty/redeem"),
            &b.write,
            json!({ "reward_id": rid }),
        )
        .await);
    nf(app
        .put(
            &format!("/v1/customers/{b_cid}/loyalty/tier"),
            &b.admin,
            json!({ "tier_id": tid, "reason": "x" }),
        )
        .await);
    // Lists are B's own (empty); B's sweep does not touch A.
    assert_eq!(app.get("/v1/loyalty/tiers", &b.read).await.1, json!([]));
    assert_eq!(app.get("/v1/loyalty/rewards", &b.read).await.1, json!([]));
    assert_eq!(
        app.post("/v1/loyalty/expire", &b.admin, json!({})).await.1["expired_entries"],
        0
    );
    assert_eq!(
        app.get(&format!("/v1/customers/{b_cid}/loyalty/tier-changes"), &b.read)
            .await
            .1,
        json!([])
    );

    // Nothing of A changed.
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &a.read).await;
    assert_eq!(
        (account["balance"].as_i64(), account["tier"]["id"].as_str()),
        (Some(100), Some(tid.as_str()))
    );
    assert_eq!(ledger(&app, &a, &cid).await.len(), 1);
    let (_, r) = app.get(&format!("/v1/loyalty/rewards/{rid}"), &a.read).await;
    assert_eq!(r["active"], true);
    assert_eq!(
        app.get(&format!("/v1/loyalty/tiers/{tid}"), &a.read).await.1["name"],
        "Gold"
    );
    assert_eq!(balance(&app, &b, &b_cid).await, 100);
}

async fn roles(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    let rid = reward(&app, &t, json!({ "name": "Mug", "cost_points": 10 })).await;
    let forbidden = |(s, body): (reqwest::StatusCode, Value)| assert_error(s, &body, 403, "forbidden");
    let ledger_path = format!("/v1/customers/{cid}/loyalty/ledger");

    // Read keys read but never write.
    assert_eq!(app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await.0, 200);
    forbidden(
        app.post(
            &ledger_path,
            &t.read,
            json!({ "kind": "earn", "points": 5, "reason": "x" }),
        )
        .await,
    );
    forbidden(
        app.post(
            &format!("/v1/customers/{cid}/loyalty/redeem"),
            &t.read,
            json!({ "reward_id": rid }),
        )
        .await,
    );
    // Write keys earn and redeem, but do not adjust or manage the catalogue.
    earn(&app, &t, &cid, 50, None).await;
    forbidden(
        app.post(
            &ledger_path,
            &t.write,
            json!({ "kind": "adjust", "points": 5, "reason": "x" }),
        )
        .await,
    );
    forbidden(
        app.put(
            &format!("/v1/customers/{cid}/loyalty/tier"),
            &t.write,
            json!({ "tier_id": null, "reason": "x" }),
        )
        .await,
    );
    forbidden(
        app.post("/v1/loyalty/tiers", &t.write, json!({ "name": "Gold", "rank": 1 }))
            .await,
    );
    forbidden(
        app.post(
            "/v1/loyalty/rewards",
            &t.write,
            json!({ "name": "X", "cost_points": 1 }),
        )
        .await,
    );
    forbidden(
        app.patch(
            &format!("/v1/loyalty/rewards/{rid}"),
            &t.write,
            json!({ "active": false }),
        )
        .await,
    );
    forbidden(app.delete(&format!("/v1/loyalty/rewards/{rid}"), &t.write).await);
    forbidden(app.post("/v1/loyalty/expire", &t.write, json!({})).await);
    // Platform keys see no tenant data.
    forbidden(app.get(&format!("/v1/customers/{cid}/loyalty"), &app.platform).await);
    let (s, b) = app.get(&format!("/v1/customers/{cid}/loyalty"), "rpk_nope").await;
    assert_error(s, &b, 401, "unauthorized");
    // Every endpoint is in the generated OpenAPI document.
    let (_, doc) = app.get("/v1/openapi.json", "").await;
    for path in [
        "/v1/customers/{customer_id}/loyalty",
        "/v1/customers/{customer_id}/loyalty/ledger",
        "/v1/customers/{customer_id}/loyalty/redeem",
        "/v1/customers/{customer_id}/loyalty/tier",
        "/v1/customers/{customer_id}/loyalty/tier-changes",
        "/v1/loyalty/tiers/{tier_id}",
        "/v1/loyalty/rewards/{reward_id}",
        "/v1/loyalty/expire",
        "/v1/customers/{customer_id}/export",
        "/v1/customers/{customer_id}/erase",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    // None of the refused writes happened.
    assert_eq!(balance(&app, &t, &cid).await, 50);
    assert_eq!(ledger(&app, &t, &cid).await.len(), 1);
}

async fn malformed_input(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    let rid = reward(&app, &t, json!({ "name": "Mug", "cost_points": 10 })).await;
    let (_, tier) = app
        .post("/v1/loyalty/tiers", &t.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    let tid = tier["id"].as_str().unwrap();

    // (method, path, a body with a wrong type, a body with an unknown field)
    let cases: Vec<(Method, String, Value, Value)> = vec![
        (
            Method::POST,
            format!("/v1/customers/{cid}/loyalty/ledger"),
            json!({ "kind": "earn", "points": "5", "reason": "x" }),
            json!({ "kind": "earn", "points": 5, "reason": "x", "tenant_id": "other" }),
        ),
        (
            Method::POST,
            format!("/v1/customers/{cid}/loyalty/redeem"),
            json!({ "reward_id": 7 }),
            json!({ "reward_id": rid, "points": 1 }),
        ),
        (
            Method::PUT,
            format!("/v1/customers/{cid}/loyalty/tier"),
            json!({ "tier_id": 1, "reason": "x" }),
            json!({ "tier_id": null, "reason": "x", "extra": 1 }),
        ),
        (
            Method::POST,
            "/v1/loyalty/tiers".into(),
            json!({ "name": "S", "rank": "1" }),
            json!({ "name": "S", "rank": 1, "x": 1 }),
        ),
        (
            Method::PATCH,
            format!("/v1/loyalty/tiers/{tid}"),
            json!({ "rank": -1.5 }),
            json!({ "colour": "gold" }),
        ),
        (
            Method::POST,
            "/v1/loyalty/rewards".into(),
            json!({ "name": "R", "cost_points": true }),
            json!({ "name": "R", "cost_points": 1, "price": 3 }),
        ),
        (
            Method::PATCH,
            format!("/v1/loyalty/rewards/{rid}"),
            json!({ "stock": "many" }),
            json!({ "sku": "x" }),
        ),
    ];
    let big = vec![b' '; rapport::api::MAX_BODY_BYTES + 10];
    for (method, path, wrong_type, unknown_field) in cases {
        let (s, b) = app
            .raw(method.clone(), &path, &t.admin, "application/json", b"{".to_vec())
            .await;
        assert_error(s, &b, 400, "invalid_json");
        let (s, b) = app.call(method.clone(), &path, &t.admin, Some(wrong_type)).await;
        assert_error(s, &b, 422, "validation_failed");
        let (s, b) = app.call(method.clone(), &path, &t.admin, Some(unknown_field)).await;
        assert_error(s, &b, 422, "validation_failed");
        let (s, b) = app
            .raw(method.clone(), &path, &t.admin, "text/plain", b"{}".to_vec())
            .await;
        assert_error(s, &b, 415, "unsupported_media_type");
        let (s, b) = app
            .raw(method.clone(), &path, &t.admin, "application/json", big.clone())
            .await;
        assert_error(s, &b, 413, "payload_too_large");
    }
    // An unknown ledger kind (expire is system-only) is a validation error.
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.admin,
            json!({ "kind": "expire", "points": -1, "reason": "x" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    // Nothing was written by any of it.
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(
        (account["balance"].as_i64(), account["last_seq"].as_i64()),
        (Some(0), Some(0))
    );
    let (_, r) = app.get(&format!("/v1/loyalty/rewards/{rid}"), &t.read).await;
    let snapshot: HashMap<&str, Value> = [
        ("cost_points", r["cost_points"].clone()),
        ("active", r["active"].clone()),
    ]
    .into();
    assert_eq!(
        snapshot,
        HashMap::from([("cost_points", json!(10)), ("active", json!(true))])
    );
}

/// The plugin path: `apply_ledger_ops_tx` inside the caller's transaction,
/// all-or-nothing, linked to an interaction.
async fn ledger_ops_in_caller_transaction(backend: Backend) {
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let other = app.tenant("Other").await;
    let cid = customer(&app, &t, "c-1").await;
    let rid = reward(&app, &t, json!({ "name": "Mug", "cost_points": 50 })).await;
    let pricey = reward(&app, &t, json!({ "name": "TV", "cost_points": 1000 })).await;
    let (_, tier) = app
        .post("/v1/loyalty/tiers", &t.admin, json!({ "name": "Gold", "rank": 1 }))
        .await;
    let tid = tier["id"].as_str().unwrap().to_string();
    let (s, visit) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": cid, "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201, "{visit}");
    let iid = visit["id"].as_str().unwrap().to_string();
    let (s, foreign) = app
        .post(
            "/v1/interactions",
            &other.write,
            json!({ "customer_external_id": "x", "kind": "visit" }),
        )
        .await;
    assert_eq!(s, 201, "{foreign}");

    let store = &app.server.state.store;
    let tenant = TenantId::for_tests(t.id.clone());
    let ops = vec![
        LedgerOp::Earn {
            points: 200,
            reason: "visit bonus".into(),
            expires_at: None,
            idempotency_key: Some("p-1".into()),
        },
        LedgerOp::SetTier {
            tier_id: Some(tid.clone()),
            reason: "scheme".into(),
        },
        LedgerOp::Redeem {
            reward_id: rid.clone(),
            idempotency_key: None,
        },
    ];
    let mut tx = store.db().begin_write().await.unwrap();
    let entries = apply_ledger_ops_tx(&mut tx, &tenant, &cid, Some(&iid), &ops)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got: Vec<(LedgerKind, i64, Option<String>)> = entries
        .iter()
        .map(|e| (e.kind, e.points, e.interaction_id.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (LedgerKind::Earn, 200, Some(iid.clone())),
            (LedgerKind::Redeem, -50, Some(iid.clone()))
        ]
    );
    let (_, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(
        (account["balance"].as_i64(), account["tier"]["id"].as_str()),
        (Some(150), Some(tid.as_str()))
    );

    // One failing operation rolls back the whole batch (the caller drops the transaction).
    let mut tx = store.db().begin_write().await.unwrap();
    let failing = vec![
        LedgerOp::Earn {
            points: 100,
            reason: "more".into(),
            expires_at: None,
            idempotency_key: None,
        },
        LedgerOp::Redeem {
            reward_id: pricey,
            idempotency_key: None,
        },
    ];
    let err = apply_ledger_ops_tx(&mut tx, &tenant, &cid, None, &failing)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "insufficient_points",
                ..
            }
        ),
        "{err:?}"
    );
    drop(tx);
    // Replaying the first batch's keyed earn is a no-op; another tenant's interaction is not found.
    let mut tx = store.db().begin_write().await.unwrap();
    let replay = apply_ledger_ops_tx(&mut tx, &tenant, &cid, Some(&iid), &ops[..1])
        .await
        .unwrap();
    assert_eq!(replay[0].id, entries[0].id);
    tx.commit().await.unwrap();
    let mut tx = store.db().begin_write().await.unwrap();
    let err = apply_ledger_ops_tx(&mut tx, &tenant, &cid, foreign["id"].as_str(), &ops[2..])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: "interaction" }), "{err:?}");
    drop(tx);
    let mut tx = store.db().begin_write().await.unwrap();
    let err = apply_ledger_ops_tx(&mut tx, &TenantId::for_tests(other.id.clone()), &cid, None, &ops[..1])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { entity: "customer" }), "{err:?}");
    drop(tx);

    assert_eq!(balance(&app, &t, &cid).await, 150);
    assert_eq!(ledger(&app, &t, &cid).await.len(), 2);
    assert_eq!(
        app.get(&format!("/v1/customers/{cid}/loyalty/tier-changes"), &t.read)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The store's tenant-wide sweep has nothing to do here.
    assert_eq!(store.expire_due_points(&tenant).await.unwrap(), 0);
}

/// A balance has a ceiling, so no run of credits can overflow it: a credit
/// that would pass it is a 422 naming `points` and changes nothing; up to
/// the ceiling is fine; the account stays readable.
// Sets a balance at the ceiling straight in the database, faster than
// crediting it through the API.
#[allow(clippy::disallowed_methods)]
async fn balance_ceiling(backend: Backend) {
    use rapport::store::loyalty::{MAX_BALANCE, MAX_POINTS};
    let app = TestApp::start(backend).await;
    let t = app.tenant("Acme").await;
    let cid = customer(&app, &t, "c-1").await;
    earn(&app, &t, &cid, MAX_POINTS, None).await;
    // Reaching the ceiling by API takes a thousand credits: start close to it
    // (the ledger's single entry stays a lot of MAX_POINTS under it).
    sqlx::query(
        "UPDATE loyalty_accounts SET balance = $3, lifetime_earned = $4 WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(&t.id)
    .bind(&cid)
    .bind(MAX_BALANCE - 10)
    .bind(i64::MAX - 3)
    .execute(app.server.state.store.db().pool())
    .await
    .unwrap();
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.write,
            json!({ "kind": "earn", "points": 11, "reason": "too many" }),
        )
        .await;
    assert_error(s, &b, 422, "validation_failed");
    assert_eq!(b["error"]["details"]["field"], "points");
    let (s, b) = app
        .post(
            &format!("/v1/customers/{cid}/loyalty/ledger"),
            &t.write,
            json!({ "kind": "earn", "points": 10, "reason": "just enough" }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["balance"], MAX_BALANCE);
    let (s, account) = app.get(&format!("/v1/customers/{cid}/loyalty"), &t.read).await;
    assert_eq!(s, 200, "{account}");
    assert_eq!(account["balance"], MAX_BALANCE);
    // Lifetime earnings never go down, so they are capped rather than refused.
    assert_eq!(account["lifetime_earned"], i64::MAX, "{account}");
}

both_backends!(
    balance_ceiling,
    concurrent_redemptions,
    ledger_ops_in_caller_transaction,
    fifo_lots_and_expiry,
    idempotency_stock_tiers,
    tenant_isolation,
    roles,
    malformed_input
);
