//! RFM on real data with many ties: the CDNOW sample (2,357 customers,
//! 808 of them with a purchase in the year to 1998-06-30) scored by this
//! crate gives exactly the cells pandas gives with the documented recipe:
//!
//! ```text
//! w = purchases with 1997-07-01 < t <= 1998-07-01 (midnight UTC)
//! per customer: days = floor((now - last) / 1 day), f = count, m = sum(cents)
//! edges = np.quantile(np.arange(1, n + 1), [0, .2, .4, .6, .8, 1])
//! R, F, M = pd.cut(s.rank(method="min"), edges, labels=[1..5], include_lowest=True)
//!           for s = -days, f, m
//! ```
//!
//! The data lives outside the repository (`../shared/data/cdnow/` from the
//! project root); the test prints a message and passes when it is absent.

use std::collections::BTreeMap;

use rapport_plugin_rfm::{Config, History, Interaction, MS_PER_DAY, RfmValues, fit, score_history};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/cdnow/CDNOW_sample.txt"
);

/// pandas' cell counts ("RFM:customers") for the customers with a purchase
/// in the window.
const PANDAS_CELLS: &str = "111:64 112:36 113:22 114:6 115:4 131:2 132:7 133:8 134:8 135:2 143:1 144:1 145:1 155:1 211:30 212:28 213:13 214:3 215:1 231:3 232:19 233:15 234:13 235:7 243:4 244:10 245:5 253:1 254:4 255:5 311:31 312:20 313:5 314:3 331:3 332:12 333:23 334:20 335:5 343:7 344:8 345:3 354:5 355:16 411:16 412:11 413:9 414:2 431:2 432:13 433:19 434:18 435:9 443:6 444:6 445:8 454:11 455:32 511:10 512:5 513:4 514:1 531:1 532:10 533:20 534:17 535:2 543:3 544:6 545:5 553:2 554:19 555:56";

#[test]
fn cdnow_cells_match_pandas() {
    let raw = match std::fs::read_to_string(SAMPLE) {
        Ok(raw) => raw,
        Err(e) => {
            println!("skipping: cannot read {SAMPLE}: {e}");
            return;
        }
    };
    // Columns: master id, sample id, YYYYMMDD, CDs, dollars.
    let mut histories: BTreeMap<u32, Vec<Interaction>> = BTreeMap::new();
    for line in raw.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let id: u32 = f[1].parse().unwrap();
        let date = f[2];
        let day = days_from_civil(
            date[0..4].parse().unwrap(),
            date[4..6].parse().unwrap(),
            date[6..8].parse().unwrap(),
        );
        let dollars: f64 = f[4].parse().unwrap();
        histories.entry(id).or_default().push(Interaction {
            kind: "purchase".into(),
            occurred_at: day * MS_PER_DAY,
            amount_minor: Some((dollars * 100.0).round() as i64),
        });
    }
    assert_eq!(histories.len(), 2357);
    let now = days_from_civil(1998, 7, 1) * MS_PER_DAY;
    let config = Config::default();
    let histories: Vec<History> = histories
        .into_iter()
        .map(|(id, interactions)| History {
            customer: id.to_string(),
            interactions,
            now,
        })
        .collect();
    let values: Vec<RfmValues> = histories
        .iter()
        .filter_map(|h| RfmValues::from_history(h, config.window_days, &config.purchase_kind))
        .collect();
    assert_eq!(values.len(), 808);
    let model = fit(&values, config.window_days, now).unwrap();

    let mut cells: BTreeMap<String, usize> = BTreeMap::new();
    let mut inactive = 0;
    for h in &histories {
        let s = score_history(&model, &config, h);
        match s.values {
            Some(_) => *cells.entry(s.cell).or_default() += 1,
            None => {
                assert_eq!(s.cell, "111");
                inactive += 1;
            }
        }
        // Spot checks from pandas' table.
        let want = match h.customer.as_str() {
            "1" => Some("232"),
            "6" => Some("555"),
            "8" => Some("332"),
            "9" => Some("333"),
            "11" => Some("212"),
            _ => None,
        };
        if let Some(want) = want {
            let s = score_history(&model, &config, h);
            assert_eq!(s.cell, want, "customer {}", h.customer);
        }
    }
    assert_eq!(inactive, 2357 - 808);
    let want: BTreeMap<String, usize> = PANDAS_CELLS
        .split_whitespace()
        .map(|pair| {
            let (cell, count) = pair.split_once(':').unwrap();
            (cell.to_owned(), count.parse().unwrap())
        })
        .collect();
    assert_eq!(cells, want);
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
