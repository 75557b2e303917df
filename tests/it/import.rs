//! Bulk import tests: the real CDNOW sample (every customer's total spend
//! checked to the cent against the file, then a re-run that stores nothing
//! new), CSV files with bad rows (reported by line and reason, good rows
//! kept), basket CSVs whose order lines become multi-item purchases,
//! aborting errors, and the `rapport` command line itself (options, the
//! rescore worker's pause, plain logs in a pipe).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{Backend, TestApp};
use rapport::import::{self, ImportError, Progress, Rejections, Summary};
use rapport::store::customers::CustomerFilter;
use rapport::store::interactions::TimelineFilter;
use rapport::store::money::Money;
use rapport::store::{Store, StoreError, TenantId};

/// `<repo>/../shared/data/cdnow/`, where the CDNOW files live beside the repo.
fn cdnow_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cdnow/")).to_path_buf()
}

/// The sample file, or `None` (with a message saying why the test is skipped).
fn cdnow_sample(test: &str) -> Option<PathBuf> {
    let path = cdnow_dir().join("CDNOW_sample.txt");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED {test}: CDNOW data not found at {} (see README: ../shared/data/cdnow/)",
            path.display()
        );
        None
    }
}

/// Per-customer purchase count and total in cents, computed straight from
/// the file with its own parsing (no code shared with the importer).
fn expected_totals(path: &Path) -> BTreeMap<String, (i64, i64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        // The sample has 5 columns: customer, sample id, date, cds, dollars.
        let dollars = fields[fields.len() - 1];
        let (whole, cents) = dollars.split_once('.').unwrap();
        assert_eq!(cents.len(), 2, "{line}");
        let value = whole.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap();
        let entry = totals.entry(fields[0].to_string()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += value;
    }
    totals
}

async fn new_tenant(app: &TestApp, name: &str) -> TenantId {
    let tenant = app.server.state.store.create_tenant(name, None).await.unwrap();
    TenantId::for_tests(tenant.id)
}

/// A read key for an existing tenant.
async fn app_key(app: &TestApp, tenant: &TenantId) -> String {
    let store = &app.server.state.store;
    store
        .create_key(Some(tenant), rapport::store::tenants::Role::TenantRead, "test")
        .await
        .unwrap()
        .token
}

fn usd(cents: i64) -> Money {
    Money {
        currency: "USD".into(),
        amount: format!("{}.{:02}", cents / 100, cents % 100),
        amount_minor: cents,
    }
}

