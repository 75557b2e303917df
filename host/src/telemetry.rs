//! Logging set-up and the Prometheus metrics registry behind `/metrics`.
//!
//! One process-wide recorder: the `metrics` facade is global, and tests start
//! several apps in one process, so installation happens once and every app
//! shares the handle.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub struct Metrics {
    handle: PrometheusHandle,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

impl Metrics {
    pub fn global() -> Metrics {
        let handle = HANDLE
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets(&[
                        0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ])
                    .unwrap_or_else(|_| PrometheusBuilder::new())
                    .build_recorder();
                let handle = recorder.handle();
                // Fails only if another recorder is installed; then ours just
                // renders nothing, which is visible and harmless.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                handle
            })
            .clone();
        Metrics { handle }
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        metrics::counter!("rapport_http_requests_total", &labels).increment(1);
        metrics::histogram!("rapport_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    }
}

/// The `# HELP` line of every metric the server records (and its unit). A
/// metric added anywhere gets its line here.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "rapport_http_requests_total",
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        "rapport_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request handling time, by method, route and status"
    );
    describe_counter!(
        "rapport_plugin_runs_dropped_total",
        "Plugin run history records dropped because the background writer fell behind (the calls were not affected)"
    );
    describe_counter!(
        "rapport_plugin_calls_total",
        "Plugin calls, by plugin, tenant (the first 100 tenants, then `other`), kind and export"
    );
    describe_histogram!(
        "rapport_plugin_call_duration_seconds",
        Unit::Seconds,
        "Plugin call time (instantiation included, waiting for capacity not), by plugin, tenant and export"
    );
    describe_counter!(
        "rapport_plugin_errors_total",
        "Failed plugin calls, by plugin, tenant and cause (timeout, trap, busy, output_too_large, ...)"
    );
    describe_counter!(
        "rapport_plugin_fuel_used_total",
        "Fuel (about one unit per WebAssembly instruction) plugins used, by plugin and tenant"
    );
    describe_gauge!(
        "rapport_plugins_suspended",
        "(tenant, plugin) pairs suspended after consecutive failures, all tenants (read at scrape time)"
    );
    describe_gauge!(
        "rapport_plugin_instances_in_use",
        "Plugin instances alive on this node (calls in flight plus batch sessions), read at scrape time"
    );
    describe_counter!(
        "rapport_deliveries_total",
        "Outbound message delivery attempts, by outcome and channel"
    );
    describe_histogram!(
        "rapport_delivery_attempt_duration_seconds",
        Unit::Seconds,
        "Time of one delivery attempt through a channel connector, by connector"
    );
    describe_gauge!(
        "rapport_plugin_unavailable",
        "1 while the plugin cannot be loaded (artifact missing, changed, or not compiling), else 0"
    );
    describe_counter!(
        "rapport_plugin_unknown_skus_total",
        "Recommendations dropped because their SKU is not in the tenant's catalogue"
    );
    describe_counter!(
        "rapport_reward_snapshot_retries_total",
        "Ingests rolled back and run again because the account changed while a reward plugin ran"
    );
    describe_gauge!("rapport_outbox_depth", "Messages pending or in delivery, all tenants");
}

/// Human-readable logs on stderr, filtered by `RUST_LOG` (default `info`).
/// Coloured only when stderr is a terminal (and `NO_COLOR` is unset): a log
/// redirected to a file or collected by a supervisor gets plain text, not
/// ANSI escape codes.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}
