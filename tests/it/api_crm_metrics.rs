//! The program's metrics (`GET /v1/metrics/crm`) on a small tenant whose
//! every figure is worked out by hand below, as JSON and CSV; another
//! tenant's metrics see none of it; and SQLite's plans of the metrics'
//! queries read through indexes only (no table scan).

use rapport::store::TenantId;
use rapport::store::crm_metrics::{Interval, MetricsRequest};
use rapport::store::scores::NewScore;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, TestTenant};

async fn customer(app: &TestApp, t: &TestTenant, ext: &str) -> String {
    let (s, c) = app
        .post("/v1/customers", &t.write, json!({ "external_id": ext, "name": ext }))
        .await;
    assert_eq!(s, 201, "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn buy(app: &TestApp, t: &TestTenant, customer: &str, at: &str, amount: &str, currency: &str) {
    let (s, b) = app
        .post(
            "/v1/interactions",
            &t.write,
            json!({ "customer_id": customer, "kind": "purchase", "occurred_at": at,
                    "amount": amount, "currency": currency }),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}

/// The hand-computed tenant (range 2024-01-01 to 2024-04-01, by month):
///
/// | customer | purchases                                             |
/// |----------|-------------------------------------------------------|
/// | A        | 2023-12-10 $10; 2024-01-05 $20; 2024-01-20 $30; 2024-03-03 $40 |
/// | B        | 2024-01-15 $50; 2024-02-10 $10                        |
/// | C        | 2024-02-01 $100                                       |
/// | D        | 2024-02-20 €5; 2024-03-15 €7                          |
/// | E        | 2023-11-01 $1 (and a visit in January: not a purchase)|
///
/// Active: Dec {A}, Jan {A,B}, Feb {B,C,D}, Mar {A,D}.
/// Jan: acquired B (1); retained A (1); lost 0; retention 1/1, churn 0;
///      repeat: A (bought before) of {A,B} = 1/2; orders 3; USD 100.00 / 3 = 33.33.
/// Feb: acquired C, D (2); retained B (1); lost A (1); retention 1/2, churn 1/2;
///      repeat: B of {B,C,D} = 1/3; orders 3; USD 110.00 / 2 = 55.00, EUR 5.00 / 1.
/// Mar: acquired 0; retained D (1); lost B, C (2); retention 1/3, churn 2/3;
///      repeat: A, D of {A,D} = 1; orders 2; USD 40.00 / 1, EUR 7.00 / 1.
/// Cohorts: Jan {B}: active [1, 1, 0]; Feb {C, D}: [2, 1]; Mar: none.
/// Lifetime value (clv scores A 100, B 50.5): 2 customers, 150.5, 75.25.
/// Loyalty: A 120 points, B 30: 2 accounts, 150 points, at 0.01 = 1.5.
/// NPS answers (satisfaction interactions, not purchases): E 10 and A 9 in
/// the range (promoters), B 3 (detractor), C 7 (passive), and E 0 in 2023
/// (outside it): (2 - 1) / 4 = 25.0.
async fn metrics_equal_hand_computed_values(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let a = customer(&app, &acme, "A").await;
    let b = customer(&app, &acme, "B").await;
    let c = customer(&app, &acme, "C").await;
    let d = customer(&app, &acme, "D").await;
    let e = customer(&app, &acme, "E").await;
    buy(&app, &acme, &a, "2023-12-10T12:00:00Z", "10.00", "USD").await;
    buy(&app, &acme, &a, "2024-01-05T12:00:00Z", "20.00", "USD").await;
    buy(&app, &acme, &a, "2024-01-20T12:00:00Z", "30.00", "USD").await;
    buy(&app, &acme, &a, "2024-03-03T12:00:00Z", "40.00", "USD").await;
    buy(&app, &acme, &b, "2024-01-15T12:00:00Z", "50.00", "USD").await;
    buy(&app, &acme, &b, "2024-02-10T12:00:00Z", "10.00", "USD").await;
    buy(&app, &acme, &c, "2024-02-01T00:00:00Z", "100.00", "USD").await;
    buy(&app, &acme, &d, "2024-02-20T12:00:00Z", "5.00", "EUR").await;
    buy(&app, &acme, &d, "2024-03-15T12:00:00Z", "7.00", "EUR").await;
    buy(&app, &acme, &e, "2023-11-01T12:00:00Z", "1.00", "USD").await;
    let (s, v) = app
        .post(
            "/v1/interactions",
            &acme.write,
            json!({ "customer_id": e, "kind": "visit", "occurred_at": "2024-01-10T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    for (who, at, score) in [
        (&e, "2024-01-11T00:00:00Z", 10),
        (&a, "2024-02-11T00:00:00Z", 9),
        (&b, "2024-03-11T00:00:00Z", 3),
        (&c, "2024-03-12T00:00:00Z", 7),
        (&e, "2023-12-11T00:00:00Z", 0),
    ] {
        let (s, v) = app
            .post(
                "/v1/interactions",
                &acme.write,
                json!({ "customer_id": who, "kind": "satisfaction", "occurred_at": at,
                        "payload": { "survey": "nps", "score": score } }),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let tenant = TenantId::for_tests(acme.id.clone());
    let clv = |customer: &str, value: f64| NewScore {
        customer_id: customer.to_string(),
        plugin_id: "clv".into(),
        value,
        label: None,
        segment: None,
        explanation: "test".into(),
        components: Vec::new(),
        computed_at: 1,
        job_id: None,
        as_of: None,
        plugin_version: None,
    };
    app.server
        .state
        .store
        .save_scores(&tenant, &[clv(&a, 100.0), clv(&b, 50.5)])
        .await
        .unwrap();
    for (cid, points) in [(&a, 120), (&b, 30)] {
        let (s, l) = app
            .post(
                &format!("/v1/customers/{cid}/loyalty/ledger"),
                &acme.write,
                json!({ "kind": "earn", "points": points, "reason": "test" }),
            )
            .await;
        assert_eq!(s, 201, "{l}");
    }

    let (s, m) = app
        .get(
            "/v1/metrics/crm?from=2024-01-01&to=2024-04-01&interval=month&point_value=0.01",
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{m}");
    let p = &m["periods"];
    assert_eq!(p.as_array().unwrap().len(), 3, "{m}");
    let row = |i: usize| {
        let r = &p[i];
        (
            r["start"].as_str().unwrap().to_string(),
            [&r["acquired"], &r["active"], &r["retained"], &r["lost"], &r["orders"]].map(|v| v.as_i64().unwrap()),
        )
    };
    assert_eq!(row(0), ("2024-01-01T00:00:00Z".to_string(), [1, 2, 1, 0, 3]));
    assert_eq!(row(1), ("2024-02-01T00:00:00Z".to_string(), [2, 3, 1, 1, 3]));
    assert_eq!(row(2), ("2024-03-01T00:00:00Z".to_string(), [0, 2, 1, 2, 2]));
    assert_eq!(p[2]["end"], "2024-04-01T00:00:00Z");
    let rates = |i: usize| ["retention_rate", "churn_rate", "repeat_purchase_rate"].map(|k| p[i][k].as_f64().unwrap());
    let close = |got: [f64; 3], want: [f64; 3]| {
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12),
            "{got:?} != {want:?}"
        );
    };
    close(rates(0), [1.0, 0.0, 0.5]);
    close(rates(1), [0.5, 0.5, 1.0 / 3.0]);
    close(rates(2), [1.0 / 3.0, 2.0 / 3.0, 1.0]);
    let revenue = |i: usize| -> Vec<(String, i64, String, String)> {
        p[i]["revenue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["currency"].as_str().unwrap().to_string(),
                    r["orders"].as_i64().unwrap(),
                    r["revenue"]["amount"].as_str().unwrap().to_string(),
                    r["average_order_value"]["amount"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let r = |c: &str, n: i64, total: &str, aov: &str| (c.to_string(), n, total.to_string(), aov.to_string());
    assert_eq!(revenue(0), [r("USD", 3, "100.00", "33.33")]);
    assert_eq!(
        revenue(1),
        [r("EUR", 1, "5.00", "5.00"), r("USD", 2, "110.00", "55.00")]
    );
    assert_eq!(revenue(2), [r("EUR", 1, "7.00", "7.00"), r("USD", 1, "40.00", "40.00")]);

    let cohorts: Vec<(String, i64, Vec<i64>)> = m["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["month"].as_str().unwrap().to_string(),
                c["customers"].as_i64().unwrap(),
                c["active"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        cohorts,
        [
            ("2024-01-01T00:00:00Z".to_string(), 1, vec![1, 1, 0]),
            ("2024-02-01T00:00:00Z".to_string(), 2, vec![2, 1]),
            ("2024-03-01T00:00:00Z".to_string(), 0, vec![0]),
        ]
    );
    assert_eq!(m["cohorts"][1]["retention"], json!([1.0, 0.5]));
    assert_eq!(
        m["lifetime_value"],
        json!({ "plugin": "clv", "customers": 2, "total": 150.5, "average": 75.25 })
    );
    assert_eq!(
        m["loyalty_liability"],
        json!({ "accounts": 2, "outstanding_points": 150, "value": 1.5 })
    );
    assert_eq!(m["nps"], json!(25.0));

    // A week: Monday 2024-01-15 to Monday 2024-01-22 holds B's first
    // purchase only (A's of the 20th is a Saturday of that week too).
    let (s, w) = app
        .get(
            "/v1/metrics/crm?from=2024-01-17&to=2024-01-22&interval=week",
            &acme.read,
        )
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["periods"][0]["start"], "2024-01-15T00:00:00Z");
    assert_eq!(w["periods"][0]["active"], 2);
    assert_eq!(w["periods"][0]["acquired"], 1);
    assert_eq!(w["periods"][0]["retained"], 0, "{w}");

    // CSV: one row per period and currency.
    let resp = app
        .client
        .get(app.url("/v1/metrics/crm?from=2024-01-01&to=2024-04-01"))
        .bearer_auth(&acme.read)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "period_start,period_end,acquired,active,retained,lost,retention_rate,churn_rate,\
             repeat_purchase_rate,orders,currency,revenue,average_order_value",
            "2024-01-01T00:00:00Z,2024-02-01T00:00:00Z,1,2,1,0,1,0,0.5,3,USD,100.00,33.33",
            "2024-02-01T00:00:00Z,2024-03-01T00:00:00Z,2,3,1,1,0.5,0.5,0.3333333333333333,3,EUR,5.00,5.00",
            "2024-02-01T00:00:00Z,2024-03-01T00:00:00Z,2,3,1,1,0.5,0.5,0.3333333333333333,3,USD,110.00,55.00",
            "2024-03-01T00:00:00Z,2024-04-01T00:00:00Z,0,2,1,2,0.3333333333333333,0.6666666666666666,1,2,EUR,7.00,7.00",
            "2024-03-01T00:00:00Z,2024-04-01T00:00:00Z,0,2,1,2,0.3333333333333333,0.6666666666666666,1,2,USD,40.00,40.00",
        ]
    );
    let resp = app
        .client
        .get(app.url("/v1/metrics/crm?from=2024-01-01&to=2024-02-01&format=csv"))
        .bearer_auth(&acme.read)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().lines().count(), 2);

    // Bad ranges are refused.
    let (s, b) = app
        .get("/v1/metrics/crm?from=2024-02-01&to=2024-01-01", &acme.read)
        .await;
    crate::support::assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app
        .get("/v1/metrics/crm?from=2000-01-01&to=2024-01-01&interval=day", &acme.read)
        .await;
    crate::support::assert_error(s, &b, 422, "validation_failed");
    let (s, b) = app.get("/v1/metrics/crm?from=yesterday", &acme.read).await;
    crate::support::assert_error(s, &b, 422, "validation_failed");

    // Another tenant's metrics hold none of this tenant's data.
    let globex = app.tenant("Globex").await;
    let (s, g) = app
        .get("/v1/metrics/crm?from=2024-01-01&to=2024-04-01", &globex.admin)
        .await;
    assert_eq!(s, 200, "{g}");
    assert!(
        g["periods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["active"] == 0 && p["orders"] == 0),
        "{g}"
    );
    assert!(
        g["cohorts"].as_array().unwrap().iter().all(|c| c["customers"] == 0),
        "{g}"
    );
    assert_eq!(g["lifetime_value"], Value::Null);
    assert_eq!(g["loyalty_liability"]["outstanding_points"], 0);
}

/// SQLite's plans of every metrics query: interactions, scores and loyalty
/// accounts are only ever searched through an index, never scanned. (The
/// plans are printed: `cargo nextest run ... metrics_read_through_indexes
/// --no-capture`.)
async fn metrics_read_through_indexes(backend: Backend) {
    let app = TestApp::start(backend).await;
    let acme = app.tenant("Acme").await;
    let tenant = TenantId::for_tests(acme.id.clone());
    let request = MetricsRequest {
        from: time::macros::datetime!(2024-01-01 0:00 UTC),
        to: time::macros::datetime!(2024-04-01 0:00 UTC),
        interval: Interval::Month,
        clv_plugin: "clv".into(),
        point_value: None,
    };
    let plans = app
        .server
        .state
        .store
        .crm_metrics_plans(&tenant, &request)
        .await
        .unwrap();
    if backend == Backend::Postgres {
        assert!(plans.is_empty());
        return;
    }
    println!("{}", plans.join("\n"));
    let tables = ["interactions", "customer_scores", "loyalty_accounts", " i", " j"];
    for line in &plans {
        if line.starts_with("SCAN") {
            assert!(
                !tables.iter().any(|t| line.starts_with(&format!("SCAN {}", t.trim()))),
                "a table scan in the metrics' plans: {line}\n{}",
                plans.join("\n")
            );
        }
    }
    let searches = |index: &str| plans.iter().filter(|l| l.contains(index)).count();
    assert!(searches("interactions_kind") >= 3, "{}", plans.join("\n"));
    assert!(searches("interactions_timeline") >= 2, "{}", plans.join("\n"));
    assert!(searches("customer_scores_value") + searches("sqlite_autoindex_customer_scores") >= 1);
    assert!(searches("loyalty_accounts_balance") == 1, "{}", plans.join("\n"));
}

both_backends!(metrics_equal_hand_computed_values, metrics_read_through_indexes);
