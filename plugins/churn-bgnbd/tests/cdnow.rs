//! The BG/NBD fit on the CDNOW sample reproduces the published parameters
//! (Fader, Hardie & Lee 2005) and `lifetimes`' maximum-likelihood estimate,
//! and the summary builder rebuilds the published (x, t_x, T) table from
//! the raw purchases.
//!
//! The data lives outside the repository (`../shared/data/cdnow/` from the
//! project root); the tests print a message and pass when it is absent.

use std::collections::BTreeMap;
use std::path::Path;

use rapport_plugin_churn_bgnbd::{
    Config, CustomerSummary, FittedModel, History, Interaction, MS_PER_DAY, PurchaseAggregate, fit, fit_binned,
    fit_population, score_history, summarise_purchases,
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/cdnow/");

fn read(name: &str) -> Option<String> {
    let path = Path::new(DIR).join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) => {
            println!("skipping: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// `cdnow_customers_summary.csv`: ID,frequency,recency,T (weeks).
fn published_summaries(text: &str) -> BTreeMap<u32, CustomerSummary> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let id: u32 = f[0].parse().unwrap();
            let s = CustomerSummary {
                frequency: f[1].parse().unwrap(),
                recency: f[2].parse().unwrap(),
                age: f[3].parse().unwrap(),
            };
            (id, s)
        })
        .collect()
}

#[test]
fn fit_reproduces_the_published_cdnow_parameters() {
    let Some(text) = read("cdnow_customers_summary.csv") else {
        return;
    };
    let population: Vec<CustomerSummary> = published_summaries(&text).into_values().collect();
    assert_eq!(population.len(), 2357);
    let report = fit(&population).unwrap();
    let p = report.params;
    println!("fitted: {report:?}");

    // The paper's table, to within 0.1 % each.
    for (name, got, paper) in [
        ("r", p.r, 0.2426),
        ("alpha", p.alpha, 4.4135),
        ("a", p.a, 0.7929),
        ("b", p.b, 2.4258),
    ] {
        let rel = ((got - paper) / paper).abs();
        assert!(rel < 1e-3, "{name} = {got}, paper {paper}, relative error {rel:e}");
    }
    // `lifetimes` 0.11.3 `BetaGeoFitter().fit(frequency, recency, T)`
    // (BFGS, gradient ~1e-11): the same maximum to 1e-6 relative.
    for (name, got, reference) in [
        ("r", p.r, 0.242592928279822),
        ("alpha", p.alpha, 4.413532265271825),
        ("a", p.a, 0.7928859664406758),
        ("b", p.b, 2.4257523826258134),
    ] {
        let rel = ((got - reference) / reference).abs();
        assert!(
            rel < 1e-6,
            "{name} = {got}, lifetimes {reference}, relative error {rel:e}"
        );
    }
    // The paper reports LL = -9582.4 at its estimates.
    assert!(
        (report.log_likelihood - -9582.4).abs() < 0.05,
        "{}",
        report.log_likelihood
    );
    assert_eq!(report.customers, 2357);
    assert_eq!(report.repeat_customers, 946);
    assert!(report.gradient_norm < 1e-12, "{report:?}");
    // Newton on the closed-form derivatives: a few dozen likelihood
    // evaluations, over the distinct rows only.
    assert!(report.evaluations <= 40, "{report:?}");
    assert!(report.groups < 2357, "{report:?}");

    // Binning at the data's own resolution (the table's 0.01 week) merges
    // nothing and changes nothing; weeks cost a little precision.
    let same = fit_binned(&population, 0.01).unwrap();
    assert_eq!(same.groups, report.groups);
    for (got, want) in [
        (same.params.r, p.r),
        (same.params.alpha, p.alpha),
        (same.params.a, p.a),
        (same.params.b, p.b),
    ] {
        assert!(((got - want) / want).abs() < 1e-9, "{got} vs {want}");
    }
    let weeks = fit_binned(&population, 1.0).unwrap();
    assert!(weeks.groups < report.groups, "{weeks:?}");
    for (got, want) in [
        (weeks.params.r, p.r),
        (weeks.params.alpha, p.alpha),
        (weeks.params.a, p.a),
        (weeks.params.b, p.b),
    ] {
        assert!(((got - want) / want).abs() < 0.05, "{got} vs {want}");
    }
    println!("binned to weeks: {weeks:?}");
}

#[test]
fn fit_is_invariant_to_the_time_unit() {
    let Some(text) = read("cdnow_customers_summary.csv") else {
        return;
    };
    let weeks: Vec<CustomerSummary> = published_summaries(&text).into_values().collect();
    let days: Vec<CustomerSummary> = weeks
        .iter()
        .map(|s| CustomerSummary {
            frequency: s.frequency,
            recency: s.recency * 7.0,
            age: s.age * 7.0,
        })
        .collect();
    let (w, d) = (fit(&weeks).unwrap().params, fit(&days).unwrap().params);
    for (got, want) in [(d.r, w.r), (d.alpha, w.alpha * 7.0), (d.a, w.a), (d.b, w.b)] {
        assert!(((got - want) / want).abs() < 1e-7, "{got} vs {want}");
    }
}