async fn cdnow_sample_totals_are_exact_and_reimport_is_a_no_op(backend: Backend) {
    let Some(sample) = cdnow_sample("cdnow_sample_totals_are_exact_and_reimport_is_a_no_op") else {
        return;
    };
    let app = TestApp::start(backend).await;
    let store: &Store = &app.server.state.store;
    let tenant = new_tenant(&app, "CDNOW").await;
    let expected = expected_totals(&sample);
    assert_eq!(expected.len(), 2357);

    let summary = import::import_cdnow(store, &tenant, &sample, "USD", &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        summary,
        Summary {
            rows_read: 6919,
            customers_created: 2357,
            interactions_created: 6919,
            replayed: 0,
            merged_rows: 0,
            rejected: BTreeMap::new()
        }
    );

    // Every customer: purchase count and total spend exactly as in the file.
    let mut checked = 0;
    let mut zero_total = 0;
    for (external_id, (purchases, cents)) in &expected {
        let customer = store.get_customer_by_external_id(&tenant, external_id).await.unwrap();
        assert_eq!(customer.attributes, serde_json::json!({ "source": "cdnow" }));
        let stats = store.customer_stats(&tenant, &customer.id).await.unwrap();
        assert_eq!(stats.purchase_count, *purchases, "customer {external_id}");
        assert_eq!(stats.total_spend, vec![usd(*cents)], "customer {external_id}");
        checked += 1;
        zero_total += (*cents == 0) as i32;
    }
    assert_eq!(checked, 2357);
    assert!(zero_total > 0, "the sample has customers whose only purchase cost 0.00");

    // A row that does not divide evenly: 00004 19970101 2 CDs for 29.33.
    let c4 = store.get_customer_by_external_id(&tenant, "00004").await.unwrap();
    let timeline = store
        .customer_timeline(
            &tenant,
            &c4.id,
            TimelineFilter {
                limit: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(timeline.items.len(), 4);
    let first = timeline.items.last().unwrap();
    assert_eq!(first.occurred_at.unix_timestamp(), 852_076_800); // 1997-01-01T00:00:00Z
    assert_eq!(first.amount, Some(usd(2933)));
    assert_eq!(first.idempotency_key.as_deref(), Some("cdnow:00004:19970101:2:2933:1"));
    let items: Vec<(String, i64, i64)> = first
        .items
        .iter()
        .map(|i| (i.sku.clone(), i.quantity, i.unit_price.amount_minor))
        .collect();
    assert_eq!(items, vec![("CD".into(), 1, 1466), ("CD".into(), 1, 1467)]);

    // A zero-dollar purchase is kept, with its quantity at unit price 0.
    let zero = expected
        .iter()
        .find(|(_, (_, cents))| *cents == 0)
        .map(|(id, _)| id.clone())
        .unwrap();
    let zc = store.get_customer_by_external_id(&tenant, &zero).await.unwrap();
    let timeline = store
        .customer_timeline(&tenant, &zc.id, TimelineFilter::default())
        .await
        .unwrap();
    let free = &timeline.items[0];
    assert_eq!(free.amount, Some(usd(0)));
    assert!(
        free.items
            .iter()
            .all(|i| i.sku == "CD" && i.unit_price.amount_minor == 0 && i.quantity > 0)
    );

    // Through the HTTP API: the same total for this tenant, nothing for another.
    let (s, body) = app
        .get(&format!("/v1/customers/{}", c4.id), &app_key(&app, &tenant).await)
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["stats"]["total_spend"],
        serde_json::json!([{ "currency": "USD", "amount": "100.50", "amount_minor": 10050 }])
    );
    let other = app.tenant("Other").await;
    let (s, _) = app.get(&format!("/v1/customers/{}", c4.id), &other.read).await;
    assert_eq!(s, 404);

    // Re-running stores nothing: every row is a replay.
    let again = import::import_cdnow(store, &tenant, &sample, "USD", &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        again,
        Summary {
            rows_read: 6919,
            customers_created: 0,
            interactions_created: 0,
            replayed: 6919,
            merged_rows: 0,
            rejected: BTreeMap::new()
        }
    );
    let stats = store.customer_stats(&tenant, &c4.id).await.unwrap();
    assert_eq!(
        (stats.purchase_count, stats.total_spend),
        (4, vec![usd(2933 + 2973 + 1496 + 2648)])
    );
    let all = store
        .list_customers(
            &tenant,
            CustomerFilter {
                limit: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.items.len(), 500);
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn rejections(summary: &Summary) -> Vec<(String, u64, Vec<u64>)> {
    summary
        .rejected
        .iter()
        .map(|(r, Rejections { count, first_lines })| (r.clone(), *count, first_lines.clone()))
        .collect()
}

async fn csv_files_report_bad_rows_and_import_good_ones(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store: &Store = &app.server.state.store;
    let tenant = new_tenant(&app, "Shop").await;
    let dir = tempfile::tempdir().unwrap();

    let customers = write(
        dir.path(),
        "customers.csv",
        "external_id,name,email,phone,tier\r\n\
         ada,Ada Lovelace,ada@example.com,+44 20 7946 0000,gold\r\n\
         grace,Grace Hopper,not-an-email,,\r\n\
         ,Nobody,,,\r\n\
         linus,\"Torvalds, Linus\",linus@example.org,,silver\r\n\
         too,many,cells,,,,\r\n\
         ada,Ada Again,,,\r\n",
    );
    let summary = import::import_customers(store, &tenant, &customers, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (summary.rows_read, summary.customers_created, summary.replayed),
        (6, 2, 1)
    );
    assert_eq!(
        rejections(&summary),
        vec![
            ("email: is not an email address".to_string(), 1, vec![3]),
            ("expected 5 cells like the header".to_string(), 1, vec![6]),
            ("external_id: required".to_string(), 1, vec![4]),
        ]
    );
    let ada = store.get_customer_by_external_id(&tenant, "ada").await.unwrap();
    // The second "ada" row did not overwrite the first.
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(ada.phone.as_deref(), Some("+44 20 7946 0000"));
    assert_eq!(ada.attributes, serde_json::json!({ "tier": "gold" }));
    let linus = store.get_customer_by_external_id(&tenant, "linus").await.unwrap();
    assert_eq!(linus.name.as_deref(), Some("Torvalds, Linus"));

    let long_id = "x".repeat(201);
    let interactions = write(
        dir.path(),
        "interactions.csv",
        &format!(
            "customer_external_id,kind,occurred_at,amount,currency,channel,idempotency_key,sku,quantity,unit_price\n\
         ada,purchase,2024-05-01T10:00:00Z,19.98,EUR,web,order-1,BOOK,2,9.99\n\
         ada,visit,2024-05-02,,,store,,,,\n\
         newbie,purchase,2024-05-03,5.00,EUR,,,,,\n\
         ada,purchase,May 4th,5.00,EUR,,,,,\n\
         ada,purchase,2024-05-05,5.001,EUR,,,,,\n\
         ada,teleport,2024-05-06,,,,,,,\n\
         ada,purchase,2024-05-07,,,,,,,\n\
         ada,purchase,2024-05-08,3.00,XXX,,,,,\n\
         ada,purchase,2024-05-09,abc,EUR,,,,,\n\
         ada,purchase,2024-05-10,1.00,EUR,,order-1,,,\n\
         {long_id},visit,2024-05-11,,,,,,,\n\
         {long_id},visit,2024-05-12,,,,,,,\n"
        ),
    );
    let summary = import::import_interactions(store, &tenant, &interactions, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.rows_read,
            summary.customers_created,
            summary.interactions_created
        ),
        (12, 1, 3)
    );
    assert_eq!(summary.replayed, 0);
    assert_eq!(
        rejections(&summary),
        vec![
            ("amount: \"abc\" is not a decimal number".to_string(), 1, vec![10]),
            (
                "amount: EUR amounts have at most 2 decimal places".to_string(),
                1,
                vec![6]
            ),
            ("amount: a purchase needs an amount or items".to_string(), 1, vec![8]),
            (
                "currency: \"XXX\" is not an ISO 4217 currency with a minor unit".to_string(),
                1,
                vec![9]
            ),
            (
                "customer_external_id: must be 1 to 200 characters, not blank, without control characters".to_string(),
                2,
                vec![12, 13]
            ),
            (
                "idempotency key already stored with different content (idempotency_conflict)".to_string(),
                1,
                vec![11]
            ),
            (
                "kind: unknown interaction kind \"teleport\"; define it with POST /v1/interaction-kinds".to_string(),
                1,
                vec![7]
            ),
            (
                "occurred_at: expected RFC 3339 (2024-05-01T10:00:00Z) or YYYY-MM-DD".to_string(),
                1,
                vec![5]
            ),
        ]
    );
    let stats = store.customer_stats(&tenant, &ada.id).await.unwrap();
    assert_eq!(stats.interaction_count, 2);
    assert_eq!(
        stats.total_spend,
        vec![Money {
            currency: "EUR".into(),
            amount: "19.98".into(),
            amount_minor: 1998
        }]
    );
    let timeline = store
        .customer_timeline(&tenant, &ada.id, TimelineFilter::default())
        .await
        .unwrap();
    let order = timeline.items.iter().find(|i| i.kind == "purchase").unwrap();
    assert_eq!(order.channel.as_deref(), Some("web"));
    assert_eq!(order.items.len(), 1);
    assert_eq!((order.items[0].sku.as_str(), order.items[0].quantity), ("BOOK", 2));
    let newbie = store.get_customer_by_external_id(&tenant, "newbie").await.unwrap();
    assert_eq!(
        store.customer_stats(&tenant, &newbie.id).await.unwrap().purchase_count,
        1
    );

    // Re-running both files stores nothing new; the same rows are rejected.
    let again = import::import_customers(store, &tenant, &customers, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (again.customers_created, again.replayed, again.rejected_rows()),
        (0, 3, 3)
    );
    let again = import::import_interactions(store, &tenant, &interactions, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (
            again.customers_created,
            again.interactions_created,
            again.replayed,
            again.rejected_rows()
        ),
        (0, 0, 3, 9)
    );
}

async fn broken_input_aborts_with_a_clear_error(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store: &Store = &app.server.state.store;
    let tenant = new_tenant(&app, "Shop").await;
    let dir = tempfile::tempdir().unwrap();

    let bad_header = write(dir.path(), "i.csv", "customer,kind,occurred_at\nada,visit,2024-01-01\n");
    let err = import::import_interactions(store, &tenant, &bad_header, &Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Header { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.ends_with("i.csv: bad header: missing required column(s): customer_external_id"),
        "{text}"
    );

    let missing = dir.path().join("nope.csv");
    let err = import::import_customers(store, &tenant, &missing, &Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Open { .. }), "{err}");
    assert!(err.to_string().contains("nope.csv"), "{err}");

    let good = write(dir.path(), "c.csv", "external_id\nx\n");
    let err = import::import_customers(store, &TenantId::for_tests("ghost"), &good, &Progress::hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::UnknownTenant(_)), "{err}");

    let cdnow = write(dir.path(), "cdnow.txt", "00001 19970101 1 11.77\n");
    let err = import::import_cdnow(store, &tenant, &cdnow, "JPY", &Progress::hidden())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CDNOW amounts have 2 decimals"), "{err}");

    // Nothing was stored by any of these.
    let page = store.list_customers(&tenant, CustomerFilter::default()).await.unwrap();
    assert!(page.items.is_empty());
}

/// The real binary: `rapport --database URL import cdnow FILE --tenant ID`.
async fn command_line_prints_the_summary(backend: Backend) {
    let app = TestApp::start(backend).await;
    let tenant = new_tenant(&app, "Cli").await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "cdnow.txt",
        " customer_id  date number_of_cds  dollar_value\r\n\
          00001 19970101  1   11.77\r\n\
          00002 19970112  5   77.00\r\n\
          00002 19970112  5   77.00\r\n\
          00003 19970230  1    5.00\r\n\
          00004 19970102  0    0.00\r\n\
          00005 19970102  1    0.00\r\n",
    );
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(["--database", &app.db.url, "import", "cdnow"])
            .arg(&file)
            .args(["--tenant", tenant.as_str()])
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "rows read:             6",
        "customers created:     3",
        "interactions created:  4",
        "replayed (present):    0",
        "rejected:              2",
        "1 × date: not a valid calendar date (line 5)",
        "1 × number_of_cds: must be a positive integer (line 6)",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    // One scoring job instead of a rescore-queue entry per customer.
    assert!(stdout.contains("scoring job:") && stdout.contains("queued"), "{stdout}");
    let store = &app.server.state.store;
    assert_eq!(store.rescore_worker_state(&tenant).await.unwrap().queued, 0);
    // The duplicate line is a second purchase, not a replay.
    let c2 = store.get_customer_by_external_id(&tenant, "00002").await.unwrap();
    let stats = store.customer_stats(&tenant, &c2.id).await.unwrap();
    assert_eq!((stats.purchase_count, stats.total_spend), (2, vec![usd(15400)]));

    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("interactions created:  0") && stdout.contains("replayed (present):    4"),
        "{stdout}"
    );
    // Nothing new stored: nothing to score.
    assert!(!stdout.contains("scoring job:"), "{stdout}");

    // A header error fails the command with a message naming the file.
    let bad = write(dir.path(), "bad.csv", "name\nAda\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["--database", &app.db.url, "import", "customers"])
        .arg(&bad)
        .args(["--tenant", tenant.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.csv: bad header: missing required column(s): external_id"),
        "{stderr}"
    );
}

/// A basket CSV (one row per order line, as order exports are laid out)
/// imports as multi-item purchases: consecutive rows of an order become one
/// purchase whose items are the rows, an order with a bad row is rejected
/// whole (each line reported), a split order's late rows are rejected, and
/// re-importing replays every order. The baskets are what cross-sell fits
/// read.
async fn basket_csv_imports_as_multi_item_purchases(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store: &Store = &app.server.state.store;
    let tenant = new_tenant(&app, "Baskets").await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "orders.csv",
        "order_id,customer_external_id,kind,occurred_at,currency,sku,quantity,unit_price\n\
         536365,17850,purchase,2010-12-01T08:26:00Z,GBP,85123A,6,2.55\n\
         536365,17850,purchase,2010-12-01T08:26:00Z,GBP,71053,6,3.39\n\
         536365,17850,purchase,2010-12-01T08:26:00Z,,84406B,8,2.75\n\
         536366,17850,purchase,2010-12-01T08:28:00Z,GBP,22633,6,1.85\n\
         536366,17850,purchase,2010-12-01T08:28:00Z,GBP,22632,6,1.85\n\
         536367,13047,purchase,2010-12-01T08:34:00Z,GBP,84879,32,1.69\n\
         536368,13047,purchase,2010-12-01T08:35:00Z,GBP,A,1,1.00\n\
         536368,13047,purchase,2010-12-01T08:35:00Z,GBP,B,x,1.00\n\
         536369,13047,purchase,2010-12-01T08:36:00Z,GBP,C,1,1.00\n\
         536370,13047,purchase,2010-12-01T08:37:00Z,GBP,D,1,1.00\n\
         536369,13047,purchase,2010-12-01T08:36:00Z,GBP,E,1,1.00\n",
    );
    let summary = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.rows_read,
            summary.customers_created,
            summary.interactions_created,
            summary.merged_rows,
            summary.replayed
        ),
        (11, 2, 5, 3, 0),
        "{summary}"
    );
    assert_eq!(
        rejections(&summary),
        vec![
            (
                "order_id 536368: not stored, its row at line 9 was rejected".to_string(),
                1,
                vec![8]
            ),
            (
                "order_id 536369: rows of an order must be consecutive (it started at line 10 and other rows came between)"
                    .to_string(),
                1,
                vec![12]
            ),
            ("quantity: not an integer".to_string(), 1, vec![9]),
        ]
    );
    assert!(summary.to_string().contains("merged into orders:    3"), "{summary}");

    // 17850's first order: one purchase, three items in file order, its
    // amount their sum (6 × 2.55 + 6 × 3.39 + 8 × 2.75 = 57.64).
    let c = store.get_customer_by_external_id(&tenant, "17850").await.unwrap();
    let timeline = store
        .customer_timeline(&tenant, &c.id, TimelineFilter::default())
        .await
        .unwrap();
    assert_eq!(timeline.items.len(), 2);
    let first = timeline.items.iter().find(|i| i.items.len() == 3).unwrap();
    let items: Vec<(&str, i64, i64)> = first
        .items
        .iter()
        .map(|i| (i.sku.as_str(), i.quantity, i.unit_price.amount_minor))
        .collect();
    assert_eq!(items, vec![("85123A", 6, 255), ("71053", 6, 339), ("84406B", 8, 275)]);
    let amount = first.amount.as_ref().unwrap();
    assert_eq!((amount.currency.as_str(), amount.amount_minor), ("GBP", 5764));
    let stats = store.customer_stats(&tenant, &c.id).await.unwrap();
    assert_eq!(stats.purchase_count, 2);
    // 13047: orders 536367, 536369 (first part) and 536370.
    let c = store.get_customer_by_external_id(&tenant, "13047").await.unwrap();
    assert_eq!(store.customer_stats(&tenant, &c.id).await.unwrap().purchase_count, 3);

    // The baskets a cross-sell fit reads.
    let mut baskets: Vec<Vec<String>> = store
        .purchase_baskets(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|mut b| {
            b.sort();
            b
        })
        .collect();
    baskets.sort();
    assert_eq!(
        baskets,
        vec![
            vec!["22632".to_string(), "22633".to_string()],
            vec!["71053".to_string(), "84406B".to_string(), "85123A".to_string()],
            vec!["84879".to_string()],
            vec!["C".to_string()],
            vec!["D".to_string()],
        ]
    );

    // The example file: four baskets of two or three items, nothing rejected.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orders.csv");
    let other = new_tenant(&app, "Example").await;
    let summary = import::import_interactions(store, &other, &example, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.rows_read,
            summary.interactions_created,
            summary.merged_rows,
            summary.rejected_rows()
        ),
        (9, 4, 5, 0),
        "{summary}"
    );
    let sizes: Vec<usize> = store
        .purchase_baskets(&other)
        .await
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, vec![3, 2, 2, 2]);

    // Re-importing stores nothing: every order is replayed whole.
    let again = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(
        (
            again.interactions_created,
            again.replayed,
            again.merged_rows,
            again.rejected_rows()
        ),
        (0, 5, 3, 3),
        "{again}"
    );
}

