//! How long the BG/NBD maximum-likelihood fit takes as the population
//! grows, natively (`cargo bench -p rapport-plugin-churn-bgnbd --bench
//! fit`; `RAPPORT_BENCH_SIZES=25000,200000` to choose the sizes). Not a
//! test: it prints figures, it asserts only that the fit ended the way the
//! data says it must.
//!
//! Two deterministic synthetic tenants (purchase *days* built into (x, t_x,
//! T) by `summarise_purchases`, weeks, exactly as the component does):
//! - `bgnbd`: customers drawn from the model itself with the CDNOW
//!   parameters (λ ~ Gamma(0.243, 4.41 weeks), p ~ Beta(0.793, 2.426)),
//!   first purchases spread over two years: the fit must recover them;
//! - `uniform`: the host benchmark's tenant (`host/benches/rescoring.rs`),
//!   10 purchases each at uniformly random times over two years: every
//!   customer buys at the same rate and none drops out, so the likelihood
//!   has no interior maximum and the fit must fail, quickly.
//!
//! `RAPPORT_BENCH_FIXTURE=path` (with the first of `RAPPORT_BENCH_SIZES`)
//! instead writes the `bgnbd` tenant as a `rapport plugin run` fixture, to
//! time the same fit through the host's runtime (see the README).

use std::time::Instant;

use rapport_plugin_churn_bgnbd::{
    CustomerSummary, FitError, FitReport, MS_PER_DAY, Params, fit, fit_binned, summarise_purchases,
};

/// "Now": day 20,454 (2026-01-01), as in the host benchmark.
const NOW_DAY: i64 = 20_454;
const WEEK: f64 = 7.0;
const CDNOW: Params = Params {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

/// splitmix64 (as in the host benchmarks: a data set that never changes).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Gamma(shape, 1) by Marsaglia & Tsang (2000), boosted for shape < 1.
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let z = self.normal();
            let v = (1.0 + c * z).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
    fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        x / (x + self.gamma(b))
    }
}