/// Rebuilding the summaries from `CDNOW_sample.txt` (master id, sample id,
/// YYYYMMDD, CDs, dollars) with the calibration period ending on 1997-09-30 (day 272
/// of 1997, 38.86 weeks after 1997-01-01) gives the published table:
/// x counts repeat purchase *days*, times are whole days / 7 (the CSV
/// rounds them to 2 decimals).
#[test]
fn summary_builder_rebuilds_the_published_table() {
    let (Some(raw), Some(published)) = (read("CDNOW_sample.txt"), read("cdnow_customers_summary.csv")) else {
        return;
    };
    let published = published_summaries(&published);
    let mut purchases: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // The file has one more column than its README says: the master
        // file's customer id first, then the sample's id (1..2357) that
        // the summary CSV uses.
        let id: u32 = f[1].parse().unwrap();
        let date = f[2];
        let (y, m, d) = (
            date[0..4].parse::<i64>().unwrap(),
            date[4..6].parse::<u32>().unwrap(),
            date[6..8].parse::<u32>().unwrap(),
        );
        // Noon, so the test also checks the flooring to days.
        purchases
            .entry(id)
            .or_default()
            .push(days_from_civil(y, m, d) * MS_PER_DAY + MS_PER_DAY / 2);
    }
    let end = days_from_civil(1997, 9, 30) * MS_PER_DAY + 23 * 3_600_000;
    assert_eq!(purchases.len(), published.len());
    let mut repeaters = 0;
    for (id, times) in &purchases {
        let built = summarise_purchases(times, end, 7.0).unwrap();
        let want = published[id];
        assert_eq!(built.frequency, want.frequency, "customer {id}");
        assert!((built.recency - want.recency).abs() <= 0.005 + 1e-9, "customer {id}");
        assert!((built.age - want.age).abs() <= 0.005 + 1e-9, "customer {id}");
        repeaters += usize::from(built.frequency > 0);
    }
    assert_eq!(repeaters, 946);
}

/// The plugin's entry points end to end: purchase aggregates
/// (built from the published table, with the calibration end on
/// 1997-09-30) fit the published parameters, the model survives its JSON
/// round trip, and a history scores as the formulas say.
#[test]
fn fit_population_and_score_history_on_cdnow() {
    let Some(text) = read("cdnow_customers_summary.csv") else {
        return;
    };
    let published = published_summaries(&text);
    let end_day = days_from_civil(1997, 9, 30);
    let now = end_day * MS_PER_DAY + 12 * 3_600_000;
    let population: Vec<PurchaseAggregate> = published
        .iter()
        .map(|(id, s)| {
            let first = end_day - (s.age * 7.0).round() as i64;
            let last = first + (s.recency * 7.0).round() as i64;
            PurchaseAggregate {
                customer_id: id.to_string(),
                purchases: s.frequency + 1,
                first_purchase_at: Some(first * MS_PER_DAY + 1),
                last_purchase_at: Some(last * MS_PER_DAY + 2),
                total_spend_minor: 0,
                created_at: 0,
            }
        })
        .collect();
    let config = Config::default();
    let model = fit_population(&population, now, &config).unwrap();
    assert_eq!((model.customers, model.repeat_customers), (2357, 946));
    let p = model.params;
    for (got, want) in [(p.r, 0.2426), (p.alpha, 4.4135), (p.a, 0.7929), (p.b, 2.4258)] {
        assert!(((got - want) / want).abs() < 1e-3, "{got} vs {want}");
    }
    let model = FittedModel::from_json(&model.to_json()).unwrap();
    assert_eq!(model.params, p);

    // Customer 1 of the sample: x=2, t_x=30.43, T=38.86 weeks.
    let first = end_day - 272;
    let history = History {
        customer: "1".into(),
        interactions: [0, 213, 213, 213]
            .iter()
            .enumerate()
            .map(|(i, d)| Interaction {
                kind: "purchase".into(),
                occurred_at: (first + d + if i == 3 { -200 } else { 0 }) * MS_PER_DAY,
                amount_minor: Some(1000),
            })
            .collect(),
        now,
    };
    let score = score_history(&model, &config, &history).unwrap();
    assert_eq!(score.summary.frequency, 2);
    assert_eq!(score.summary.recency, 213.0 / 7.0);
    assert_eq!(score.summary.age, 272.0 / 7.0);
    assert_eq!(score.p_alive, p.p_alive(&score.summary).unwrap());
    assert!((score.p_alive - 0.7266).abs() < 1e-3, "{}", score.p_alive);
    assert!(
        (score.expected_purchases - 1.5586).abs() < 2e-3,
        "{}",
        score.expected_purchases
    );
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
