//! Fits a tenant-sized basket set (100k baskets over 10k SKUs, skewed
//! popularity, planted pairs) to show fitting stays fast and the model
//! compact, and that the planted pairs come out as the top rules.

use std::time::Instant;

use rapport_plugin_co_purchase::{Config, Recommender, fit_with_summary};

/// xorshift64*: tiny, seeded, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SKUS: usize = 10_000;
const BASKETS: usize = 100_000;

fn baskets() -> Vec<Vec<String>> {
    let mut rng = Rng(0x5EED_2026);
    let sku = |i: usize| format!("P{i:05}");
    (0..BASKETS)
        .map(|_| {
            let size = 1 + (rng.next() % 6) as usize;
            let mut basket: Vec<String> = (0..size)
                // Cubic skew: low indices are the best-sellers.
                .map(|_| sku((rng.unit().powi(3) * SKUS as f64) as usize))
                .collect();
            // Planted: P00007 (a best-seller) pulls P09999 (long tail) along.
            if basket.iter().any(|s| s == "P00007") && rng.unit() < 0.5 {
                basket.push(sku(9_999));
            }
            basket
        })
        .collect()
}

#[test]
fn fits_a_tenant_sized_basket_set() {
    let data = baskets();
    let config = Config::default(); // min_support 0.001 → 100 baskets
    let started = Instant::now();
    let (model, summary) = fit_with_summary(&config, &data).unwrap();
    let elapsed = started.elapsed();
    let json = model.to_json();
    println!(
        "fit {} baskets in {elapsed:?}: {summary:?}; model {} bytes",
        data.len(),
        json.len()
    );
    assert_eq!(summary.baskets, BASKETS as u64);
    assert!(summary.skus_seen > 5_000, "{summary:?}");
    assert!(summary.frequent_skus < summary.skus_seen);
    assert!(summary.rules_kept <= summary.frequent_skus * 20);
    assert!(json.len() < 2_000_000, "model too large: {} bytes", json.len());

    // The planted pair is the best rule from its long-tail side.
    let recommender = Recommender::new(&model);
    let recs = recommender.recommend(&["P09999"], None, 3);
    assert_eq!(recs[0].sku, "P00007");
    assert!(recs[0].score > 0.9, "{recs:?}");
    let recs = recommender.recommend(&["P00007"], None, 3);
    assert_eq!(recs[0].sku, "P09999");
}