/// `--config`/`--database` after the subcommand, not offered by `rapport
/// plugin`; `rapport rescoring` pauses and resumes a tenant's worker; a log
/// written to a pipe has no colour codes.
async fn command_line_options_rescoring_and_plain_logs(backend: Backend) {
    let app = TestApp::start(backend).await;
    let tenant = new_tenant(&app, "Cli").await;
    let rapport = || std::process::Command::new(env!("CARGO_BIN_EXE_rapport"));

    for args in [
        &["plugin", "run", "--help"][..],
        &["plugin", "new", "--help"],
        &["plugin", "--help"],
    ] {
        let out = rapport().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            !help.contains("--database") && !help.contains("--config"),
            "{args:?} offers options it ignores:\n{help}"
        );
    }
    for args in [&["serve", "--help"][..], &["import", "cdnow", "--help"], &["--help"]] {
        let out = rapport().args(args).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--database") && help.contains("--config"),
            "{args:?}:\n{help}"
        );
    }

    // After the subcommand, as with `serve --config`.
    let out = rapport()
        .args([
            "rescoring",
            "pause",
            "--tenant",
            tenant.as_str(),
            "--database",
            &app.db.url,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("rescore worker paused, 0 customer(s) queued"),
        "{stdout}"
    );
    let store = &app.server.state.store;
    assert!(store.rescore_worker_state(&tenant).await.unwrap().paused);
    let out = rapport()
        .args([
            "--database",
            &app.db.url,
            "rescoring",
            "status",
            "--tenant",
            tenant.as_str(),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    let out = rapport()
        .args([
            "rescoring",
            "resume",
            "--database",
            &app.db.url,
            "--tenant",
            tenant.as_str(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("rescore worker running"));
    assert!(!store.rescore_worker_state(&tenant).await.unwrap().paused);

    // The server's log through a pipe: plain text.
    let mut child = rapport()
        .args(["serve", "--database", &app.db.url, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        lines.find_map(|l| l.ok().filter(|l| l.contains("rapport listening")))
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the server logged that it listens");
    assert!(!line.contains('\u{1b}'), "colour codes in a piped log: {line:?}");
    assert!(line.contains("INFO"), "{line}");
}

/// An import larger than a chunk (5,000 rows): bad rows anywhere are
/// reported by line and the rest stored, an idempotency key reused with
/// other content is a conflict and with the same content a replay (within
/// a chunk and across chunks), an erased customer's rows are refused, a
/// re-run replays everything; nothing is queued for the rescore worker, and
/// the one scoring job it schedules is started by the worker.
async fn large_import_keeps_row_errors_and_schedules_one_scoring_job(backend: Backend) {
    let app = TestApp::start(backend).await;
    let store: &Store = &app.server.state.store;
    let tenant = new_tenant(&app, "Big").await;
    let dir = tempfile::tempdir().unwrap();

    // An erased customer, known before the import.
    let erased = store
        .create_customer(
            &tenant,
            rapport::store::customers::NewCustomer::with_external_id("gone"),
        )
        .await
        .unwrap();
    store.erase_customer(&tenant, &erased.id).await.unwrap();
    // Erasure replaced its external id; a file could still name it so.
    let gone = store.get_customer(&tenant, &erased.id).await.unwrap().external_id;

    let mut text = String::from("customer_external_id,kind,occurred_at,amount,currency,idempotency_key\n");
    // Expected per customer: (purchases, cents).
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let (mut bad_dates, mut conflicts, mut replays) = (Vec::new(), Vec::new(), 0u64);
    let rows = 12_345u64;
    for n in 0..rows {
        let line = n + 2;
        let customer = format!("c{:04}", n % 3_001);
        let cents = (n % 997) as i64 + 1;
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        if n % 1_000 == 500 {
            text += &format!("{customer},purchase,2024-13-01,{amount},EUR,k{n}\n");
            bad_dates.push(line);
        } else if n % 2_500 == 7 && n > 2_500 {
            // Reuses the key of a row 2,501 before (in another chunk, for
            // some of them), with other content.
            text += &format!("{customer},purchase,2024-05-01,{amount},EUR,k{}\n", n - 2_501);
            conflicts.push(line);
        } else if n % 3_000 == 11 && n > 0 {
            // Repeats the row just before it exactly: a replay.
            let prev = n - 1;
            let pc = (prev % 997) as i64 + 1;
            text += &format!(
                "c{:04},purchase,2024-05-01,{}.{:02},EUR,k{prev}\n",
                prev % 3_001,
                pc / 100,
                pc % 100
            );
            replays += 1;
        } else {
            text += &format!("{customer},purchase,2024-05-01,{amount},EUR,k{n}\n");
            let e = expected.entry(customer).or_default();
            e.0 += 1;
            e.1 += cents;
        }
    }
    text += &format!("{gone},purchase,2024-05-01,1.00,EUR,erased-1\n");
    let erased_line = rows + 2;
    let file = write(dir.path(), "big.csv", &text);

    let summary = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    let stored: i64 = expected.values().map(|(n, _)| n).sum();
    assert_eq!(summary.rows_read, rows + 1);
    assert_eq!(summary.interactions_created, stored as u64);
    assert_eq!(summary.customers_created, 3_001);
    assert_eq!(summary.replayed, replays);
    let got = rejections(&summary);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got[0],
        (
            "idempotency key already stored with different content (idempotency_conflict)".to_string(),
            conflicts.len() as u64,
            conflicts.iter().copied().take(5).collect::<Vec<_>>()
        )
    );
    assert_eq!(
        got[1],
        (
            "occurred_at: not a valid calendar date".to_string(),
            bad_dates.len() as u64,
            bad_dates.iter().copied().take(5).collect::<Vec<_>>()
        )
    );
    assert_eq!(
        got[2],
        (
            "this customer's data has been erased (customer_erased)".to_string(),
            1,
            vec![erased_line]
        )
    );
    // Every customer's purchases and spend, to the cent.
    for external_id in ["c0000", "c1234", "c3000"] {
        let c = store.get_customer_by_external_id(&tenant, external_id).await.unwrap();
        let stats = store.customer_stats(&tenant, &c.id).await.unwrap();
        let (count, cents) = expected[external_id];
        let spend = stats.total_spend.iter().map(|m| m.amount_minor).sum::<i64>();
        assert_eq!((stats.purchase_count, spend), (count, cents), "{external_id}");
    }
    let total = store.count_customers(&tenant).await.unwrap();
    assert_eq!(total, 3_002);

    // Nothing queued for the live worker; one job scheduled instead, and
    // scheduling again (a second import) reuses the waiting one.
    assert_eq!(store.rescore_worker_state(&tenant).await.unwrap().queued, 0);
    let job = import::schedule_scoring(store, &tenant, &summary)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.status.as_str(), "queued");
    let again = store.schedule_import_scoring(&tenant).await.unwrap();
    assert_eq!(again.id, job.id);

    // A re-run stores nothing and schedules nothing.
    let rerun = import::import_interactions(store, &tenant, &file, &Progress::hidden())
        .await
        .unwrap();
    assert_eq!(rerun.interactions_created, 0);
    assert_eq!(rerun.customers_created, 0);
    assert_eq!(rerun.replayed, stored as u64 + replays);
    assert_eq!(rerun.rejected_rows(), summary.rejected_rows());
    assert!(
        import::schedule_scoring(store, &tenant, &rerun)
            .await
            .unwrap()
            .is_none()
    );

    // The worker starts the job (here the tenant has no scoring plugin, so
    // it ends saying so); another tenant never sees it.
    app.server.state.plugins.start_import_jobs().await.unwrap();
    let finished = loop {
        let j = store.get_scoring_job(&tenant, &job.id).await.unwrap();
        if j.status.is_finished() {
            break j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        finished.error.as_deref(),
        Some("this tenant has no active scoring plugin"),
        "{finished:?}"
    );
    let other = new_tenant(&app, "Other").await;
    assert!(store.get_scoring_job(&other, &job.id).await.is_err());

    // An import's job no worker has started yet gives way to an operator's
    // job of every plugin (`rapport score` right after `rapport import`):
    // it becomes that job, with the operator's as-of. A job of one plugin
    // does not cover it, and waits its turn (409).
    let waiting = store.schedule_import_scoring(&tenant).await.unwrap();
    let narrower = store.create_scoring_job_as_of(&tenant, Some("rfm"), None).await;
    assert!(
        matches!(
            narrower,
            Err(StoreError::Conflict {
                code: "scoring_job_active",
                ..
            })
        ),
        "{narrower:?}"
    );
    let taken = store
        .create_scoring_job_as_of(&tenant, None, Some(899_251_200_000))
        .await
        .unwrap();
    assert_eq!(taken.id, waiting.id);
    assert_eq!(taken.status.as_str(), "queued");
    assert_eq!(taken.as_of.map(rapport::store::millis), Some(899_251_200_000));
    // Now the operator's: no worker starts it, and it is not taken over again.
    assert!(
        store
            .queued_import_jobs()
            .await
            .unwrap()
            .iter()
            .all(|(_, id)| id != &taken.id)
    );
    let again = store.create_scoring_job_as_of(&tenant, None, None).await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict {
                code: "scoring_job_active",
                ..
            })
        ),
        "{again:?}"
    );
}

both_backends!(
    large_import_keeps_row_errors_and_schedules_one_scoring_job,
    basket_csv_imports_as_multi_item_purchases,
    command_line_options_rescoring_and_plain_logs,
    cdnow_sample_totals_are_exact_and_reimport_is_a_no_op,
    csv_files_report_bad_rows_and_import_good_ones,
    broken_input_aborts_with_a_clear_error,
    command_line_prints_the_summary,
);