/// Customer `i` drawn from BG/NBD with `p` (α in weeks): first purchase on
/// a uniform day of the last two years, then Poisson purchases at rate λ,
/// dropping out after each repeat purchase with probability p.
fn bgnbd_customer(i: u64, p: &Params, times: &mut Vec<i64>) {
    let mut rng = SplitMix(0xB6_0B1D ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let lambda = rng.gamma(p.r) / (p.alpha * WEEK); // per day
    let drop = rng.beta(p.a, p.b);
    let first = NOW_DAY - (rng.uniform() * 730.0) as i64;
    let mut t = first as f64;
    times.clear();
    times.push(first * MS_PER_DAY);
    // Drop-out follows repeat purchases only (the paper's likelihood: a
    // customer without repeat purchases is alive).
    loop {
        t += -rng.uniform().ln() / lambda;
        if t >= NOW_DAY as f64 {
            break;
        }
        times.push((t * MS_PER_DAY as f64) as i64);
        if rng.uniform() < drop {
            break;
        }
    }
}

/// Customer `i` of the host benchmark's shape: 10 purchases at uniform
/// times over the last 730 days.
fn uniform_customer(i: u64, times: &mut Vec<i64>) {
    let mut rng = SplitMix(0x5E_ED0F_4A99_0127 ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    times.clear();
    times.extend((0..10).map(|_| NOW_DAY * MS_PER_DAY - (rng.next() % (730 * MS_PER_DAY as u64)) as i64));
}

fn population(n: usize, shape: &str) -> Vec<CustomerSummary> {
    let mut times = Vec::new();
    (0..n as u64)
        .filter_map(|i| {
            match shape {
                "bgnbd" => bgnbd_customer(i, &CDNOW, &mut times),
                _ => uniform_customer(i, &mut times),
            }
            summarise_purchases(&times, NOW_DAY * MS_PER_DAY, WEEK)
        })
        .collect()
}

fn describe(result: &Result<FitReport, FitError>) -> (String, String, String) {
    match result {
        Ok(r) => (
            r.groups.to_string(),
            r.evaluations.to_string(),
            format!(
                "r={:.4} α={:.4} a={:.4} b={:.4} LL={:.1}",
                r.params.r, r.params.alpha, r.params.a, r.params.b, r.log_likelihood
            ),
        ),
        Err(e) => ("-".into(), "-".into(), format!("error: {e}")),
    }
}

/// Writes the `bgnbd` tenant of `n` customers as a `rapport plugin run`
/// fixture (a scoring `fit` with every purchase), to time the fit through
/// the host's runtime on the same data.
fn write_fixture(path: &str, n: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    write!(
        out,
        r#"{{"tenant":"bench","call":{{"export":"fit","input":{{"population":["#
    )?;
    let mut times = Vec::new();
    for i in 0..n as u64 {
        bgnbd_customer(i, &CDNOW, &mut times);
        let purchases: Vec<String> = times
            .iter()
            .map(|t| format!(r#"{{"at":{t},"amount_minor":1000,"currency":"USD"}}"#))
            .collect();
        let sep = if i == 0 { "" } else { "," };
        write!(
            out,
            r#"{sep}{{"customer_id":"c{i}","created_at":0,"purchases":[{}]}}"#,
            purchases.join(",")
        )?;
    }
    write!(out, r#"],"now":{}}}}}}}"#, NOW_DAY * MS_PER_DAY)?;
    out.flush()
}

fn main() {
    if let Ok(path) = std::env::var("RAPPORT_BENCH_FIXTURE") {
        let n = std::env::var("RAPPORT_BENCH_SIZES")
            .ok()
            .and_then(|s| s.split(',').next().and_then(|v| v.trim().parse().ok()))
            .unwrap_or(1_000_000);
        if let Err(e) = write_fixture(&path, n) {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
        println!("wrote {path} ({n} customers)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("RAPPORT_BENCH_SIZES")
        .unwrap_or_else(|_| "25000,200000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let shapes = std::env::var("RAPPORT_BENCH_SHAPES").unwrap_or_else(|_| "bgnbd,uniform".into());
    println!("| tenant | customers | repeat | distinct rows | fit | evaluations | outcome |");
    println!("|---|---|---|---|---|---|---|");
    for shape in shapes.split(',') {
        for &n in &sizes {
            let pop = population(n, shape);
            let repeat = pop.iter().filter(|s| s.frequency > 0).count();
            let started = Instant::now();
            let exact = fit(&pop);
            let took = started.elapsed();
            let (groups, evaluations, outcome) = describe(&exact);
            println!(
                "| {shape} | {} | {repeat} | {groups} | {:.2} s | {evaluations} | {outcome} |",
                pop.len(),
                took.as_secs_f64()
            );
            // The same population with t_x and T binned to weeks (the time
            // unit): the precision it costs, relative to the exact fit.
            let (Ok(exact), "bgnbd") = (&exact, shape) else {
                continue;
            };
            let started = Instant::now();
            let weeks = fit_binned(&pop, 1.0);
            let took = started.elapsed();
            let (groups, evaluations, mut outcome) = describe(&weeks);
            if let Ok(w) = &weeks {
                let rel = |got: f64, want: f64| 100.0 * (got - want) / want;
                outcome += &format!(
                    " (vs exact: r {:+.2}%, α {:+.2}%, a {:+.2}%, b {:+.2}%)",
                    rel(w.params.r, exact.params.r),
                    rel(w.params.alpha, exact.params.alpha),
                    rel(w.params.a, exact.params.a),
                    rel(w.params.b, exact.params.b)
                );
            }
            println!(
                "| {shape}, binned to weeks | {} | {repeat} | {groups} | {:.2} s | {evaluations} | {outcome} |",
                pop.len(),
                took.as_secs_f64()
            );
        }
    }
}
