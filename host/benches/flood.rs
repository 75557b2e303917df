//! A tenant's flood against a real `rapport serve` process, measured from
//! outside (run: `cargo bench --bench flood` after `scripts/build-plugins`;
//! `FLOOD_SECS`, `FLOOD_CONCURRENCY` and `FLOOD_SETTLE_SECS` override the
//! defaults of 20 s, 3 x 300 and 60 s; `FLOOD_TENANT_SHARE`,
//! `FLOOD_PLUGIN_SHARE` and `FLOOD_RUN_SLOTS` set the `[plugins]` shares
//! and run slots).
//!
//! The server runs as its own process (SQLite in a temporary directory, the
//! default `[plugins]` shares), with two tenants: `mallory` has three slow
//! scoring plugins (`hostile-loop`, 300 ms deadline), `victim` the
//! well-behaved `test-scorer`. The bench measures the victim's latency
//! (a read, a score, a write, in turn) alone, then while mallory keeps
//! 3 x 300 score calls of its slow plugins in flight, and prints p50/p99
//! for both, what mallory's calls got (ok / 429 `plugin_busy` / other), the
//! victim's failures and suspensions (both must be 0), and the server's RSS
//! at the start, at its peak, at the end of the flood and after settling.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn wasm_path(crate_name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

fn plugin_entry(id: &str, crate_name: &str, caps: &str, limits: &str) -> String {
    let path = wasm_path(crate_name);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins first)", path.display()));
    let digest = hex::encode(Sha256::digest(&bytes));
    format!(
        "[[plugin]]\nid = {id:?}\nkind = \"scoring-rule\"\nversion = \"0.1.0\"\ncontract = \"rapport:crm@0.1.0\"\n\
         artifact = {path:?}\nsha256 = {digest:?}\ncapabilities = [{caps}]\n[plugin.limits]\n{limits}\n\n",
        path = path.display().to_string()
    )
}

/// The server's resident set, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run rapport");
    assert!(
        out.status.success(),
        "rapport {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Latencies (ms) of the victim's operations and its failures.
#[derive(Default)]
struct VictimRun {
    read: Vec<f64>,
    score: Vec<f64>,
    write: Vec<f64>,
    failures: Vec<String>,
}

impl VictimRun {
    fn print(&mut self, label: &str) {
        for (name, v) in [
            ("read", &mut self.read),
            ("score", &mut self.score),
            ("write", &mut self.write),
        ] {
            v.sort_by(f64::total_cmp);
            println!(
                "  {label:<7} {name:<5} n={:<5} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                v.len(),
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN)
            );
        }
    }

    fn p99(&self) -> f64 {
        let mut all: Vec<f64> = self
            .read
            .iter()
            .chain(&self.score)
            .chain(&self.write)
            .copied()
            .collect();
        all.sort_by(f64::total_cmp);
        percentile(&all, 0.99)
    }
}

/// Distinct idempotency keys for the victim's writes.
static WRITES: AtomicU64 = AtomicU64::new(0);

async fn victim_loop(
    client: reqwest::Client,
    base: String,
    read: String,
    write: String,
    customer: String,
    until: Instant,
) -> VictimRun {
    let mut run = VictimRun::default();
    while Instant::now() < until {
        let t = Instant::now();
        match client
            .get(format!("{base}/v1/customers/{customer}"))
            .bearer_auth(&read)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => run.read.push(t.elapsed().as_secs_f64() * 1e3),
            Ok(r) => run.failures.push(format!("read {}", r.status())),
            Err(e) => run.failures.push(format!("read {e}")),
        }
        let t = Instant::now();
        match client
            .post(format!("{base}/v1/customers/{customer}/score"))
            // Scoring on demand runs plugins: a write key.
            .bearer_auth(&write)
            .json(&json!({}))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let body: Value = r.json().await.unwrap_or_default();
                if body["results"][0]["status"] == "ok" {
                    run.score.push(ms);
                } else {
                    run.failures.push(format!("score {}", body["results"][0]["error"]));
                }
            }
            Ok(r) => run.failures.push(format!("score {}", r.status())),
            Err(e) => run.failures.push(format!("score {e}")),
        }
        let t = Instant::now();
        match client
            .post(format!("{base}/v1/interactions"))
            .bearer_auth(&write)
            .json(&json!({ "customer_id": customer, "kind": "visit", "idempotency_key": format!("visit-{}", WRITES.fetch_add(1, Ordering::Relaxed)) }))
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => run.write.push(t.elapsed().as_secs_f64() * 1e3),
            Ok(r) => run.failures.push(format!("write {}", r.status())),
            Err(e) => run.failures.push(format!("write {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run
}

/// The victim's loop on a thread and runtime of its own, with its own
/// connections, after `warmup` unmeasured: the victim is another client
/// (another machine, in real life), so its requests must not queue behind
/// the attacker's 900 client tasks in this process's executor; what it
/// waits for is then the server alone (and the shared cores).
async fn victim(base: &str, read: &str, write: &str, customer: &str, warmup: Duration, secs: Duration) -> VictimRun {
    let (base, read, write, customer) = (base.to_owned(), read.to_owned(), write.to_owned(), customer.to_owned());
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("victim runtime");
        rt.block_on(async move {
            let client = reqwest::Client::new();
            let until = Instant::now() + warmup;
            let _ = victim_loop(
                client.clone(),
                base.clone(),
                read.clone(),
                write.clone(),
                customer.clone(),
                until,
            )
            .await;
            victim_loop(client, base, read, write, customer, Instant::now() + secs).await
        })
    })
    .await
    .expect("victim thread")
}

#[tokio::main]
async fn main() {
    let secs = env_or("FLOOD_SECS", 20);
    let concurrency = env_or("FLOOD_CONCURRENCY", 300);
    let settle = env_or("FLOOD_SETTLE_SECS", 60);
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::new();
    for id in ["slow1", "slow2", "slow3"] {
        manifest += &plugin_entry(
            id,
            "hostile-loop",
            "",
            "timeout_ms = 300\nmax_consecutive_failures = 1000",
        );
    }
    manifest += &plugin_entry("scorer", "test-scorer", "\"log\", \"config\"", "timeout_ms = 1000");
    manifest += "[[tenant]]\nid = \"mallory\"\n";
    for id in ["slow1", "slow2", "slow3"] {
        manifest += &format!("[[tenant.plugin]]\nid = {id:?}\nenabled = true\n");
    }
    manifest += "\n[[tenant]]\nid = \"victim\"\n[[tenant.plugin]]\nid = \"scorer\"\nenabled = true\n";
    std::fs::write(dir.path().join("plugins.toml"), manifest).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("rapport.toml");
    // FLOOD_TENANT_SHARE / FLOOD_PLUGIN_SHARE: try other shares than the
    // defaults.
    let mut shares = String::new();
    for (var, key) in [
        ("FLOOD_TENANT_SHARE", "max_concurrent_calls_per_tenant"),
        ("FLOOD_PLUGIN_SHARE", "max_concurrent_calls_per_plugin"),
        ("FLOOD_RUN_SLOTS", "guest_run_slots"),
    ] {
        if let Ok(v) = std::env::var(var) {
            shares += &format!("{key} = {v}\n");
        }
    }
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://{}\"\n\
             [plugins]\nmanifest = \"plugins.toml\"\ncache_dir = \"cache\"\nrescore_interval_ms = 0\n{shares}\
             [delivery]\nenabled = false\n",
            dir.path().join("flood.db").display()
        ),
    )
    .unwrap();
    cli(&config, &["migrate"]);
    cli(&config, &["tenant", "create", "mallory", "--id", "mallory"]);
    cli(&config, &["tenant", "create", "victim", "--id", "victim"]);
    let key = |tenant: &str, role: &str| {
        let out = cli(
            &config,
            &["key", "create", "--tenant", tenant, "--role", role, "--name", "flood"],
        );
        out.lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    let (m_write, v_read, v_write) = (
        key("mallory", "tenant_write"),
        key("victim", "tenant_read"),
        key("victim", "tenant_write"),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rapport serve");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let pid = server.child.id();
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    let started = Instant::now();
    while client.get(format!("{}/healthz", server.base)).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let customer = |token: String, ext: &'static str| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let body: Value = client
                .post(format!("{base}/v1/customers"))
                .bearer_auth(token)
                .json(&json!({ "external_id": ext }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["id"].as_str().unwrap().to_string()
        }
    };
    let m_customer = customer(m_write.clone(), "m").await;
    let v_customer = customer(v_write.clone(), "v").await;

    // Warm up (compile the plugins, touch the pool), then the baseline.
    let _ = victim(
        &server.base,
        &v_read,
        &v_write,
        &v_customer,
        Duration::ZERO,
        Duration::from_secs(2),
    )
    .await;
    let rss_start = rss_mib(pid);
    let mut baseline = victim(
        &server.base,
        &v_read,
        &v_write,
        &v_customer,
        Duration::from_millis(500),
        Duration::from_secs(secs.min(10)),
    )
    .await;

    // The flood: 3 x `concurrency` calls of mallory's slow plugins in
    // flight for `secs` seconds, each task calling again as soon as it has
    // its answer.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, busy, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flood = Vec::new();
    // mallory's own connections, closed when the flood ends (as an
    // attacker's are, sooner or later).
    let flood_client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap();
    for plugin in ["slow1", "slow2", "slow3"] {
        for _ in 0..concurrency {
            let (client, stop) = (flood_client.clone(), stop.clone());
            let (ok, busy, other) = (ok.clone(), busy.clone(), other.clone());
            let url = format!("{}/v1/customers/{m_customer}/score?plugin={plugin}", server.base);
            let token = m_write.clone();
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.post(&url).bearer_auth(&token).json(&json!({})).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) if r.status() == 429 => {
                            let n = busy.fetch_add(1, Ordering::Relaxed);
                            // A client that honours Retry-After would wait;
                            // a hostile one does not.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            n
                        }
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    let peak = Arc::new(std::sync::Mutex::new(rss_start));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = rss_mib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // The flood's first second is its ramp-up; the victim's half-second
    // warm-up (its own connection) comes after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut during = victim(
        &server.base,
        &v_read,
        &v_write,
        &v_customer,
        Duration::from_millis(500),
        Duration::from_secs(secs),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    drop(flood_client);
    let _ = sampler.await;
    let rss_end = rss_mib(pid);
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let rss_settled = rss_mib(pid);

    let status: Value = client
        .get(format!("{}/v1/plugins/scorer", server.base))
        .bearer_auth(&v_read)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "flood: 3 x {concurrency} concurrent slow calls from mallory for {secs} s {}",
        shares.replace('\n', " ")
    );
    baseline.print("before");
    during.print("during");
    println!(
        "  victim p99 (all ops): before {:.1} ms, during {:.1} ms ({:.2}x)",
        baseline.p99(),
        during.p99(),
        during.p99() / baseline.p99()
    );
    println!(
        "  victim failures: before {}, during {} {:?}; scorer status {} (consecutive failures {})",
        baseline.failures.len(),
        during.failures.len(),
        during.failures.iter().take(5).collect::<Vec<_>>(),
        status["status"],
        status["consecutive_failures"]
    );
    println!(
        "  mallory's calls: {} ran (timed out), {} refused 429 plugin_busy, {} other",
        ok.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed)
    );
    println!(
        "  server RSS: start {rss_start:.0} MiB, peak {:.0} MiB, end of flood {rss_end:.0} MiB, {settle} s later {rss_settled:.0} MiB",
        *peak.lock().unwrap()
    );
    drop(server);
}
